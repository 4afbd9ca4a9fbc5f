package notifier

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/hubd"
	"github.com/terok-ai/clearance/internal/notify"
	"github.com/terok-ai/clearance/internal/notify/notifytest"
	"github.com/terok-ai/clearance/internal/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
)

// fakeApplier records verdicts and answers OK (copied from hubd's tests).
type fakeApplier struct {
	mu    sync.Mutex
	calls []hub.ApplyRequest
	added chan struct{}
}

func newFakeApplier() *fakeApplier { return &fakeApplier{added: make(chan struct{})} }

func (f *fakeApplier) Apply(ctx context.Context, req hub.ApplyRequest) (hub.ApplyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, req)
	close(f.added)
	f.added = make(chan struct{})
	return hub.ApplyResult{OK: true}, nil
}

// waitCalls waits until the applier has at least n calls and returns them.
func (f *fakeApplier) waitCalls(t testing.TB, n int) []hub.ApplyRequest {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		f.mu.Lock()
		calls := append([]hub.ApplyRequest(nil), f.calls...)
		added := f.added
		f.mu.Unlock()
		if len(calls) >= n {
			return calls
		}
		select {
		case <-added:
		case <-deadline:
			t.Fatalf("applier got %d calls, want %d: %+v", len(calls), n, calls)
		}
	}
}

// testHub is a real hub (hub.Hub + hubd service + varlinkapi.Server) on a
// Unix socket, like clearance-hub without NFLOG.
type testHub struct {
	hub     *hub.Hub
	applier *fakeApplier
	path    string
	stop    func()
}

// startHubAt serves a hub for container on path, creating its directory
// (0700). stop (also run in Cleanup) ends the server, which removes the
// socket file.
func startHubAt(tb testing.TB, path, container string) *testHub {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		tb.Fatal(err)
	}
	fa := newFakeApplier()
	h := hub.New(hub.Config{Container: container, Applier: fa, Log: logFor(tb)})
	svc, err := hubd.NewService(h, nil, nil, logFor(tb))
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatal(err)
	}
	srv := &varlinkapi.Server{Service: svc, Log: logFor(tb), MaxMessage: 64 << 10}
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
					tb.Errorf("serve: %v", err)
				}
			case <-time.After(5 * time.Second):
				tb.Errorf("hub server did not stop")
			}
			ln.Close()
		})
	}
	tb.Cleanup(stop)
	return &testHub{hub: h, applier: fa, path: path, stop: stop}
}

// logFor logs to the test log, or nowhere in benchmarks (logging would
// dominate what they measure).
func logFor(tb testing.TB) *slog.Logger {
	if _, bench := tb.(*testing.B); bench {
		return slog.New(slog.DiscardHandler)
	}
	return testutil.Logger(tb)
}

// waitSubscribers waits until the hub has at least n subscribers.
func (th *testHub) waitSubscribers(tb testing.TB, n int) {
	tb.Helper()
	waitUntil(tb, "hub subscribers", func() bool { return th.hub.Stats().Subscribers >= n })
}

// waitUntil polls cond (for state without a change notification).
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: condition not reached within 15s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// runtimeDir returns a short temporary directory standing in for
// $XDG_RUNTIME_DIR (socket paths must stay under 108 bytes).
func runtimeDir(tb testing.TB) string {
	tb.Helper()
	d, err := os.MkdirTemp("", "cn")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// dialBus returns a DialBus for the private bus at addr.
func dialBus(tb testing.TB, addr string) func(context.Context) (Bus, error) {
	return func(ctx context.Context) (Bus, error) {
		c, err := notify.Dial(ctx, addr, &notify.Config{Logger: logFor(tb)})
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// daemon runs Run in the background until stopped (also in Cleanup).
type runningDaemon struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func startDaemon(tb testing.TB, opts Options) *runningDaemon {
	tb.Helper()
	if opts.Logger == nil {
		opts.Logger = logFor(tb)
	}
	if opts.BackoffMin == 0 {
		opts.BackoffMin, opts.BackoffMax = 20*time.Millisecond, 200*time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &runningDaemon{cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- Run(ctx, opts) }()
	tb.Cleanup(func() {
		if err := d.stop(); err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	return d
}

// stop cancels Run and returns its result.
func (d *runningDaemon) stop() error {
	d.once.Do(func() {
		d.cancel()
		select {
		case d.err = <-d.done:
		case <-time.After(15 * time.Second):
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			d.err = fmt.Errorf("Run did not return after cancel:\n%s", buf[:n])
		}
	})
	return d.err
}

func blockedEvent(container, dest, domain string, dossier map[string]string) event.Event {
	return event.Event{Type: event.ConnectionBlocked, Container: container, Dest: dest,
		Port: 443, Proto: event.ProtoTCP, Domain: domain, Dossier: dossier}
}

// notifyWith returns a WaitFor predicate for a Notify call with summary.
func notifyWith(summary string) func([]notifytest.Call) bool {
	return func(calls []notifytest.Call) bool {
		_, ok := findNotify(calls, summary)
		return ok
	}
}

// findNotify returns the last Notify call with summary.
func findNotify(calls []notifytest.Call, summary string) (notifytest.Call, bool) {
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].Method == "Notify" && calls[i].Summary == summary {
			return calls[i], true
		}
	}
	return notifytest.Call{}, false
}

func waitNotify(tb testing.TB, srv *notifytest.Server, summary string) notifytest.Call {
	tb.Helper()
	calls, err := srv.WaitFor(notifyWith(summary), 15*time.Second)
	if err != nil {
		tb.Fatalf("waiting for Notify %q: %v", summary, err)
	}
	c, _ := findNotify(calls, summary)
	return c
}
