// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package fleet

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/relay"
	"github.com/terok-ai/clearance/internal/testenv/natslab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// relayProc is one clearance-relay standing in for a host's.
type relayProc struct {
	cmd    *exec.Cmd
	lines  *lineReader
	exited chan struct{}
}

// startRelay runs clearance-relay for h as host name, connected to url.
func startRelay(t *testing.T, h *host, name, url string, extra ...string) *relayProc {
	t.Helper()
	args := append([]string{"--config", filepath.Join(h.rt, "clearance.yaml"), "--url", url, "--host", name}, extra...)
	cmd := exec.Command(bin(t, "clearance-relay"), args...)
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+h.rt, "CLEARANCE_LOG=stderr")
	errp, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &relayProc{cmd: cmd, lines: newLineReader(errp), exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-p.exited
		}
		time.Sleep(50 * time.Millisecond) // the last lines of stderr
		p.lines.mu.Lock()
		defer p.lines.mu.Unlock()
		for _, l := range p.lines.lines {
			if strings.Contains(l, "DATA RACE") || strings.HasPrefix(l, "panic:") {
				t.Errorf("clearance-relay %s:\n%s", name, strings.Join(p.lines.lines, "\n"))
				return
			}
		}
		if t.Failed() {
			t.Logf("clearance-relay %s's log:\n%s", name, strings.Join(p.lines.lines, "\n"))
		}
	})
	return p
}

// fleetWatch is an operator's subscription to every subject of the fleet.
type fleetWatch struct {
	mu      sync.Mutex
	blocked []relay.Blocked
	outcome []relay.Outcome
	ch      chan struct{}
}

func watchFleet(t *testing.T, o *relay.Operator) *fleetWatch {
	t.Helper()
	w := &fleetWatch{ch: make(chan struct{}, 1)}
	handle := func(m *nats.Msg) {
		w.mu.Lock()
		switch {
		case strings.HasSuffix(m.Subject, ".blocked"):
			var b relay.Blocked
			json.Unmarshal(m.Data, &b)
			w.blocked = append(w.blocked, b)
		case strings.HasSuffix(m.Subject, ".outcome"):
			var oc relay.Outcome
			json.Unmarshal(m.Data, &oc)
			w.outcome = append(w.outcome, oc)
		}
		w.mu.Unlock()
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
	for _, subj := range o.Subjects().View() {
		if _, err := o.Conn().Subscribe(subj, handle); err != nil {
			t.Fatal(err)
		}
	}
	o.Conn().Flush()
	return w
}

func (w *fleetWatch) waitBlocked(t *testing.T, timeout time.Duration, match func(relay.Blocked) bool) relay.Blocked {
	t.Helper()
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		for _, b := range w.blocked {
			if match(b) {
				w.mu.Unlock()
				return b
			}
		}
		w.mu.Unlock()
		select {
		case <-w.ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no matching blocked request after %v; got %+v", timeout, w.blocked)
		}
	}
}

func (w *fleetWatch) waitOutcome(t *testing.T, timeout time.Duration, requestID string) relay.Outcome {
	t.Helper()
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		for _, o := range w.outcome {
			if o.RequestID == requestID {
				w.mu.Unlock()
				return o
			}
		}
		w.mu.Unlock()
		select {
		case <-w.ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no outcome for %s after %v; got %+v", requestID, timeout, w.outcome)
		}
	}
}

