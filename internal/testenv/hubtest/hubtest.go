// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package hubtest is test support for code that talks to a clearance hub:
// a real hub (hub.Hub + the hubd varlink service + varlinkapi.Server) served
// on a Unix socket ([Serve]), like clearance-hub without NFLOG or a
// firewall, and a recording fake [Applier] that stands in for the firewall.
//
// Everything started here is stopped in tb.Cleanup. All waits are bounded
// by [Timeout] and fail the test when it passes.
//
// The hubd package's own tests cannot use this package (it imports hubd).
package hubtest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/hubd"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
)

// Timeout bounds every wait in this package: [Applier.WaitCalls],
// [Hub.WaitSubscribers], testutil.Eventually and the wait for the server to return
// in [Hub.Stop]. It is generous so that slow, loaded CI machines pass.
const Timeout = 20 * time.Second

// maxMessage is the varlink request bound of served hubs.
const maxMessage = 64 << 10

// Applier is a fake firewall: it records every [hub.ApplyRequest] and
// answers with a configurable result. The zero Applier is ready to use and
// answers OK.
//
// An OK answer to a once-verdict with a TTL carries Expires = now+TTL, as
// the real firewall reports the expiry of a timed rule.
//
// All methods are safe for concurrent use.
type Applier struct {
	mu      sync.Mutex
	calls   []hub.ApplyRequest
	ids     []string
	refuse  bool   // answer OK=false (inverted so the zero value answers OK)
	stderr  string // Stderr of every answer
	err     error  // returned instead of a result when non-nil
	changed chan struct{}
}

var _ hub.Applier = (*Applier)(nil)

// Apply records req and answers with the configured result. It implements
// [hub.Applier].
func (a *Applier) Apply(ctx context.Context, req hub.ApplyRequest) (hub.ApplyResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ids = append(a.ids, req.VerdictID)
	req.VerdictID = "" // random: see VerdictIDs
	a.calls = append(a.calls, req)
	if a.changed != nil {
		close(a.changed)
		a.changed = nil
	}
	if a.err != nil {
		return hub.ApplyResult{}, a.err
	}
	res := hub.ApplyResult{OK: !a.refuse, Stderr: a.stderr}
	if res.OK && req.Scope == hub.ScopeOnce && req.TTL > 0 {
		res.Expires = time.Now().Add(req.TTL)
	}
	return res, nil
}

// Calls returns a copy of the requests applied so far, oldest first.
// The requests come with VerdictID cleared (the hub draws it at random);
// [Applier.VerdictIDs] has them.
func (a *Applier) Calls() []hub.ApplyRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]hub.ApplyRequest(nil), a.calls...)
}

// VerdictIDs returns the verdict ids of the requests applied so far, in
// the order of [Applier.Calls].
func (a *Applier) VerdictIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.ids...)
}

// Set configures the answer to later calls: OK and Stderr of the result,
// or, when err is non-nil, err instead of a result.
func (a *Applier) Set(ok bool, stderr string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.refuse, a.stderr, a.err = !ok, stderr, err
}

// WaitCalls waits until at least n requests have been applied and returns
// them (a copy, oldest first). It wakes on each Apply rather than polling,
// and fails tb after [Timeout]. It must be called from the test's
// goroutine (it may call tb.Fatalf).
func (a *Applier) WaitCalls(tb testing.TB, n int) []hub.ApplyRequest {
	tb.Helper()
	deadline := time.NewTimer(Timeout)
	defer deadline.Stop()
	for {
		a.mu.Lock()
		calls := append([]hub.ApplyRequest(nil), a.calls...)
		if a.changed == nil {
			a.changed = make(chan struct{})
		}
		changed := a.changed
		a.mu.Unlock()
		if len(calls) >= n {
			return calls
		}
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("applier got %d calls within %v, want %d: %+v", len(calls), Timeout, n, calls)
		}
	}
}

