// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/policy"
)

// journalLine renders one audit record as journalctl -o json does.
func journalLine(usec int64, msgID, container, dest, domain string, port int, proto, action string) string {
	b, _ := json.Marshal(map[string]string{
		"__REALTIME_TIMESTAMP": fmt.Sprint(usec), "MESSAGE_ID": msgID, "CLEARANCE_CONTAINER": container,
		"CLEARANCE_DEST": dest, "CLEARANCE_DOMAIN": domain, "CLEARANCE_PORT": fmt.Sprint(port),
		"CLEARANCE_PROTO": proto, "CLEARANCE_ACTION": action, "CLEARANCE_PROJECT": "webshop",
	})
	return string(b)
}

func TestPolicyPropose(t *testing.T) {
	const s = int64(1_800_000_000_000_000)
	lines := []string{
		// run c1
		journalLine(s+1, hub.MsgBlocked, "c1", "140.82.112.3", "github.com", 443, "TCP", ""),
		journalLine(s+2, hub.MsgVerdict, "c1", "140.82.112.3", "github.com", 443, "TCP", "allow"),
		journalLine(s+3, hub.MsgLearned, "c1", "151.101.0.223", "pypi.org", 443, "TCP", "allow"),
		journalLine(s+4, hub.MsgBlocked, "c1", "203.0.113.9", "", 25, "TCP", ""),
		journalLine(s+5, hub.MsgBlocked, "c1", "198.51.100.7", "tracker.example", 443, "TCP", ""),
		// run c2
		journalLine(s+10, hub.MsgBlocked, "c2", "140.82.112.4", "github.com", 443, "TCP", ""),
		journalLine(s+11, hub.MsgLearned, "c2", "151.101.64.223", "pypi.org", 443, "TCP", "allow"),
		journalLine(s+12, hub.MsgDenied, "c2", "", "tracker.example", 0, "", "deny"),
		journalLine(s+13, hub.MsgVerdict, "c2", "198.51.100.8", "tracker.example", 443, "TCP", "deny"),
		// run c3
		journalLine(s+20, hub.MsgLearned, "c3", "151.101.0.223", "pypi.org", 443, "TCP", "allow"),
		journalLine(s+21, hub.MsgBlocked, "c3", "2001:db8::5", "", 53, "UDP", ""),
		"not json",
	}
	var gotArgs []string
	with := func(r *runner) {
		r.journal = func(ctx context.Context, args []string) ([]byte, error) {
			gotArgs = args
			return []byte(strings.Join(lines, "\n")), nil
		}
	}
	res := runWith(t, with, "", "policy", "propose", "--project", "webshop", "--json")
	if res.code != ExitOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	if !strings.Contains(strings.Join(gotArgs, " "), "CLEARANCE_PROJECT=webshop") {
		t.Errorf("journalctl args %v", gotArgs)
	}
	var props []proposal
	if err := json.Unmarshal([]byte(res.stdout), &props); err != nil {
		t.Fatal(err)
	}
	type row struct {
		List, Dest  string
		Count, Runs int
		Addrs       string
	}
	var got []row
	for _, p := range props {
		got = append(got, row{p.List, p.Dest, p.Count, p.Runs, strings.Join(p.Addresses, ",")})
	}
	want := []row{
		{"deny", "tracker.example", 1, 1, ""},
		{"deny", "tracker.example:443/tcp", 2, 2, "198.51.100.7,198.51.100.8"},
		{"allow", "203.0.113.9:25/tcp", 1, 1, "203.0.113.9"},
		{"allow", "[2001:db8::5]:53/udp", 1, 1, "2001:db8::5"},
		{"allow", "github.com:443/tcp", 3, 2, "140.82.112.3,140.82.112.4"},
		{"allow", "pypi.org:443/tcp", 3, 3, "151.101.0.223,151.101.64.223"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("proposals (-want +got):\n%s", diff)
	}
	if !strings.Contains(res.stderr, "skipped 1 unreadable") {
		t.Errorf("stderr %q", res.stderr)
	}

	// --stable 2: only what the last two runs (c2, c3) both saw.
	res = runWith(t, with, "", "policy", "propose", "--project", "webshop", "--stable", "2", "--json")
	props = nil
	json.Unmarshal([]byte(res.stdout), &props)
	if len(props) != 1 || props[0].Dest != "pypi.org:443/tcp" || !props[0].Stable {
		t.Errorf("--stable 2 = %+v", props)
	}
	// --runs 1: the last run only.
	res = runWith(t, with, "", "policy", "propose", "--project", "webshop", "--runs", "1", "--json")
	props = nil
	json.Unmarshal([]byte(res.stdout), &props)
	if len(props) != 2 {
		t.Errorf("--runs 1 = %+v", props)
	}

	// The YAML is a policy file, the same on every run.
	res = runWith(t, with, "", "policy", "propose", "--project", "webshop")
	again := runWith(t, with, "", "policy", "propose", "--project", "webshop")
	if res.stdout != again.stdout {
		t.Error("two proposals from the same records differ")
	}
	pol, err := policy.Parse("proposed.yaml", []byte(res.stdout))
	if err != nil {
		t.Fatalf("the proposal is not a valid policy: %v\n%s", err, res.stdout)
	}
	if len(pol.Allow) != 4 || len(pol.Deny) != 2 || !strings.Contains(res.stdout, "seen 3× in 3 run(s)") {
		t.Errorf("proposal:\n%s", res.stdout)
	}

	for _, bad := range [][]string{{"policy", "propose"}, {"policy", "propose", "--project", "a", "--policy", "b"},
		{"policy", "propose", "--project", "a", "--runs", "-1"}} {
		if res := runWith(t, with, "", bad...); res.code != ExitUsage {
			t.Errorf("%v: exit %d, want usage", bad, res.code)
		}
	}
}

// BenchmarkPropose10k measures a proposal from 10 000 audit records
// (50 runs, 200 destinations), parsing included (propose_ms_10k_records).
func BenchmarkPropose10k(b *testing.B) {
	var lines []string
	for i := 0; i < 10000; i++ {
		c := fmt.Sprintf("c%02d", i%50)
		d := fmt.Sprintf("host%d.example", i%200)
		lines = append(lines, journalLine(int64(1_800_000_000_000_000+i), hub.MsgBlocked, c,
			fmt.Sprintf("192.0.2.%d", i%250), d, 443, "TCP", ""))
	}
	out := []byte(strings.Join(lines, "\n"))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		records, _ := parseJournal(out)
		props, runs := propose(records, proposeQuery{project: "webshop"})
		if _, err := proposalYAML(props, proposeQuery{project: "webshop"}, runs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "propose_ms_10k_records")
}
