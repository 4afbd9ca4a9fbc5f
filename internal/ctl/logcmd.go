// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/render"
)

// errNoJournalctl reports that journalctl is not installed.
var errNoJournalctl = errors.New("journalctl not found")

// auditFields are the journal fields "log" asks journalctl for
// (timestamps are always included).
var auditFields = append([]string{"MESSAGE", "MESSAGE_ID", "PRIORITY", "_UID", "_HOSTNAME"}, audit.Fields...)

// logQuery is what the operator asked "log" for.
type logQuery struct {
	container string
	since     string
	action    string
	lines     int
	// dir reads the journal files of a directory (journalctl -D), e.g.
	// what systemd-journal-remote collected from a fleet.
	dir string
}

// relativeRE matches a bare time span ("30m", "1h", "2d", "1h30m").
var relativeRE = regexp.MustCompile(`^([0-9]+(s|m|min|h|d|w))+$`)

// journalArgs builds the journalctl command line for q.
func journalArgs(q logQuery) []string {
	args := []string{"-o", "json", "--no-pager", "-q", "--output-fields=" + strings.Join(auditFields, ",")}
	return append(args, journalMatches(q)...)
}

// journalMatches are journalctl's options and matches for q: clearance's
// MESSAGE_IDs (alternatives), narrowed by container and action.
func journalMatches(q logQuery) []string {
	var args []string
	if q.dir != "" {
		args = append(args, "--directory="+q.dir)
	}
	if q.since != "" {
		since := q.since
		if relativeRE.MatchString(since) {
			since = "-" + since // systemd.time: "-1h" is one hour ago
		}
		args = append(args, "--since="+since)
	}
	if q.lines > 0 {
		args = append(args, "-n", strconv.Itoa(q.lines))
	}
	for _, k := range audit.Kinds {
		args = append(args, "MESSAGE_ID="+k.ID)
	}
	if q.container != "" {
		args = append(args, "CLEARANCE_CONTAINER="+q.container)
	}
	if q.action != "" {
		args = append(args, "CLEARANCE_ACTION="+q.action)
	}
	return args
}

// auditEntry is one audit record, also the shape of "log --json".
type auditEntry struct {
	TimeUsec    int64  `json:"time_usec"`
	Time        string `json:"time"`
	Event       string `json:"event"`
	MessageID   string `json:"message_id"`
	Container   string `json:"container"`
	RequestID   string `json:"request_id"`
	Dest        string `json:"dest"`
	Domain      string `json:"domain"`
	Port        int64  `json:"port"`
	Proto       string `json:"proto"`
	Action      string `json:"action"`
	Scope       string `json:"scope"`
	ExpiresUsec int64  `json:"expires_usec"`
	OperatorUID *int64 `json:"operator_uid"`
	Operator    string `json:"operator,omitempty"`
	Channel     string `json:"channel"`
	Reason      string `json:"reason"`
	Message     string `json:"message"`
	// VerdictID joins the two records of a verdict; Side says which one
	// this is ("operator": the hub's, "kernel": the verdict service's);
	// Outcome is what became of it (audit.Outcome*).
	VerdictID string `json:"verdict_id,omitempty"`
	Side      string `json:"side,omitempty"`
	Outcome   string `json:"outcome,omitempty"`
	// Kernel is the kernel side's outcome, on an operator-side record
	// whose kernel record was read ("" when none was).
	Kernel string `json:"kernel,omitempty"`
	// Mismatch says how the two sides of the verdict disagree ("" when
	// they agree, or when only one side could be read).
	Mismatch string `json:"mismatch,omitempty"`
	// Host is the host that wrote the record (_HOSTNAME), which tells
	// a fleet's collected records apart.
	Host string `json:"host"`
}

// journalValue decodes one field of journalctl's JSON output: a string,
// an array of byte values (fields that are not valid UTF-8 or contain
// control characters), an array of those for repeated fields (the first
// is kept), or null (too large).
func journalValue(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var bs []byte
	var nums []int
	if json.Unmarshal(raw, &nums) == nil {
		for _, n := range nums {
			bs = append(bs, byte(n))
		}
		return string(bs)
	}
	var multi []json.RawMessage
	if json.Unmarshal(raw, &multi) == nil && len(multi) > 0 {
		return journalValue(multi[0])
	}
	return ""
}

// journalLines decodes each non-empty line of journalctl -o json output
// into a new T and hands it to each; it returns
// how many lines were not JSON objects (skipped). Records may be large
// (a disengaged record's counters): lines up to 16 MiB are read.
func journalLines[T any](out []byte, each func(*T)) (bad int) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var v T
		if err := json.Unmarshal(line, &v); err != nil {
			bad++
			continue
		}
		each(&v)
	}
	return bad
}

