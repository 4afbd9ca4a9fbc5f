// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/notify"
	"github.com/terok-ai/clearance/internal/testenv/hubtest"
	"github.com/terok-ai/clearance/internal/testenv/notifytest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// startHubAt serves a hub for container on path (see hubtest.Serve);
// Stop (also run in Cleanup) ends the server, which removes the socket
// file.
func startHubAt(tb testing.TB, path, container string) *hubtest.Hub {
	tb.Helper()
	return hubtest.Serve(tb, path, hubtest.Options{Container: container, Log: logFor(tb)})
}

// logFor logs to the test log, or nowhere in benchmarks (logging would
// dominate what they measure).
func logFor(tb testing.TB) *slog.Logger {
	if _, bench := tb.(*testing.B); bench {
		return slog.New(slog.DiscardHandler)
	}
	return testutil.Logger(tb)
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
