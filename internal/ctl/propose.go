// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/dnsname"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/policy"
	"github.com/terok-ai/clearance/internal/sd"
	"github.com/terok-ai/clearance/internal/varlinkapi"
)

// proposeKinds are the records a proposal is made from: what the
// container tried (blocked), what the operator decided (verdict), what a
// rule let through (learned: an address of an allowed name) or denied,
// and what an observe-mode container reached (observed: same fields as
// blocked).
var proposeKinds = []string{audit.MsgBlocked, audit.MsgVerdict, audit.MsgLearned, audit.MsgDenied, audit.MsgObserved}

// fieldEngagedNow is the field with which earlier verdict services said
// whether an engaged record's ruleset was created by that call (a
// container started) or verified (its hub restarted); today's write the
// record only when they create it.
var fieldEngagedNow = sd.FieldName("", "engaged_now")

// proposeFields are the journal fields a proposal reads.
var proposeFields = []string{"MESSAGE_ID", "CLEARANCE_CONTAINER", "CLEARANCE_CONTAINER_ID", "CLEARANCE_DEST",
	"CLEARANCE_DOMAIN", "CLEARANCE_PORT", "CLEARANCE_PROTO", "CLEARANCE_ACTION", fieldEngagedNow}

// Ways a destination was seen, in the order "seen_as" lists them.
const (
	seenBlocked = "blocked" // the container tried it and was refused
	seenAllowed = "allowed" // the operator allowed it (a verdict)
	seenLearned = "learned" // a rule allowed its name, the address was learned
	seenDenied  = "denied"  // the operator or a rule denied it
)

var seenOrder = []string{seenBlocked, seenAllowed, seenLearned, seenDenied}

// proposeRecord is one journal record a proposal reads.
type proposeRecord struct {
	usec        int64
	kind        string // a MESSAGE_ID
	container   string // CLEARANCE_CONTAINER (the hub's id, 12 characters for podman)
	containerID string // CLEARANCE_CONTAINER_ID (the full id), when recorded
	dest        string
	domain      string
	port        int64
	proto       string
	action      string
	engagedNow  bool
}

// proposeRun is one lifetime of a container, also part of the JSON
// output. It starts at the engaged record that created the container's
// ruleset, or at the container's first record when that is not in the
// journal (older than --since, or not readable: the verdict service logs
// to the system journal).
type proposeRun struct {
	Container   string `json:"container"`
	ContainerID string `json:"container_id,omitempty"`
	StartUsec   int64  `json:"start_usec"`
	// Engaged is true when the run starts at an engaged record.
	Engaged bool `json:"engaged"`
	// Records counts the records of the run the proposal read.
	Records int `json:"records"`
}

// addressSeen is one address seen for an entry.
type addressSeen struct {
	Address   string `json:"address"`
	Count     int    `json:"count"`
	FirstUsec int64  `json:"first_usec"`
	LastUsec  int64  `json:"last_usec"`
}

// proposal is one entry of a proposed policy, also part of the JSON
// output.
type proposal struct {
	// List is "allow" or "deny": the newest decision about it (a verdict,
	// a learned address, a denied name); "allow" when it was only
	// blocked (review those).
	List string `json:"list"`
	// Dest is the policy entry: a name, or an address when no name was
	// seen for it, with ":port/proto" when the records had one.
	Dest string `json:"dest"`
	// Name is the name Dest holds, "" for an address.
	Name string `json:"name,omitempty"`
	// Count is how many records name it; Runs in how many runs.
	Count int `json:"count"`
	Runs  int `json:"runs"`
	// FirstUsec and LastUsec are when it was first and last seen.
	FirstUsec int64 `json:"first_usec"`
	LastUsec  int64 `json:"last_usec"`
	// Stable is true when it appeared in every one of the last --stable
	// runs (false without --stable).
	Stable bool `json:"stable"`
	// SeenAs lists how it was seen: blocked, allowed, learned, denied.
	SeenAs []string `json:"seen_as"`
	// Addresses are the addresses seen for it, sorted, each with its
	// count and times (for a name, the addresses it was resolved to).
	Addresses []addressSeen `json:"addresses"`

	runs     map[int]bool
	seen     map[string]bool
	lastDeny bool // the newest decision was a deny
	decided  int64
}