// parseJournal parses journalctl -o json output (one object per line).
// Lines that are not JSON objects are skipped and counted.
func parseJournal(out []byte) ([]auditEntry, int) {
	var entries []auditEntry
	bad := journalLines(out, func(mp *map[string]json.RawMessage) {
		m := *mp
		get := func(k string) string { return journalValue(m[k]) }
		num := func(k string) int64 {
			n, _ := strconv.ParseInt(strings.TrimSpace(get(k)), 10, 64)
			return n
		}
		e := auditEntry{
			TimeUsec: num("__REALTIME_TIMESTAMP"), MessageID: get("MESSAGE_ID"),
			Container: get("CLEARANCE_CONTAINER"), RequestID: get("CLEARANCE_REQUEST_ID"),
			Dest: get("CLEARANCE_DEST"), Domain: get("CLEARANCE_DOMAIN"), Port: num("CLEARANCE_PORT"),
			Proto: get("CLEARANCE_PROTO"), Action: get("CLEARANCE_ACTION"), Scope: get("CLEARANCE_SCOPE"),
			ExpiresUsec: num("CLEARANCE_EXPIRES_USEC"), Channel: get("CLEARANCE_CHANNEL"),
			Reason: get("CLEARANCE_REASON"), Message: get("MESSAGE"),
			Operator: get(audit.FieldOperator), VerdictID: get(audit.FieldVerdictID), Side: get(audit.FieldSide),
			Outcome: get(audit.FieldOutcome), Host: get("_HOSTNAME"),
		}
		if s := strings.TrimSpace(get("CLEARANCE_OPERATOR_UID")); s != "" {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				e.OperatorUID = &n
			}
		}
		e.Event = audit.KindName(e.MessageID)
		if e.TimeUsec > 0 {
			e.Time = time.UnixMicro(e.TimeUsec).UTC().Format(time.RFC3339Nano)
		}
		entries = append(entries, e)
	})
	return entries, bad
}

func (r *runner) cmdLog(ctx context.Context, args []string) int {
	fs := r.newFlags("log", "[--container ID] [--since TIME] [--action allow|deny] [--lines N] [--journal-dir DIR] [--json | --export [--follow] [--cursor-file FILE]]",
		`Shows clearance's audit trail from the systemd journal: blocked requests,
verdicts, failed verdicts, expiries, ruleset engage/disengage, fleet
verdicts mirrored and adopted. TIME is anything journalctl --since accepts
("2025-01-31 12:00", "yesterday", "-2h") or a bare span meaning that long
ago ("30m", "2h", "1d").

--journal-dir reads the journal files of a directory instead, e.g. what
systemd-journal-remote collected from a fleet; the table then names the
host of every record. --export writes the records in the journal export
format instead, for "systemd-journal-upload -": only clearance's records
leave the host (see docs/fleet.md).`)
	var q logQuery
	fs.StringVar(&q.dir, "journal-dir", "", "read the journal files in `DIR` (journalctl --directory)")
	export := fs.Bool("export", false, "write journal export format (for systemd-journal-upload)")
	follow := fs.Bool("follow", false, "with --export: keep writing new records")
	cursorFile := fs.String("cursor-file", "", "with --export: start after the cursor in `FILE` and keep it there (journalctl --cursor-file)")
	fs.StringVar(&q.container, "container", "", "only records of this container (its id, full or a unique prefix)")
	fs.StringVar(&q.since, "since", "", "only records newer than `TIME`")
	fs.StringVar(&q.action, "action", "", "only verdicts with this action (allow or deny)")
	fs.IntVar(&q.lines, "lines", 0, "only the last `N` records")
	asJSON := fs.Bool("json", false, "print JSON (values exact, non-ASCII escaped)")
	pos, err := r.parse(fs, args)
	if err != nil {
		return parseExit(err)
	}
	if len(pos) > 0 {
		return r.usageErr(fs, "log takes no arguments")
	}
	if q.action != "" && !event.ValidAction(q.action) {
		return r.usageErr(fs, "--action must be allow or deny, not %q", clean(q.action))
	}
	if q.lines < 0 {
		return r.usageErr(fs, "--lines must not be negative")
	}
	if (*follow || *cursorFile != "") && !*export {
		return r.usageErr(fs, "--follow and --cursor-file go with --export")
	}
	if *export && *asJSON {
		return r.usageErr(fs, "--export and --json exclude each other")
	}
	if q.dir != "" {
		if st, err := os.Stat(q.dir); err != nil || !st.IsDir() {
			return r.usageErr(fs, "--journal-dir %s: not a directory", clean(q.dir))
		}
	}
	if q.container != "" && q.dir == "" {
		id, err := resolveContainer(q.container, r.knownContainers())
		if err != nil {
			return r.usageErr(fs, "%s", clean(err.Error()))
		}
		q.container = id
	}
	if *export {
		if err := exportJournal(ctx, q, *follow, *cursorFile, r.stdout); err != nil {
			if errors.Is(err, errNoJournalctl) {
				return r.fail(ExitFailure, "journalctl not found")
			}
			return r.fail(ExitFailure, "read the journal: %s", cleanLong(err.Error()))
		}
		return ExitOK
	}
	out, err := r.journal(ctx, journalArgs(q))
	if errors.Is(err, errNoJournalctl) {
		return r.fail(ExitFailure, "journalctl not found: the audit trail is in the systemd journal, which this host cannot read")
	}
	if err != nil {
		return r.fail(ExitFailure, "read the journal: %s", cleanLong(err.Error()))
	}
	entries, bad := parseJournal(out)
	entries = reconcile(entries)
	if bad > 0 {
		fmt.Fprintf(r.stderr, "clearancectl: skipped %d unreadable journal line(s)\n", bad)
	}
	if *asJSON {
		if entries == nil {
			entries = []auditEntry{}
		}
		if err := writeJSON(r.stdout, entries); err != nil {
			return r.fail(ExitFailure, "%v", err)
		}
		return ExitOK
	}
	if len(entries) == 0 {
		fmt.Fprintln(r.stdout, "no audit records")
		return ExitOK
	}
	r.auditTable(entries, q.dir != "").write(r.stdout, r)
	return ExitOK
}

