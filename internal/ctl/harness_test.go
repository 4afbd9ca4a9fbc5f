package ctl

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/hubd"
	"github.com/terok-ai/clearance/internal/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
)

// fakeApplier records verdicts and answers with a configurable result
// (copied from internal/hubd's wire tests).
type fakeApplier struct {
	mu     sync.Mutex
	calls  []hub.ApplyRequest
	ok     bool
	stderr string
	err    error
}

func (f *fakeApplier) Apply(ctx context.Context, req hub.ApplyRequest) (hub.ApplyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, req)
	if f.err != nil {
		return hub.ApplyResult{}, f.err
	}
	res := hub.ApplyResult{OK: f.ok, Stderr: f.stderr}
	if f.ok && req.Scope == hub.ScopeOnce && req.TTL > 0 {
		res.Expires = time.Now().Add(req.TTL)
	}
	return res, nil
}

func (f *fakeApplier) Calls() []hub.ApplyRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]hub.ApplyRequest(nil), f.calls...)
}

func (f *fakeApplier) set(ok bool, stderr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ok, f.stderr = ok, stderr
}

// testHub is a real hub served on <runtime>/clearance/<id>/hub.sock.
type testHub struct {
	hub     *hub.Hub
	applier *fakeApplier
	path    string
	stop    func()
}

// startHub serves a hub for container id under runtimeDir until the test
// ends or stop is called. stop leaves the socket file in place (a stale
// socket, refusing connections), as a crashed hub would.
func startHub(t *testing.T, runtimeDir, id string) *testHub {
	t.Helper()
	return startHubWith(t, runtimeDir, id, &fakeApplier{ok: true}, nil)
}

func startHubWith(t *testing.T, runtimeDir, id string, fa *fakeApplier, h *hub.Hub) *testHub {
	t.Helper()
	if h == nil {
		h = hub.New(hub.Config{Container: id, Applier: fa, Log: testutil.Logger(t)})
	}
	dir := filepath.Join(runtimeDir, "clearance", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return serveHub(t, filepath.Join(dir, "hub.sock"), fa, h)
}

// serveHub serves h on a new socket at path.
func serveHub(t *testing.T, path string, fa *fakeApplier, h *hub.Hub) *testHub {
	t.Helper()
	if h == nil {
		h = hub.New(hub.Config{Container: "x", Applier: fa, Log: testutil.Logger(t)})
	}
	svc, err := hubd.NewService(h, nil, nil, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	t.Cleanup(func() { os.Remove(path) })
	srv := &varlinkapi.Server{Service: svc, Log: testutil.Logger(t), MaxMessage: 64 << 10}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("serve did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return &testHub{hub: h, applier: fa, path: path, stop: stop}
}

// blockedEv is a blocked connection of container c.
func blockedEv(c, dest, domain string, port int64) event.Event {
	return event.Event{Type: event.ConnectionBlocked, Container: c, Dest: dest, Port: port, Proto: 6,
		Domain: domain, Dossier: map[string]string{}}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// envMap turns a map into an env lookup function.
func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// ctlResult is the outcome of one clearancectl run.
type ctlResult struct {
	code           int
	stdout, stderr string
}

// runCtl runs clearancectl in-process with XDG_RUNTIME_DIR=runtimeDir.
func runCtl(t *testing.T, runtimeDir string, args ...string) ctlResult {
	t.Helper()
	return runWith(t, nil, runtimeDir, args...)
}

// runWith is runCtl with a hook to adjust the runner (fakes).
func runWith(t *testing.T, adjust func(*runner), runtimeDir string, args ...string) ctlResult {
	t.Helper()
	var out, errb bytes.Buffer
	r := newRunner(strings.NewReader(""), &out, &errb, envMap(map[string]string{"XDG_RUNTIME_DIR": runtimeDir}))
	if adjust != nil {
		adjust(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := r.run(ctx, args)
	res := ctlResult{code: code, stdout: out.String(), stderr: errb.String()}
	t.Logf("clearancectl %s → %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code,
		truncateForLog(res.stdout), truncateForLog(res.stderr))
	return res
}

func truncateForLog(s string) string {
	if len(s) > 4000 {
		return s[:4000] + "…"
	}
	return s
}

// waitFor polls cond until it holds, failing after a generous timeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// shortTempDir returns a temp dir with a short path (Unix socket paths
// are limited to 107 bytes).
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// hostile is a domain an attacker controls: an ANSI colour, an OSC title
// change, a cursor move, an RTL override and 10 KiB of name.
var hostile = "\x1b[31mevil\x1b]0;owned\x07\x1b[2J\u202egnp.exe\u009b" + strings.Repeat("A", 10<<10) + ".example"

// assertInert fails when s carries an escape byte, a C1 CSI or a bidi
// override.
func assertInert(t *testing.T, where, s string) {
	t.Helper()
	for _, bad := range []string{"\x1b", "\u202e", "\u009b", "\x07"} {
		if strings.Contains(s, bad) {
			t.Errorf("%s contains %q", where, bad)
		}
	}
}
