// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package e2e holds clearance's end-to-end tests: the built binaries,
// a real kernel ruleset and NFLOG, in network namespaces the tests create.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

var binDir string

// envBin names the built binaries' directory for a re-executed inner
// test (managerlab.RunInner), which then builds nothing.
const envBin = "CLEARANCE_E2E_BIN"

func TestMain(m *testing.M) {
	if dir := os.Getenv(envBin); dir != "" {
		os.Setenv(testutil.EnvBin, dir) // the outer test's build
	}
	dir, err := testutil.Commands("clearance-hub", "clearance-verdict", "clearancectl")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := testutil.Main(m)
	testutil.RemoveCommands()
	os.Exit(code)
}

func requireLab(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "unshare", "nsenter", "ip")
}

func newStack(t *testing.T, o lab.StackOptions) *lab.Stack {
	t.Helper()
	l := lab.New()
	t.Cleanup(l.Close)
	o.Bin = binDir
	s, err := l.NewStack(testutil.Context(t), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hub log:\n%s\nverdict log:\n%s", s.Tail("hub"), s.Tail("verdict"))
		}
	})
	return s
}

type stream struct {
	t    *testing.T
	recv func(context.Context) (orgterokclearance1.ClearanceEvent, uint64, error)
	rpc  *varlink.Connection
}

func subscribe(t *testing.T, s *lab.Stack) *stream {
	t.Helper()
	ctx := testutil.Context(t)
	c, err := varlinkapi.Dial(ctx, s.HubSock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	recv, err := orgterokclearance1.Subscribe().Send(ctx, c, varlink.More)
	if err != nil {
		t.Fatal(err)
	}
	rpc, err := varlinkapi.Dial(ctx, s.HubSock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rpc.Close() })
	// Subscribe has no reply until the first event: make sure the hub
	// counts this subscriber before anything happens.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := orgterokclearancehub1.Stats().Call(ctx, rpc)
		if err != nil {
			t.Fatal(err)
		}
		if st.Ruleset != "engaged" {
			t.Fatalf("a hub that sent READY=1 reports ruleset %q", st.Ruleset)
		}
		if st.Subscribers >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hub counts %d subscribers 10 s after Subscribe", st.Subscribers)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return &stream{t: t, recv: recv, rpc: rpc}
}

// next returns the next event of the given type, skipping others.
func (s *stream) next(typ string) orgterokclearance1.ClearanceEvent {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		ev, _, err := s.recv(ctx)
		if err != nil {
			s.t.Fatalf("waiting for %s: %v", typ, err)
		}
		if ev.Type == typ {
			return ev
		}
	}
}

// blockedConnect connects from the container and expects it to be refused
// at once (the ruleset rejects with admin-prohibited).
func blockedConnect(t *testing.T, s *lab.Stack, port int) {
	t.Helper()
	err := s.Connect(context.Background(), port, 5*time.Second)
	if err == nil {
		t.Fatalf("connect to port %d passed; want it blocked", port)
	}
	t.Logf("blocked connect to %d: %v", port, err)
}

func TestBlockedConnectionPromptAllowRetry(t *testing.T) {
	requireLab(t)
	s := newStack(t, lab.StackOptions{})
	st := subscribe(t, s)

	blockedConnect(t, s, lab.EchoPort)
	ev := st.next("connection_blocked")
	if ev.Dest != lab.HostAddr.String() || ev.Port != lab.EchoPort || ev.Proto != 6 || ev.Container != s.ID {
		t.Fatalf("event = %+v", ev)
	}
	if ev.Request_id == "" || ev.Dossier["project"] != "lab" || ev.Dossier["name"] != "busy-agent" {
		t.Fatalf("event lacks request id or the record's dossier: %+v", ev)
	}
	target := ev.Domain
	if target == "" {
		target = ev.Dest
	}
	ok, err := orgterokclearance1.Verdict().Call(context.Background(), st.rpc, ev.Container, ev.Request_id, target, "allow")
	if err != nil || !ok {
		t.Fatalf("verdict: %v %v", ok, err)
	}
	applied := st.next("verdict_applied")
	if !applied.Ok || applied.Request_id != ev.Request_id {
		t.Fatalf("verdict_applied = %+v", applied)
	}
	if err := s.Connect(context.Background(), lab.EchoPort, 5*time.Second); err != nil {
		t.Fatalf("retry after allow: %v", err)
	}
}

