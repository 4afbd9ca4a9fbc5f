// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/hubd"
	"github.com/terok-ai/clearance/internal/testenv/notifytest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

var fullCaps = []string{"actions", "body", "body-markup", "persistence"}

// TestDaemonFollowsHubs drives the daemon against a private dbus-daemon
// with the recording fake notification server and two real hubs under a
// temporary $XDG_RUNTIME_DIR/clearance.
func TestDaemonFollowsHubs(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	base := filepath.Join(testutil.ShortDir(t), "clearance")

	// Hub A exists before the daemon, with a request already waiting.
	hubA := startHubAt(t, filepath.Join(base, "aaaa00000001", "hub.sock"), "ctr-a")
	idA := hubA.Hub.Blocked(blockedEvent("ctr-a", "192.0.2.1", "before.example",
		map[string]string{"project": "proj", "task": "t1", "name": "builder"}))

	start := time.Now()
	d := startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dialBus(t, bus.Addr)})

	t.Run("a request pending before the start is shown", func(t *testing.T) {
		c := waitNotify(t, srv, "Blocked: before.example:443")
		if diff := cmp.Diff("Task: proj/t1 · builder\nAddress: 192.0.2.1:443\nProtocol: TCP", c.Body); diff != "" {
			t.Errorf("body (-want +got):\n%s", diff)
		}
		_ = idA
	})

	// Hub B appears after the daemon started: inotify finds it.
	pathB := filepath.Join(base, "bbbb00000002", "hub.sock")
	hubB := startHubAt(t, pathB, "ctr-b")
	hubB.WaitSubscribers(t, 1)
	watch := hubB.Hub.Subscribe()
	defer watch.Close()
	idB := hubB.Hub.Blocked(blockedEvent("ctr-b", "192.0.2.7", "api.example.com", nil))

	var promptB notifytest.Call
	t.Run("a block at a late hub becomes a prompt", func(t *testing.T) {
		promptB = waitNotify(t, srv, "Blocked: api.example.com:443")
		got := struct {
			Body    string
			Actions []string
			Timeout int32
			Hints   map[string]any
		}{promptB.Body, promptB.Actions, promptB.Timeout, map[string]any{}}
		for k := range promptB.Hints {
			got.Hints[k], _ = promptB.Hint(k)
		}
		want := struct {
			Body    string
			Actions []string
			Timeout int32
			Hints   map[string]any
		}{"Container: ctr-b\nAddress: 192.0.2.7:443\nProtocol: TCP", []string{"allow", "Allow", "deny", "Deny"}, 0,
			map[string]any{"urgency": byte(2), "resident": true}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("prompt (-want +got):\n%s", diff)
		}
	})
	if promptB.ID == 0 {
		t.FailNow()
	}

	t.Run("Allow reaches the hub as a verdict and replaces the popup", func(t *testing.T) {
		if err := srv.Invoke(promptB.ID, "allow"); err != nil {
			t.Fatal(err)
		}
		calls := hubB.Applier.WaitCalls(t, 1)
		if diff := cmp.Diff(hub.ApplyRequest{Container: "ctr-b", Dest: "api.example.com", IP: "192.0.2.7",
			Port: 443, Proto: 6, Action: "allow", Scope: hub.ScopeOnce}, calls[0]); diff != "" {
			t.Errorf("applied verdict (-want +got):\n%s", diff)
		}
		// The hub accepted the verdict for exactly this request id.
		applied := nextOfType(t, watch, event.VerdictApplied)
		if diff := cmp.Diff(event.Event{Type: event.VerdictApplied, Container: "ctr-b", RequestID: idB,
			Action: "allow", OK: true, Reason: hubd.Caller(os.Getuid(), "notifier").Describe(), Dossier: map[string]string{}}, applied); diff != "" {
			t.Errorf("verdict_applied (-want +got):\n%s", diff)
		}
		out := waitNotify(t, srv, "Allowed: api.example.com")
		if out.ReplacesID != promptB.ID || len(out.Actions) != 0 {
			t.Errorf("outcome replaces %d with actions %q, want replaces %d and no actions", out.ReplacesID, out.Actions, promptB.ID)
		}
	})

	var promptB2 notifytest.Call
	t.Run("a restarted hub is subscribed again", func(t *testing.T) {
		hubB.Stop()
		hubB2 := startHubAt(t, pathB, "ctr-b")
		hubB2.WaitSubscribers(t, 1)
		hubB2.Hub.Blocked(blockedEvent("ctr-b", "192.0.2.8", "second.example", nil))
		promptB2 = waitNotify(t, srv, "Blocked: second.example:443")
		hubB = hubB2
	})

	t.Run("removing the hub directory closes its prompts", func(t *testing.T) {
		if promptB2.ID == 0 {
			t.Fatal("the previous step showed no prompt from the restarted hub")
		}
		hubB.Stop()
		if err := os.RemoveAll(filepath.Dir(pathB)); err != nil {
			t.Fatal(err)
		}
		_, err := srv.WaitFor(func(calls []notifytest.Call) bool {
			return slices.ContainsFunc(calls, func(c notifytest.Call) bool {
				return c.Method == "CloseNotification" && c.ID == promptB2.ID
			})
		}, 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("shutdown closes the remaining prompts", func(t *testing.T) {
		promptA, _ := findNotify(srv.Calls(), "Blocked: before.example:443")
		stopAt := time.Now()
		if err := d.stop(); err != nil {
			t.Fatal(err)
		}
		t.Logf("Run returned %v after cancel (ran %v)", time.Since(stopAt), stopAt.Sub(start))
		if !slices.ContainsFunc(srv.Calls(), func(c notifytest.Call) bool {
			return c.Method == "CloseNotification" && c.ID == promptA.ID
		}) {
			t.Errorf("prompt %d of hub A not closed on shutdown:%s", promptA.ID, notifytest.Describe(srv.Calls()))
		}
	})
}

// nextOfType returns the next event of type typ from sub.
func nextOfType(t *testing.T, sub *hub.Subscription, typ string) event.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		for {
			ev, ok := sub.Next()
			if !ok {
				break
			}
			if ev.Type == typ {
				return ev
			}
		}
		select {
		case <-sub.Ready():
		case <-deadline:
			t.Fatalf("no %s event within 10s", typ)
		}
	}
}

