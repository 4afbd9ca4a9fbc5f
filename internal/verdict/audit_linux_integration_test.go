// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict_test

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/verdict"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// TestIntegrationKernelRecords (issue 10, item 3): the verdict service
// writes the authoritative record of every verdict it commits, with the
// hub's verdict id, whether or not the caller stays for the reply; an
// "always" verdict it cannot save is applied-not-saved, not failed.
func TestIntegrationKernelRecords(t *testing.T) {
	ctr := startContainer(t)
	log, rec := testutil.NewRecorder()
	e := startServiceWith(t, "", func(c *verdict.Config) { c.Log = log })
	writeRecord(t, e.root, 0, ctr.rec("a0d170000001"))
	ctx := testutil.Context(t)
	c := e.dial(t)
	for range 2 {
		if _, _, err := c.Engage(ctx, "a0d170000001", nil); err != nil {
			t.Fatal(err)
		}
	}
	kernel := func(id string) map[string]string {
		t.Helper()
		var got []testutil.Record
		testutil.Eventually(t, 10*time.Second, "condition", func() bool {
			got = rec.With(audit.FieldVerdictID, id)
			return len(got) > 0
		})
		if len(got) != 1 {
			t.Fatalf("%d records of verdict %s, want 1", len(got), id)
		}
		return got[0].Attrs
	}
	check := func(got map[string]string, want map[string]string) {
		t.Helper()
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %q, want %q", k, got[k], v)
			}
		}
	}

	res, err := c.Apply(ctx, verdictclient.ApplyRequest{Container: "a0d170000001", IP: "10.254.78.44", Action: "allow",
		Scope: "once", TTL: time.Hour, Proto: "tcp", Port: 443, VerdictID: "0123456789abcdef"}, nil)
	if err != nil || !res.OK || res.Outcome != audit.OutcomeApplied {
		t.Fatalf("apply = %+v, %v", res, err)
	}
	check(kernel("0123456789abcdef"), map[string]string{
		audit.FieldMessageID: audit.MsgVerdict, audit.FieldSide: audit.SideKernel, audit.FieldOutcome: audit.OutcomeApplied,
		audit.FieldContainer: "a0d170000001", audit.FieldContainerID: "a0d1700000010000", audit.FieldPolicy: "testpolicy",
		audit.FieldDest: "10.254.78.44", audit.FieldPort: "443", audit.FieldProto: "TCP", audit.FieldAction: "allow",
		audit.FieldScope: "once", audit.FieldOperatorUID: "0", audit.FieldChannel: "varlink",
	})

	// A connection the allow lets out (to a host on the container's own
	// test link, which nobody answers): the element counts it.
	ns := ctr.nsFile(t)
	netns.Do(int(ns.Fd()), func() error {
		if c, err := net.DialTimeout("tcp", "10.254.78.44:443", 300*time.Millisecond); err == nil {
			c.Close()
		}
		return nil
	})

	// The policy directory is gone: an "always" allow still holds for the
	// container, and says it was not saved.
	os.RemoveAll(e.policyDir)
	os.WriteFile(e.policyDir, []byte("not a directory"), 0o644)
	res, err = c.Apply(ctx, verdictclient.ApplyRequest{Container: "a0d170000001", IP: "192.0.2.45", Action: "allow",
		Scope: "always", VerdictID: "not-saved-1"}, nil)
	if err != nil || !res.OK || res.Outcome != audit.OutcomeNotSaved || !strings.Contains(res.Stderr, "not saved to policy") {
		t.Fatalf("always without a policy dir = %+v, %v; want ok, applied-not-saved", res, err)
	}
	check(kernel("not-saved-1"), map[string]string{audit.FieldMessageID: audit.MsgVerdict, audit.FieldOutcome: audit.OutcomeNotSaved})
	if ex, err := c.Explain(ctx, "a0d170000001", "192.0.2.45", 443, "tcp", nil); err != nil || ex.Verdict != "accept" {
		t.Errorf("the not-saved allow is not in the kernel: %+v, %v", ex, err)
	}

	// A caller that sends its verdict and goes: the record is written anyway.
	raw, err := net.Dial("unix", e.sock)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte(`{"method":"org.terok.ClearanceFirewall1.Apply","parameters":{"container":"a0d170000001","ip":"192.0.2.46",` +
		`"action":"allow","scope":"container","ttl_sec":0,"policy_target":"","verdict_id":"gone-caller"}}` + "\x00"))
	raw.Close()
	check(kernel("gone-caller"), map[string]string{audit.FieldOutcome: audit.OutcomeApplied, audit.FieldDest: "192.0.2.46"})

	// A verdict id that cannot go into a journal field as it is.
	_, err = c.Apply(ctx, verdictclient.ApplyRequest{Container: "a0d170000001", IP: "192.0.2.48", Action: "allow",
		Scope: "once", VerdictID: "a b\n"}, nil)
	var ip *varlink.InvalidParameter
	if !errors.As(err, &ip) || ip.Parameter != "verdict_id" {
		t.Errorf("bad verdict id err = %v, want InvalidParameter(verdict_id)", err)
	}

	// Disengage records what each element matched.
	if err := c.Disengage(ctx, "a0d170000001", nil); err != nil {
		t.Fatal(err)
	}
	dis := rec.With(audit.FieldMessageID, audit.MsgDisengaged)
	if len(dis) != 1 {
		t.Fatalf("%d disengaged records, want 1", len(dis))
	}
	check(dis[0].Attrs, map[string]string{audit.FieldContainerID: "a0d1700000010000", audit.FieldPolicy: "testpolicy"})
	counted := false
	for _, l := range strings.Split(dis[0].Attrs[audit.FieldCounters], "\n") {
		f := strings.Fields(l)
		if len(f) == 7 && f[0] == "allow" && f[1] == "10.254.78.44" && f[2] == "tcp" && f[3] == "443" && f[4] != "0" {
			counted = true
		}
	}
	if !counted {
		t.Errorf("counters lack the allow 10.254.78.44 tcp 443 with packets:\n%s", dis[0].Attrs[audit.FieldCounters])
	}
	if n := len(rec.With(audit.FieldMessageID, audit.MsgEngaged)); n != 1 {
		t.Errorf("%d engaged records, want 1 (the second Engage only verifies)", n)
	}

	// A verdict the firewall refuses (its table is gone) has its kernel
	// record too.
	res, err = c.Apply(ctx, verdictclient.ApplyRequest{Container: "a0d170000001", IP: "192.0.2.47", Action: "allow",
		Scope: "once", VerdictID: "refused-1"}, nil)
	if err != nil || res.OK || res.Outcome != audit.OutcomeRefused {
		t.Fatalf("apply without a table = %+v, %v; want refused", res, err)
	}
	check(kernel("refused-1"), map[string]string{audit.FieldMessageID: audit.MsgVerdictFailed, audit.FieldOutcome: audit.OutcomeRefused})
}
