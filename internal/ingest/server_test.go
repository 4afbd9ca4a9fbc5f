// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// waitTimeout bounds every wait for a condition; generous, never asserted.
const waitTimeout = 20 * time.Second

// collector is a Sink that records events.
type collector struct {
	mu     sync.Mutex
	events []event.Event
	fail   func(event.Event) error // optional error to return
}

func (c *collector) sink(ev event.Event) error {
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.mu.Unlock()
	if c.fail != nil {
		return c.fail(ev)
	}
	return nil
}

func (c *collector) snapshot() []event.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]event.Event(nil), c.events...)
}

// wait polls until cond holds, failing the test after waitTimeout.
func wait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitEvents waits until at least n events were collected and returns them.
func (c *collector) waitEvents(t testing.TB, n int) []event.Event {
	t.Helper()
	wait(t, fmt.Sprintf("%d events", n), func() bool { return len(c.snapshot()) >= n })
	return c.snapshot()
}

// checkNoServerGoroutines fails t if any goroutine still runs Server or
// lineReader code: Serve must have waited for all of them.
func checkNoServerGoroutines(t testing.TB) {
	t.Helper()
	var stacks string
	for range 200 {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "internal/ingest.(*Server)") && !strings.Contains(stacks, "internal/ingest.(*lineReader)") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("goroutines leaked after Serve returned:\n%s", stacks)
}

type testServer struct {
	srv  *Server
	path string
	col  *collector
}

// startServer runs srv on a fresh Unix socket in t.TempDir (or dir) until
// the test ends, then checks that Serve returned nil and leaked nothing.
func startServer(t *testing.T, srv *Server, dir string) *testServer {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	col := &collector{}
	if srv.Sink == nil {
		srv.Sink = col.sink
	}
	if srv.Log == nil {
		srv.Log = testutil.Logger(t)
	}
	path := filepath.Join(dir, "ingest.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v, want nil", err)
			}
		case <-time.After(waitTimeout):
			t.Fatal("Serve did not return after cancel")
		}
		checkNoServerGoroutines(t)
	})
	return &testServer{srv: srv, path: path, col: col}
}