// proposeReport is what "policy propose --json" prints.
type proposeReport struct {
	Selector proposeSelector `json:"selector"`
	// Runs are the runs considered, oldest first.
	Runs []proposeRun `json:"runs"`
	// Stable is --stable (0 without).
	Stable int `json:"stable"`
	// Entries are the proposed entries, deny first, then by destination.
	Entries []proposal `json:"entries"`
	// Omitted are destinations the policy language cannot hold (a name
	// that is not a valid DNS name, a protocol other than TCP and UDP):
	// in the JSON, never in the YAML.
	Omitted []string `json:"omitted"`
}

type proposeSelector struct {
	Container string `json:"container,omitempty"`
	Project   string `json:"project,omitempty"`
	Policy    string `json:"policy,omitempty"`
	Since     string `json:"since,omitempty"`
	Runs      int    `json:"runs,omitempty"`
}

type proposeQuery struct {
	container, project, policyName, since string
	runs, stable                          int
}

func (q proposeQuery) selector() proposeSelector {
	return proposeSelector{Container: q.container, Project: q.project, Policy: q.policyName, Since: q.since, Runs: q.runs}
}

func (r *runner) cmdPolicyPropose(ctx context.Context, args []string) int {
	fs := r.newFlags("policy propose", "(--container ID | --project NAME | --policy NAME) [--since TIME] [--runs N] [--stable N]\n"+
		"       [--json | --write NAME [--replace] [--socket PATH]]",
		`Proposes a policy from the audit trail in the journal: the destinations
the containers tried (blocked), that the operator allowed or denied, and the
addresses a rule let through for a name (learned), each under the name it
was resolved from, with how often, in how many runs and when it was first
and last seen. A run is one lifetime of a container, from the record of
its ruleset being engaged (a restarted container is a new run). --runs N
reads the last N runs; --stable N keeps what appeared in every one of the
last N runs. The output is sorted, so proposals diff cleanly from one run
to the next. An entry is proposed for the deny list when the newest
decision about it was a deny; one that was only blocked is proposed for
the allow list, with "blocked" in its comment: review those.

--write NAME saves the proposal as your policy NAME through the verdict
service (root: /etc/clearance/policy.d/NAME.yaml; a user: that user's own
uid-<uid> layer, read only by the user's containers), atomically; it
refuses to overwrite an existing file without --replace.`)
	var q proposeQuery
	fs.StringVar(&q.container, "container", "", "records of this container (`ID`, full or a unique prefix)")
	fs.StringVar(&q.project, "project", "", "records of the containers of this project (dossier.project)")
	fs.StringVar(&q.policyName, "policy", "", "records of the containers started from this policy")
	fs.StringVar(&q.since, "since", "", "only records newer than `TIME` (as for log)")
	fs.IntVar(&q.runs, "runs", 0, "only the last `N` runs")
	fs.IntVar(&q.stable, "stable", 0, "only what appeared in every one of the last `N` runs")
	asJSON := fs.Bool("json", false, "print JSON (values exact, non-ASCII escaped)")
	write := fs.String("write", "", "save the proposal as policy `NAME` through the verdict service")
	replace := fs.Bool("replace", false, "with --write: replace an existing policy file")
	sock := fs.String("socket", DefaultVerdictSocket, "the verdict service's `PATH` (for --write)")
	pos, err := r.parse(fs, args)
	if err != nil {
		return parseExit(err)
	}
	if len(pos) > 0 {
		return r.usageErr(fs, "policy propose takes no arguments")
	}
	n := 0
	for _, s := range []string{q.container, q.project, q.policyName} {
		if s != "" {
			n++
		}
	}
	switch {
	case n != 1:
		return r.usageErr(fs, "give exactly one of --container, --project, --policy")
	case q.runs < 0 || q.stable < 0:
		return r.usageErr(fs, "--runs and --stable must not be negative")
	case q.runs > 0 && q.stable > q.runs:
		return r.usageErr(fs, "--stable %d needs at least %d runs, but --runs reads %d", q.stable, q.stable, q.runs)
	case *write != "" && *asJSON:
		return r.usageErr(fs, "--write saves the YAML policy; it does not go with --json")
	case *write != "" && !policy.ValidName(*write):
		return r.usageErr(fs, "invalid policy name %q: letters, digits, '_', '.' and '-', at most 128, starting with a letter or digit", clean(*write))
	case *replace && *write == "":
		return r.usageErr(fs, "--replace goes with --write")
	}
	if q.container != "" {
		id, err := resolveContainer(q.container, r.knownContainers())
		if err != nil {
			return r.usageErr(fs, "%s", clean(err.Error()))
		}
		q.container = id
	}
	out, err := r.journal(ctx, proposeArgs(q))
	if errors.Is(err, errNoJournalctl) {
		return r.fail(ExitFailure, "journalctl not found: the audit trail is in the systemd journal, which this host cannot read")
	}
	if err != nil {
		return r.fail(ExitFailure, "read the journal: %s", cleanLong(err.Error()))
	}
	records, bad := parseProposeRecords(out)
	if bad > 0 {
		fmt.Fprintf(r.stderr, "clearancectl: skipped %d unreadable journal line(s)\n", bad)
	}
	rep := propose(records, q)
	if q.stable > 0 && len(rep.Runs) < q.stable {
		fmt.Fprintf(r.stderr, "clearancectl: --stable %d needs %d runs; the journal has %d, so nothing is stable yet\n",
			q.stable, q.stable, len(rep.Runs))
	}
	if len(rep.Omitted) > 0 {
		fmt.Fprintf(r.stderr, "clearancectl: left out %d destination(s) a policy cannot hold: %s\n",
			len(rep.Omitted), clean(strings.Join(rep.Omitted, ", ")))
	}
	if *asJSON {
		if err := writeJSON(r.stdout, rep); err != nil {
			return r.fail(ExitFailure, "%v", err)
		}
		return ExitOK
	}
	b, err := proposalYAML(rep, q)
	if err != nil {
		return r.fail(ExitFailure, "%v", err)
	}
	if *write == "" {
		r.stdout.Write(b)
		return ExitOK
	}
	if len(rep.Entries) == 0 {
		return r.fail(ExitNotFound, "nothing to write: no records matched (see clearancectl log)")
	}
	return r.writeProposal(ctx, *sock, *write, b, *replace, rep)
}