// TestDaemonTransportFailureShowsAllowFailed: the hub dies between the
// prompt and the click; the popup says the allow failed.
func TestDaemonTransportFailureShowsAllowFailed(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	base := filepath.Join(testutil.ShortDir(t), "clearance")
	th := startHubAt(t, filepath.Join(base, "cccc00000003", "hub.sock"), "ctr-c")
	th.Hub.Blocked(blockedEvent("ctr-c", "192.0.2.9", "gone.example", nil))
	startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dialBus(t, bus.Addr),
		ForgetAfter: time.Hour})
	p := waitNotify(t, srv, "Blocked: gone.example:443")
	th.Stop() // socket gone, directory stays: the prompt is kept for a while
	if err := srv.Invoke(p.ID, "allow"); err != nil {
		t.Fatal(err)
	}
	out := waitNotify(t, srv, "Allow failed: gone.example")
	if out.ReplacesID != p.ID {
		t.Errorf("failure replaces %d, want %d", out.ReplacesID, p.ID)
	}
}

// TestDaemonAllowFor: the optional third button decides with a TTL.
func TestDaemonAllowFor(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	base := filepath.Join(testutil.ShortDir(t), "clearance")
	th := startHubAt(t, filepath.Join(base, "dddd00000004", "hub.sock"), "ctr-d")
	startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dialBus(t, bus.Addr),
		AllowFor: time.Hour})
	th.WaitSubscribers(t, 1)
	th.Hub.Blocked(blockedEvent("ctr-d", "192.0.2.10", "later.example", nil))
	p := waitNotify(t, srv, "Blocked: later.example:443")
	if diff := cmp.Diff([]string{"allow", "Allow", "deny", "Deny", "allow_for", "Allow 1 h"}, p.Actions); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	if err := srv.Invoke(p.ID, "allow_for"); err != nil {
		t.Fatal(err)
	}
	got := th.Applier.WaitCalls(t, 1)[0]
	if got.Action != "allow" || got.Scope != hub.ScopeOnce || got.TTL != time.Hour {
		t.Errorf("applied %+v, want allow once for 1h", got)
	}
	waitNotify(t, srv, "Allowed: later.example")
}

// TestDaemonNotificationServerRestart: prompts come back after the
// notification server restarts, and after the bus connection is lost and
// dialled again.
func TestDaemonNotificationServerRestart(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	base := filepath.Join(testutil.ShortDir(t), "clearance")
	th := startHubAt(t, filepath.Join(base, "eeee00000005", "hub.sock"), "ctr-e")
	th.Hub.Blocked(blockedEvent("ctr-e", "192.0.2.11", "again.example", nil))
	startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dialBus(t, bus.Addr)})
	waitNotify(t, srv, "Blocked: again.example:443")
	srv.Reset()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	p := waitNotify(t, srv, "Blocked: again.example:443")
	if p.ReplacesID != 0 {
		t.Errorf("re-posted prompt replaces %d, want a fresh popup", p.ReplacesID)
	}
}

