// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/policy"
)

// journalLine renders one audit record as journalctl -o json does.
func journalLine(usec int64, msgID, container, dest, domain string, port int, proto, action string) string {
	b, _ := json.Marshal(map[string]string{
		"__REALTIME_TIMESTAMP": fmt.Sprint(usec), "MESSAGE_ID": msgID, "CLEARANCE_CONTAINER": container,
		"CLEARANCE_CONTAINER_ID": container + "-full", "CLEARANCE_DEST": dest, "CLEARANCE_DOMAIN": domain,
		"CLEARANCE_PORT": fmt.Sprint(port), "CLEARANCE_PROTO": proto, "CLEARANCE_ACTION": action,
		"CLEARANCE_PROJECT": "webshop",
	})
	return string(b)
}

// engagedLine is the verdict service's engaged record (no project: the
// service does not know it).
func engagedLine(usec int64, container string, now bool) string {
	b, _ := json.Marshal(map[string]string{
		"__REALTIME_TIMESTAMP": fmt.Sprint(usec), "MESSAGE_ID": audit.MsgEngaged, "CLEARANCE_CONTAINER": container,
		fieldEngagedNow: fmt.Sprint(now),
	})
	return string(b)
}

const t0 = int64(1_800_000_000_000_000)

// proposeLines are four runs: c1 (started, its hub restarted once), c2,
// c1 again (restarted container, same id), and c3, whose engaged record
// is not in the journal. An engaged record of an unrelated container is
// there too.
var proposeLines = []string{
	engagedLine(t0, "c1", true),
	journalLine(t0+1, audit.MsgBlocked, "c1", "140.82.112.3", "github.com", 443, "TCP", ""),
	journalLine(t0+2, audit.MsgVerdict, "c1", "140.82.112.3", "github.com", 443, "TCP", "allow"),
	engagedLine(t0+3, "c1", false), // the hub restarted: same run
	journalLine(t0+4, audit.MsgLearned, "c1", "151.101.0.223", "pypi.org", 443, "TCP", "allow"),
	journalLine(t0+5, audit.MsgBlocked, "c1", "203.0.113.9", "", 25, "TCP", ""),
	journalLine(t0+6, audit.MsgBlocked, "c1", "198.51.100.7", "tracker.example", 443, "TCP", ""),
	engagedLine(t0+7, "other", true),

	engagedLine(t0+10, "c2", true),
	journalLine(t0+11, audit.MsgBlocked, "c2", "140.82.112.4", "github.com", 443, "TCP", ""),
	journalLine(t0+12, audit.MsgLearned, "c2", "151.101.64.223", "pypi.org", 443, "TCP", "allow"),
	journalLine(t0+13, audit.MsgDenied, "c2", "", "tracker.example", 0, "", "deny"),
	journalLine(t0+14, audit.MsgVerdict, "c2", "198.51.100.8", "tracker.example", 443, "TCP", "deny"),

	engagedLine(t0+20, "c1", true), // c1 restarted: a new run
	journalLine(t0+21, audit.MsgLearned, "c1", "151.101.0.223", "pypi.org", 443, "TCP", "allow"),
	// An address-only record whose name this run learned.
	journalLine(t0+22, audit.MsgBlocked, "c1", "151.101.0.223", "", 443, "TCP", ""),

	journalLine(t0+30, audit.MsgLearned, "c3", "::ffff:151.101.0.223", "pypi.org", 443, "TCP", "allow"),
	journalLine(t0+31, audit.MsgBlocked, "c3", "2001:db8::5", "", 53, "UDP", ""),
	journalLine(t0+32, audit.MsgBlocked, "c3", "192.0.2.1", "bad..name", 443, "TCP", ""),
	journalLine(t0+33, audit.MsgBlocked, "c3", "140.82.112.3", "github.com", 443, "TCP", ""),
	// journalctl writes escapes, and values that are not plain text as
	// arrays of bytes.
	`{"__REALTIME_TIMESTAMP":"1800000000000034","MESSAGE_ID":"` + audit.MsgBlocked + `","CLEARANCE_CONTAINER":"c3",` +
		`"CLEARANCE_DOMAIN":"Git\u0048ub.com","CLEARANCE_DEST":[49,52,48,46,56,50,46,49,49,50,46,51],` +
		`"CLEARANCE_PORT":"443","CLEARANCE_PROTO":"TCP"}`,
	"not json",
}

func proposeWith(lines []string, gotArgs *[]string) func(*runner) {
	return func(r *runner) {
		r.journal = func(ctx context.Context, args []string) ([]byte, error) {
			if gotArgs != nil {
				*gotArgs = args
			}
			return []byte(strings.Join(lines, "\n")), nil
		}
	}
}

func proposeJSON(t *testing.T, args ...string) (proposeReport, ctlResult) {
	t.Helper()
	res := runWith(t, proposeWith(proposeLines, nil), "", append([]string{"policy", "propose", "--json"}, args...)...)
	if res.code != ExitOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	var rep proposeReport
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	return rep, res
}