// Options configure [Serve]. The zero Options serve a new hub for
// container "c" answering every verdict OK.
type Options struct {
	// Container is the id of the container the new hub serves (default
	// "c"). Ignored when Hub is set.
	Container string

	// Applier receives the hub's verdicts (default: a new zero [Applier],
	// answering OK). When Hub is set, pass the Applier that Hub was built
	// with so that [Hub].Applier refers to it; Serve does not check.
	Applier *Applier

	// Hub, when set, is served instead of building a new one (for a
	// custom hub.Config, or to serve one hub under a new socket).
	Hub *hub.Hub

	// QueueDepth is the new hub's per-subscriber queue bound (default
	// hub.DefaultQueueDepth). Ignored when Hub is set.
	QueueDepth int

	// KeepSocket leaves the socket file in place when the server stops: a
	// stale socket that refuses connections, as a crashed hub leaves. It is
	// removed in tb.Cleanup. Without it the socket file is removed on Stop,
	// as a cleanly stopped hub does.
	KeepSocket bool

	// Log receives the hub's and server's logs. Nil logs to tb's log, or
	// nowhere when tb is a *testing.B (logging would dominate what
	// benchmarks measure).
	Log *slog.Logger
}

// Hub is a hub served on a Unix socket by [Serve].
//
// Its fields are set by Serve and not changed afterwards; a test may
// overwrite Path (for example after renaming the socket), which only
// changes what later readers of the field see.
type Hub struct {
	// Hub is the served hub; tests publish events and inspect state on it
	// directly.
	Hub *hub.Hub

	// Applier is the fake firewall receiving the hub's verdicts (nil when
	// Options.Hub was set without Options.Applier).
	Applier *Applier

	// Path is the socket path.
	Path string

	// Server is the varlink server accepting connections on Path.
	Server *varlinkapi.Server

	// Stop stops the server: it closes the listener and every connection
	// and waits (up to [Timeout]) for Serve to return, reporting a serve
	// error or a timeout with tb.Errorf. It is idempotent, safe to call
	// from any goroutine, and also runs in tb.Cleanup.
	Stop func()
}

// Serve serves a hub on a new Unix socket at path until the test ends or
// Stop is called. It creates path's directory (mode 0700) when missing.
// Unix socket paths are limited to about 107 bytes, so path should lie
// under a short temporary directory rather than tb.TempDir().
//
// Serve must be called from the test's goroutine (it may call tb.Fatal).
func Serve(tb testing.TB, path string, o Options) *Hub {
	tb.Helper()
	log := o.Log
	if log == nil {
		log = logFor(tb)
	}
	a := o.Applier
	h := o.Hub
	if h == nil {
		if a == nil {
			a = &Applier{}
		}
		container := o.Container
		if container == "" {
			container = "c"
		}
		h = hub.New(hub.Config{Container: container, QueueDepth: o.QueueDepth, Applier: a, Log: log})
	}
	svc, err := hubd.NewService(h, nil, nil, log)
	if err != nil {
		tb.Fatalf("hub service: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		tb.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		tb.Fatal(err)
	}
	if o.KeepSocket {
		ln.SetUnlinkOnClose(false)
		tb.Cleanup(func() { os.Remove(path) })
	}
	srv := &varlinkapi.Server{Service: svc, Log: log, MaxMessage: maxMessage, Params: hubd.ParamCheck()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			timer := time.NewTimer(Timeout)
			defer timer.Stop()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("hub %s: serve: %v", path, err)
				}
			case <-timer.C:
				tb.Errorf("hub %s: serve did not return within %v of stop", path, Timeout)
			}
		})
	}
	tb.Cleanup(stop)
	return &Hub{Hub: h, Applier: a, Path: path, Server: srv, Stop: stop}
}

// WaitSubscribers waits until the hub has at least n subscribers, failing
// tb after [Timeout]. The hub offers no change notification for its
// subscribers, so this polls. Call it from the test's goroutine.
func (h *Hub) WaitSubscribers(tb testing.TB, n int) {
	tb.Helper()
	testutil.Eventually(tb, 0, "hub subscribers", func() bool { return h.Hub.Stats().Subscribers >= n })
}

// logFor logs to tb's log, or nowhere in benchmarks.
func logFor(tb testing.TB) *slog.Logger {
	if _, bench := tb.(*testing.B); bench {
		return slog.New(slog.DiscardHandler)
	}
	return testutil.Logger(tb)
}