func operator(t *testing.T, s *natslab.Server, name string) *relay.Operator {
	t.Helper()
	o, err := relay.DialOperator(s.URL(name), "", name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	return o
}

func fleetServer(t *testing.T) *natslab.Server {
	return natslab.Start(t, natslab.RelayUser("alpha"), natslab.RelayUser("beta"),
		natslab.OperatorUser("alice", "*"), natslab.OperatorUser("bob", "beta"))
}

func TestRelayFleet(t *testing.T) {
	s := fleetServer(t)
	alpha, beta := newHost(t), newHost(t)
	a := alpha.startHub(t, "ctra00000010")
	beta.startHub(t, "ctrb00000010")
	ra := startRelay(t, alpha, "alpha", s.URL("relay-alpha"), "--no-adopt")
	rb := startRelay(t, beta, "beta", s.URL("relay-beta"), "--no-adopt")
	ra.lines.waitFor(t, 20*time.Second, "NATS connected")
	rb.lines.waitFor(t, 20*time.Second, "NATS connected")

	alice, bob := operator(t, s, "alice"), operator(t, s, "bob")
	w := watchFleet(t, alice)
	ctx := context.Background()

	// A blocked request on alpha reaches the operator, named by host.
	a.block(t, "ctra00000010", "f:1", "198.51.100.30", 443)
	b := w.waitBlocked(t, 20*time.Second, func(b relay.Blocked) bool { return b.RequestID == "f:1" })
	if b.Host != "alpha" || b.Container != "ctra00000010" || b.Dest != "198.51.100.30" || b.Port != 443 || b.HubStarted == 0 {
		t.Fatalf("blocked: %+v", b)
	}
	pend, err := alice.Pending(ctx, time.Second)
	if err != nil || len(pend) != 1 || pend[0].RequestID != "f:1" {
		t.Fatalf("fleet pending: %v %+v", err, pend)
	}

	// bob may answer only for beta: NATS refuses, alpha applies nothing.
	_, err = bob.Decide(ctx, "alpha", "ctra00000010", relay.DecideRequest{RequestID: "f:1", Action: "allow", HubStarted: b.HubStarted})
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("bob on alpha: %v", err)
	}
	if log := alpha.shieldLog(); log != "" {
		t.Fatalf("alpha applied %q for bob", log)
	}

	// alice allows; a retry of the same verdict id gets the same answer
	// and applies nothing again.
	req := relay.DecideRequest{RequestID: "f:1", Action: "allow", HubStarted: b.HubStarted, VerdictID: "v-1"}
	rep, err := alice.Decide(ctx, "alpha", "ctra00000010", req)
	if err != nil || !rep.OK {
		t.Fatalf("alice allow: %v %+v", err, rep)
	}
	rep2, err := alice.Decide(ctx, "alpha", "ctra00000010", req)
	if err != nil || !rep2.OK {
		t.Fatalf("retried verdict: %v %+v", err, rep2)
	}
	if n := strings.Count(alpha.shieldLog(), "allow -- ctra00000010 198.51.100.30"); n != 1 {
		t.Fatalf("applied %d times: %q", n, alpha.shieldLog())
	}
	oc := w.waitOutcome(t, 20*time.Second, "f:1")
	if !oc.OK || oc.Action != "allow" || !strings.Contains(oc.By, "via nats.alice") {
		t.Errorf("outcome: %+v", oc)
	}

	// A second verdict (a new verdict id) loses and says who won.
	rep, err = alice.Decide(ctx, "alpha", "ctra00000010", relay.DecideRequest{RequestID: "f:1", Action: "deny"})
	if err != nil || rep.OK || rep.Error != relay.ErrAlreadyDecided || !strings.Contains(rep.Message, "via nats.alice") || rep.Action != "allow" {
		t.Fatalf("second verdict: %v %+v", err, rep)
	}

	// Bad input: a clear error, nothing applied.
	for _, c := range []struct {
		name      string
		container string
		req       relay.DecideRequest
		code      string
	}{
		{"unknown container", "ctra0000dead", relay.DecideRequest{RequestID: "x", Action: "allow"}, relay.ErrNoContainer},
		{"bad action", "ctra00000010", relay.DecideRequest{RequestID: "x", Action: "permit"}, relay.ErrInvalid},
		{"bad scope", "ctra00000010", relay.DecideRequest{RequestID: "x", Action: "allow", Scope: "forever"}, relay.ErrInvalid},
		{"unknown request", "ctra00000010", relay.DecideRequest{RequestID: "nope", Action: "allow"}, relay.ErrUnknownRequest},
	} {
		rep, err := alice.Decide(ctx, "alpha", c.container, c.req)
		if err != nil || rep.OK || rep.Error != c.code || rep.Message == "" {
			t.Errorf("%s: %v %+v", c.name, err, rep)
		}
	}
	if _, err := alice.Decide(ctx, "gamma", "ctrg00000010", relay.DecideRequest{RequestID: "x", Action: "allow"}); err == nil ||
		!strings.Contains(err.Error(), "no relay answers for host gamma") {
		t.Errorf("host without relay: %v", err)
	}
	if n := strings.Count(alpha.shieldLog(), "\n"); n != 1 {
		t.Errorf("alpha's firewall: %q", alpha.shieldLog())
	}
	if beta.shieldLog() != "" {
		t.Errorf("beta's firewall: %q", beta.shieldLog())
	}
}