func TestDenyDropsSilentlyAndStopsPrompting(t *testing.T) {
	requireLab(t)
	s := newStack(t, lab.StackOptions{})
	st := subscribe(t, s)

	blockedConnect(t, s, lab.OtherPort)
	ev := st.next("connection_blocked")
	ok, err := orgterokclearance1.Verdict().Call(context.Background(), st.rpc, ev.Container, ev.Request_id, ev.Dest, "deny")
	if err != nil || !ok {
		t.Fatalf("deny: %v %v", ok, err)
	}
	st.next("verdict_applied")
	// Dropped, not rejected: the connect times out instead of failing fast.
	err = s.Connect(context.Background(), lab.OtherPort, 500*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(fmt.Sprint(err), "timeout") {
		t.Fatalf("connect after deny = %v, want a timeout (silent drop)", err)
	}
	// No second prompt: the next event is the marker published afterwards.
	in, err := netDialUnix(s.IngestSock)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(in, `{"type":"shield_up","container":%q}`+"\n", s.ID)
	in.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	next, _, err := st.recv(ctx)
	if err != nil || next.Type != "shield_up" {
		t.Fatalf("after deny the next event is %+v (%v), want the shield_up marker", next, err)
	}
	if reqs, _ := orgterokclearancehub1.Pending().Call(context.Background(), st.rpc); len(reqs) != 0 {
		t.Fatalf("pending after deny: %+v", reqs)
	}
}

func TestOnceVerdictExpires(t *testing.T) {
	requireLab(t)
	s := newStack(t, lab.StackOptions{})
	st := subscribe(t, s)

	blockedConnect(t, s, lab.EchoPort)
	ev := st.next("connection_blocked")
	ok, exp, err := orgterokclearancehub1.Decide().Call(context.Background(), st.rpc, ev.Request_id, "allow", "once", 2, nil, nil)
	if err != nil || !ok || exp == 0 {
		t.Fatalf("decide once: %v %v %v", ok, exp, err)
	}
	if err := s.Connect(context.Background(), lab.EchoPort, 5*time.Second); err != nil {
		t.Fatalf("connect within the TTL: %v", err)
	}
	expired := st.next("verdict_expired")
	if expired.Dest != lab.HostAddr.String() {
		t.Fatalf("verdict_expired = %+v", expired)
	}
	if at := time.UnixMicro(exp); time.Now().Before(at) {
		t.Fatalf("expiry announced before %v", at)
	}
	blockedConnect(t, s, lab.EchoPort)
	if again := st.next("connection_blocked"); again.Port != lab.EchoPort {
		t.Fatalf("after expiry: %+v", again)
	}
}

func TestDomainFromDNSReplies(t *testing.T) {
	requireLab(t)
	s := newStack(t, lab.StackOptions{})
	st := subscribe(t, s)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := s.Container.Resolve(ctx, netip.AddrPortFrom(lab.HostAddr, 53), lab.TestDomain)
	if err != nil || len(addrs) != 1 || addrs[0] != lab.HostAddr {
		t.Fatalf("resolve through the allowed resolver: %v %v", addrs, err)
	}
	blockedConnect(t, s, lab.EchoPort)
	ev := st.next("connection_blocked")
	if ev.Domain != lab.TestDomain {
		t.Fatalf("domain = %q, want %q (event %+v)", ev.Domain, lab.TestDomain, ev)
	}
	// The verdict names the domain, as seed clients do.
	if _, err := orgterokclearance1.Verdict().Call(context.Background(), st.rpc, ev.Container, ev.Request_id, ev.Dest, "allow"); err == nil {
		t.Fatal("verdict naming the IP instead of the domain was accepted")
	}
	ok, err := orgterokclearance1.Verdict().Call(context.Background(), st.rpc, ev.Container, ev.Request_id, lab.TestDomain, "allow")
	if err != nil || !ok {
		t.Fatalf("verdict by domain: %v %v", ok, err)
	}
	if err := s.Connect(context.Background(), lab.EchoPort, 5*time.Second); err != nil {
		t.Fatalf("retry: %v", err)
	}
}

func TestAlwaysSurvivesANewNamespace(t *testing.T) {
	requireLab(t)
	policyDir := t.TempDir()
	s := newStack(t, lab.StackOptions{PolicyDir: policyDir, Policy: "proj"})
	st := subscribe(t, s)
	blockedConnect(t, s, lab.EchoPort)
	ev := st.next("connection_blocked")
	ok, _, err := orgterokclearancehub1.Decide().Call(context.Background(), st.rpc, ev.Request_id, "allow", "always", 0, nil, nil)
	if err != nil || !ok {
		t.Fatalf("decide always: %v %v", ok, err)
	}

	// A new container (new namespaces) of the same project starts allowed.
	s2 := newStack(t, lab.StackOptions{PolicyDir: policyDir, Policy: "proj", ID: "labctr000002"})
	if err := s2.Connect(context.Background(), lab.EchoPort, 5*time.Second); err != nil {
		t.Fatalf("new namespace from the same policy: %v", err)
	}
	// And only because of the policy: a fresh stack with another policy
	// name still blocks it.
	s3 := newStack(t, lab.StackOptions{PolicyDir: policyDir, Policy: "other", ID: "labctr000003"})
	blockedConnect(t, s3, lab.EchoPort)
}

func TestBlockedFloodCoalesces(t *testing.T) {
	requireLab(t)
	s := newStack(t, lab.StackOptions{})
	st := subscribe(t, s)
	for i := 0; i < 20; i++ {
		s.Connect(context.Background(), lab.EchoPort, time.Second)
	}
	st.next("connection_blocked")
	reqs, err := orgterokclearancehub1.Pending().Call(context.Background(), st.rpc)
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 1 || reqs[0].Count < 2 {
		t.Fatalf("pending after 20 blocked connects = %+v, want one request with a count", reqs)
	}
}

func netDialUnix(path string) (interface {
	Write([]byte) (int, error)
	Close() error
}, error) {
	return net.Dial("unix", path)
}

func TestRejectKinds(t *testing.T) {
	requireLab(t)
	for _, tt := range []struct {
		name  string
		reset bool
		want  syscall.Errno
	}{
		{"icmpx admin-prohibited (default)", false, syscall.EHOSTUNREACH},
		{"tcp reset", true, syscall.ECONNREFUSED},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, lab.StackOptions{TCPReset: tt.reset})
			st := subscribe(t, s)
			err := s.Connect(context.Background(), lab.EchoPort, 5*time.Second)
			if !errors.Is(err, tt.want) {
				t.Fatalf("connect = %v, want %v", err, tt.want)
			}
			if ev := st.next("connection_blocked"); ev.Port != lab.EchoPort {
				t.Fatalf("event = %+v", ev)
			}
			// UDP is refused with ICMP either way.
			if err := s.Container.SendUDP(netip.AddrPortFrom(lab.HostAddr, 9), []byte("x")); err != nil && !errors.Is(err, syscall.EPERM) {
				t.Fatalf("udp send: %v", err)
			}
			if ev := st.next("connection_blocked"); ev.Proto != 17 {
				t.Fatalf("udp event = %+v", ev)
			}
		})
	}
}

