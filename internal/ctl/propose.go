// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/terok-ai/clearance/internal/dnsname"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/policy"
)

// proposeKinds are the records a proposal is made from: what the
// container tried (blocked), what the operator decided (verdict), what a
// rule already let through (learned) or denied (denied).
var proposeKinds = []string{hub.MsgBlocked, hub.MsgVerdict, hub.MsgLearned, hub.MsgDenied}

// proposeFields are the journal fields a proposal reads.
var proposeFields = []string{"MESSAGE_ID", "CLEARANCE_CONTAINER", "CLEARANCE_DEST", "CLEARANCE_DOMAIN",
	"CLEARANCE_PORT", "CLEARANCE_PROTO", "CLEARANCE_ACTION", "CLEARANCE_POLICY", "CLEARANCE_PROJECT"}

// proposal is one destination of a proposed policy, also the shape of
// "policy propose --json".
type proposal struct {
	// List is "allow" or "deny".
	List string `json:"list"`
	// Dest is the policy entry: a name, or an address when no name was
	// seen for it, with ":port/proto" when the records had one.
	Dest string `json:"dest"`
	// Count is how many records name it; Runs how many containers.
	Count int `json:"count"`
	Runs  int `json:"runs"`
	// FirstUsec and LastUsec are when it was first and last seen.
	FirstUsec int64 `json:"first_usec"`
	LastUsec  int64 `json:"last_usec"`
	// Stable is true when it appeared in every one of the last --stable
	// runs (false without --stable).
	Stable bool `json:"stable"`
	// Addresses are the addresses seen for a name, sorted.
	Addresses []string `json:"addresses,omitempty"`

	containers map[string]bool
}

type proposeQuery struct {
	container, project, policyName, since string
	runs, stable                          int
}

func (r *runner) cmdPolicyPropose(ctx context.Context, args []string) int {
	fs := r.newFlags("policy propose", "(--container ID | --project NAME | --policy NAME) [--since TIME] [--runs N] [--stable N] [--json]",
		`Proposes a policy from the audit trail: the destinations the containers
tried (blocked), were allowed or denied by the operator, or reached through a
rule (addresses learned for a name), grouped under the names they were
resolved from, each with how often, in how many runs (containers) and when
it was first and last seen. --runs N keeps the last N runs; --stable N keeps
what appeared in every one of the last N runs. The output is sorted, so
proposals diff cleanly from one run to the next. Review it, then save it as
/etc/clearance/policy.d/<name>.yaml (or include it from one).`)
	var q proposeQuery
	fs.StringVar(&q.container, "container", "", "records of this container (`ID`, full or a unique prefix)")
	fs.StringVar(&q.project, "project", "", "records of the containers of this project (dossier.project)")
	fs.StringVar(&q.policyName, "policy", "", "records of the containers started from this policy")
	fs.StringVar(&q.since, "since", "", "only records newer than `TIME` (as for log)")
	fs.IntVar(&q.runs, "runs", 0, "only the last `N` runs (containers)")
	fs.IntVar(&q.stable, "stable", 0, "only what appeared in every one of the last `N` runs")
	asJSON := fs.Bool("json", false, "print JSON")
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
	if n != 1 {
		return r.usageErr(fs, "give exactly one of --container, --project, --policy")
	}
	if q.runs < 0 || q.stable < 0 {
		return r.usageErr(fs, "--runs and --stable must not be negative")
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
	records, bad := parseJournal(out)
	if bad > 0 {
		fmt.Fprintf(r.stderr, "clearancectl: skipped %d unreadable journal line(s)\n", bad)
	}
	props, runs := propose(records, q)
	if *asJSON {
		if props == nil {
			props = []proposal{}
		}
		if err := writeJSON(r.stdout, props); err != nil {
			return r.fail(ExitFailure, "%v", err)
		}
		return ExitOK
	}
	b, err := proposalYAML(props, q, runs)
	if err != nil {
		return r.fail(ExitFailure, "%v", err)
	}
	r.stdout.Write(b)
	return ExitOK
}

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
		args = append(args, "CLEARANCE_CONTAINER="+q.container)
	case q.project != "":
		args = append(args, "CLEARANCE_PROJECT="+q.project)
	case q.policyName != "":
		args = append(args, "CLEARANCE_POLICY="+q.policyName)
	}
	return args
}