// TestDaemonHeadless: without a session bus the daemon exits 0 when
// configured so, and otherwise keeps running until stopped.
func TestDaemonHeadless(t *testing.T) {
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "")
	glob := filepath.Join(testutil.ShortDir(t), "clearance", "*", "hub.sock")
	t.Run("headless_exit_ok", func(t *testing.T) {
		if err := Run(t.Context(), Options{Globs: []string{glob}, HeadlessExitOK: true}); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	})
	t.Run("keeps running", func(t *testing.T) {
		st := &recordStatus{}
		d := startDaemon(t, Options{Globs: []string{glob}, Status: st})
		testutil.Eventually(t, 0, "READY", func() bool { return st.get() != "" })
		if s := st.get(); !strings.Contains(s, "unavailable") {
			t.Errorf("status %q does not say notifications are unavailable", s)
		}
		if err := d.stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestHostileStringsRenderInert: markup, ANSI escapes, bidi overrides and
// 10 KiB values in the domain and the dossier reach the notification
// server escaped and capped.
func TestHostileStringsRenderInert(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	base := filepath.Join(testutil.ShortDir(t), "clearance")
	th := startHubAt(t, filepath.Join(base, "ffff00000006", "hub.sock"), "ctr-f")
	startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dialBus(t, bus.Addr)})
	th.WaitSubscribers(t, 1)

	hostile := map[string]string{
		"markup": `<b>bold</b> & <a href="x">link</a>`,
		"ansi":   "\x1b[31mred\x1b[0m\x1b]0;title\x07",
		"rtl":    "evil\u202egnp.exe\u2066x\u2069",
		"long":   strings.Repeat("A", 10<<10),
	}
	n := 0
	for name, s := range hostile {
		n++
		// A destination of its own: the hub takes records for a
		// destination decided a moment ago for ones logged before the
		// verdict landed, and makes no new prompt for them.
		dest := fmt.Sprintf("192.0.2.%d", 11+n)
		t.Run(name, func(t *testing.T) {
			srv.Reset()
			th.Hub.Blocked(event.Event{Type: event.ConnectionBlocked, Container: "ctr-f", Dest: dest,
				Port: 443, Proto: 6, Domain: s + ".example",
				Dossier: map[string]string{"project": s, "task": s, "name": s}})
			calls, err := srv.WaitFor(func(calls []notifytest.Call) bool {
				return slices.ContainsFunc(calls, func(c notifytest.Call) bool {
					return c.Method == "Notify" && strings.HasPrefix(c.Summary, "Blocked: ")
				})
			}, 15*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(calls, func(c notifytest.Call) bool { return c.Method == "Notify" })
			c := calls[i]
			for field, v := range map[string]string{"summary": c.Summary, "body": c.Body} {
				if !inertMarkup(v) {
					t.Errorf("%s not inert: %q", field, v)
				}
				if n := utf8.RuneCountInString(v); n > 1200 {
					t.Errorf("%s has %d runes, want it capped", field, n)
				}
			}
			if name == "markup" && !strings.Contains(c.Summary, "&lt;b&gt;bold&lt;/b&gt; &amp;") {
				t.Errorf("summary %q lacks the escaped markup", c.Summary)
			}
			// Resolve it so the next case gets a fresh prompt.
			if err := srv.Invoke(c.ID, "deny"); err != nil {
				t.Fatal(err)
			}
			if _, err := srv.WaitFor(func(calls []notifytest.Call) bool {
				return slices.ContainsFunc(calls, func(x notifytest.Call) bool {
					return x.Method == "Notify" && x.ReplacesID == c.ID && strings.HasPrefix(x.Summary, "Denied: ")
				})
			}, 15*time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// inertMarkup reports whether s shows as plain text in Pango markup and
// on a terminal: no tags, no control or bidi characters, and every '&'
// starts one of the three entities the escaper writes.
func inertMarkup(s string) bool {
	if strings.ContainsAny(s, "<>\x1b\x07\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069") {
		return false
	}
	for i := strings.IndexByte(s, '&'); i >= 0; i = strings.IndexByte(s, '&') {
		rest := s[i:]
		if !strings.HasPrefix(rest, "&amp;") && !strings.HasPrefix(rest, "&lt;") && !strings.HasPrefix(rest, "&gt;") {
			return false
		}
		s = rest[1:]
	}
	for _, r := range s {
		if r < 0x20 && r != '\n' {
			return false
		}
	}
	return true
}

// recordStatus records the daemon's status lines (READY's and every
// STATUS=) in order.
type recordStatus struct {
	mu      sync.Mutex
	status  string
	history []string
	changed chan struct{} // closed and replaced on every line
}

func (r *recordStatus) set(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = s
	r.history = append(r.history, s)
	if r.changed != nil {
		close(r.changed)
	}
	r.changed = make(chan struct{})
}

func (r *recordStatus) get() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// lines returns every line recorded so far.
func (r *recordStatus) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.history)
}

// wait waits until the current line contains every one of want, and
// returns it.
func (r *recordStatus) wait(t *testing.T, want ...string) string {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		r.mu.Lock()
		cur := r.status
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		r.mu.Unlock()
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(cur, w)
		}
		if ok {
			return cur
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no status line with %q; last %q", want, cur)
		}
	}
}

func (r *recordStatus) Ready(s string)  { r.set(s) }
func (r *recordStatus) Status(s string) { r.set(s) }
func (r *recordStatus) Stopping()       {}

// TestDaemonBusLost: the session bus goes away and comes back (at a new
// address, as after a re-login of the bus); the daemon dials again and
// shows the pending prompt on the new bus.
func TestDaemonBusLost(t *testing.T) {
	bus1 := notifytest.NewBus(t)
	srv1 := notifytest.NewServer(t, bus1.Addr, fullCaps)
	var mu sync.Mutex
	addr := bus1.Addr
	dial := func(ctx context.Context) (Bus, error) {
		mu.Lock()
		a := addr
		mu.Unlock()
		return dialBus(t, a)(ctx)
	}
	base := filepath.Join(testutil.ShortDir(t), "clearance")
	th := startHubAt(t, filepath.Join(base, "9999aaaa0007", "hub.sock"), "ctr-g")
	th.Hub.Blocked(blockedEvent("ctr-g", "192.0.2.13", "lost.example", nil))
	startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dial})
	waitNotify(t, srv1, "Blocked: lost.example:443")

	bus1.Stop()
	bus2 := notifytest.NewBus(t)
	srv2 := notifytest.NewServer(t, bus2.Addr, fullCaps)
	mu.Lock()
	addr = bus2.Addr
	mu.Unlock()
	p := waitNotify(t, srv2, "Blocked: lost.example:443")
	if err := srv2.Invoke(p.ID, "deny"); err != nil {
		t.Fatal(err)
	}
	if got := th.Applier.WaitCalls(t, 1)[0]; got.Action != "deny" || got.Dest != "lost.example" {
		t.Errorf("applied %+v, want deny lost.example", got)
	}
}

