// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ask

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// fakeDecider is the hub at the seam: questions become requests
// "r1", "r2", …; Await waits for decide or its context.
type fakeDecider struct {
	mu        sync.Mutex
	asked     []Question
	decided   map[string]Answer
	changed   chan struct{}
	immediate *Answer // answer every question at once
}

func newFake() *fakeDecider {
	return &fakeDecider{decided: map[string]Answer{}, changed: make(chan struct{})}
}

func (f *fakeDecider) Ask(ctx context.Context, q Question) (Answer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, q)
	if f.immediate != nil {
		a := *f.immediate
		a.Dest, a.Port, a.Proto, a.Reason = q.Dest, int(q.Port), q.Proto, q.Reason
		return a, nil
	}
	return Answer{Status: StatusPending, RequestID: "r" + strconv.Itoa(len(f.asked)), Dest: q.Dest, Port: int(q.Port),
		Proto: q.Proto, Reason: q.Reason}, nil
}

func (f *fakeDecider) decide(id string, a Answer) {
	f.mu.Lock()
	f.decided[id] = a
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (f *fakeDecider) Await(ctx context.Context, id string) Answer {
	for {
		f.mu.Lock()
		a, ok := f.decided[id]
		ch := f.changed
		f.mu.Unlock()
		if ok {
			return a
		}
		select {
		case <-ctx.Done():
			return Answer{Status: StatusPending}
		case <-ch:
		}
	}
}

func (f *fakeDecider) questions() []Question {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Question(nil), f.asked...)
}

// serve runs s on a loopback listener and returns its address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return ln.Addr().String()
}

// roundTrip sends raw bytes and returns the status code and JSON answer.
func roundTrip(t *testing.T, addr, raw string) (int, Answer, http.Header) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var a Answer
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatalf("answer %q: %v", body, err)
		}
	} else {
		a.Message = string(body)
	}
	return resp.StatusCode, a, resp.Header
}

func post(ctype, body string) string {
	return fmt.Sprintf("POST /ask HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", ctype, len(body), body)
}

const form = "application/x-www-form-urlencoded"

