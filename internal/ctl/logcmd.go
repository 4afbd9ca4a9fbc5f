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
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/render"
)

// errNoJournalctl reports that journalctl is not installed.
var errNoJournalctl = errors.New("journalctl not found")

// auditKinds names the journal MESSAGE_IDs of the audit trail.
var auditKinds = []struct{ id, name string }{
	{hub.MsgBlocked, "blocked"},
	{hub.MsgVerdict, "verdict"},
	{hub.MsgVerdictFailed, "failed"},
	{hub.MsgExpired, "expired"},
	{hub.MsgEngaged, "engaged"},
	{hub.MsgDisengaged, "disengaged"},
	{hub.MsgDenied, "denied"},
	{hub.MsgLearned, "learned"},
}

func kindName(id string) string {
	for _, k := range auditKinds {
		if k.id == id {
			return k.name
		}
	}
	return "other"
}

// auditFields are the journal fields "log" asks journalctl for
// (timestamps are always included).
var auditFields = []string{
	"MESSAGE", "MESSAGE_ID", "PRIORITY",
	"CLEARANCE_CONTAINER", "CLEARANCE_REQUEST_ID", "CLEARANCE_DEST", "CLEARANCE_DOMAIN",
	"CLEARANCE_PORT", "CLEARANCE_PROTO", "CLEARANCE_ACTION", "CLEARANCE_SCOPE",
	"CLEARANCE_EXPIRES_USEC", "CLEARANCE_OPERATOR_UID", "CLEARANCE_CHANNEL", "CLEARANCE_REASON",
}

// logQuery is what the operator asked "log" for.
type logQuery struct {
	container string
	since     string
	action    string
	lines     int
}

// relativeRE matches a bare time span ("30m", "1h", "2d", "1h30m").
var relativeRE = regexp.MustCompile(`^([0-9]+(s|m|min|h|d|w))+$`)

// journalArgs builds the journalctl command line for q.
func journalArgs(q logQuery) []string {
	args := []string{"-o", "json", "--no-pager", "-q", "--output-fields=" + strings.Join(auditFields, ",")}
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
	for _, k := range auditKinds {
		args = append(args, "MESSAGE_ID="+k.id)
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
	Channel     string `json:"channel"`
	Reason      string `json:"reason"`
	Message     string `json:"message"`
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

// parseJournal parses journalctl -o json output (one object per line).
// Lines that are not JSON objects are skipped and counted.
func parseJournal(out []byte) ([]auditEntry, int) {
	var entries []auditEntry
	bad := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(line, &m); err != nil {
			bad++
			continue
		}
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
		}
		if s := strings.TrimSpace(get("CLEARANCE_OPERATOR_UID")); s != "" {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				e.OperatorUID = &n
			}
		}
		e.Event = kindName(e.MessageID)
		if e.TimeUsec > 0 {
			e.Time = time.UnixMicro(e.TimeUsec).UTC().Format(time.RFC3339Nano)
		}
		entries = append(entries, e)
	}
	return entries, bad
}

func (r *runner) cmdLog(ctx context.Context, args []string) int {
	fs := r.newFlags("log", "[--container ID] [--since TIME] [--action allow|deny] [--lines N] [--json]",
		`Shows clearance's audit trail from the systemd journal: blocked requests,
verdicts, failed verdicts, expiries, ruleset engage/disengage. TIME is
anything journalctl --since accepts ("2025-01-31 12:00", "yesterday",
"-2h") or a bare span meaning that long ago ("30m", "2h", "1d").`)
	var q logQuery
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
	if q.container != "" {
		id, err := resolveContainer(q.container, r.knownContainers())
		if err != nil {
			return r.usageErr(fs, "%s", clean(err.Error()))
		}
		q.container = id
	}
	out, err := r.journal(ctx, journalArgs(q))
	if errors.Is(err, errNoJournalctl) {
		return r.fail(ExitFailure, "journalctl not found: the audit trail is in the systemd journal, which this host cannot read")
	}
	if err != nil {
		return r.fail(ExitFailure, "read the journal: %s", cleanLong(err.Error()))
	}
	entries, bad := parseJournal(out)
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
	r.auditTable(entries).write(r.stdout, r)
	return ExitOK
}

func (r *runner) auditTable(entries []auditEntry) *table {
	t := &table{head: []string{"TIME", "EVENT", "CONTAINER", "DESTINATION", "ACTION", "SCOPE", "BY", "DETAIL"}}
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
		if e.Reason != "" {
			detail = append(detail, clean(e.Reason))
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
		case "blocked":
			ev = r.paint(colYellow, ev)
		}
		t.add(when, ev, orDash(clean(e.Container)), dest, orDash(clean(e.Action)), orDash(clean(e.Scope)),
			orDash(by), orDash(strings.Join(detail, "; ")))
	}
	return t
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