// proposeArgs builds the journalctl command line: the records of the
// selected containers, and (after "+", journalctl's OR) the engaged
// records, which mark where runs start; they carry only the container.
func proposeArgs(q proposeQuery) []string {
	args := []string{"-o", "json", "--no-pager", "-q", "--output-fields=" + strings.Join(proposeFields, ",")}
	if q.since != "" {
		since := q.since
		if relativeRE.MatchString(since) {
			since = "-" + since
		}
		args = append(args, "--since="+since)
	}
	for _, id := range proposeKinds {
		args = append(args, "MESSAGE_ID="+id)
	}
	switch {
	case q.container != "":
		args = append(args, "CLEARANCE_CONTAINER="+q.container, "+", "MESSAGE_ID="+audit.MsgEngaged, "CLEARANCE_CONTAINER="+q.container)
	case q.project != "":
		args = append(args, "CLEARANCE_PROJECT="+q.project, "+", "MESSAGE_ID="+audit.MsgEngaged)
	case q.policyName != "":
		args = append(args, "CLEARANCE_POLICY="+q.policyName, "+", "MESSAGE_ID="+audit.MsgEngaged)
	}
	return args
}

// journalRecord is the part of a journalctl -o json line a proposal
// decodes (a struct, not a map: 10 000 records decode in a few ms).
type journalRecord struct {
	Time        journalField `json:"__REALTIME_TIMESTAMP"`
	MessageID   journalField `json:"MESSAGE_ID"`
	Container   journalField `json:"CLEARANCE_CONTAINER"`
	ContainerID journalField `json:"CLEARANCE_CONTAINER_ID"`
	Dest        journalField `json:"CLEARANCE_DEST"`
	Domain      journalField `json:"CLEARANCE_DOMAIN"`
	Port        journalField `json:"CLEARANCE_PORT"`
	Proto       journalField `json:"CLEARANCE_PROTO"`
	Action      journalField `json:"CLEARANCE_ACTION"`
	EngagedNow  journalField `json:"CLEARANCE_ENGAGED_NOW"`
}

