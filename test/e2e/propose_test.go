// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/policy"
	"github.com/terok-ai/clearance/internal/sd"
	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/testenv/managerlab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// TestProposeFromJournal runs three container lifetimes (real hub and
// verdict service, a real ruleset and DNS forwarder) logging to a real
// journald in a private mount namespace, then proposes a policy from
// their records with the built clearancectl, writes it through the
// verdict service, and starts a fourth container from it.
func TestProposeFromJournal(t *testing.T) {
	requireLab(t)
	testutil.RequireTool(t, "journalctl", "/lib/systemd/systemd-journald")
	managerlab.RunInner(t, "TestInnerProposeFromJournal", envBin+"="+binDir)
}

// TestInnerProposeFromJournal is TestProposeFromJournal's body, run only
// in the private mount namespace.
func TestInnerProposeFromJournal(t *testing.T) {
	if !managerlab.Inner(t.Name()) {
		return
	}
	run := managerlab.New(t)
	run.StartJournald(t)
	// The services' stderr is a log file here: send their records to
	// the journal (docs/audit.md).
	os.Setenv(sd.EnvLog, "journal")
	ctx := testutil.Context(t)

	policyDir := t.TempDir()
	const project = "lab" // the lab's runtime records carry dossier.project=lab
	opts := func(id string) lab.StackOptions {
		return lab.StackOptions{ID: id, Policy: "webshop", PolicyDir: policyDir,
			PolicyYAML: "allow:\n  - " + lab.TestDomain + ":" + strconv.Itoa(lab.EchoPort) + "/tcp\n"}
	}
	resolve := func(s *lab.Stack) {
		t.Helper()
		addrs, err := s.Container.Resolve(ctx, netip.AddrPortFrom(lab.HostAddr, 53), lab.TestDomain)
		if err != nil || len(addrs) != 1 || addrs[0] != lab.HostAddr {
			t.Fatalf("resolve %s in the container: %v %v", lab.TestDomain, addrs, err)
		}
	}
	// life runs one container lifetime: the name resolves (a learned
	// address), the allowed port passes; with blockOther, the other port
	// is blocked (a prompt, under the name) and allowed once when
	// allowOther. The lab is closed at the end: the container is gone.
	life := func(id string, blockOther, allowOther bool) {
		t.Helper()
		l := lab.New()
		defer l.Close()
		o := opts(id)
		o.Bin = binDir
		s, err := l.NewStack(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		st := subscribe(t, s)
		resolve(s)
		if err := s.Connect(ctx, lab.EchoPort, 5*time.Second); err != nil {
			t.Fatalf("%s: the policy's port: %v\nhub log:\n%s", id, err, s.Tail("hub"))
		}
		if !blockOther {
			return
		}
		if err := s.Connect(ctx, lab.OtherPort, 5*time.Second); err == nil {
			t.Fatalf("%s: port %d passed; want it blocked", id, lab.OtherPort)
		}
		ev := st.next("connection_blocked")
		if ev.Domain != lab.TestDomain {
			t.Fatalf("%s: blocked event %+v lacks the name", id, ev)
		}
		if allowOther {
			if _, _, err := orgterokclearancehub1.Decide().Call(ctx, st.rpc, ev.Request_id, "allow", "once", 0, nil, nil); err != nil {
				t.Fatal(err)
			}
			st.next("verdict_applied")
		}
	}
	life("webctr000001", true, true)
	life("webctr000002", true, false)
	life("webctr000001", false, false) // the first container, restarted: a new run

	ctl := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(filepath.Join(binDir, "clearancectl"), args...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		t.Logf("clearancectl %s → %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
		return out.String(), errb.String(), code
	}
	// Wait until journald has every run's last record.
	testutil.Eventually(t, 20*time.Second, "the records in the journal", func() bool {
		out := run.Journal(t, "-o", "cat", "MESSAGE_ID="+audit.MsgLearned)
		return strings.Count(out, "learned ") >= 3
	})

	type report struct {
		Runs []struct {
			Container string `json:"container"`
			Engaged   bool   `json:"engaged"`
			Records   int    `json:"records"`
		} `json:"runs"`
		Entries []struct {
			List      string   `json:"list"`
			Dest      string   `json:"dest"`
			Runs      int      `json:"runs"`
			Stable    bool     `json:"stable"`
			SeenAs    []string `json:"seen_as"`
			Addresses []struct {
				Address string `json:"address"`
			} `json:"addresses"`
		} `json:"entries"`
	}
	propose := func(args ...string) report {
		t.Helper()
		out, _, code := ctl(append([]string{"policy", "propose", "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("propose %v: exit %d", args, code)
		}
		var r report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	allowed := lab.TestDomain + ":" + strconv.Itoa(lab.EchoPort) + "/tcp"
	other := lab.TestDomain + ":" + strconv.Itoa(lab.OtherPort) + "/tcp"
	for _, sel := range [][]string{{"--policy", "webshop"}, {"--project", project}} {
		r := propose(sel...)
		if len(r.Runs) != 3 || r.Runs[0].Container != "webctr000001" || r.Runs[2].Container != "webctr000001" {
			t.Fatalf("%v: runs %+v, want three, the restarted container twice", sel, r.Runs)
		}
		for _, run := range r.Runs {
			if !run.Engaged {
				t.Errorf("%v: run %+v does not start at its engaged record", sel, run)
			}
		}
		got := map[string]string{}
		for _, e := range r.Entries {
			var as []string
			for _, a := range e.Addresses {
				as = append(as, a.Address)
			}
			got[e.Dest] = e.List + " " + strconv.Itoa(e.Runs) + " " + strings.Join(e.SeenAs, ",") + " " + strings.Join(as, ",")
		}
		want := map[string]string{
			allowed: "allow 3 learned " + lab.HostAddr.String(),
			other:   "allow 2 blocked,allowed " + lab.HostAddr.String(),
		}
		for d, w := range want {
			if got[d] != w {
				t.Errorf("%v: %s = %q, want %q (all: %v)", sel, d, got[d], w, got)
			}
		}
	}
	// Only the policy's own port appeared in each of the three runs.
	r := propose("--policy", "webshop", "--stable", "3")
	if len(r.Entries) != 1 || r.Entries[0].Dest != allowed || !r.Entries[0].Stable {
		t.Errorf("--stable 3: %+v", r.Entries)
	}
	// The first two runs are older than --runs 1.
	if r := propose("--policy", "webshop", "--runs", "1"); len(r.Runs) != 1 || len(r.Entries) != 1 {
		t.Errorf("--runs 1: %+v", r)
	}

	// Written through a verdict service, the proposal is the next
	// container's policy: the other port passes without a prompt.
	l := lab.New()
	t.Cleanup(l.Close)
	o := opts("webctr000004")
	o.Policy, o.PolicyYAML, o.Bin, o.NoHub = "webshop-next", "", binDir, true
	s, err := l.NewStack(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	out, _, code := ctl("policy", "propose", "--policy", "webshop", "--write", "webshop-next", "--socket", s.VerdictSock)
	path := filepath.Join(policyDir, "webshop-next.yaml")
	if code != 0 || !strings.Contains(out, "wrote "+path+": 2 allow, 0 deny entries from 3 run(s)") {
		t.Fatalf("--write: exit %d, %q", code, out)
	}
	written, err := policy.Load(policyDir, "webshop-next")
	if err != nil || len(written.Allow) != 2 {
		t.Fatalf("written policy: %+v %v", written, err)
	}
	if _, errOut, code := ctl("policy", "propose", "--policy", "webshop", "--write", "webshop-next", "--socket", s.VerdictSock); code != 1 ||
		!strings.Contains(errOut, "exists") || !strings.Contains(errOut, "--replace") {
		t.Errorf("a second --write: exit %d, %q", code, errOut)
	}
	if out, _, code := ctl("policy", "propose", "--policy", "webshop", "--stable", "3", "--write", "webshop-next", "--replace",
		"--socket", s.VerdictSock); code != 0 || !strings.HasPrefix(out, "replaced ") {
		t.Errorf("--replace: exit %d, %q", code, out)
	}
	if out, _, code := ctl("policy", "propose", "--policy", "webshop", "--write", "webshop-next", "--replace",
		"--socket", s.VerdictSock); code != 0 || !strings.HasPrefix(out, "replaced ") {
		t.Fatalf("--replace: exit %d, %q", code, out)
	}
	if err := s.StartHub(ctx, binDir); err != nil {
		t.Fatal(err)
	}
	resolve(s)
	if err := s.Connect(ctx, lab.OtherPort, 5*time.Second); err != nil {
		t.Errorf("port %d under the written policy: %v\nhub log:\n%s", lab.OtherPort, err, s.Tail("hub"))
	}
	if j := run.Journal(t, "-o", "cat", "MESSAGE_ID="+audit.MsgPolicyWritten); strings.Count(j, "policy webshop-next") != 3 {
		t.Errorf("the journal has %d policy-written records, want 3:\n%s", strings.Count(j, "policy webshop-next"), j)
	}
}
