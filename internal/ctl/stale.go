// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/config"
	"github.com/terok-ai/clearance/internal/dnsname"
	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/policy"
)

// staleFields are the journal fields policy stale reads: the disengaged
// records (with every element's counters) and the forwarder's denied
// records of the policy's containers.
var staleFields = []string{"MESSAGE_ID", "CLEARANCE_CONTAINER", audit.FieldPolicy, audit.FieldCounters,
	audit.FieldReason, audit.FieldDomain}

// staleEntry is one policy entry and what it matched, also the shape of
// "policy stale --json".
type staleEntry struct {
	// List is "allow" or "deny"; Entry the entry as written; Source
	// where ("file:line").
	List   string `json:"list"`
	Entry  string `json:"entry"`
	Source string `json:"source"`
	// Packets and Bytes are what the elements it covers matched, summed
	// over the containers; Denied counts the DNS queries a deny name
	// refused. Containers is how many containers used it.
	Packets    uint64 `json:"packets"`
	Bytes      uint64 `json:"bytes"`
	Denied     int    `json:"denied_queries"`
	Containers int    `json:"containers"`
	// Stale is true when nothing matched it in any container.
	Stale bool `json:"stale"`

	entry policy.Entry
}

// staleReport is "policy stale --json".
type staleReport struct {
	Policy string `json:"policy"`
	Since  string `json:"since"`
	// Containers is how many of the policy's containers ended in the
	// window; Incomplete how many of them left counters that were cut
	// short or not read (an entry used only there may show as stale).
	Containers int          `json:"containers"`
	Incomplete int          `json:"incomplete"`
	Entries    []staleEntry `json:"entries"`
}

// counterLine is one line of a disengaged record's CLEARANCE_COUNTERS:
// "list dest proto port packets bytes name" (see the verdict service).
type counterLine struct {
	list    string
	dest    netip.Prefix
	proto   string // "-" for every protocol
	port    uint16 // 0 for every port
	packets uint64
	bytes   uint64
	name    string // the name a learned address was resolved for, "" for none
}

// parseCounters parses a CLEARANCE_COUNTERS value. complete is false
// when the record says elements were left out; malformed lines are
// counted in bad.
func parseCounters(s string) (lines []counterLine, complete bool, bad int) {
	complete = true
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if strings.HasPrefix(l, "#") {
			complete = false // "# N more elements not listed"
			continue
		}
		f := strings.Fields(l)
		if len(f) != 7 {
			bad++
			continue
		}
		dest, err := policy.ParseDest(f[1])
		if err != nil {
			bad++
			continue
		}
		c := counterLine{list: f[0], dest: dest, proto: f[2]}
		if f[3] != "-" {
			p, err := strconv.ParseUint(f[3], 10, 16)
			if err != nil {
				bad++
				continue
			}
			c.port = uint16(p)
		}
		var err1, err2 error
		c.packets, err1 = strconv.ParseUint(f[4], 10, 64)
		c.bytes, err2 = strconv.ParseUint(f[5], 10, 64)
		if err1 != nil || err2 != nil {
			bad++
			continue
		}
		if f[6] != "-" {
			c.name = f[6]
		}
		lines = append(lines, c)
	}
	return lines, complete, bad
}

// covers reports whether policy entry e covers counter line c: the same
// list (a name's addresses are in the learned set), c's addresses inside
// e's, or c's name matching e's pattern, and e's port and protocol, if
// any, equal to c's.
func covers(list string, e policy.Entry, c counterLine) bool {
	if e.Port != 0 && (c.port != e.Port || c.proto != e.Proto.String()) {
		return false
	}
	if e.IsName() {
		if list != policy.ListAllow || c.list != nft.ListLearned || c.name == "" {
			return false
		}
		name, ok := dnsname.Canonical(c.name)
		return ok && e.Name.Match(name)
	}
	if c.list != list {
		return false
	}
	return c.dest.Bits() >= e.Dest.Bits() && e.Dest.Contains(c.dest.Addr())
}