// propose aggregates records into proposals, sorted (deny first, then by
// destination), and returns the runs (containers) considered, oldest
// first.
func propose(records []auditEntry, q proposeQuery) ([]proposal, []string) {
	// Runs in the order they first appear.
	first := map[string]int64{}
	for _, e := range records {
		if e.Container == "" {
			continue
		}
		if t, ok := first[e.Container]; !ok || e.TimeUsec < t {
			first[e.Container] = e.TimeUsec
		}
	}
	runs := make([]string, 0, len(first))
	for c := range first {
		runs = append(runs, c)
	}
	sort.Slice(runs, func(i, j int) bool {
		if first[runs[i]] != first[runs[j]] {
			return first[runs[i]] < first[runs[j]]
		}
		return runs[i] < runs[j]
	})
	if q.runs > 0 && len(runs) > q.runs {
		runs = runs[len(runs)-q.runs:]
	}
	keep := map[string]bool{}
	for _, c := range runs {
		keep[c] = true
	}

	byKey := map[string]*proposal{}
	denied := map[string]bool{}
	for _, e := range records {
		if !keep[e.Container] {
			continue
		}
		dest, addr, ok := proposalDest(e)
		if !ok {
			continue
		}
		deny := e.MessageID == hub.MsgDenied || (e.MessageID == hub.MsgVerdict && e.Action == event.ActionDeny)
		if deny {
			denied[dest] = true
		}
		p := byKey[dest]
		if p == nil {
			p = &proposal{Dest: dest, FirstUsec: e.TimeUsec, containers: map[string]bool{}}
			byKey[dest] = p
		}
		p.Count++
		p.containers[e.Container] = true
		p.FirstUsec = min(p.FirstUsec, e.TimeUsec)
		p.LastUsec = max(p.LastUsec, e.TimeUsec)
		if addr != "" && !slices.Contains(p.Addresses, addr) {
			p.Addresses = append(p.Addresses, addr)
		}
	}
	var out []proposal
	for dest, p := range byKey {
		p.List = policy.ListAllow
		if denied[dest] {
			p.List = policy.ListDeny
		}
		p.Runs = len(p.containers)
		if q.stable > 0 {
			last := runs[max(0, len(runs)-q.stable):]
			p.Stable = len(last) == q.stable
			for _, c := range last {
				if !p.containers[c] {
					p.Stable = false
				}
			}
			if !p.Stable {
				continue
			}
		}
		sort.Strings(p.Addresses)
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].List != out[j].List {
			return out[i].List == policy.ListDeny
		}
		return out[i].Dest < out[j].Dest
	})
	return out, runs
}

// proposalDest returns the policy entry a record names (the name when
// there is one, with its port and protocol) and the address it saw.
func proposalDest(e auditEntry) (dest, addr string, ok bool) {
	addr = e.Dest
	if a, err := netip.ParseAddr(addr); err != nil {
		addr = ""
	} else {
		addr = a.Unmap().String()
	}
	host := ""
	if e.Domain != "" {
		name, err := dnsname.Normalize(e.Domain)
		if err != nil {
			return "", "", false
		}
		host = name
	} else if addr != "" {
		host = addr
		if strings.Contains(addr, ":") {
			host = "[" + addr + "]"
		}
	} else {
		return "", "", false
	}
	proto := strings.ToLower(e.Proto)
	if e.Port > 0 && (proto == "tcp" || proto == "udp") {
		return host + ":" + strconv.FormatInt(e.Port, 10) + "/" + proto, addr, true
	}
	return strings.Trim(host, "[]"), addr, true
}

// proposalYAML writes the proposals as a policy file with a comment per
// entry.
func proposalYAML(props []proposal, q proposeQuery, runs []string) ([]byte, error) {
	var p policy.Policy
	for _, pr := range props {
		e, err := policy.ParseEntry(pr.Dest)
		if err != nil {
			continue // a name or address the policy language refuses: leave it out
		}
		e.Comment = describeProposal(pr)
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
	head := "# Proposed by clearancectl policy propose for " + sel + ", from " + strconv.Itoa(len(runs)) + " run(s)"
	if q.since != "" {
		head += " since " + q.since
	}
	if q.stable > 0 {
		head += "; only what appeared in each of the last " + strconv.Itoa(q.stable)
	}
	head += ".\n# Review before use: every entry lists how often and when it was seen.\n"
	if len(props) == 0 {
		head += "# Nothing was seen.\n"
	}
	return append([]byte(head), body...), nil
}

func describeProposal(p proposal) string {
	s := fmt.Sprintf("seen %d× in %d run(s), %s … %s", p.Count, p.Runs,
		time.UnixMicro(p.FirstUsec).UTC().Format("2006-01-02 15:04"), time.UnixMicro(p.LastUsec).UTC().Format("2006-01-02 15:04"))
	if p.Stable {
		s += ", stable"
	}
	if len(p.Addresses) > 0 && !strings.Contains(p.Dest, p.Addresses[0]) {
		addrs := p.Addresses
		if len(addrs) > 4 {
			addrs = append(addrs[:4:4], "…")
		}
		s += "; addresses " + strings.Join(addrs, ", ")
	}
	return s
}