// A verdict through NATS and one given locally race: the hub's first
// verdict wins, the loser is told who won, one verdict is applied.
func TestRelayFirstVerdictWinsAcrossChannels(t *testing.T) {
	s := fleetServer(t)
	alpha := newHost(t)
	a := alpha.startHub(t, "ctra00000011")
	ra := startRelay(t, alpha, "alpha", s.URL("relay-alpha"), "--no-adopt")
	ra.lines.waitFor(t, 20*time.Second, "NATS connected")
	alice := operator(t, s, "alice")
	w := watchFleet(t, alice)
	for i, id := range []string{"race:1", "race:2", "race:3"} {
		a.block(t, "ctra00000011", id, "198.51.100."+strconv.Itoa(40+i), 443)
		w.waitBlocked(t, 20*time.Second, func(b relay.Blocked) bool { return b.RequestID == id })
		var wg sync.WaitGroup
		var rep relay.DecideReply
		var nerr error
		var local ctlResult
		wg.Add(2)
		go func() {
			defer wg.Done()
			rep, nerr = alice.Decide(context.Background(), "alpha", "ctra00000011", relay.DecideRequest{RequestID: id, Action: "allow"})
		}()
		go func() {
			defer wg.Done()
			local = ctl(t, alpha.rt, nil, "deny", id)
		}()
		wg.Wait()
		if nerr != nil {
			t.Fatal(nerr)
		}
		natsWon, localWon := rep.OK, local.code == 0
		if natsWon == localWon {
			t.Fatalf("%s: nats %+v, local exit %d (%s%s)", id, rep, local.code, local.stdout, local.stderr)
		}
		if !natsWon && (rep.Error != relay.ErrAlreadyDecided || !strings.Contains(rep.By, "via clearancectl")) {
			t.Errorf("%s: nats lost without naming the winner: %+v", id, rep)
		}
		// clearancectl looks the request up first, so it may find it gone
		// rather than meet the hub's AlreadyDecided.
		if !localWon && !strings.Contains(local.stderr, "via nats.alice") && !strings.Contains(local.stderr, "not pending") {
			t.Errorf("%s: local lost without naming the winner: %s", id, local.stderr)
		}
	}
	if n := strings.Count(alpha.shieldLog(), "\n"); n != 3 {
		t.Errorf("want 3 verdicts applied, got %q", alpha.shieldLog())
	}

	// The same verdict sent three times at once (an operator retrying
	// across a partition): one apply, the same answer for all.
	a.block(t, "ctra00000011", "dup:1", "198.51.100.49", 443)
	w.waitBlocked(t, 20*time.Second, func(b relay.Blocked) bool { return b.RequestID == "dup:1" })
	var wg sync.WaitGroup
	reps := make([]relay.DecideReply, 3)
	errs := make([]error, 3)
	for i := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i], errs[i] = alice.Decide(context.Background(), "alpha", "ctra00000011",
				relay.DecideRequest{RequestID: "dup:1", Action: "allow", VerdictID: "dup-verdict"})
		}()
	}
	wg.Wait()
	for i := range reps {
		if errs[i] != nil || !reps[i].OK {
			t.Errorf("duplicate %d: %v %+v", i, errs[i], reps[i])
		}
	}
	if n := strings.Count(alpha.shieldLog(), "198.51.100.49"); n != 1 {
		t.Errorf("applied %d times: %q", n, alpha.shieldLog())
	}
}

