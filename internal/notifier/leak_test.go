// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/notify"
	"github.com/terok-ai/clearance/internal/testenv/notifytest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestDaemonForgetsWhatIsGone is a long run of what a desktop sees:
// containers come (a hub each), block, get Allow, "Allow 1 h" and Deny,
// have prompts dismissed, show a shield-down alert, and go away with their
// hub's directory. At the end nothing is pending and no container is
// left, so everything the daemon tracks must be empty again, its
// goroutines back to where they were, and no alert of a gone container
// may stay on screen. Counts, not time or memory.
func TestDaemonForgetsWhatIsGone(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	base := filepath.Join(testutil.ShortDir(t), "clearance")
	st := &recordStatus{}
	observed := make(chan *daemon, 1)
	startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dialBus(t, bus.Addr),
		Status: st, AllowFor: time.Hour, RatePerMinute: 1 << 20, observe: func(d *daemon) { observed <- d }})
	d := <-observed
	st.wait(t, "0 hubs (0 connected), 0 pending (0 shown), notifications: ok")
	baseline := runtime.NumGoroutine()

	const containers, blocks = 12, 9
	keys := []string{"allow", "allow_for", "deny"}
	for c := range containers {
		id := fmt.Sprintf("f0f0f0%06d", c)
		sock := filepath.Join(base, id, "hub.sock")
		th := startHubAt(t, sock, id)
		th.WaitSubscribers(t, 1)
		for i := range blocks {
			domain := fmt.Sprintf("h%d.c%d.example", i, c)
			th.Hub.Blocked(blockedEvent(id, fmt.Sprintf("10.%d.%d.1", c, i), domain, nil))
			p := waitNotify(t, srv, "Blocked: "+domain+":443")
			if i%4 == 3 { // dismissed: no decision, still pending at the hub
				if err := srv.Dismiss(p.ID, uint32(notify.ReasonDismissed)); err != nil {
					t.Fatal(err)
				}
				continue
			}
			key := keys[i%4%len(keys)]
			if err := srv.Invoke(p.ID, key); err != nil {
				t.Fatal(err)
			}
			word := "Allowed: "
			if key == "deny" {
				word = "Denied: "
			}
			waitNotify(t, srv, word+domain)
		}
		// The shield goes down: the alert stays until the container is
		// gone. Then the hub goes away with its directory.
		th.Hub.Publish(event.Event{Type: event.ShieldDown, Container: id})
		alert := waitNotifyPrefix(t, srv, "Shield down: ")
		th.Stop()
		if err := os.RemoveAll(filepath.Dir(sock)); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.WaitFor(func(calls []notifytest.Call) bool {
			return slices.ContainsFunc(calls, func(c notifytest.Call) bool {
				return c.Method == "CloseNotification" && c.ID == alert.ID
			})
		}, 15*time.Second); err != nil {
			t.Fatalf("container %s: its shield-down alert stays on screen after it is gone: %v", id, err)
		}
		st.wait(t, "0 hubs (0 connected), 0 pending (0 shown)")
		srv.Reset()
	}

	if diff := cmp.Diff(notify.PopupsStats{}, d.popups.Stats()); diff != "" {
		t.Errorf("popups still track (-want +got):\n%s", diff)
	}
	d.mu.Lock()
	left := map[string]int{"hubs": len(d.hubs), "routes": len(d.routes), "targets": len(d.targets)}
	d.mu.Unlock()
	if diff := cmp.Diff(map[string]int{"hubs": 0, "routes": 0, "targets": 0}, left); diff != "" {
		t.Errorf("daemon still tracks (-want +got):\n%s", diff)
	}
	waitGoroutines(t, baseline)
}

// waitNotifyPrefix waits for a Notify whose summary starts with prefix.
func waitNotifyPrefix(t *testing.T, srv *notifytest.Server, prefix string) notifytest.Call {
	t.Helper()
	calls, err := srv.WaitFor(func(calls []notifytest.Call) bool {
		return slices.ContainsFunc(calls, func(c notifytest.Call) bool {
			return c.Method == "Notify" && strings.HasPrefix(c.Summary, prefix)
		})
	}, 15*time.Second)
	if err != nil {
		t.Fatalf("waiting for Notify %q…: %v", prefix, err)
	}
	i := slices.IndexFunc(calls, func(c notifytest.Call) bool {
		return c.Method == "Notify" && strings.HasPrefix(c.Summary, prefix)
	})
	return calls[i]
}

// waitGoroutines waits until no more than n goroutines run. Goroutines
// end asynchronously and announce it nowhere, so this polls, as every
// goroutine-leak check does; the deadline only bounds a failure.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}