// TestDaemonShowsWhoDecidedElsewhere: a prompt answered on another channel
// (clearancectl) is replaced by the outcome naming who decided, not closed
// silently.
func TestDaemonShowsWhoDecidedElsewhere(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	base := filepath.Join(testutil.ShortDir(t), "clearance")
	h := startHubAt(t, filepath.Join(base, "cccc00000003", "hub.sock"), "ctr-c")
	startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dialBus(t, bus.Addr)})
	h.WaitSubscribers(t, 1)
	id := h.Hub.Blocked(blockedEvent("ctr-c", "192.0.2.8", "pkg.example", nil))
	prompt := waitNotify(t, srv, "Blocked: pkg.example:443")

	alice := hub.WithOperator(context.Background(), hub.Operator{UID: 1000, User: "alice", Channel: "clearancectl"})
	if _, err := h.Hub.Decide(alice, id, "deny", hub.ScopeOnce, 0, false); err != nil {
		t.Fatal(err)
	}
	out := waitNotify(t, srv, "Denied: pkg.example")
	if out.ReplacesID != prompt.ID || out.Body != "Container: ctr-c\nBy alice (uid 1000) via clearancectl" {
		t.Errorf("outcome replaces %d with body %q, want it to replace %d and name alice", out.ReplacesID, out.Body, prompt.ID)
	}
	if n := len(h.Applier.Calls()); n != 1 {
		t.Errorf("%d verdicts applied, want alice's alone", n)
	}
}