// journalField is one field's value as [journalValue] reads it, decoded
// in place: a plain string without escapes (nearly every field) costs no
// second pass.
type journalField string

func (f *journalField) UnmarshalJSON(b []byte) error {
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' && bytes.IndexByte(b, '\\') < 0 {
		*f = journalField(b[1 : len(b)-1])
		return nil
	}
	*f = journalField(journalValue(b))
	return nil
}

// parseProposeRecords parses journalctl -o json output; lines that are
// not JSON objects are skipped and counted.
func parseProposeRecords(out []byte) ([]proposeRecord, int) {
	var recs []proposeRecord
	bad := journalLines(out, func(jp *journalRecord) {
		j := *jp
		num := func(f journalField) int64 {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(f)), 10, 64)
			return n
		}
		recs = append(recs, proposeRecord{
			usec: num(j.Time), kind: string(j.MessageID),
			container: string(j.Container), containerID: string(j.ContainerID),
			dest: string(j.Dest), domain: string(j.Domain), port: num(j.Port),
			proto: string(j.Proto), action: string(j.Action),
			// The verdict service writes an engaged record only when it
			// installs a ruleset; earlier versions wrote one on every
			// verification too, saying which with engaged_now.
			engagedNow: j.EngagedNow != "false",
		})
	})
	return recs, bad
}

// splitRuns assigns every record to a run: per container, a run starts
// at each engaged record that created the ruleset (engaged_now), and
// records older than the first such record form a run of their own. It
// returns the runs oldest first (ties by container) and, per record, the
// index of its run (-1 for engaged records and records of no container).
func splitRuns(records []proposeRecord) ([]proposeRun, []int) {
	type span struct {
		start   int64
		engaged bool
	}
	starts := map[string][]span{}
	seen := map[string]bool{}
	for _, e := range records {
		if e.container == "" {
			continue
		}
		if e.kind == audit.MsgEngaged {
			if e.engagedNow {
				starts[e.container] = append(starts[e.container], span{start: e.usec, engaged: true})
			}
			continue
		}
		seen[e.container] = true
	}
	// Only containers with records of their own: the engaged records are
	// everyone's (journalctl cannot select them by project or policy).
	for c := range starts {
		if !seen[c] {
			delete(starts, c)
		}
	}
	first := map[string]int64{}
	for _, e := range records {
		if e.kind == audit.MsgEngaged || !seen[e.container] {
			continue
		}
		if t, ok := first[e.container]; !ok || e.usec < t {
			first[e.container] = e.usec
		}
	}
	type key struct {
		container string
		i         int
	}
	index := map[key]int{}
	var runs []proposeRun
	for c := range seen {
		sp := starts[c]
		sort.Slice(sp, func(i, j int) bool { return sp[i].start < sp[j].start })
		if len(sp) == 0 || first[c] < sp[0].start {
			sp = append([]span{{start: first[c]}}, sp...)
		}
		starts[c] = sp
		for i, s := range sp {
			index[key{c, i}] = len(runs)
			runs = append(runs, proposeRun{Container: c, StartUsec: s.start, Engaged: s.engaged})
		}
	}
	order := make([]int, len(runs))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(i, j int) bool {
		a, b := runs[order[i]], runs[order[j]]
		if a.StartUsec != b.StartUsec {
			return a.StartUsec < b.StartUsec
		}
		return a.Container < b.Container
	})
	rank := make([]int, len(runs))
	sorted := make([]proposeRun, len(runs))
	for to, from := range order {
		rank[from] = to
		sorted[to] = runs[from]
	}
	of := make([]int, len(records))
	for i, e := range records {
		of[i] = -1
		if e.kind == audit.MsgEngaged || !seen[e.container] {
			continue
		}
		sp := starts[e.container]
		k := sort.Search(len(sp), func(j int) bool { return sp[j].start > e.usec }) - 1
		k = max(k, 0)
		run := rank[index[key{e.container, k}]]
		of[i] = run
		sorted[run].Records++
		if sorted[run].ContainerID == "" {
			sorted[run].ContainerID = e.containerID
		}
	}
	return sorted, of
}