// reconcile joins the two records of each verdict by verdict id: the
// kernel side's record (the verdict service's) is folded into the
// operator side's (the hub's), which then says what the kernel got and
// whether the two disagree. A kernel record with no operator record to
// join stays a row of its own. Records without a verdict id (older
// versions, the seed's compat Apply) pass unchanged.
func reconcile(entries []auditEntry) []auditEntry {
	kernel := map[string]auditEntry{}
	operator := map[string]bool{}
	for _, e := range entries {
		switch {
		case e.VerdictID == "":
		case e.Side == audit.SideKernel:
			kernel[e.VerdictID] = e
		default:
			operator[e.VerdictID] = true
		}
	}
	out := entries[:0:0]
	for _, e := range entries {
		if e.VerdictID != "" && e.Side == audit.SideKernel && operator[e.VerdictID] {
			continue // folded into its operator record
		}
		if e.VerdictID != "" && e.Side != audit.SideKernel {
			k, seen := kernel[e.VerdictID]
			if seen {
				e.Kernel = k.Outcome
			}
			e.Mismatch = mismatch(e.Outcome, k.Outcome, seen, len(kernel) > 0)
		}
		out = append(out, e)
	}
	return out
}

// mismatch compares the hub's outcome of a verdict with the kernel's.
// readKernel says whether any kernel record was readable at all (a user
// who may not read the system journal sees none, and nothing is flagged).
func mismatch(hub, kernel string, seen, readKernel bool) string {
	applied := func(o string) bool { return o == audit.OutcomeApplied || o == audit.OutcomeNotSaved }
	switch {
	case !seen && readKernel && applied(hub):
		return "no kernel record: the verdict service did not confirm it"
	case !seen && readKernel && hub == audit.OutcomeUnknown:
		return "outcome unknown and no kernel record; clearancectl explain shows what the ruleset holds"
	case !seen:
		return ""
	case applied(kernel) && !applied(hub):
		return "the kernel has it, the hub recorded " + orDash(hub)
	case !applied(kernel) && applied(hub):
		return "the hub recorded " + hub + ", the kernel " + orDash(kernel)
	case hub != kernel:
		return "the hub recorded " + hub + ", the kernel " + kernel
	}
	return ""
}

// followInterval is how often "log --export --follow" looks for new
// records.
const followInterval = time.Second