func TestPolicyPropose(t *testing.T) {
	var gotArgs []string
	res := runWith(t, proposeWith(proposeLines, &gotArgs), "", "policy", "propose", "--project", "webshop", "--json")
	if res.code != ExitOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	if fieldEngagedNow != "CLEARANCE_ENGAGED_NOW" {
		t.Errorf("the engaged record's field is %s; journalRecord decodes CLEARANCE_ENGAGED_NOW", fieldEngagedNow)
	}
	args := strings.Join(gotArgs, " ")
	if !strings.Contains(args, "CLEARANCE_PROJECT=webshop + MESSAGE_ID="+audit.MsgEngaged) {
		t.Errorf("journalctl args %v: want the project's records, or engaged records", gotArgs)
	}
	var rep proposeReport
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatal(err)
	}

	type run struct {
		Container, ID string
		Start         int64
		Engaged       bool
		Records       int
	}
	var runs []run
	for _, r := range rep.Runs {
		runs = append(runs, run{r.Container, r.ContainerID, r.StartUsec - t0, r.Engaged, r.Records})
	}
	wantRuns := []run{
		{"c1", "c1-full", 0, true, 5},
		{"c2", "c2-full", 10, true, 4},
		{"c1", "c1-full", 20, true, 2},
		{"c3", "c3-full", 30, false, 5},
	}
	if diff := cmp.Diff(wantRuns, runs); diff != "" {
		t.Errorf("runs (-want +got):\n%s", diff)
	}

	type row struct {
		List, Dest  string
		Count, Runs int
		Seen, Addrs string
	}
	var got []row
	for _, p := range rep.Entries {
		var as []string
		for _, a := range p.Addresses {
			as = append(as, fmt.Sprintf("%s×%d@%d-%d", a.Address, a.Count, a.FirstUsec-t0, a.LastUsec-t0))
		}
		got = append(got, row{p.List, p.Dest, p.Count, p.Runs, strings.Join(p.SeenAs, ","), strings.Join(as, " ")})
	}
	want := []row{
		{"deny", "tracker.example", 1, 1, "denied", ""},
		{"deny", "tracker.example:443/tcp", 2, 2, "blocked,denied", "198.51.100.7×1@6-6 198.51.100.8×1@14-14"},
		{"allow", "203.0.113.9:25/tcp", 1, 1, "blocked", "203.0.113.9×1@5-5"},
		{"allow", "[2001:db8::5]:53/udp", 1, 1, "blocked", "2001:db8::5×1@31-31"},
		{"allow", "github.com:443/tcp", 5, 3, "blocked,allowed", "140.82.112.3×4@1-34 140.82.112.4×1@11-11"},
		// The address-only block of run 3 is grouped under the name
		// that run learned for it; ::ffff:… is the same IPv4 address.
		{"allow", "pypi.org:443/tcp", 5, 4, "blocked,learned", "151.101.0.223×4@4-30 151.101.64.223×1@12-12"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"bad..name (192.0.2.1)"}, rep.Omitted); diff != "" {
		t.Errorf("omitted (-want +got):\n%s", diff)
	}
	for _, s := range []string{"skipped 1 unreadable", "left out 1 destination(s)"} {
		if !strings.Contains(res.stderr, s) {
			t.Errorf("stderr %q lacks %q", res.stderr, s)
		}
	}
}

func TestPolicyProposeRunsAndStable(t *testing.T) {
	dests := func(rep proposeReport) []string {
		var out []string
		for _, p := range rep.Entries {
			out = append(out, p.Dest)
		}
		return out
	}
	// The last two runs (c1's second, c3) both saw pypi.org and, under
	// the name, nothing else.
	rep, _ := proposeJSON(t, "--project", "webshop", "--stable", "2")
	if diff := cmp.Diff([]string{"pypi.org:443/tcp"}, dests(rep)); diff != "" || !rep.Entries[0].Stable {
		t.Errorf("--stable 2 (-want +got):\n%s", diff)
	}
	// Every one of the four runs saw pypi.org.
	rep, _ = proposeJSON(t, "--project", "webshop", "--stable", "4")
	if diff := cmp.Diff([]string{"pypi.org:443/tcp"}, dests(rep)); diff != "" {
		t.Errorf("--stable 4 (-want +got):\n%s", diff)
	}
	// Five runs are not there: nothing is stable, and stderr says why.
	rep, res := proposeJSON(t, "--project", "webshop", "--stable", "5")
	if len(rep.Entries) != 0 || !strings.Contains(res.stderr, "the journal has 4") {
		t.Errorf("--stable 5: %v, stderr %q", dests(rep), res.stderr)
	}
	// --runs 1: the last run only (c3).
	rep, _ = proposeJSON(t, "--project", "webshop", "--runs", "1")
	if diff := cmp.Diff([]string{"[2001:db8::5]:53/udp", "github.com:443/tcp", "pypi.org:443/tcp"}, dests(rep)); diff != "" ||
		len(rep.Runs) != 1 || rep.Runs[0].Container != "c3" {
		t.Errorf("--runs 1: runs %+v (-want +got):\n%s", rep.Runs, diff)
	}
	// --runs 2 --stable 2: github.com is not in c1's second run.
	rep, _ = proposeJSON(t, "--project", "webshop", "--runs", "2", "--stable", "2")
	if diff := cmp.Diff([]string{"pypi.org:443/tcp"}, dests(rep)); diff != "" {
		t.Errorf("--runs 2 --stable 2 (-want +got):\n%s", diff)
	}
}