// propose aggregates records into a report, deterministic for the same
// records: runs oldest first, entries deny first, then by destination.
func propose(records []proposeRecord, q proposeQuery) proposeReport {
	rep := proposeReport{Selector: q.selector(), Stable: q.stable, Runs: []proposeRun{}, Entries: []proposal{}, Omitted: []string{}}
	runs, of := splitRuns(records)
	lo := 0
	if q.runs > 0 && len(runs) > q.runs {
		lo = len(runs) - q.runs
	}
	rep.Runs = append(rep.Runs, runs[lo:]...)

	// Names of addresses, per run, from the records that carry both: an
	// address-only record of the same run goes under that name.
	type runAddr struct {
		run  int
		addr string
	}
	names := map[runAddr]string{}
	for i, e := range records {
		if of[i] < lo || e.domain == "" {
			continue
		}
		if a, ok := recordAddr(e); ok {
			if name, err := dnsname.Normalize(e.domain); err == nil {
				names[runAddr{of[i], a}] = name
			}
		}
	}

	byDest := map[string]*proposal{}
	omitted := map[string]bool{}
	for i, e := range records {
		run := of[i]
		if run < lo {
			continue
		}
		addr, hasAddr := recordAddr(e)
		domain := e.domain
		if domain == "" && hasAddr {
			domain = names[runAddr{run, addr}]
		}
		dest, name, ok := proposalDest(domain, addr, e.port, e.proto)
		if !ok {
			switch {
			case e.domain != "" && e.dest != "":
				omitted[e.domain+" ("+e.dest+")"] = true
			case e.domain+e.dest != "":
				omitted[e.domain+e.dest] = true
			}
			continue
		}
		p := byDest[dest]
		if p == nil {
			p = &proposal{Dest: dest, Name: name, FirstUsec: e.usec, LastUsec: e.usec,
				runs: map[int]bool{}, seen: map[string]bool{}}
			byDest[dest] = p
		}
		p.Count++
		p.runs[run] = true
		p.FirstUsec = min(p.FirstUsec, e.usec)
		p.LastUsec = max(p.LastUsec, e.usec)
		how, deny, decides := seenHow(e)
		p.seen[how] = true
		if decides && e.usec >= p.decided {
			p.decided, p.lastDeny = e.usec, deny
		}
		if hasAddr {
			j := slices.IndexFunc(p.Addresses, func(a addressSeen) bool { return a.Address == addr })
			if j < 0 {
				p.Addresses = append(p.Addresses, addressSeen{Address: addr, FirstUsec: e.usec, LastUsec: e.usec})
				j = len(p.Addresses) - 1
			}
			a := &p.Addresses[j]
			a.Count++
			a.FirstUsec = min(a.FirstUsec, e.usec)
			a.LastUsec = max(a.LastUsec, e.usec)
		}
	}

	for _, p := range byDest {
		p.Runs = len(p.runs)
		if q.stable > 0 {
			p.Stable = len(runs)-lo >= q.stable
			for run := len(runs) - q.stable; p.Stable && run < len(runs); run++ {
				p.Stable = run >= lo && p.runs[run]
			}
			if !p.Stable {
				continue
			}
		}
		p.List = policy.ListAllow
		if p.lastDeny {
			p.List = policy.ListDeny
		}
		for _, s := range seenOrder {
			if p.seen[s] {
				p.SeenAs = append(p.SeenAs, s)
			}
		}
		sort.Slice(p.Addresses, func(i, j int) bool { return p.Addresses[i].Address < p.Addresses[j].Address })
		if p.Addresses == nil {
			p.Addresses = []addressSeen{}
		}
		rep.Entries = append(rep.Entries, *p)
	}
	sort.Slice(rep.Entries, func(i, j int) bool {
		a, b := rep.Entries[i], rep.Entries[j]
		if a.List != b.List {
			return a.List == policy.ListDeny
		}
		return a.Dest < b.Dest
	})
	for d := range omitted {
		rep.Omitted = append(rep.Omitted, d)
	}
	sort.Strings(rep.Omitted)
	return rep
}