// judgeStale matches the policy's entries against the records: the
// disengaged records' counters and the denied records.
func judgeStale(p *policy.Policy, records []staleRecord) (entries []staleEntry, containers, incomplete int) {
	for _, l := range []struct {
		name string
		list policy.List
	}{{policy.ListAllow, p.Allow}, {policy.ListDeny, p.Deny}} {
		for _, e := range l.list {
			entries = append(entries, staleEntry{List: l.name, Entry: e.String(), Source: e.Source.String(), entry: e})
		}
	}
	seen := map[string]bool{}
	for _, r := range records {
		if r.messageID == audit.MsgDisengaged && !seen[r.container] {
			seen[r.container] = true
			containers++
			if !r.complete {
				incomplete++
			}
		}
	}
	for i := range entries {
		se := &entries[i]
		used := map[string]bool{}
		for _, r := range records {
			switch r.messageID {
			case audit.MsgDisengaged:
				for _, c := range r.counters {
					if covers(se.List, se.entry, c) && c.packets > 0 {
						se.Packets += c.packets
						se.Bytes += c.bytes
						used[r.container] = true
					}
				}
			case audit.MsgDenied:
				if se.List == policy.ListDeny && se.entry.IsName() && r.domain != "" {
					if name, ok := dnsname.Canonical(r.domain); ok && se.entry.Name.Match(name) {
						se.Denied++
						used[r.container] = true
					}
				}
			}
		}
		se.Containers = len(used)
		se.Stale = len(used) == 0
	}
	sort.SliceStable(entries, func(i, j int) bool {
		if entries[i].Stale != entries[j].Stale {
			return entries[i].Stale
		}
		return false
	})
	return entries, containers, incomplete
}

// staleRecord is a journal record policy stale reads.
type staleRecord struct {
	messageID, container, domain string
	counters                     []counterLine
	complete                     bool
}

func (r *runner) cmdPolicyStale(ctx context.Context, args []string) int {
	fs := r.newFlags("policy stale", "NAME [--since TIME] [--file PATH] [--all] [--json]",
		`Lists the entries of policy NAME that nothing used: no packet matched the
allow or deny elements they put in the kernel, and no DNS query was refused
for a deny name, in any container of that policy that ended within --since.
When a container ends, the verdict service records every element's counters
(the "disengaged" record); this reads them back, so it judges containers
that are long gone. The records are root's (_UID 0): run it with sudo, or as
a member of the systemd-journal group. Counters exist in the built-in
ruleset mode only (terok-shield's sets do not count).`)
	since := fs.String("since", "30d", "only containers that ended after `TIME` (as for log)")
	file := fs.String("file", "", "judge this policy `FILE` (its includes are looked up beside it, then in the policy path) instead of NAME's installed files")
	all := fs.Bool("all", false, "list every entry with what it matched, not only the stale ones")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := r.parse(fs, args)
	if err != nil {
		return parseExit(err)
	}
	if len(pos) != 1 {
		return r.usageErr(fs, "policy stale needs the policy NAME")
	}
	name := pos[0]
	if !policy.ValidName(name) {
		return r.usageErr(fs, "%q is not a policy name", clean(name))
	}
	p, err := r.loadPolicy(name, *file)
	if err != nil {
		return r.fail(ExitFailure, "%s", cleanLong(err.Error()))
	}
	out, err := r.journal(ctx, staleArgs(name, *since))
	if errors.Is(err, errNoJournalctl) {
		return r.fail(ExitFailure, "journalctl not found: the counters are in the systemd journal, which this host cannot read")
	}
	if err != nil {
		return r.fail(ExitFailure, "read the journal: %s", cleanLong(err.Error()))
	}
	records, bad := parseStaleRecords(out)
	if bad > 0 {
		fmt.Fprintf(r.stderr, "clearancectl: skipped %d unreadable journal line(s) or counter line(s)\n", bad)
	}
	entries, containers, incomplete := judgeStale(p, records)
	if *asJSON {
		if entries == nil {
			entries = []staleEntry{}
		}
		if err := writeJSON(r.stdout, staleReport{Policy: name, Since: *since, Containers: containers,
			Incomplete: incomplete, Entries: entries}); err != nil {
			return r.fail(ExitFailure, "%v", err)
		}
		return ExitOK
	}
	if containers == 0 {
		fmt.Fprintf(r.stdout, "no container of policy %s ended since %s: nothing to judge "+
			"(the counters are root's records: sudo, or the systemd-journal group)\n", clean(name), clean(*since))
		return ExitOK
	}
	fmt.Fprintf(r.stdout, "policy %s: %d container(s) ended since %s\n", clean(name), containers, clean(*since))
	if incomplete > 0 {
		fmt.Fprintf(r.stdout, "note: %d of them left incomplete counters; an entry used only there may show as stale\n", incomplete)
	}
	t := &table{head: []string{"", "LIST", "ENTRY", "USED IN", "HITS", "SOURCE"}}
	stale := 0
	for _, e := range entries {
		if e.Stale {
			stale++
		} else if !*all {
			continue
		}
		mark, hits := "", hitsText(int64(e.Packets), int64(e.Bytes))
		if e.Stale {
			mark = r.paint(colYellow, "stale")
		}
		if e.Denied > 0 {
			hits = strconv.Itoa(e.Denied) + " queries refused"
		}
		t.add(mark, clean(e.List), clean(e.Entry), strconv.Itoa(e.Containers)+"/"+strconv.Itoa(containers), hits, clean(e.Source))
	}
	if stale == 0 && !*all {
		fmt.Fprintf(r.stdout, "every entry of %s was used\n", clean(name))
		return ExitOK
	}
	t.write(r.stdout, r)
	return ExitOK
}