// exportJournal writes q's records in the export format. With follow it
// asks journalctl again every followInterval for what came after the
// cursor (journalctl's own --follow implies --boot=0 in systemd 252: the
// records of an earlier boot not yet shipped would be left behind).
func exportJournal(ctx context.Context, q logQuery, follow bool, cursorFile string, w io.Writer) error {
	if follow && cursorFile == "" {
		d, err := os.MkdirTemp("", "clearancectl-cursor-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		cursorFile = filepath.Join(d, "cursor")
	}
	args := []string{"-o", "export", "--no-pager", "-q"}
	if cursorFile != "" {
		args = append(args, "--cursor-file="+cursorFile)
	}
	args = append(args, journalMatches(q)...)
	for {
		if err := streamJournal(ctx, args, w); err != nil && !noEntriesYet(err, cursorFile) {
			return err
		}
		if !follow {
			return nil
		}
		t := time.NewTimer(followInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// noEntriesYet tells a journalctl run that failed only because nothing
// matched yet: journalctl (systemd 252) given a --cursor-file that does
// not exist exits 1, silently, when no record matches, as it has no
// cursor to write. Until the first record, that is "nothing to ship",
// not a failure; a follower would otherwise die before the first
// verdict.
func noEntriesYet(err error, cursorFile string) bool {
	var failed *journalctlError
	var exit *exec.ExitError
	if cursorFile == "" || !errors.As(err, &failed) || failed.msg != "" ||
		!errors.As(err, &exit) || exit.ExitCode() != 1 {
		return false
	}
	_, statErr := os.Stat(cursorFile)
	return errors.Is(statErr, os.ErrNotExist)
}

// journalctlError is a journalctl run that failed, with what it said.
type journalctlError struct {
	err error
	msg string
}

func (e *journalctlError) Error() string {
	if e.msg == "" {
		return "journalctl: " + e.err.Error()
	}
	return "journalctl: " + e.err.Error() + ": " + e.msg
}

func (e *journalctlError) Unwrap() error { return e.err }

// streamJournal runs journalctl with args, its output going to w as it
// comes (until ctx ends, with --follow).
func streamJournal(ctx context.Context, args []string, w io.Writer) error {
	path, err := exec.LookPath("journalctl")
	if err != nil {
		return errNoJournalctl
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = w, &limitedWriter{w: &stderr, n: 4096}
	if err := cmd.Run(); err != nil && ctx.Err() == nil {
		return &journalctlError{err: err, msg: strings.TrimSpace(stderr.String())}
	}
	return nil
}

func (r *runner) auditTable(entries []auditEntry, withHost bool) *table {
	t := &table{head: []string{"TIME", "EVENT", "CONTAINER", "DESTINATION", "ACTION", "SCOPE", "BY", "DETAIL"}}
	if withHost {
		t.head = append([]string{"HOST"}, t.head...)
	}
	now := r.now()
	for _, e := range entries {
		when := "?"
		if e.TimeUsec > 0 {
			when = clock(time.UnixMicro(e.TimeUsec), now)
		}
		target := e.Domain
		if target == "" {
			target = e.Dest
		}
		dest := "-"
		if target != "" {
			dest = clean(target)
			if e.Port > 0 {
				dest = render.HostPort(dest, e.Port)
			}
			if e.Proto != "" {
				dest += "/" + strings.ToLower(clean(e.Proto))
			}
			if e.Domain != "" && e.Dest != "" && e.Domain != e.Dest {
				dest += " (" + clean(e.Dest) + ")"
			}
		}
		by := "-"
		if e.OperatorUID != nil || e.Channel != "" {
			by = ""
			if e.OperatorUID != nil && *e.OperatorUID >= 0 {
				by = "uid " + strconv.FormatInt(*e.OperatorUID, 10)
				if e.Operator != "" {
					by = clean(e.Operator) + " (" + by + ")"
				}
			}
			if e.Channel != "" {
				by = strings.TrimSpace(by + " via " + clean(e.Channel))
			}
		}
		var detail []string
		if t := usecTime(e.ExpiresUsec); !t.IsZero() {
			word := "until "
			if e.Event == "expired" {
				word = "at "
			}
			detail = append(detail, word+clock(t, now))
		}
		if e.Outcome == audit.OutcomeNotSaved {
			detail = append(detail, "not saved to policy")
		}
		if e.Side == audit.SideKernel {
			detail = append(detail, "kernel side only")
		}
		if e.Reason != "" {
			detail = append(detail, clean(e.Reason))
		}
		if e.Mismatch != "" {
			detail = append(detail, r.paint(colRed, "MISMATCH: "+clean(e.Mismatch)))
		}
		if len(detail) == 0 && e.Event == "other" {
			detail = append(detail, clean(e.Message))
		}
		ev := e.Event
		switch ev {
		case "failed":
			ev = r.paint(colRed, ev)
		case "verdict":
			if e.Action == event.ActionAllow {
				ev = r.paint(colGreen, ev)
			} else {
				ev = r.paint(colRed, ev)
			}
		case "blocked", "asked":
			ev = r.paint(colYellow, ev)
		case "not-enforced":
			ev = r.paint(colRed, ev)
		}
		row := []string{when, ev, orDash(clean(e.Container)), dest, orDash(clean(e.Action)), orDash(clean(e.Scope)),
			orDash(by), orDash(strings.Join(detail, "; "))}
		if withHost {
			row = append([]string{orDash(clean(e.Host))}, row...)
		}
		t.add(row...)
	}
	return t
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