func TestPolicyProposeYAML(t *testing.T) {
	with := proposeWith(proposeLines, nil)
	res := runWith(t, with, "", "policy", "propose", "--project", "webshop")
	again := runWith(t, with, "", "policy", "propose", "--project", "webshop")
	if res.stdout != again.stdout {
		t.Error("two proposals from the same records differ")
	}
	// The same records in another order give the same proposal.
	shuffled := append([]string(nil), proposeLines...)
	for i, j := 0, len(shuffled)-1; i < j; i, j = i+1, j-1 {
		shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
	}
	if other := runWith(t, proposeWith(shuffled, nil), "", "policy", "propose", "--project", "webshop"); other.stdout != res.stdout {
		t.Errorf("the order of records changes the proposal:\n%s\n---\n%s", res.stdout, other.stdout)
	}
	// So do --json and --runs/--stable, under any order of the records.
	rng := rand.New(rand.NewPCG(1, 2))
	for _, args := range [][]string{
		{"--project", "webshop", "--json"},
		{"--project", "webshop", "--runs", "2", "--stable", "2"},
		{"--project", "webshop", "--runs", "3", "--stable", "2", "--json"},
	} {
		full := append([]string{"policy", "propose"}, args...)
		want := runWith(t, with, "", full...)
		for i := 0; i < 5; i++ {
			mixed := append([]string(nil), proposeLines...)
			rng.Shuffle(len(mixed), func(i, j int) { mixed[i], mixed[j] = mixed[j], mixed[i] })
			if got := runWith(t, proposeWith(mixed, nil), "", full...); got.stdout != want.stdout || got.code != want.code {
				t.Errorf("%v: shuffled records give another output:\n%s\n---\n%s", args, want.stdout, got.stdout)
				break
			}
		}
	}
	pol, err := policy.Parse("proposed.yaml", []byte(res.stdout))
	if err != nil {
		t.Fatalf("the proposal is not a valid policy: %v\n%s", err, res.stdout)
	}
	if len(pol.Allow) != 4 || len(pol.Deny) != 2 {
		t.Errorf("proposal:\n%s", res.stdout)
	}
	for _, s := range []string{
		"# Proposed by clearancectl policy propose for project webshop, from 4 run(s).",
		"blocked, learned; 5× in 4 of 4 run(s), 2027-01-15 08:00 … 2027-01-15 08:00; 151.101.0.223 (4×), 151.101.64.223 (1×)",
	} {
		if !strings.Contains(res.stdout, s) {
			t.Errorf("proposal lacks %q:\n%s", s, res.stdout)
		}
	}
}

func TestPolicyProposeUsage(t *testing.T) {
	with := proposeWith(proposeLines, nil)
	for _, bad := range [][]string{
		{"policy", "propose"},
		{"policy", "propose", "--project", "a", "--policy", "b"},
		{"policy", "propose", "--project", "a", "--runs", "-1"},
		{"policy", "propose", "--project", "a", "--runs", "2", "--stable", "3"},
		{"policy", "propose", "--project", "a", "--json", "--write", "p"},
		{"policy", "propose", "--project", "a", "--write", "../p"},
		{"policy", "propose", "--project", "a", "--replace"},
		{"policy", "propose", "--project", "a", "extra"},
	} {
		if res := runWith(t, with, "", bad...); res.code != ExitUsage {
			t.Errorf("%v: exit %d, want usage", bad, res.code)
		}
	}
	// A hostile selector never reaches the terminal raw.
	res := runWith(t, with, "", "policy", "propose", "--project", "a", "--write", "\x1b[2J")
	assertInert(t, "stderr", res.stderr)
}

// BenchmarkPropose10k measures a proposal from 10 000 audit records
// (50 runs, 200 destinations), parsing included (propose_ms_10k_records).
func BenchmarkPropose10k(b *testing.B) {
	var lines []string
	for c := 0; c < 50; c++ {
		lines = append(lines, engagedLine(t0+int64(c)*1000, fmt.Sprintf("c%02d", c), true))
	}
	for i := 0; i < 10000; i++ {
		c := i % 50
		d := fmt.Sprintf("host%d.example", i%200)
		lines = append(lines, journalLine(t0+int64(c)*1000+1+int64(i/50), audit.MsgBlocked, fmt.Sprintf("c%02d", c),
			fmt.Sprintf("192.0.2.%d", i%250), d, 443, "TCP", ""))
	}
	out := []byte(strings.Join(lines, "\n"))
	q := proposeQuery{project: "webshop", stable: 10}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		records, _ := parseProposeRecords(out)
		rep := propose(records, q)
		if _, err := proposalYAML(rep, q); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "propose_ms_10k_records")
}