// seenHow classifies a record: how the destination was seen, whether it
// was denied, and whether the record is a decision (newest wins).
func seenHow(e proposeRecord) (how string, deny, decides bool) {
	switch e.kind {
	case audit.MsgVerdict:
		if e.action == event.ActionDeny {
			return seenDenied, true, true
		}
		return seenAllowed, false, true
	case audit.MsgDenied:
		return seenDenied, true, true
	case audit.MsgLearned:
		return seenLearned, false, true
	}
	return seenBlocked, false, false
}

// recordAddr is the record's address, canonical (IPv4-mapped IPv6
// unmapped).
func recordAddr(e proposeRecord) (string, bool) {
	a, err := netip.ParseAddr(e.dest)
	if err != nil || a.Zone() != "" {
		return "", false
	}
	return a.Unmap().String(), true
}

// proposalDest returns the policy entry for a destination: the name when
// there is one, else the address, with ":port/proto" for TCP and UDP
// ports; and the name alone. ok is false when the result is not an entry
// a policy can hold.
func proposalDest(domain, addr string, port int64, proto string) (dest, name string, ok bool) {
	host := ""
	switch {
	case domain != "":
		n, err := dnsname.Normalize(domain)
		if err != nil {
			return "", "", false
		}
		host, name = n, n
	case addr != "":
		host = addr
	default:
		return "", "", false
	}
	dest = host
	proto = strings.ToLower(proto)
	if port > 0 && port <= 65535 && (proto == "tcp" || proto == "udp") {
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		dest = host + ":" + strconv.FormatInt(port, 10) + "/" + proto
	}
	if _, err := policy.ParseEntry(dest); err != nil {
		return "", "", false
	}
	return dest, name, true
}

// proposalYAML writes the report as a policy file with a comment per
// entry.
func proposalYAML(rep proposeReport, q proposeQuery) ([]byte, error) {
	var p policy.Policy
	for _, pr := range rep.Entries {
		e, err := policy.ParseEntry(pr.Dest)
		if err != nil {
			continue // proposalDest checked it; never happens
		}
		e.Comment = describeProposal(pr, len(rep.Runs))
		if pr.List == policy.ListDeny {
			p.Deny = append(p.Deny, e)
		} else {
			p.Allow = append(p.Allow, e)
		}
	}
	body, err := p.Marshal()
	if err != nil {
		return nil, err
	}
	var sel string
	switch {
	case q.container != "":
		sel = "container " + q.container
	case q.project != "":
		sel = "project " + q.project
	default:
		sel = "policy " + q.policyName
	}
	head := "# Proposed by clearancectl policy propose for " + yamlComment(sel) + ", from " + strconv.Itoa(len(rep.Runs)) + " run(s)"
	if q.since != "" {
		head += " since " + yamlComment(q.since)
	}
	if q.stable > 0 {
		head += "; only what appeared in each of the last " + strconv.Itoa(q.stable)
	}
	head += ".\n# Review before use: every entry says how often, in how many runs and when it was seen.\n"
	if len(rep.Entries) == 0 {
		head += "# Nothing was seen.\n"
	}
	return append([]byte(head), body...), nil
}