// loadPolicy loads policy name as a container of this user would start
// with it (the layered files of the configured policy path, and the
// user's layer when it is readable), or the policy in file.
func (r *runner) loadPolicy(name, file string) (*policy.Policy, error) {
	path := policy.DefaultPath()
	dir := policy.DefaultDir
	if cfg, err := config.Load(config.DefaultPaths()...); err == nil {
		dir = cfg.Ruleset.PolicyDir
		path = append([]string{dir}, cfg.Ruleset.PolicyPath...)
	} else {
		fmt.Fprintf(r.stderr, "clearancectl: configuration: %s; using the default policy path\n", cleanLong(err.Error()))
	}
	if file != "" {
		if strings.TrimSuffix(filepath.Base(file), ".yaml") != name {
			return nil, fmt.Errorf("--file %s is not policy %s (a policy's file is <name>.yaml)", file, name)
		}
		if _, err := os.Stat(file); err != nil {
			return nil, err
		}
		return policy.LoadLayered(append([]string{filepath.Dir(file)}, path...), "", name)
	}
	userDir := ""
	if uid := os.Getuid(); uid != 0 {
		userDir = filepath.Join(dir, "uid-"+strconv.Itoa(uid))
		if _, err := os.ReadDir(userDir); errors.Is(err, fs.ErrPermission) {
			fmt.Fprintf(r.stderr, "clearancectl: cannot read your policy layer %s (root's); judging the system layer only\n", userDir)
			userDir = ""
		}
	}
	return policy.LoadLayered(path, userDir, name)
}

// staleArgs are journalctl's arguments for policy stale.
func staleArgs(name, since string) []string {
	args := []string{"-o", "json", "--no-pager", "-q", "--output-fields=" + strings.Join(staleFields, ",")}
	if since != "" {
		if relativeRE.MatchString(since) {
			since = "-" + since
		}
		args = append(args, "--since="+since)
	}
	return append(args, "MESSAGE_ID="+audit.MsgDisengaged, "MESSAGE_ID="+audit.MsgDenied, audit.FieldPolicy+"="+name)
}

// parseStaleRecords parses journalctl's JSON output for policy stale.
func parseStaleRecords(out []byte) ([]staleRecord, int) {
	raw, bad := parseJournalFields(out, staleFields)
	var records []staleRecord
	for _, m := range raw {
		r := staleRecord{messageID: m["MESSAGE_ID"], container: m["CLEARANCE_CONTAINER"], domain: m[audit.FieldDomain], complete: true}
		if r.messageID == audit.MsgDisengaged {
			var n int
			r.counters, r.complete, n = parseCounters(m[audit.FieldCounters])
			bad += n
			if strings.HasPrefix(m[audit.FieldReason], "counters not read") {
				r.complete = false
			}
		}
		records = append(records, r)
	}
	return records, bad
}

// parseJournalFields parses journalctl -o json output into one map of
// the given fields per record; lines that are not JSON objects are
// skipped and counted.
func parseJournalFields(out []byte, fields []string) ([]map[string]string, int) {
	var records []map[string]string
	bad := journalLines(out, func(m *map[string]json.RawMessage) {
		r := make(map[string]string, len(fields))
		for _, f := range fields {
			r[f] = journalValue((*m)[f])
		}
		records = append(records, r)
	})
	return records, bad
}