// NATS down: local prompts keep working, the relay reconnects and
// publishes what is still pending; an operator answering a hub that
// restarted since gets a clear error.
func TestRelayFailures(t *testing.T) {
	s := fleetServer(t)
	alpha := newHost(t)
	a := alpha.startHub(t, "ctra00000012")
	ra := startRelay(t, alpha, "alpha", s.URL("relay-alpha"), "--no-adopt")
	ra.lines.waitFor(t, 20*time.Second, "NATS connected")

	s.Stop()
	ra.lines.waitFor(t, 20*time.Second, "NATS connection lost")
	a.block(t, "ctra00000012", "down:1", "198.51.100.50", 443)
	a.block(t, "ctra00000012", "down:2", "198.51.100.51", 443)
	// The local operator is unaffected.
	res := ctl(t, alpha.rt, nil, "allow", "down:1")
	if res.code != 0 {
		t.Fatalf("local allow with NATS down: %d %s", res.code, res.stderr)
	}
	s.Restart()
	ra.lines.waitFor(t, 30*time.Second, "NATS reconnected")
	alice := operator(t, s, "alice")
	pend, err := alice.Pending(context.Background(), time.Second)
	if err != nil || len(pend) != 1 || pend[0].RequestID != "down:2" {
		t.Fatalf("pending after reconnect: %v %+v", err, pend)
	}
	rep, err := alice.Decide(context.Background(), "alpha", "ctra00000012",
		relay.DecideRequest{RequestID: "down:2", Action: "deny", HubStarted: pend[0].HubStarted})
	if err != nil || !rep.OK {
		t.Fatalf("decide after reconnect: %v %+v", err, rep)
	}

	// The hub restarts (a crash without its fd store): the request the
	// operator saw is gone, and the answer says why.
	a.block(t, "ctra00000012", "gone:1", "198.51.100.52", 443)
	var seen relay.Blocked
	deadline := time.Now().Add(20 * time.Second)
	for seen.RequestID == "" && time.Now().Before(deadline) {
		pend, _ = alice.Pending(context.Background(), 300*time.Millisecond)
		for _, b := range pend {
			if b.RequestID == "gone:1" {
				seen = b
			}
		}
	}
	if seen.RequestID == "" {
		ra.lines.mu.Lock()
		log := strings.Join(ra.lines.lines, "\n")
		ra.lines.mu.Unlock()
		t.Fatalf("gone:1 never pending; the relay's log:\n%s", log)
	}
	a.kill()
	alpha.startHub(t, "ctra00000012")
	var rep3 relay.DecideReply
	for time.Now().Before(deadline.Add(20 * time.Second)) {
		rep3, err = alice.Decide(context.Background(), "alpha", "ctra00000012",
			relay.DecideRequest{RequestID: "gone:1", Action: "allow", HubStarted: seen.HubStarted})
		if err == nil && rep3.Error == relay.ErrRestarted {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || rep3.Error != relay.ErrRestarted || !strings.Contains(rep3.Message, "restarted") {
		t.Fatalf("answer to a restarted hub: %v %+v", err, rep3)
	}
	if strings.Contains(alpha.shieldLog(), "198.51.100.52") {
		t.Errorf("applied after restart: %q", alpha.shieldLog())
	}
}

// writeRecord gives host h's container id the runtime record the OCI hook
// would write, naming its policy.
func writeRecord(t *testing.T, h *host, id, policy string) {
	t.Helper()
	err := record.Write(filepath.Join(h.rt, "clearance", id), record.Record{ID: id + strings.Repeat("0", 52), ID12: id,
		PID: os.Getpid(), NetnsInode: 1, NetnsDev: 1, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
}

// The TLS keys of the configuration (nats.tls_ca, tls_cert, tls_key)
// reach both the relay and clearancectl --nats: against a server that
// requires TLS with client certificates, both work with them and fail
// clearly without.
func TestRelayOverMutualTLS(t *testing.T) {
	s := natslab.StartTLS(t, natslab.RelayUser("alpha"), natslab.OperatorUser("alice", "*"))
	alpha := newHost(t)
	cfg := filepath.Join(alpha.rt, "clearance.yaml")
	base, _ := os.ReadFile(cfg)
	tlsCfg := "nats:\n  tls_ca: " + s.CA + "\n  tls_cert: " + s.ClientCert + "\n  tls_key: " + s.ClientKey + "\n"
	os.WriteFile(cfg, append(base, tlsCfg...), 0o600)
	a := alpha.startHub(t, "ctra00000017")
	startRelay(t, alpha, "alpha", s.URL("relay-alpha"), "--no-adopt").lines.waitFor(t, 20*time.Second, "NATS connected", "tls://")
	a.block(t, "ctra00000017", "tls:1", "198.51.100.70", 443)

	op := testutil.ShortDir(t)
	opCfg := filepath.Join(op, "clearance.yaml")
	// "--nats -": the URL is the configuration's nats.url.
	os.WriteFile(opCfg, []byte(tlsCfg+"  url: "+s.URL("alice")+"\n"), 0o600)
	deadline := time.Now().Add(20 * time.Second)
	for {
		res := ctl(t, op, []string{"CLEARANCE_CONFIG=" + opCfg}, "--nats", "-", "--nats-operator", "alice", "pending")
		if res.code == 0 && strings.Contains(res.stdout, "tls:1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending over TLS: %d %s %s", res.code, res.stdout, res.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Without the client certificate the server refuses the operator.
	caOnly := filepath.Join(op, "ca-only.yaml")
	os.WriteFile(caOnly, []byte("nats:\n  tls_ca: "+s.CA+"\n"), 0o600)
	res := ctl(t, op, []string{"CLEARANCE_CONFIG=" + caOnly}, "--nats", s.URL("alice"), "--nats-operator", "alice", "pending")
	if res.code != 1 || !strings.Contains(res.stderr, "NATS") {
		t.Errorf("without a client certificate: %d %s", res.code, res.stderr)
	}
}

// Requests the hub decides along with another (same destination) leave
// the fleet's pending list too, though the hub sends no event for them.
func TestRelayPendingFollowsSupersededRequests(t *testing.T) {
	s := fleetServer(t)
	alpha := newHost(t)
	a := alpha.startHub(t, "ctra00000018")
	startRelay(t, alpha, "alpha", s.URL("relay-alpha"), "--no-adopt").lines.waitFor(t, 20*time.Second, "NATS connected")
	alice := operator(t, s, "alice")
	w := watchFleet(t, alice)
	a.block(t, "ctra00000018", "sup:1", "198.51.100.80", 443)
	a.block(t, "ctra00000018", "sup:2", "198.51.100.80", 8443)
	w.waitBlocked(t, 20*time.Second, func(b relay.Blocked) bool { return b.RequestID == "sup:2" })
	rep, err := alice.Decide(context.Background(), "alpha", "ctra00000018",
		relay.DecideRequest{RequestID: "sup:1", Action: "allow", AnyPort: true})
	if err != nil || !rep.OK {
		t.Fatalf("allow every port: %v %+v", err, rep)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		pend, err := alice.Pending(context.Background(), 300*time.Millisecond)
		if err == nil && len(pend) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still pending in the fleet: %v %+v", err, pend)
		}
	}
}