func (ts *testServer) dial(t testing.TB) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: ts.path, Net: "unix"})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func write(t testing.TB, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// producerLines is one line of each kind terok-shield sends
// (docs/seed-compat.md §S3.2), with the event each must become.
var producerLines = []struct {
	name string
	line string
	want event.Event
}{
	{
		name: "container_started",
		line: `{"type":"container_started","container":"abc123def456"}`,
		want: event.Event{Type: event.ContainerStarted, Container: "abc123def456", Dossier: map[string]string{}},
	},
	{
		name: "pending",
		line: `{"type":"pending","container":"abc123def456","id":"abc123def456:1","dest":"93.184.215.14","port":443,"proto":6,"domain":"example.com","dossier":{"project":"p","task":"t","name":"n"},"ts":"2026-05-05T10:00:00.123456+00:00"}`,
		want: event.Event{
			Type: event.ConnectionBlocked, Container: "abc123def456", RequestID: "abc123def456:1",
			Dest: "93.184.215.14", Port: 443, Proto: 6, Domain: "example.com",
			Dossier: map[string]string{"project": "p", "task": "t", "name": "n"},
		},
	},
	{
		name: "pending with unknown domain",
		line: `{"type":"pending","container":"abc123def456","id":"abc123def456:2","dest":"10.1.2.3","port":53,"proto":17,"domain":"","dossier":{},"ts":"2026-05-05T10:00:01.000000+00:00"}`,
		want: event.Event{
			Type: event.ConnectionBlocked, Container: "abc123def456", RequestID: "abc123def456:2",
			Dest: "10.1.2.3", Port: 53, Proto: 17, Dossier: map[string]string{},
		},
	},
	{
		name: "container_exited",
		line: `{"type":"container_exited","container":"abc123def456","reason":"eof"}`,
		want: event.Event{Type: event.ContainerExited, Container: "abc123def456", Reason: "eof", Dossier: map[string]string{}},
	},
	{
		name: "shield_up",
		line: `{"type":"shield_up","container":"my-task","dossier":{"project":"p"}}`,
		want: event.Event{Type: event.ShieldUp, Container: "my-task", Dossier: map[string]string{"project": "p"}},
	},
	{
		name: "shield_down",
		line: `{"type":"shield_down","container":"my-task"}`,
		want: event.Event{Type: event.ShieldDown, Container: "my-task", Dossier: map[string]string{}},
	},
	{
		name: "shield_down_all",
		line: `{"type":"shield_down_all","container":"my-task"}`,
		want: event.Event{Type: event.ShieldDisengaged, Container: "my-task", Dossier: map[string]string{}},
	},
	{
		name: "shield_disengaged",
		line: `{"type":"shield_disengaged","container":"my-task","dossier":{"task":"t"}}`,
		want: event.Event{Type: event.ShieldDisengaged, Container: "my-task", Dossier: map[string]string{"task": "t"}},
	},
}

func TestServePersistentConnection(t *testing.T) {
	ts := startServer(t, &Server{}, "")
	c := ts.dial(t)
	var want []event.Event
	for _, pl := range producerLines {
		write(t, c, pl.line+"\n")
		want = append(want, pl.want)
	}
	got := ts.col.waitEvents(t, len(want))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Stats{Accepted: 1, Events: uint64(len(want))}, ts.srv.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
}

func TestServeOneShotConnections(t *testing.T) {
	ts := startServer(t, &Server{}, "")
	for i, pl := range producerLines {
		t.Run(pl.name, func(t *testing.T) {
			c := ts.dial(t)
			write(t, c, pl.line+"\n")
			c.Close()
			got := ts.col.waitEvents(t, i+1)[i]
			if diff := cmp.Diff(pl.want, got); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
		})
	}
	// The CLI's emitter may also close without a trailing newline.
	c := ts.dial(t)
	write(t, c, `{"type":"shield_up","container":"no-newline"}`)
	c.Close()
	got := ts.col.waitEvents(t, len(producerLines)+1)[len(producerLines)]
	if got.Container != "no-newline" {
		t.Errorf("unterminated last line: got %+v", got)
	}
}

func TestServeDropsBadLinesKeepsConnection(t *testing.T) {
	const valid = `{"type":"shield_up","container":"after"}`
	wantEvent := event.Event{Type: event.ShieldUp, Container: "after", Dossier: map[string]string{}}
	tests := []struct {
		name      string
		before    string // written first, on the same connection
		wantStats Stats
	}{
		// §S10.38.
		{name: "blank lines", before: "\n   \n\t\r\n", wantStats: Stats{}},
		{name: "not json", before: "not-json\n", wantStats: Stats{Malformed: 1}},
		{name: "blank then not json", before: "\nnot-json\n", wantStats: Stats{Malformed: 1}},
		{name: "non-object", before: "[1,2,3]\n42\nnull\n", wantStats: Stats{Malformed: 3}},
		// §S10.35.
		{name: "pending without fields", before: `{"type":"pending"}` + "\n", wantStats: Stats{Malformed: 1}},
		{name: "unknown type", before: `{"type":"unheard-of","container":"c"}` + "\n", wantStats: Stats{UnknownType: 1}},
		{name: "producer-sent verdict_applied", before: `{"type":"verdict_applied","container":"c","id":"c:1"}` + "\n", wantStats: Stats{UnknownType: 1}},
		// §S11.10: these killed the seed's connection.
		{name: "oversized line of 100 KiB", before: `{"type":"shield_up","container":"` + strings.Repeat("x", 100<<10) + `"}` + "\n", wantStats: Stats{Oversized: 1}},
		{name: "oversized line without json", before: strings.Repeat("\xff", 200<<10) + "\n", wantStats: Stats{Oversized: 1}},
		{name: "invalid utf-8", before: "{\"type\":\"shield_up\",\"container\":\"\xc3\x28\"}\n", wantStats: Stats{Malformed: 1}},
		{name: "binary garbage", before: "\x00\x01\x02\xfe\xff\n", wantStats: Stats{Malformed: 1}},
		{name: "out of range port", before: `{"type":"pending","container":"c","id":"c:1","dest":"d","port":70000,"proto":6}` + "\n", wantStats: Stats{Malformed: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, &Server{}, "")
			c := ts.dial(t)
			write(t, c, tt.before)
			write(t, c, valid+"\n")
			got := ts.col.waitEvents(t, 1)
			if diff := cmp.Diff([]event.Event{wantEvent}, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			tt.wantStats.Accepted, tt.wantStats.Events = 1, 1
			if diff := cmp.Diff(tt.wantStats, ts.srv.Stats()); diff != "" {
				t.Errorf("Stats (-want +got):\n%s", diff)
			}
		})
	}
}

func TestServeMaxLine(t *testing.T) {
	ts := startServer(t, &Server{MaxLine: 64}, "")
	c := ts.dial(t)
	short := `{"type":"shield_up","container":"c"}` // 36 bytes
	long := `{"type":"shield_up","container":"` + strings.Repeat("c", 40) + `"}`
	write(t, c, long+"\n"+short+"\n")
	got := ts.col.waitEvents(t, 1)
	if len(got) != 1 || got[0].Container != "c" {
		t.Errorf("events = %+v, want only the short line", got)
	}
	if s := ts.srv.Stats(); s.Oversized != 1 {
		t.Errorf("Oversized = %d, want 1", s.Oversized)
	}
}

// TestServeSinkErrorKeepsConnection ports docs/seed-compat.md §S10.39.
func TestServeSinkErrorKeepsConnection(t *testing.T) {
	col := &collector{fail: func(ev event.Event) error {
		if ev.Container == "first" {
			return errors.New("sink exploded")
		}
		return nil
	}}
	ts := startServer(t, &Server{Sink: col.sink}, "")
	c := ts.dial(t)
	write(t, c, `{"type":"shield_up","container":"first"}`+"\n"+`{"type":"shield_up","container":"second"}`+"\n")
	got := col.waitEvents(t, 2)
	if got[1].Container != "second" {
		t.Errorf("second event = %+v", got[1])
	}
	if s := ts.srv.Stats(); s.SinkErrors != 1 || s.Events != 2 {
		t.Errorf("Stats = %+v, want 1 sink error of 2 events", s)
	}
}

// TestServeManyConnections opens and drops 1 000 connections, some with
// partial or bad lines, while another connection keeps delivering.
func TestServeManyConnections(t *testing.T) {
	ts := startServer(t, &Server{}, "")
	steady := ts.dial(t)

	const churn = 1000
	const steadyEvents = 200
	var wg sync.WaitGroup
	wg.Add(1)
	errc := make(chan error, 1)
	go func() {
		defer wg.Done()
		for i := range churn {
			c, err := net.Dial("unix", ts.path)
			if err != nil {
				errc <- err
				return
			}
			switch i % 4 {
			case 1:
				io.WriteString(c, `{"type":"pending","contai`) // cut mid-line
			case 2:
				io.WriteString(c, "not-json\n")
			case 3:
				io.WriteString(c, strings.Repeat("z", 4096))
			}
			c.Close()
		}
	}()
	for i := range steadyEvents {
		write(t, steady, fmt.Sprintf(`{"type":"pending","container":"steady","id":"steady:%d","dest":"10.0.0.1","port":443,"proto":6}`+"\n", i))
	}
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatalf("churn dial: %v", err)
	default:
	}
	wait(t, "all connections accounted", func() bool { return ts.srv.Stats().Accepted == churn+1 })

	var ids []string
	for _, ev := range ts.col.waitEvents(t, steadyEvents) {
		if ev.Container == "steady" {
			ids = append(ids, ev.RequestID)
		}
	}
	var want []string
	for i := range steadyEvents {
		want = append(want, fmt.Sprintf("steady:%d", i))
	}
	if diff := cmp.Diff(want, ids); diff != "" {
		t.Errorf("steady connection's events (-want +got):\n%s", diff)
	}
	// The one-shot "not-json" lines were dropped, the cut lines too.
	if s := ts.srv.Stats(); s.Events != steadyEvents || s.Rejected != 0 {
		t.Errorf("Stats = %+v, want %d events and no rejections", s, steadyEvents)
	}
}

