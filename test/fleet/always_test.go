// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package fleet

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/relay"
	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// verdictProc is a host's real clearance-verdict, bound to its own
// socket and policy directory.
type verdictProc struct {
	sock, policyDir string
}

// startVerdict runs h's verdict service. As root the caller's policy
// file is <policy-dir>/<name>.yaml.
func startVerdict(t *testing.T, h *host) *verdictProc {
	t.Helper()
	testutil.RequireRoot(t)
	v := &verdictProc{sock: filepath.Join(h.rt, "verdict.sock"), policyDir: filepath.Join(h.rt, "policy")}
	cfg := filepath.Join(h.rt, "verdict.yaml")
	os.WriteFile(cfg, nil, 0o600)
	cmd := exec.Command(bin(t, "clearance-verdict"), "--config", cfg, "--socket", v.sock, "--policy-dir", v.policyDir,
		"--runtime-root", filepath.Join(h.rt, "run"))
	logf, _ := os.Create(filepath.Join(h.rt, "verdict.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	if !testutil.Within(20*time.Second, func() bool { return testutil.Accepts(v.sock) }) {
		b, _ := os.ReadFile(filepath.Join(h.rt, "verdict.log"))
		t.Fatalf("verdict service did not come up: %s", b)
	}
	return v
}

func (v *verdictProc) policy(name string) string {
	b, _ := os.ReadFile(filepath.Join(v.policyDir, name+".yaml"))
	return string(b)
}

// waitPolicy waits until policy name's file contains every one of subs.
func (v *verdictProc) waitPolicy(t *testing.T, name string, timeout time.Duration, subs ...string) string {
	t.Helper()
	var p string
	if !testutil.Within(timeout, func() bool {
		p = v.policy(name)
		for _, s := range subs {
			if !strings.Contains(p, s) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("policy %s lacks %q after %v:\n%s", name, subs, timeout, p)
	}
	return p
}

// An "always" verdict given through NATS on alpha reaches beta's policy
// (the file beta's next container of that policy starts with); deny wins
// in the bucket and in a host's own file.
func TestRelayAlwaysAcrossHosts(t *testing.T) {
	s := fleetServer(t)
	alpha, beta := newHost(t), newHost(t)
	va, vb := startVerdict(t, alpha), startVerdict(t, beta)
	// beta's own policy already denies one destination.
	os.MkdirAll(vb.policyDir, 0o700)
	os.WriteFile(filepath.Join(vb.policyDir, "webapp.yaml"), []byte("deny:\n  - 203.0.113.70:443/tcp\n"), 0o600)

	writeRecord(t, alpha, "ctra00000013", "webapp")
	writeRecord(t, beta, "ctrb00000013", "webapp")
	a := alpha.startHub(t, "ctra00000013")
	b := beta.startHub(t, "ctrb00000013")
	ra := startRelay(t, alpha, "alpha", s.URL("relay-alpha"), "--verdict-socket", va.sock)
	rb := startRelay(t, beta, "beta", s.URL("relay-beta"), "--verdict-socket", vb.sock)
	ra.lines.waitFor(t, 20*time.Second, "NATS connected")
	rb.lines.waitFor(t, 20*time.Second, "NATS connected")
	alice := operator(t, s, "alice")
	w := watchFleet(t, alice)
	ctx := context.Background()
	decide := func(host, ctr, id, action string) relay.DecideReply {
		t.Helper()
		w.waitBlocked(t, 20*time.Second, func(b relay.Blocked) bool { return b.RequestID == id })
		rep, err := alice.Decide(ctx, host, ctr, relay.DecideRequest{RequestID: id, Action: action, Scope: "always"})
		if err != nil || !rep.OK {
			t.Fatalf("%s %s on %s: %v %+v", action, id, host, err, rep)
		}
		return rep
	}

	// allow always on alpha → beta's policy allows it.
	a.block(t, "ctra00000013", "al:1", "198.51.100.60", 443)
	decide("alpha", "ctra00000013", "al:1", "allow")
	p := vb.waitPolicy(t, "webapp", 20*time.Second, "198.51.100.60:443/tcp")
	if !strings.Contains(p, "fleet: nats.alice on alpha") {
		t.Errorf("adopted entry does not say where it came from:\n%s", p)
	}
	if strings.Contains(va.policy("webapp"), "198.51.100.60") {
		t.Errorf("alpha adopted its own verdict:\n%s", va.policy("webapp"))
	}
	// beta's next container of that policy starts with it: a real
	// container network namespace, engaged by a verdict service and hub
	// reading beta's policy directory, holds the element.
	if els := nextContainerElements(t, vb.policyDir, "webapp"); !hasElement(els, "allow", "198.51.100.60", 443) {
		t.Errorf("beta's next container lacks the adopted allow: %+v", els)
	}

	// An "always" given locally on alpha (clearancectl, as the notifier
	// would) is shared too, naming who gave it.
	a.block(t, "ctra00000013", "al:4", "198.51.100.62", 8443)
	w.waitBlocked(t, 20*time.Second, func(b relay.Blocked) bool { return b.RequestID == "al:4" })
	if res := ctl(t, alpha.rt, nil, "allow", "al:4", "--always"); res.code != 0 {
		t.Fatalf("local allow --always: %d %s", res.code, res.stderr)
	}
	p = vb.waitPolicy(t, "webapp", 20*time.Second, "198.51.100.62:8443/tcp")
	if !strings.Contains(p, "via clearancectl on alpha") {
		t.Errorf("a local always verdict adopted without who gave it:\n%s", p)
	}

	// deny always on alpha → beta denies it; a later allow always on beta
	// applies on beta (its hub's decision) but does not override the
	// fleet's deny.
	a.block(t, "ctra00000013", "al:2", "198.51.100.61", 443)
	decide("alpha", "ctra00000013", "al:2", "deny")
	vb.waitPolicy(t, "webapp", 20*time.Second, "198.51.100.61:443/tcp")
	b.block(t, "ctrb00000013", "bl:1", "198.51.100.61", 443)
	rep := decide("beta", "ctrb00000013", "bl:1", "allow")
	if !strings.Contains(rep.Message, "deny wins") {
		t.Errorf("allow over the fleet's deny: %+v", rep)
	}
	if !strings.Contains(beta.shieldLog(), "allow -- ctrb00000013 198.51.100.61") {
		t.Errorf("beta's hub did not apply the local allow: %q", beta.shieldLog())
	}
	// Audited once, not again for the hub's verdict_saved event.
	time.Sleep(500 * time.Millisecond)
	rb.lines.mu.Lock()
	kept := 0
	for _, l := range rb.lines.lines {
		if strings.Contains(l, "always verdict kept out") {
			kept++
		}
	}
	rb.lines.mu.Unlock()
	if kept != 1 {
		t.Errorf("beta's relay audited the kept-out allow %d times", kept)
	}

	// beta's own deny wins over alpha's allow: beta's file keeps it out.
	a.block(t, "ctra00000013", "al:3", "203.0.113.70", 443)
	decide("alpha", "ctra00000013", "al:3", "allow")
	rb.lines.waitFor(t, 20*time.Second, "not adopted", "deny wins")
	if pb := vb.policy("webapp"); strings.Count(pb, "203.0.113.70") != 1 || !strings.HasPrefix(pb, "deny:") {
		t.Errorf("beta's policy after the fleet's allow of its deny:\n%s", pb)
	}
}

// nextContainerElements starts a lab container (its own network
// namespace, a runtime record naming policy, a verdict service and a hub
// that engage its ruleset from policyDir) and returns its set elements.
func nextContainerElements(t *testing.T, policyDir, policy string) []fw1.Element {
	t.Helper()
	l := lab.New()
	t.Cleanup(l.Close)
	bin(t, "clearance-hub")
	s, err := l.NewStack(testutil.Context(t), lab.StackOptions{Bin: binaries.dir, ID: "nextctr00001", Policy: policy, PolicyDir: policyDir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := verdictclient.Dial(ctx, s.VerdictSock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	els, err := c.List(ctx, s.ID, s.Container.File)
	if err != nil {
		t.Fatalf("list: %v\n%s", err, s.Tail("verdict"))
	}
	return els
}

func hasElement(els []fw1.Element, list, dest string, port int64) bool {
	for _, e := range els {
		if e.List == list && strings.HasPrefix(e.Dest, dest) && (port == 0 || e.Port != nil && *e.Port == port) {
			return true
		}
	}
	return false
}

// Adopt refuses bad input with a typed error and writes nothing.
func TestVerdictAdoptRefusesBadInput(t *testing.T) {
	h := newHost(t)
	v := startVerdict(t, h)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		req  verdictclient.AdoptRequest
	}{
		{"policy escapes its directory", verdictclient.AdoptRequest{Policy: "../etc", Action: "allow", IP: "192.0.2.1"}},
		{"unknown action", verdictclient.AdoptRequest{Policy: "p", Action: "permit", IP: "192.0.2.1"}},
		{"neither address nor name", verdictclient.AdoptRequest{Policy: "p", Action: "allow", IP: "not-an-ip"}},
		{"bad name", verdictclient.AdoptRequest{Policy: "p", Action: "allow", Name: "a..b"}},
		{"port without protocol", verdictclient.AdoptRequest{Policy: "p", Action: "allow", IP: "192.0.2.1", Port: 443}},
		{"port out of range", verdictclient.AdoptRequest{Policy: "p", Action: "allow", IP: "192.0.2.1", Proto: "tcp", Port: 70000}},
		{"sctp (a policy has tcp and udp ports)", verdictclient.AdoptRequest{Policy: "p", Action: "allow", IP: "192.0.2.1", Proto: "sctp", Port: 443}},
		{"unknown protocol", verdictclient.AdoptRequest{Policy: "p", Action: "allow", IP: "192.0.2.1", Proto: "icmp", Port: 1}},
		{"control characters in the comment", verdictclient.AdoptRequest{Policy: "p", Action: "allow", IP: "192.0.2.1", Comment: "a\nb"}},
	} {
		vc, err := verdictclient.Dial(ctx, v.sock)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = vc.Adopt(ctx, c.req)
		vc.Close()
		if err == nil || !strings.Contains(err.Error(), "InvalidParameter") {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if entries, _ := os.ReadDir(v.policyDir); len(entries) != 0 {
		t.Errorf("bad input wrote %v", entries)
	}
	c, err := verdictclient.Dial(ctx, v.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ok, reason, err := c.Adopt(ctx, verdictclient.AdoptRequest{Policy: "p", Action: "allow", Name: "*.example.org", Proto: "tcp", Port: 443, Comment: "test"})
	if err != nil || !ok {
		t.Fatalf("good input: %v %v %s", err, ok, reason)
	}
	if p := v.policy("p"); !strings.Contains(p, "*.example.org:443/tcp") {
		t.Errorf("policy:\n%s", p)
	}
}
