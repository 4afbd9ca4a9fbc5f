// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/audit"
)

// disengagedLine renders a disengaged record as journalctl -o json does,
// its counters in the verdict service's format.
func disengagedLine(container, policyName string, counters ...string) string {
	b, _ := json.Marshal(map[string]string{"MESSAGE_ID": audit.MsgDisengaged, "CLEARANCE_CONTAINER": container,
		audit.FieldPolicy: policyName, audit.FieldCounters: strings.Join(counters, "\n") + "\n"})
	return string(b)
}

const stalePolicy = `allow:
  - pypi.org
  - "*.pythonhosted.org"
  - 192.0.2.0/24
  - 198.51.100.7:443/tcp
  - github.com
  - 2001:db8::/32
deny:
  - 203.0.113.0/24
  - evil.example
`

func TestPolicyStale(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "dev.yaml")
	if err := os.WriteFile(file, []byte(stalePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	denied, _ := json.Marshal(map[string]string{"MESSAGE_ID": audit.MsgDenied, "CLEARANCE_CONTAINER": "c2",
		audit.FieldPolicy: "dev", audit.FieldDomain: "Evil.Example."})
	lines := []string{
		disengagedLine("c1", "dev",
			"learned 151.101.0.223 tcp 443 10 5000 pypi.org",
			"allow 192.0.2.9 - - 3 180 -",
			"learned 140.82.112.3 tcp 443 0 0 github.com", // never matched: not a use
			"allow 198.51.100.7 udp 443 9 900 -",          // another protocol than the entry's
			"allow 2001:db8::5 tcp 443 1 80 -",
			"bogus line"),
		disengagedLine("c2", "dev",
			"learned 146.75.0.1 tcp 443 7 700 files.pythonhosted.org",
			"learned 146.75.0.2 tcp 443 2 200 pythonhosted.org", // the apex is not *.pythonhosted.org
			"deny 203.0.113.5 - - 0 0 -",
			"# 3 more elements not listed"),
		string(denied),
		"not json",
	}
	var gotArgs []string
	with := func(r *runner) {
		r.journal = func(_ context.Context, args []string) ([]byte, error) {
			gotArgs = args
			return []byte(strings.Join(lines, "\n")), nil
		}
	}
	res := runWith(t, with, "", "policy", "stale", "dev", "--file", file, "--since", "30d", "--json")
	if res.code != ExitOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	args := strings.Join(gotArgs, " ")
	for _, want := range []string{"--since=-30d", "MESSAGE_ID=" + audit.MsgDisengaged, "MESSAGE_ID=" + audit.MsgDenied, "CLEARANCE_POLICY=dev"} {
		if !strings.Contains(args, want) {
			t.Errorf("journalctl args %q lack %q", args, want)
		}
	}
	if !strings.Contains(res.stderr, "skipped 2 unreadable") {
		t.Errorf("stderr %q does not count the bad journal line and the bad counter line", res.stderr)
	}
	var rep staleReport
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Containers != 2 || rep.Incomplete != 1 {
		t.Errorf("containers %d incomplete %d, want 2 and 1", rep.Containers, rep.Incomplete)
	}
	type row struct {
		List, Entry     string
		Packets, Denied int
		Used            int
		Stale           bool
	}
	var got []row
	for _, e := range rep.Entries {
		got = append(got, row{e.List, e.Entry, int(e.Packets), e.Denied, e.Containers, e.Stale})
		if !strings.HasPrefix(e.Source, file+":") {
			t.Errorf("%s: source %q", e.Entry, e.Source)
		}
	}
	want := []row{
		{"allow", "198.51.100.7:443/tcp", 0, 0, 0, true},
		{"allow", "github.com", 0, 0, 0, true},
		{"deny", "203.0.113.0/24", 0, 0, 0, true},
		{"allow", "pypi.org", 10, 0, 1, false},
		{"allow", "*.pythonhosted.org", 7, 0, 1, false},
		{"allow", "192.0.2.0/24", 3, 0, 1, false},
		{"allow", "2001:db8::/32", 1, 0, 1, false},
		{"deny", "evil.example", 0, 1, 1, false},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}

	// The table lists the stale entries only, unless --all.
	res = runWith(t, with, "", "policy", "stale", "dev", "--file", file)
	if res.code != ExitOK || !strings.Contains(res.stdout, "2 container(s) ended") ||
		!strings.Contains(res.stdout, "github.com") || strings.Contains(res.stdout, "pypi.org") ||
		!strings.Contains(res.stdout, "incomplete counters") {
		t.Errorf("table:\n%s", res.stdout)
	}
	res = runWith(t, with, "", "policy", "stale", "dev", "--file", file, "--all")
	if !strings.Contains(res.stdout, "pypi.org") || !strings.Contains(res.stdout, "1 queries refused") {
		t.Errorf("--all table:\n%s", res.stdout)
	}
}

func TestPolicyStaleErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "dev.yaml")
	os.WriteFile(file, []byte(stalePolicy), 0o600)
	bad := filepath.Join(dir, "broken.yaml")
	os.WriteFile(bad, []byte("allow:\n  - not/a/name\n"), 0o600)
	none := func(r *runner) {
		r.journal = func(context.Context, []string) ([]byte, error) { return nil, nil }
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no name", []string{"policy", "stale"}, ExitUsage, "needs the policy NAME"},
		{"two names", []string{"policy", "stale", "a", "b"}, ExitUsage, "needs the policy NAME"},
		{"bad name", []string{"policy", "stale", "../etc"}, ExitUsage, "not a policy name"},
		{"file of another name", []string{"policy", "stale", "other", "--file", file}, ExitFailure, "is not policy other"},
		{"missing file", []string{"policy", "stale", "gone", "--file", filepath.Join(dir, "gone.yaml")}, ExitFailure, "no such file"},
		{"invalid policy", []string{"policy", "stale", "broken", "--file", bad}, ExitFailure, "broken.yaml:2"},
		{"nothing ended", []string{"policy", "stale", "dev", "--file", file}, ExitOK, "nothing to judge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runWith(t, none, "", tt.args...)
			if res.code != tt.code || !strings.Contains(res.stdout+res.stderr, tt.want) {
				t.Errorf("exit %d (want %d), output %q %q, want %q", res.code, tt.code, res.stdout, res.stderr, tt.want)
			}
		})
	}
}