// yamlComment makes an operator's text safe in a one-line YAML comment.
func yamlComment(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, clean(s))
}

func describeProposal(p proposal, runs int) string {
	s := fmt.Sprintf("%s; %d× in %d of %d run(s), %s … %s", strings.Join(p.SeenAs, ", "), p.Count, p.Runs, runs,
		time.UnixMicro(p.FirstUsec).UTC().Format("2006-01-02 15:04"), time.UnixMicro(p.LastUsec).UTC().Format("2006-01-02 15:04"))
	if p.Stable {
		s += ", stable"
	}
	if p.Name != "" && len(p.Addresses) > 0 {
		var as []string
		for i, a := range p.Addresses {
			if i == 4 {
				as = append(as, "+"+strconv.Itoa(len(p.Addresses)-4)+" more")
				break
			}
			as = append(as, a.Address+" ("+strconv.Itoa(a.Count)+"×)")
		}
		s += "; " + strings.Join(as, ", ")
	}
	return s
}

// policyWriter is the verdict service's WritePolicy (a [Firewall] that
// can write policies implements it).
type policyWriter interface {
	WritePolicy(ctx context.Context, name string, content []byte, replace bool) (path string, replaced bool, err error)
}

func (v *varlinkFirewall) WritePolicy(ctx context.Context, name string, content []byte, replace bool) (string, bool, error) {
	return v.c.WritePolicy(ctx, name, content, replace)
}

// Errors of WritePolicy.
const (
	errFwInvalidPolicy = "org.terok.ClearanceFirewall1.InvalidPolicy"
	errFwPolicyExists  = "org.terok.ClearanceFirewall1.PolicyExists"
)

// writeProposal saves the proposal b as policy name through the verdict
// service.
func (r *runner) writeProposal(ctx context.Context, sock, name string, b []byte, replace bool, rep proposeReport) int {
	if len(b) > policy.MaxFileSize {
		return r.fail(ExitFailure, "the proposal is %d bytes, more than a policy may hold (%d): narrow it with --since, --runs or --stable",
			len(b), policy.MaxFileSize)
	}
	f, err := r.dialFirewall(ctx, sock)
	if err != nil {
		return r.firewallFailure(err, "")
	}
	defer f.Close()
	w, ok := f.(policyWriter)
	if !ok {
		return r.fail(ExitFailure, "this verdict service connection cannot write policies")
	}
	path, replaced, err := w.WritePolicy(ctx, name, b, replace)
	if err != nil {
		var p struct {
			Reason string `json:"reason"`
			Path   string `json:"path"`
		}
		errParams(err, &p)
		switch varlinkapi.ErrorName(err) {
		case errFwPolicyExists:
			return r.fail(ExitFailure, "policy %s exists (%s); add --replace to overwrite it", clean(name), clean(p.Path))
		case errFwInvalidPolicy:
			return r.fail(ExitFailure, "the verdict service refused policy %s: %s", clean(name), cleanLong(p.Reason))
		case errMethodNotFound:
			return r.fail(ExitFailure, "the verdict service cannot write policies (an older clearance-verdict?)")
		}
		return r.firewallFailure(err, "")
	}
	allow, deny := 0, 0
	for _, e := range rep.Entries {
		if e.List == policy.ListDeny {
			deny++
		} else {
			allow++
		}
	}
	verb := "wrote"
	if replaced {
		verb = "replaced"
	}
	fmt.Fprintf(r.stdout, "%s %s: %d allow, %d deny entries from %d run(s)\n", verb, clean(path), allow, deny, len(rep.Runs))
	return ExitOK
}
