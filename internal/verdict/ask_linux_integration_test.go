// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict_test

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/verdict"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// TestIntegrationAsk: Ask hands out listening sockets on 127.0.0.1 and
// ::1 at the configured port inside the container's namespace; a
// connection from the container reaches them, one from the host does
// not exist; a second Ask while the first sockets are open fails with
// FirewallFailed naming the taken port; ask.port 0 turns it off.
func TestIntegrationAsk(t *testing.T) {
	ctr := startContainer(t)
	const port = 25452
	e := startServiceWith(t, "", func(c *verdict.Config) { c.AskPort = port })
	writeRecord(t, e.root, 0, ctr.rec("a5a5a5000001"))
	ctx := testutil.Context(t)
	c := e.dial(t)
	const id = "a5a5a5000001"

	a, err := c.Ask(ctx, id, nil)
	if err != nil {
		t.Fatalf("Ask: %v", err)
	}
	defer a.Close()
	if a.Port != port {
		t.Errorf("port %d, want %d", a.Port, port)
	}
	var names []string
	for n, f := range a.Sockets {
		names = append(names, n)
		if ns := socketNetns(t, f); ns != ctr.id.Ino {
			t.Errorf("%s: in netns %d, want the container's %d", n, ns, ctr.id.Ino)
		}
	}
	slices.Sort(names)
	if want := []string{verdict.SockAsk4, verdict.SockAsk6}; !slices.Equal(names, want) {
		t.Errorf("sockets %v, want %v", names, want)
	}
	ln, err := net.FileListener(a.Sockets[verdict.SockAsk4])
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- err.Error()
			return
		}
		defer c.Close()
		b := make([]byte, 5)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := c.Read(b)
		accepted <- string(b[:n])
	}()
	ns := ctr.nsFile(t)
	err = netns.Do(int(ns.Fd()), func() error {
		c, err := net.DialTimeout("tcp4", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello"))
		return err
	})
	if err != nil {
		t.Fatalf("connect from the container: %v", err)
	}
	select {
	case got := <-accepted:
		if got != "hello" {
			t.Errorf("accepted %q, want hello", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the ask socket accepted nothing")
	}

	// The port is the endpoint's while its sockets are open.
	if _, err := c.Ask(ctx, id, nil); errName(err) != "FirewallFailed" || !strings.Contains(err.Error(), "taken") {
		t.Errorf("second Ask = %v, want FirewallFailed (port taken)", err)
	}

	// Turned off.
	e2 := startServiceWith(t, "", func(c *verdict.Config) { c.AskPort = 0 })
	writeRecord(t, e2.root, 0, ctr.rec("a5a5a5000002"))
	if _, err := e2.dial(t).Ask(ctx, "a5a5a5000002", nil); errName(err) != "FirewallFailed" || !strings.Contains(err.Error(), "ask.port: 0") {
		t.Errorf("Ask with ask.port 0 = %v, want FirewallFailed naming ask.port", err)
	}
}

// TestIntegrationObserveEngage: a record asking for observe mode gets an
// observe-mode ruleset only where the configuration allows the owner
// (by uid or name) or the project; otherwise Engage enforces and says
// why. Switching the configuration and engaging again switches the
// ruleset.
func TestIntegrationObserveEngage(t *testing.T) {
	ctr := startContainer(t)
	tests := []struct {
		name    string
		policy  verdict.ObservePolicy
		mode    string
		project string
		want    string
		note    string
	}{
		{name: "no record mode", policy: verdict.ObservePolicy{Users: []string{"0"}}, want: "enforce"},
		{name: "not allowed", mode: record.ModeObserve, want: "enforce", note: "observe mode is not allowed for uid 0"},
		{name: "allowed by uid", policy: verdict.ObservePolicy{Users: []string{"1000", "0"}}, mode: record.ModeObserve, want: "observe"},
		{name: "allowed by name", policy: verdict.ObservePolicy{Users: []string{"root"}}, mode: record.ModeObserve, want: "observe"},
		{name: "allowed by project", policy: verdict.ObservePolicy{Projects: []string{"learn"}}, mode: record.ModeObserve,
			project: "learn", want: "observe"},
		{name: "another project", policy: verdict.ObservePolicy{Projects: []string{"learn"}}, mode: record.ModeObserve,
			project: "other", want: "enforce", note: `project "other"`},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startServiceWith(t, filepath.Join(dir, strconv.Itoa(i)), func(c *verdict.Config) { c.Observe = tt.policy })
			rec := ctr.rec("0b5e00000001")
			rec.Mode = tt.mode
			if tt.project != "" {
				rec.Dossier = map[string]string{"project": tt.project}
			}
			writeRecord(t, e.root, 0, rec)
			c := e.dial(t)
			got, err := c.EngageMode(testutil.Context(t), rec.ID12, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got.Mode != tt.want || !strings.Contains(got.ModeNote, tt.note) || (tt.note == "" && got.ModeNote != "") {
				t.Errorf("Engage = mode %q note %q, want %q with a note containing %q", got.Mode, got.ModeNote, tt.want, tt.note)
			}
			x, err := c.Explain(testutil.Context(t), rec.ID12, peerAddr.String(), 443, "tcp", nil)
			if err != nil {
				t.Fatal(err)
			}
			wantReason := string(nft.ReasonBlocked)
			if tt.want == "observe" {
				wantReason = string(nft.ReasonObserved)
			}
			if x.Reason != wantReason {
				t.Errorf("Explain = %s, want %s", x.Reason, wantReason)
			}
		})
	}
}

// TestIntegrationNameOnlyApply: a verdict on a name with no address adds
// no element, expires like one, and "always" writes the name with its
// port to the policy; without a name an empty ip stays invalid.
func TestIntegrationNameOnlyApply(t *testing.T) {
	ctr := startContainer(t)
	e := startService(t, "")
	writeRecord(t, e.root, 0, ctr.rec("4a3e00000001"))
	ctx := testutil.Context(t)
	c := e.dial(t)
	const id = "4a3e00000001"
	if _, _, err := c.Engage(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	before, err := c.List(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Apply(ctx, verdictclient.ApplyRequest{Container: id, Action: "allow", Scope: "once", TTL: time.Minute,
		Proto: "tcp", Port: 443, Name: "api.example.com"}, nil)
	if err != nil || !res.OK {
		t.Fatalf("Apply on a name alone = %+v, %v", res, err)
	}
	if d := time.Until(res.Expires); d < 50*time.Second || d > 61*time.Second {
		t.Errorf("expires in %v, want about a minute", d)
	}
	after, err := c.List(ctx, id, nil)
	if err != nil || len(after) != len(before) {
		t.Errorf("elements %d → %d (%v): a name alone adds none", len(before), len(after), err)
	}
	res, err = c.Apply(ctx, verdictclient.ApplyRequest{Container: id, Action: "allow", Scope: "always",
		Proto: "tcp", Port: 443, Name: "api.example.com"}, nil)
	if err != nil || !res.OK {
		t.Fatalf("Apply always on a name alone = %+v, %v", res, err)
	}
	b, err := os.ReadFile(filepath.Join(e.policyDir, "testpolicy.yaml"))
	if err != nil || !strings.Contains(string(b), "api.example.com:443/tcp") {
		t.Errorf("policy after always = %q, %v; want the name with its port", b, err)
	}
	if _, err := c.Apply(ctx, verdictclient.ApplyRequest{Container: id, Action: "allow", Scope: "once"}, nil); errName(err) != "InvalidDestination" {
		t.Errorf("Apply without ip or name = %v, want InvalidDestination", err)
	}
}