// TestServeRejectsUIDMismatch ports docs/seed-compat.md §S10.44 without privileges: the
// server is told to accept another uid than ours.
func TestServeRejectsUIDMismatch(t *testing.T) {
	var logs bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
	ts := startServer(t, &Server{UID: os.Getuid() + 1, Log: log}, "")
	c := ts.dial(t)
	// The server may close before the write: ignore its error.
	io.WriteString(c, producerLines[0].line+"\n")
	// The server closes a rejected connection without reading.
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read from rejected connection: %v", err)
	}
	wait(t, "rejection", func() bool { return ts.srv.Stats().Rejected == 1 })
	if got := ts.col.snapshot(); len(got) != 0 {
		t.Errorf("rejected connection delivered %+v", got)
	}
	logMu.Lock()
	defer logMu.Unlock()
	for _, want := range []string{"ingest: rejecting connection from foreign uid", fmt.Sprintf("peer_uid=%d", os.Getuid()), fmt.Sprintf("peer_pid=%d", os.Getpid())} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log %q lacks %q", logs.String(), want)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// helperSocketEnv tells TestHelperProcess which socket to write to.
const helperSocketEnv = "CLEARANCE_INGEST_HELPER_SOCKET"

// TestHelperProcess is not a test: TestServeRejectsForeignUID runs the test
// binary as another user with this test selected, to connect from a
// foreign uid.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperSocketEnv)
	if path == "" {
		return
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper: dial: %v\n", err)
		os.Exit(2)
	}
	// The line may or may not be written before the server closes.
	io.WriteString(c, `{"type":"shield_up","container":"foreign"}`+"\n")
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		fmt.Fprintf(os.Stderr, "helper: waiting for close: %v\n", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// TestServeRejectsForeignUID connects from uid 65534 for real.
func TestServeRejectsForeignUID(t *testing.T) {
	testutil.RequireRoot(t)
	const nobody = 65534

	// The test binary usually sits in a 0700 build directory: give the
	// helper a copy it can run, in a directory it can reach.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "ingest.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
	ts := startServer(t, &Server{Log: log}, dir)
	if err := os.Chmod(ts.path, 0o777); err != nil { // let nobody connect
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperSocketEnv+"="+ts.path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", nobody, err, out)
	}
	wait(t, "rejection", func() bool { return ts.srv.Stats().Rejected == 1 })
	logMu.Lock()
	if want := fmt.Sprintf("peer_uid=%d", nobody); !strings.Contains(logs.String(), want) {
		t.Errorf("log %q lacks %q", logs.String(), want)
	}
	logMu.Unlock()

	// Our own uid is still served afterwards.
	c := ts.dial(t)
	write(t, c, producerLines[0].line+"\n")
	got := ts.col.waitEvents(t, 1)
	if diff := cmp.Diff([]event.Event{producerLines[0].want}, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Stats{Accepted: 1, Rejected: 1, Events: 1}, ts.srv.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
}

func TestServeShutdownClosesConnections(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ingest.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	srv := &Server{Sink: col.sink, Log: testutil.Logger(t)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()

	var conns []net.Conn
	for range 5 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		write(t, c, producerLines[0].line+"\n")
		conns = append(conns, c)
	}
	col.waitEvents(t, len(conns))
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Serve did not return after cancel")
	}
	checkNoServerGoroutines(t)
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(waitTimeout))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("conn %d: read %d bytes after shutdown, want EOF", i, n)
		}
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		t.Error("listener still accepts after shutdown")
	}
}