func TestClearancectlExplainAndPolicy(t *testing.T) {
	requireLab(t)
	s := newStack(t, lab.StackOptions{})
	st := subscribe(t, s)
	explain := func() string {
		t.Helper()
		out, err := exec.Command(filepath.Join(binDir, "clearancectl"), "explain", "--socket", s.VerdictSock, "--json",
			s.ID, fmt.Sprintf("%s:%d", lab.HostAddr, lab.EchoPort)).CombinedOutput()
		if err != nil {
			t.Fatalf("clearancectl explain: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := explain(); !strings.Contains(out, `"reason": "blocked"`) {
		t.Fatalf("before a verdict: %s", out)
	}
	blockedConnect(t, s, lab.EchoPort)
	ev := st.next("connection_blocked")
	if ok, _, err := orgterokclearancehub1.Decide().Call(context.Background(), st.rpc, ev.Request_id, "allow", "container", 0, nil, nil); err != nil || !ok {
		t.Fatalf("decide: %v %v", ok, err)
	}
	if out := explain(); !strings.Contains(out, `"reason": "allowed"`) {
		t.Fatalf("after allow: %s", out)
	}
	out, err := exec.Command(filepath.Join(binDir, "clearancectl"), "policy", "export", "--socket", s.VerdictSock, s.ID).CombinedOutput()
	if err != nil || !strings.Contains(string(out), lab.HostAddr.String()) {
		t.Fatalf("clearancectl policy export: %v\n%s", err, out)
	}
}

// TestRestartedHubRebuildsTimedVerdicts: a hub with no saved state to come
// back to (no systemd file descriptor store) takes the timed verdicts in
// force from the ruleset, so they still end on time and are announced.
func TestRestartedHubRebuildsTimedVerdicts(t *testing.T) {
	requireLab(t)
	s := newStack(t, lab.StackOptions{})
	st := subscribe(t, s)
	blockedConnect(t, s, lab.EchoPort)
	ev := st.next("connection_blocked")
	ok, _, err := orgterokclearancehub1.Decide().Call(context.Background(), st.rpc, ev.Request_id, "allow", "once", 4, nil, nil)
	if err != nil || !ok {
		t.Fatalf("decide: %v %v", ok, err)
	}
	p, err := os.FindProcess(s.HubPID())
	if err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGKILL)
	p.Wait()
	if err := s.StartHub(context.Background(), binDir); err != nil {
		t.Fatal(err)
	}
	st2 := subscribe(t, s)
	exp := st2.next("verdict_expired")
	if exp.Dest != lab.HostAddr.String() {
		t.Fatalf("verdict_expired from the restarted hub = %+v", exp)
	}
	blockedConnect(t, s, lab.EchoPort)
}

// TestHubRebindsDeletedSockets: when the hub's directory is deleted under
// it, the hub binds its sockets there again (within its check interval),
// so clients reach it and prompts go on; before, it kept running unreachable.
func TestHubRebindsDeletedSockets(t *testing.T) {
	requireLab(t)
	s := newStack(t, lab.StackOptions{})
	if err := os.RemoveAll(filepath.Dir(s.HubSock)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if testutil.Accepts(s.HubSock, s.IngestSock) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("hub.sock and ingest.sock did not come back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := subscribe(t, s)
	blockedConnect(t, s, lab.EchoPort)
	if ev := st.next("connection_blocked"); ev.Port != lab.EchoPort {
		t.Fatalf("event after the rebind: %+v", ev)
	}
	fi, err := os.Stat(filepath.Dir(s.HubSock))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("recreated directory: %v %v", fi.Mode(), err)
	}
}

// TestAttackTamperedRulesetIsRepaired: a process holding CAP_NET_ADMIN in
// the container's namespace deletes the table, or opens the output
// policy; the hub notices within a few seconds, announces shield_down to
// its subscribers, audits it and engages the ruleset again (shield_up),
// so blocked destinations are blocked again (issue 9, item 4, the hub's
// half).
func TestAttackTamperedRulesetIsRepaired(t *testing.T) {
	requireLab(t)
	nftBin := testutil.RequireTool(t, "nft")
	for _, tamper := range []string{"delete table inet clearance", "chain inet clearance output { policy accept ; }"} {
		t.Run(tamper, func(t *testing.T) {
			s := newStack(t, lab.StackOptions{})
			sub := subscribe(t, s)
			args := append([]string{"--net=/proc/" + strconv.Itoa(s.Container.Pid) + "/ns/net", "--", nftBin}, strings.Fields(tamper)...)
			if out, err := exec.Command("nsenter", args...).CombinedOutput(); err != nil {
				t.Fatalf("nft %s: %v\n%s", tamper, err, out)
			}
			down := sub.next("shield_down")
			if down.Container != s.ID || !strings.Contains(down.Reason, "in the container's namespace") {
				t.Errorf("shield_down = %+v", down)
			}
			sub.next("shield_up")
			blockedConnect(t, s, lab.RangePort)
			if log := s.Tail("hub"); !strings.Contains(log, audit.MsgTampered) {
				t.Errorf("the hub's log has no tampered record:\n%s", log)
			}
		})
	}
}