// TestAskWaitsForTheVerdict: a form question (what curl -d sends) becomes
// a request; the call waits and returns the verdict with who decided; a
// JSON question with wait=0 returns 202 pending at once with a Location,
// and GET /ask/ID waits for the same request.
func TestAskWaitsForTheVerdict(t *testing.T) {
	f := newFake()
	s := &Server{Decider: f}
	addr := serve(t, s)

	type result struct {
		code int
		a    Answer
	}
	got := make(chan result, 1)
	go func() {
		code, a, _ := roundTrip(t, addr, post(form, "dest=api.example.com&port=443&reason=fetching+deps"))
		got <- result{code, a}
	}()
	testutil.Within(5*time.Second, func() bool { return len(f.questions()) > 0 })
	q := f.questions()
	if len(q) != 1 || q[0].Dest != "api.example.com" || !q[0].IsName || q[0].Port != 443 || q[0].Proto != "tcp" ||
		q[0].Reason != "fetching deps" || q[0].Wait != DefaultWait {
		t.Fatalf("questions %+v", q)
	}
	f.decide("r1", Answer{Status: StatusAllowed, Scope: "once", ExpiresUsec: 42, By: "by alice (uid 1000) via notifier"})
	select {
	case r := <-got:
		if r.code != 200 || r.a.Status != StatusAllowed || r.a.RequestID != "r1" || r.a.By != "by alice (uid 1000) via notifier" ||
			r.a.Dest != "api.example.com" || r.a.Reason != "fetching deps" || r.a.Scope != "once" || r.a.ExpiresUsec != 42 {
			t.Errorf("answer %d %+v", r.code, r.a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting call did not return after the verdict")
	}

	code, a, h := roundTrip(t, addr, post("application/json", `{"dest":"192.0.2.7","port":8443,"proto":"udp","reason":"metrics","wait":0}`))
	if code != 202 || a.Status != StatusPending || a.RequestID != "r2" || h.Get("Location") != "/ask/r2" || a.Proto != "udp" {
		t.Fatalf("wait=0: %d %+v %v", code, a, h)
	}
	go func() {
		code, a, _ := roundTrip(t, addr, "GET /ask/r2?wait=30 HTTP/1.1\r\nHost: x\r\n\r\n")
		got <- result{code, a}
	}()
	// Decide once the GET waits for it.
	testutil.Eventually(t, 5*time.Second, "the GET waiting", func() bool { return s.Stats().Waiting == 1 })
	f.decide("r2", Answer{Status: StatusDenied, By: "by bob"})
	r := <-got
	if code, a = r.code, r.a; code != 403 || a.Status != StatusDenied {
		t.Errorf("GET /ask/r2: %d %+v", code, a)
	}
	code, a, _ = roundTrip(t, addr, "GET /ask/r9?wait=0 HTTP/1.1\r\nHost: x\r\n\r\n")
	if code != 202 || a.Status != StatusPending || !strings.Contains(a.Message, "GET /ask/r9") {
		t.Errorf("GET unknown, no wait: %d %+v", code, a)
	}
	f.immediate = &Answer{Status: StatusAllowed, By: "rule allowed"}
	code, a, _ = roundTrip(t, addr, post(form, "dest=github.com&port=443&reason=x"))
	if code != 200 || a.RequestID != "" || a.By != "rule allowed" {
		t.Errorf("answered by a rule: %d %+v", code, a)
	}
	code, a, _ = roundTrip(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if code != 200 || !strings.Contains(a.Message, "curl") {
		t.Errorf("GET /: %d %q", code, a.Message)
	}
}

// TestAskBadInput: every malformed question gets a clear 4xx naming what
// is wrong and raises nothing.
func TestAskBadInput(t *testing.T) {
	f := newFake()
	addr := serve(t, &Server{Decider: f, Burst: 1000, RatePerMinute: 60000, MaxWait: time.Minute})
	long := strings.Repeat("a", MaxReason+1)
	cases := []struct {
		name, raw string
		code      int
		want      string
	}{
		{"missing reason", post(form, "dest=a.example&port=443"), 400, "missing field reason"},
		{"empty reason", post(form, "dest=a.example&port=443&reason=+"), 400, "reason is empty"},
		{"reason too long", post(form, "dest=a.example&port=443&reason="+long), 400, "at most 256"},
		{"control character", post(form, "dest=a.example&port=443&reason=a%1b%5B31mred"), 400, "control or invisible"},
		{"bidi override", post(form, "dest=a.example&port=443&reason=a%E2%80%AEb"), 400, "control or invisible"},
		{"bad port", post(form, "dest=a.example&port=0443&reason=x"), 400, "port must be"},
		{"port zero", post(form, "dest=a.example&port=0&reason=x"), 400, "port must be"},
		{"port too big", post(form, "dest=a.example&port=65536&reason=x"), 400, "port must be"},
		{"bad proto", post(form, "dest=a.example&port=1&proto=icmp&reason=x"), 400, "proto must be"},
		{"bad dest", post(form, "dest=a..b&port=1&reason=x"), 400, "neither an IP address nor a DNS name"},
		{"multicast", post(form, "dest=224.0.0.1&port=1&reason=x"), 400, "not a destination"},
		{"unknown field", post(form, "dest=a.example&port=1&reason=x&token=y"), 400, "unknown field"},
		{"repeated field", post(form, "dest=a.example&dest=b.example&port=1&reason=x"), 400, "given 2 times"},
		{"wait too long", post(form, "dest=a.example&port=1&reason=x&wait=61"), 400, "wait must be"},
		{"json port as string", post("application/json", `{"dest":"a.example","port":"1","reason":"x"}`), 400, "must be a number"},
		{"json trailing", post("application/json", `{"dest":"a.example","port":1,"reason":"x"} {}`), 400, "trailing data"},
		{"json not object", post("application/json", `[1]`), 400, "malformed JSON"},
		{"invalid utf-8", post(form, "dest=a.example&port=1&reason=\xff"), 400, "not valid UTF-8"},
		{"content type", post("text/plain", "dest=a.example"), 415, "not supported"},
		{"body too large", post(form, strings.Repeat("a", MaxBody+1)), 413, "at most 4096"},
		{"wrong method", "GET /ask HTTP/1.1\r\nHost: x\r\n\r\n", 405, "use POST"},
		{"unknown path", "GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such path"},
		{"bad id", "GET /ask/..%2F HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such request"},
		{"bad wait param", "GET /ask/r1?wait=-1 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "wait must be"},
		{"unknown param", "GET /ask/r1?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "unknown parameter"},
		{"not http", "hello\r\n\r\n", 400, "malformed HTTP request"},
		{"huge header", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", MaxHeader) + "\r\n\r\n", 431, "longer than 8192"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, a, _ := roundTrip(t, addr, tc.raw)
			if code != tc.code || a.Status != StatusError || !strings.Contains(a.Error, tc.want) {
				t.Errorf("got %d %+v, want %d with %q", code, a, tc.code, tc.want)
			}
		})
	}
	if q := f.questions(); len(q) != 0 {
		t.Errorf("bad input raised %d requests: %+v", len(q), q)
	}
}

// TestAskSlowSenderTimesOut: a request that does not arrive within the
// read timeout gets 408 instead of holding the connection.
func TestAskSlowSenderTimesOut(t *testing.T) {
	s := &Server{Decider: newFake(), ReadTimeout: 200 * time.Millisecond}
	addr := serve(t, s)
	code, a, _ := roundTrip(t, addr, "POST /ask HTTP/1.1\r\nHost: x\r\n")
	if code != 408 || !strings.Contains(a.Error, "did not arrive") {
		t.Errorf("got %d %+v, want 408", code, a)
	}
	if s.Stats().TimedOut != 1 {
		t.Errorf("stats %+v", s.Stats())
	}
}

// TestAskRateLimit: once the bucket is empty, requests get 429 with
// Retry-After and reach nothing; a second server (another container's
// endpoint) is not affected.
func TestAskRateLimit(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := newFake()
	f.immediate = &Answer{Status: StatusDenied, By: "rule"}
	s := &Server{Decider: f, RatePerMinute: 6, Burst: 3, Now: clock}
	addr := serve(t, s)
	other := newFake()
	other.immediate = &Answer{Status: StatusAllowed}
	addr2 := serve(t, &Server{Decider: other, RatePerMinute: 6, Burst: 3, Now: clock})
	for i := range 3 {
		if code, _, _ := roundTrip(t, addr, post(form, "dest=a.example&port=1&reason=x")); code != 403 {
			t.Fatalf("request %d: %d, want 403 from the decider", i, code)
		}
	}
	code, a, h := roundTrip(t, addr, post(form, "dest=a.example&port=1&reason=x"))
	if code != 429 || h.Get("Retry-After") != "10" || a.RetryAfter != 10 || !strings.Contains(a.Error, "too many requests") {
		t.Fatalf("over the limit: %d %+v %v", code, a, h)
	}
	if n := len(f.questions()); n != 3 {
		t.Errorf("%d questions reached the decider, want 3", n)
	}
	if code, _, _ := roundTrip(t, addr2, post(form, "dest=a.example&port=1&reason=x")); code != 200 {
		t.Errorf("another container's endpoint: %d, want 200", code)
	}
	mu.Lock()
	now = now.Add(10 * time.Second)
	mu.Unlock()
	if code, _, _ := roundTrip(t, addr, post(form, "dest=a.example&port=1&reason=x")); code != 403 {
		t.Errorf("after the refill: %d, want 403", code)
	}
	if st := s.Stats(); st.RateLimited != 1 || st.Answered != 4 {
		t.Errorf("stats %+v", st)
	}
}

// TestAskConnectionLimit: connections over MaxConnections are answered
// 429 and closed; waiting callers are not disturbed, and a caller that
// goes away stops waiting.
func TestAskConnectionLimit(t *testing.T) {
	f := newFake()
	s := &Server{Decider: f, MaxConnections: 2, Burst: 100, RatePerMinute: 6000}
	addr := serve(t, s)
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		io.WriteString(c, post(form, "dest=a.example&port=1&reason=x"))
	}
	testutil.Within(5*time.Second, func() bool { return s.Stats().Waiting >= 2 })
	if w := s.Stats().Waiting; w != 2 {
		t.Fatalf("%d waiting, want 2", w)
	}
	code, a, _ := roundTrip(t, addr, post(form, "dest=b.example&port=1&reason=x"))
	if code != 429 || !strings.Contains(a.Error, "too many connections") {
		t.Errorf("third connection: %d %+v", code, a)
	}
	conns[0].(*net.TCPConn).SetLinger(0)
	conns[0].Close() // goes away (a reset): its wait ends
	testutil.Within(5*time.Second, func() bool { return s.Stats().Waiting <= 1 })
	if w := s.Stats().Waiting; w != 1 {
		t.Errorf("%d waiting after a hang-up, want 1", w)
	}
	// Which connection became r1 depends on scheduling: decide both.
	f.decide("r1", Answer{Status: StatusAllowed})
	f.decide("r2", Answer{Status: StatusAllowed})
	conns[1].SetDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conns[1]), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("the waiting caller: %v %v", resp, err)
	}
	conns[1].Close()
}

// TestAskHalfClosedClientGetsTheVerdict: a client that half-closes after
// sending its request (busybox nc, socat) still waits and reads the
// verdict.
func TestAskHalfClosedClientGetsTheVerdict(t *testing.T) {
	f := newFake()
	s := &Server{Decider: f}
	addr := serve(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, post(form, "dest=a.example&port=443&reason=x"))
	c.(*net.TCPConn).CloseWrite()
	// The wait must survive the half-close: the verdict below still
	// reaches this connection as 200.
	testutil.Within(5*time.Second, func() bool { return s.Stats().Waiting >= 1 })
	if w := s.Stats().Waiting; w != 1 {
		t.Fatalf("%d waiting after the half-close, want 1", w)
	}
	f.decide("r1", Answer{Status: StatusAllowed})
	c.SetDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("half-closed client: %v %v", resp, err)
	}
}