func TestServeReturnsAcceptError(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // Accept fails at once, not because ctx ended
	srv := &Server{Sink: (&collector{}).sink}
	err = srv.Serve(context.Background(), ln)
	if !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve = %v, want an error wrapping net.ErrClosed", err)
	}
	checkNoServerGoroutines(t)
}

func TestServeNilSink(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Server{}).Serve(context.Background(), ln); err == nil {
		t.Error("Serve with a nil Sink succeeded")
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimiter(10 * time.Second)
	l.now = func() time.Time { return now }
	type result struct {
		OK         bool
		Suppressed uint64
	}
	step := func(advance time.Duration) result {
		now = now.Add(advance)
		ok, n := l.allow()
		return result{ok, n}
	}
	got := []result{
		step(0),               // first passes
		step(time.Second),     // held back
		step(time.Second),     // held back
		step(8 * time.Second), // 10 s after the first: passes, reports 2
		step(9 * time.Second), // held back
		step(time.Second),     // passes, reports 1
		step(time.Hour),       // passes, nothing suppressed
	}
	want := []result{{true, 0}, {false, 0}, {false, 0}, {true, 2}, {false, 0}, {true, 1}, {true, 0}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("limiter (-want +got):\n%s", diff)
	}
}

func TestServeRateLimitsWarnings(t *testing.T) {
	var logs bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
	ts := startServer(t, &Server{Log: log, WarnInterval: time.Hour}, "")
	c := ts.dial(t)
	write(t, c, strings.Repeat("not-json\n", 50)+producerLines[0].line+"\n")
	ts.col.waitEvents(t, 1)
	if s := ts.srv.Stats(); s.Malformed != 50 {
		t.Errorf("Malformed = %d, want 50", s.Malformed)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if n := strings.Count(logs.String(), "dropping malformed line"); n != 1 {
		t.Errorf("%d malformed-line warnings, want 1:\n%s", n, logs.String())
	}
}
