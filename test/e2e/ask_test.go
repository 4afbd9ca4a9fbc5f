// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/config"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// readLog returns a service's whole log ("hub" or "verdict"): text
// records with their journal fields as key=value.
func readLog(t *testing.T, s *lab.Stack, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Logs, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitAskServing waits until the hub serves the ask endpoint.
func waitAskServing(t *testing.T, st *stream) {
	t.Helper()
	var ask *orgterokclearancehub1.AskStats
	if !testutil.Within(testutil.WaitTimeout, func() bool {
		s, err := orgterokclearancehub1.Stats().Call(context.Background(), st.rpc)
		if err != nil {
			t.Fatal(err)
		}
		ask = s.Ask
		return ask != nil && ask.Serving
	}) {
		t.Fatalf("the ask endpoint is not served: %+v", ask)
	}
}

// curlAnswer is the ask endpoint's JSON answer, as curl prints it.
type curlAnswer struct {
	Status    string `json:"status"`
	RequestID string `json:"request_id"`
	Reason    string `json:"reason"`
	Scope     string `json:"scope"`
	By        string `json:"by"`
	Error     string `json:"error"`
}

// curlInContainer runs the documented curl example from inside the
// container's network namespace and returns the HTTP status and answer.
func curlInContainer(ctx context.Context, s *lab.Stack, args ...string) (int, curlAnswer, error) {
	argv := append([]string{"--net=/proc/" + strconv.Itoa(s.Container.Pid) + "/ns/net", "curl", "-s", "-m", "60",
		"-w", "\n%{http_code}", "http://127.0.0.1:" + strconv.Itoa(config.DefaultAskPort) + "/ask"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", argv...).Output()
	if err != nil {
		return 0, curlAnswer{}, fmt.Errorf("curl: %v: %s", err, out)
	}
	body, code, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	n, _ := strconv.Atoi(strings.TrimSpace(code))
	var a curlAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		return n, a, fmt.Errorf("answer %q: %v", body, err)
	}
	return n, a, nil
}

// TestAskEndpoint: a process in the container asks with curl for a name
// and port, with its reason, before connecting. The hub raises a
// connection_blocked request carrying the reason (the prompt), the call
// waits; the operator allows it, and curl returns 200 "allowed" naming
// who decided. The container then resolves the name and connects: the
// verdict on the name alone let the forwarder learn the address. A
// second question is denied: curl gets 403. A question the container's
// rules already answer returns at once without a prompt. The endpoint
// exists only inside the container's namespace.
func TestAskEndpoint(t *testing.T) {
	requireLab(t)
	testutil.RequireTool(t, "curl")
	s := newStack(t, lab.StackOptions{})
	st := subscribe(t, s)
	waitAskServing(t, st)
	ctx := testutil.Context(t)

	type result struct {
		code int
		a    curlAnswer
		err  error
	}
	got := make(chan result, 1)
	go func() {
		code, a, err := curlInContainer(ctx, s, "-d", "dest="+lab.TestDomain, "-d", "port="+strconv.Itoa(lab.EchoPort),
			"-d", "reason=fetching deps for the build")
		got <- result{code, a, err}
	}()
	ev := st.next("connection_blocked")
	if ev.Reason != "fetching deps for the build" || ev.Domain != lab.TestDomain || ev.Dest != "" || ev.Port != lab.EchoPort {
		t.Fatalf("prompt %+v, want the container's reason for %s:%d", ev, lab.TestDomain, lab.EchoPort)
	}
	pend, err := orgterokclearancehub1.Pending().Call(ctx, st.rpc)
	if err != nil || len(pend) != 1 || pend[0].Reason == nil || *pend[0].Reason != ev.Reason {
		t.Fatalf("Pending = %+v, %v; want the request with its reason", pend, err)
	}
	if h := readLog(t, s, "hub"); !strings.Contains(h, "MESSAGE_ID="+audit.MsgAsked) || !strings.Contains(h, "fetching deps for the build") {
		t.Errorf("the hub's log lacks the asked record:\n%s", s.Tail("hub"))
	}
	channel := "clearancectl"
	if ok, _, err := orgterokclearancehub1.Decide().Call(ctx, st.rpc, ev.Request_id, "allow", "once", 0, nil, &channel); err != nil || !ok {
		t.Fatalf("decide: %v %v", ok, err)
	}
	select {
	case r := <-got:
		if r.err != nil || r.code != 200 || r.a.Status != "allowed" || r.a.RequestID != ev.Request_id || r.a.Scope != "once" ||
			!strings.Contains(r.a.By, "via clearancectl") {
			t.Fatalf("curl = %d %+v %v, want 200 allowed by the operator", r.code, r.a, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("curl did not return after the verdict")
	}
	addrs, err := s.Container.Resolve(ctx, netip.AddrPortFrom(lab.HostAddr, 53), lab.TestDomain)
	if err != nil || len(addrs) == 0 {
		t.Fatalf("resolve %s: %v %v", lab.TestDomain, addrs, err)
	}
	if err := s.Connect(ctx, lab.EchoPort, 5*time.Second); err != nil {
		t.Fatalf("connect after the allowed ask: %v", err)
	}

	// The same question again: the name rule answers at once.
	code, a, err := curlInContainer(ctx, s, "-d", "dest="+lab.TestDomain, "-d", "port="+strconv.Itoa(lab.EchoPort), "-d", "reason=again")
	if err != nil || code != 200 || a.Status != "allowed" || a.RequestID != "" || !strings.HasPrefix(a.By, "rule ") {
		t.Fatalf("asked again = %d %+v %v, want allowed by the rule at once", code, a, err)
	}

	// Denied, as JSON.
	go func() {
		code, a, err := curlInContainer(ctx, s, "-H", "Content-Type: application/json", "--data",
			fmt.Sprintf(`{"dest":%q,"port":%d,"reason":"telemetry"}`, lab.HostAddr, lab.OtherPort))
		got <- result{code, a, err}
	}()
	ev = st.next("connection_blocked")
	if ev.Reason != "telemetry" || ev.Dest != lab.HostAddr.String() {
		t.Fatalf("second prompt %+v", ev)
	}
	if ok, _, err := orgterokclearancehub1.Decide().Call(ctx, st.rpc, ev.Request_id, "deny", "once", 0, nil, nil); err != nil || !ok {
		t.Fatalf("decide deny: %v %v", ok, err)
	}
	if r := <-got; r.err != nil || r.code != 403 || r.a.Status != "denied" {
		t.Fatalf("curl = %d %+v %v, want 403 denied", r.code, r.a, r.err)
	}

	// A malformed question: a clear error, no prompt.
	code, a, err = curlInContainer(ctx, s, "-d", "dest="+lab.TestDomain, "-d", "port=99999", "-d", "reason=x")
	if err != nil || code != 400 || !strings.Contains(a.Error, "port must be") {
		t.Fatalf("bad port = %d %+v %v", code, a, err)
	}
	if pend, err := orgterokclearancehub1.Pending().Call(ctx, st.rpc); err != nil || len(pend) != 0 {
		t.Fatalf("pending after a bad question: %+v %v", pend, err)
	}

	// Not on the host side of the veth, nor in the test host.
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if c, err := s.Host.Dial(dctx, "tcp", fmt.Sprintf("127.0.0.1:%d", config.DefaultAskPort)); err == nil {
		c.Close()
		t.Error("the ask endpoint answers in the test host's namespace")
	}
}

// TestAskFlood: a container that floods its endpoint gets 429 with
// Retry-After once its bucket is empty; nothing it sent over the limit
// reaches the hub, which keeps serving subscribers.
func TestAskFlood(t *testing.T) {
	requireLab(t)
	s := newStack(t, lab.StackOptions{ExtraConfig: "ask:\n  rate_per_minute: 6\n  burst: 5\n"})
	st := subscribe(t, s)
	waitAskServing(t, st)
	ctx := testutil.Context(t)
	codes := map[int]int{}
	for i := range 40 {
		c, err := s.Container.Dial(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", config.DefaultAskPort))
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("dest=flood%d.example&port=443&reason=flood&wait=0", i)
		fmt.Fprintf(c, "POST /ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s",
			len(body), body)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		codes[resp.StatusCode]++
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
		resp.Body.Close()
		c.Close()
	}
	if codes[202] < 5 || codes[202] > 7 || codes[429] < 33 {
		t.Fatalf("status counts %v, want about 5 accepted and the rest 429", codes)
	}
	pend, err := orgterokclearancehub1.Pending().Call(ctx, st.rpc)
	if err != nil || len(pend) != codes[202] {
		t.Fatalf("%d pending (%v), want %d", len(pend), err, codes[202])
	}
	stats, err := orgterokclearancehub1.Stats().Call(ctx, st.rpc)
	if err != nil || stats.Ask == nil || stats.Ask.Rate_limited != int64(codes[429]) {
		t.Fatalf("stats %+v %v", stats.Ask, err)
	}
}

// TestObserveMode: a container whose record asks for observe mode, where
// the configuration allows its owner, connects where it would have been
// blocked; every subscriber is told it is not enforced, each new
// destination is reported once as an "observed" event (never a prompt),
// Stats and clearancectl status say OBSERVE MODE, and the ruleset listing
// says NOT ENFORCED. Without the configuration's consent the same record
// runs enforced and is blocked.
func TestObserveMode(t *testing.T) {
	requireLab(t)
	s := newStack(t, lab.StackOptions{Mode: record.ModeObserve, ExtraConfig: "observe:\n  users: [\"0\"]\n"})
	st := subscribe(t, s)
	ev := st.next("hub_notice")
	if !strings.Contains(ev.Reason, "NOT ENFORCED") {
		t.Fatalf("notice %q", ev.Reason)
	}
	ctx := testutil.Context(t)
	for range 2 {
		if err := s.Connect(ctx, lab.EchoPort, 5*time.Second); err != nil {
			t.Fatalf("connect in observe mode: %v", err)
		}
	}
	if err := s.Connect(ctx, lab.OtherPort, 5*time.Second); err != nil {
		t.Fatalf("connect in observe mode: %v", err)
	}
	for _, port := range []int{lab.EchoPort, lab.OtherPort} {
		ev := st.next("observed")
		if ev.Dest != lab.HostAddr.String() || ev.Port != int64(port) || ev.Request_id != "" {
			t.Fatalf("observed %+v, want %s:%d once", ev, lab.HostAddr, port)
		}
	}
	stats, err := orgterokclearancehub1.Stats().Call(ctx, st.rpc)
	if err != nil || stats.Mode == nil || *stats.Mode != "observe" || stats.Pending != 0 {
		t.Fatalf("stats %+v %v", stats, err)
	}
	// The audit: each destination recorded once, the engagement loudly.
	if n := strings.Count(readLog(t, s, "hub"), "MESSAGE_ID="+audit.MsgObserved); n != 2 {
		t.Errorf("%d observed records in the hub's log, want 2 (one per destination)", n)
	}
	if v := readLog(t, s, "verdict"); !strings.Contains(v, "MESSAGE_ID="+audit.MsgObserveEngaged) || !strings.Contains(v, "NOT ENFORCED") {
		t.Errorf("the verdict service's log lacks the observe-mode record:\n%s", s.Tail("verdict"))
	}
	out, err := exec.Command(filepath.Join(binDir, "clearancectl"), "status", "--glob", s.HubSock).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OBSERVE MODE: NOT ENFORCED") {
		t.Fatalf("clearancectl status: %v\n%s", err, out)
	}
	nft, err := exec.Command("nsenter", "--net=/proc/"+strconv.Itoa(s.Container.Pid)+"/ns/net", "nft", "list", "table", "inet", "clearance").CombinedOutput()
	if err != nil || !strings.Contains(string(nft), "NOT ENFORCED") {
		t.Fatalf("nft list: %v\n%s", err, nft)
	}

	// The same record where the configuration does not allow it.
	s2 := newStack(t, lab.StackOptions{Mode: record.ModeObserve, ID: "labctr000002"})
	st2 := subscribe(t, s2)
	blockedConnect(t, s2, lab.EchoPort)
	if ev := st2.next("connection_blocked"); ev.Port != lab.EchoPort {
		t.Fatalf("enforced: %+v", ev)
	}
	stats, err = orgterokclearancehub1.Stats().Call(ctx, st2.rpc)
	if err != nil || stats.Mode == nil || *stats.Mode != "enforce" {
		t.Fatalf("stats without consent %+v %v", stats.Mode, err)
	}
}

// TestAskedNameExpires: a "once" verdict on a name the container asked
// for (no address in the kernel) expires on time like any other, and its
// end is clean: announced, and nothing to revoke at the verdict service.
func TestAskedNameExpires(t *testing.T) {
	requireLab(t)
	testutil.RequireTool(t, "curl")
	s := newStack(t, lab.StackOptions{OnceTTL: 2 * time.Second})
	st := subscribe(t, s)
	waitAskServing(t, st)
	ctx := testutil.Context(t)
	go curlInContainer(ctx, s, "-d", "dest="+lab.TestDomain, "-d", "port=443", "-d", "reason=short", "-d", "wait=0")
	ev := st.next("connection_blocked")
	if ok, _, err := orgterokclearancehub1.Decide().Call(ctx, st.rpc, ev.Request_id, "allow", "once", 0, nil, nil); err != nil || !ok {
		t.Fatalf("decide: %v %v", ok, err)
	}
	if x := st.next("verdict_expired"); x.Domain != lab.TestDomain {
		t.Errorf("verdict_expired %+v, want the name", x)
	}
	if h := readLog(t, s, "hub"); strings.Contains(h, "revoke expired verdict") {
		t.Errorf("revoking a verdict on a name alone failed:\n%s", s.Tail("hub"))
	}
}
