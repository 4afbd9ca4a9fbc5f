// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notify_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/notify"
	"github.com/terok-ai/clearance/internal/render"
	"github.com/terok-ai/clearance/internal/testenv/notifytest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// wait is generous: conditions are awaited, never timed.
const wait = 10 * time.Second

var fullCaps = []string{"actions", "body", "body-markup", "persistence"}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 8, 4, 14, 3, 9, 0, time.Local)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type verdict struct{ Container, RequestID, Target, Action string }

type rig struct {
	bus     *notifytest.Bus
	srv     *notifytest.Server
	client  *notify.Client
	popups  *notify.Popups
	clock   *clock
	actions chan verdict
	ctx     context.Context
}

// newRig starts a bus, the fake server with caps (none when caps is nil),
// a client and a Popups fed by the client's events.
func newRig(t *testing.T, caps []string, cfg *notify.PopupsConfig) *rig {
	t.Helper()
	r := &rig{bus: notifytest.NewBus(t), clock: newClock(), actions: make(chan verdict, 16), ctx: testutil.Context(t)}
	if caps != nil {
		r.srv = notifytest.NewServer(t, r.bus.Addr, caps)
	}
	c, err := notify.Dial(r.ctx, r.bus.Addr, &notify.Config{Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	r.client = c
	if cfg == nil {
		cfg = &notify.PopupsConfig{}
	}
	cfg.Logger = testutil.Logger(t)
	cfg.Now = r.clock.Now
	r.popups = notify.NewPopups(c, cfg)
	r.popups.OnAction(func(container, requestID, target, action string) {
		r.actions <- verdict{container, requestID, target, action}
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range c.Events() {
			r.popups.HandleSignal(r.ctx, e)
		}
	}()
	t.Cleanup(func() {
		c.Disconnect()
		<-done
	})
	return r
}

func blockedEv(container, n, domain string) event.Event {
	return event.Event{
		Type: event.ConnectionBlocked, Container: container, RequestID: container + ":" + n,
		Dest: "198.51.100.1", Port: 443, Proto: event.ProtoTCP, Domain: domain,
		Dossier: map[string]string{"project": "warp-core", "task": "t42", "name": "build"},
	}
}

func (r *rig) waitCalls(t *testing.T, what string, pred func([]notifytest.Call) bool) []notifytest.Call {
	t.Helper()
	calls, err := r.srv.WaitFor(pred, wait)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return calls
}

func notifies(calls []notifytest.Call) []notifytest.Call {
	return slices.DeleteFunc(slices.Clone(calls), func(c notifytest.Call) bool { return c.Method != "Notify" })
}

func lastNotify(t *testing.T, calls []notifytest.Call) notifytest.Call {
	t.Helper()
	n := notifies(calls)
	if len(n) == 0 {
		t.Fatalf("no Notify call")
	}
	return n[len(n)-1]
}

func hasSummary(s string) func([]notifytest.Call) bool {
	return func(calls []notifytest.Call) bool {
		return slices.ContainsFunc(calls, func(c notifytest.Call) bool { return c.Method == "Notify" && c.Summary == s })
	}
}

func hints(c notifytest.Call) map[string]any {
	m := map[string]any{}
	for k, v := range c.Hints {
		m[k] = v.Value()
	}
	return m
}

func TestClientNotifyExact(t *testing.T) {
	r := newRig(t, fullCaps, nil)
	caps, err := r.client.Capabilities(r.ctx)
	if err != nil {
		t.Fatalf("Capabilities: %v", err)
	}
	if diff := cmp.Diff(fullCaps, caps); diff != "" {
		t.Errorf("capabilities (-want +got):\n%s", diff)
	}
	si, err := r.client.ServerInfo(r.ctx)
	if err != nil || si.Name != "notifytest" || si.SpecVersion != "1.2" {
		t.Errorf("ServerInfo = %+v, %v", si, err)
	}
	if got := r.client.Owner(); got != r.srv.Unique() {
		t.Errorf("Owner = %q, want %q", got, r.srv.Unique())
	}

	p := render.Blocked(blockedEv("c0ffee", "1", "registry.example.net"), 1, time.Time{})
	id, err := r.client.Notify(r.ctx, notify.FromPopup(p, 0, []render.Action{render.ActionAllowButton, render.ActionDenyButton}))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	got := lastNotify(t, r.srv.Calls())
	want := notifytest.Call{
		Method: "Notify", Sender: got.Sender, App: "clearance", ReplacesID: 0, Icon: "",
		Summary: "Blocked: registry.example.net:443",
		Body:    "Task: warp-core/t42 · build\nAddress: 198.51.100.1:443\nProtocol: TCP",
		Actions: []string{"allow", "Allow", "deny", "Deny"}, Timeout: 0, ID: id,
	}
	gotHints := hints(got)
	got.Hints = nil
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Notify call (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]any{"urgency": byte(2), "resident": true}, gotHints); diff != "" {
		t.Errorf("hints (-want +got):\n%s", diff)
	}

	// CloseNotification, and the server's NotificationClosed reaches us.
	if err := r.client.Close(r.ctx, id); err != nil {
		t.Fatalf("Close: %v", err)
	}
	r.waitCalls(t, "CloseNotification", func(calls []notifytest.Call) bool {
		return slices.ContainsFunc(calls, func(c notifytest.Call) bool { return c.Method == "CloseNotification" && c.ID == id })
	})
	if err := r.client.Close(r.ctx, 999999); err != nil {
		t.Errorf("Close(unknown id): %v", err)
	}
}

func TestClientEvents(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	ctx := testutil.Context(t)
	c, err := notify.Dial(ctx, bus.Addr, &notify.Config{Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Disconnect() })
	next := func() notify.Event {
		t.Helper()
		select {
		case e, ok := <-c.Events():
			if !ok {
				t.Fatalf("events closed")
			}
			return e
		case <-time.After(wait):
			t.Fatalf("no event")
		}
		return nil
	}

	id, err := c.Notify(ctx, notify.Notification{Summary: "s", Actions: []render.Action{render.ActionAllowButton}})
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	// A spoofed click from another connection is dropped; the real one
	// after it is the next event.
	notifytest.Spoof(t, bus.Addr, id, "allow")
	if err := srv.Invoke(id, "deny"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(notify.Event(notify.ActionInvoked{ID: id, Key: "deny"}), next()); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if err := srv.Dismiss(id, 2); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(notify.Event(notify.Closed{ID: id, Reason: notify.ReasonDismissed}), next()); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	// A restart is a departure and an arrival.
	if diff := cmp.Diff(notify.Event(notify.DaemonGone{}), next()); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(notify.Event(notify.DaemonRestarted{Owner: srv.Unique()}), next()); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if got := c.Owner(); got != srv.Unique() {
		t.Errorf("Owner after restart = %q, want %q", got, srv.Unique())
	}
	// The bus going away: Disconnected, then the channel closes.
	bus.Stop()
	if _, ok := next().(notify.Disconnected); !ok {
		t.Fatalf("want Disconnected")
	}
	select {
	case _, ok := <-c.Events():
		if ok {
			t.Fatalf("events not closed after Disconnected")
		}
	case <-time.After(wait):
		t.Fatalf("events not closed")
	}
	if _, err := c.Notify(ctx, notify.Notification{Summary: "s"}); err == nil {
		t.Errorf("Notify on a dead bus succeeded")
	}
}

// TestClientNoServerSendsNothing: while org.freedesktop.Notifications has
// no owner, the client's calls fail with ErrNoServer and nothing reaches
// the bus (a D-Bus monitor sees every call to that name, owned or not);
// the server's arrival and departure are events.
func TestClientNoServerSendsNothing(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewStoppedServer(t, bus.Addr, fullCaps)
	mon := notifytest.NewMonitor(t, bus.Addr)
	ctx := testutil.Context(t)
	c, err := notify.Dial(ctx, bus.Addr, &notify.Config{Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Disconnect() })
	next := func() notify.Event {
		t.Helper()
		select {
		case e := <-c.Events():
			return e
		case <-time.After(wait):
			t.Fatalf("no event")
		}
		return nil
	}
	calls := func() error {
		if _, err := c.Capabilities(ctx); !errors.Is(err, notify.ErrNoServer) {
			return fmt.Errorf("Capabilities: %v, want ErrNoServer", err)
		}
		if _, err := c.Notify(ctx, notify.Notification{Summary: "s"}); !errors.Is(err, notify.ErrNoServer) {
			return fmt.Errorf("Notify: %v, want ErrNoServer", err)
		}
		if err := c.Close(ctx, 7); !errors.Is(err, notify.ErrNoServer) {
			return fmt.Errorf("Close: %v, want ErrNoServer", err)
		}
		if _, err := c.ServerInfo(ctx); !errors.Is(err, notify.ErrNoServer) {
			return fmt.Errorf("ServerInfo: %v, want ErrNoServer", err)
		}
		return nil
	}
	if err := calls(); err != nil {
		t.Fatalf("before any server: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(notify.Event(notify.DaemonRestarted{Owner: srv.Unique()}), next()); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if _, err := c.Notify(ctx, notify.Notification{Summary: "shown"}); err != nil {
		t.Fatalf("Notify with a server: %v", err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(notify.Event(notify.DaemonGone{}), next()); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if err := calls(); err != nil {
		t.Fatalf("after the server left: %v", err)
	}
	// Only what went out while the server was there reached the bus.
	if err := mon.Sync(); err != nil {
		t.Fatal(err)
	}
	seen := mon.Seen()
	var kinds []string
	for _, s := range seen {
		kinds = append(kinds, s.Kind)
	}
	if diff := cmp.Diff([]string{"Owner", "GetCapabilities", "Notify", "Owner"}, kinds); diff != "" {
		t.Errorf("calls on the bus (-want +got):\n%s%s", diff, notifytest.DescribeSeen(seen))
	}
}

// TestClientDepartureRace: the server leaves while the client has not yet
// read the NameOwnerChanged saying so (its dispatch is held up by an
// undrained event channel). The first Notify still goes out and is
// answered NameHasNoOwner; the client then knows, and sends no more.
func TestClientDepartureRace(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	ctx := testutil.Context(t)
	c, err := notify.Dial(ctx, bus.Addr, &notify.Config{Logger: testutil.Logger(t), EventBuffer: 1})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Disconnect() })
	id, err := c.Notify(ctx, notify.Notification{Summary: "s"})
	if err != nil {
		t.Fatal(err)
	}
	// Two signals, not read: the first fills the channel, the client's
	// dispatch waits with the second, and the owner change queues
	// behind it.
	for range 2 {
		if err := srv.Invoke(id, "allow"); err != nil {
			t.Fatal(err)
		}
	}
	mon := notifytest.NewMonitor(t, bus.Addr)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := mon.WaitFor(func(s []notifytest.Seen) bool { return len(s) > 0 }, wait); err != nil {
		t.Fatal(err) // the NameOwnerChanged is on the bus
	}
	for i := range 5 {
		if _, err := c.Notify(ctx, notify.Notification{Summary: "s"}); !errors.Is(err, notify.ErrNoServer) {
			t.Fatalf("Notify %d after the departure: %v, want ErrNoServer", i, err)
		}
	}
	if err := mon.Sync(); err != nil {
		t.Fatal(err)
	}
	by := 0
	for _, s := range mon.Seen() {
		if s.Kind == "Notify" {
			by++
		}
	}
	if by != 1 {
		t.Errorf("%d Notify calls reached the bus after the departure, want 1:%s", by, notifytest.DescribeSeen(mon.Seen()))
	}
	// Drained, the events still say the server left.
	var got []notify.Event
	for len(got) < 3 {
		select {
		case e := <-c.Events():
			got = append(got, e)
		case <-time.After(wait):
			t.Fatalf("events %v, want two clicks and DaemonGone", got)
		}
	}
	if diff := cmp.Diff([]notify.Event{notify.ActionInvoked{ID: id, Key: "allow"}, notify.ActionInvoked{ID: id, Key: "allow"},
		notify.DaemonGone{}}, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestDialSessionNeverAutolaunches(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "launched")
	script := "#!/bin/sh\ntouch " + marker + "\necho 'DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent'\n"
	for _, name := range []string{"dbus-launch", "dbus-daemon"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
	t.Setenv("DISPLAY", ":99") // X11 autolaunch bait
	for _, addr := range []string{"", "   ", "autolaunch:", "autolaunch:scope=foo"} {
		t.Run("address "+strings.TrimSpace(addr), func(t *testing.T) {
			t.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			c, err := notify.DialSession(ctx, nil)
			if !errors.Is(err, notify.ErrNoSessionBus) {
				if c != nil {
					c.Disconnect()
				}
				t.Fatalf("DialSession err = %v, want ErrNoSessionBus", err)
			}
		})
	}
	os.Unsetenv("DBUS_SESSION_BUS_ADDRESS")
	if _, err := notify.DialSession(context.Background(), nil); !errors.Is(err, notify.ErrNoSessionBus) {
		t.Fatalf("unset: err = %v, want ErrNoSessionBus", err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a bus launcher was spawned (marker: %v)", err)
	}
}

func TestDialSessionUsesAddress(t *testing.T) {
	bus := notifytest.NewBus(t)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", bus.Addr)
	c, err := notify.DialSession(testutil.Context(t), nil)
	if err != nil {
		t.Fatalf("DialSession: %v", err)
	}
	if got := c.Owner(); got != "" {
		t.Errorf("Owner with no server = %q", got)
	}
	c.Disconnect()
	c.Disconnect() // idempotent
}

func TestPopupsBlockedCoalesceAndVerdict(t *testing.T) {
	r := newRig(t, fullCaps, nil)
	ev1 := blockedEv("c0ffee", "1", "registry.example.net")
	r.popups.HandleEvent(r.ctx, ev1)
	first := lastNotify(t, r.srv.Calls())
	if first.ReplacesID != 0 || first.Summary != "Blocked: registry.example.net:443" {
		t.Fatalf("first prompt = %+v", first)
	}

	r.clock.Advance(5 * time.Second)
	ev2 := blockedEv("c0ffee", "2", "registry.example.net")
	r.popups.HandleEvent(r.ctx, ev2)
	second := lastNotify(t, r.srv.Calls())
	if second.ReplacesID != first.ID || second.ID != first.ID {
		t.Errorf("repeat did not replace in place: replaces %d id %d, want %d", second.ReplacesID, second.ID, first.ID)
	}
	wantBody := "Task: warp-core/t42 · build\nAddress: 198.51.100.1:443\nProtocol: TCP\nBlocked 2 times since 14:03:09"
	if second.Body != wantBody {
		t.Errorf("repeat body = %q, want %q", second.Body, wantBody)
	}

	// Another destination: a fresh popup.
	other := blockedEv("c0ffee", "3", "cdn.example.org")
	r.popups.HandleEvent(r.ctx, other)
	if n := lastNotify(t, r.srv.Calls()); n.ReplacesID != 0 || n.ID == first.ID {
		t.Errorf("other destination replaced a popup: %+v", n)
	}

	// A click decides the newest request; a double click and the body
	// click ("default") do nothing more.
	for _, key := range []string{"default", "allow", "allow", "deny"} {
		if err := r.srv.Invoke(first.ID, key); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case v := <-r.actions:
		if diff := cmp.Diff(verdict{"c0ffee", "c0ffee:2", "registry.example.net", "allow"}, v); diff != "" {
			t.Errorf("action (-want +got):\n%s", diff)
		}
	case <-time.After(wait):
		t.Fatalf("no action callback")
	}
	// Signals arrive in order: once a click on the other prompt is
	// through, the double click has been handled.
	otherID := lastNotify(t, r.srv.Calls()).ID
	if err := r.srv.Invoke(otherID, "deny"); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-r.actions:
		if diff := cmp.Diff(verdict{"c0ffee", "c0ffee:3", "cdn.example.org", "deny"}, v); diff != "" {
			t.Errorf("second prompt's action (-want +got):\n%s", diff)
		}
	case <-time.After(wait):
		t.Fatalf("no action callback")
	}
	r.srv.Reset()
	r.popups.HandleEvent(r.ctx, event.Event{Type: event.VerdictApplied, Container: "c0ffee", RequestID: "c0ffee:2", Action: "allow", OK: true})
	out := lastNotify(t, r.srv.Calls())
	if out.ReplacesID != first.ID || out.Summary != "Allowed: registry.example.net" || len(out.Actions) != 0 ||
		out.Body != "Task: warp-core/t42 · build" || out.Timeout != -1 {
		t.Errorf("verdict popup = %+v", out)
	}
	if diff := cmp.Diff(map[string]any{"urgency": byte(1), "transient": true}, hints(out)); diff != "" {
		t.Errorf("verdict hints (-want +got):\n%s", diff)
	}

	// A failed verdict on the other prompt: security alert.
	r.popups.HandleEvent(r.ctx, event.Event{Type: event.VerdictApplied, Container: "c0ffee", RequestID: "c0ffee:3", Action: "deny", OK: false})
	if n := lastNotify(t, r.srv.Calls()); n.Summary != "Deny failed: cdn.example.org" ||
		!cmp.Equal(map[string]any{"urgency": byte(2)}, hints(n)) {
		t.Errorf("failed verdict popup = %+v hints %v", n, hints(n))
	}
	// Unknown request: nothing.
	r.srv.Reset()
	r.popups.HandleEvent(r.ctx, event.Event{Type: event.VerdictApplied, Container: "c0ffee", RequestID: "nope", Action: "allow", OK: true})
	if calls := r.srv.Calls(); len(calls) != 0 {
		t.Errorf("verdict for unknown request made calls: %s", notifytest.Describe(calls))
	}
}

func TestPopupsAllowForButton(t *testing.T) {
	tests := []struct {
		name       string
		maxButtons int
		want       []string
	}{
		{"third button when it fits", 0, []string{"allow", "Allow", "deny", "Deny", "allow_for", "Allow 1 h"}},
		{"left out on a two-button server", 2, []string{"allow", "Allow", "deny", "Deny"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, fullCaps, &notify.PopupsConfig{AllowForLabel: "Allow 1 h", MaxButtons: tt.maxButtons})
			r.popups.ShowBlocked(r.ctx, blockedEv("c", "1", "a.example"))
			n := lastNotify(t, r.srv.Calls())
			if diff := cmp.Diff(tt.want, n.Actions); diff != "" {
				t.Fatalf("actions (-want +got):\n%s", diff)
			}
			if len(tt.want) == 6 {
				r.srv.Invoke(n.ID, "allow_for")
				select {
				case v := <-r.actions:
					if v.Action != "allow_for" {
						t.Errorf("action = %q", v.Action)
					}
				case <-time.After(wait):
					t.Fatalf("no action callback")
				}
			}
		})
	}
}

func TestPopupsCloseOnContainerExit(t *testing.T) {
	r := newRig(t, fullCaps, nil)
	r.popups.HandleEvent(r.ctx, blockedEv("c1", "1", "a.example"))
	r.popups.HandleEvent(r.ctx, blockedEv("c1", "2", "b.example"))
	r.popups.HandleEvent(r.ctx, blockedEv("c2", "1", "a.example"))
	r.popups.HandleEvent(r.ctx, event.Event{Type: event.ShieldDown, Container: "c1", Dossier: map[string]string{"name": "box"}})
	calls := r.waitCalls(t, "shield down", hasSummary("Shield down: box"))
	var closed []uint32
	for _, c := range calls {
		if c.Method == "CloseNotification" {
			closed = append(closed, c.ID)
		}
	}
	slices.Sort(closed)
	if len(closed) != 2 {
		t.Fatalf("closed %v, want the two prompts of c1", closed)
	}
	if p, _ := r.popups.Pending(); p != 1 {
		t.Errorf("pending = %d, want 1 (c2's)", p)
	}
	sd := lastNotify(t, calls)
	if sd.Body != "Outbound firewall bypassed — allowlist is not enforced." || sd.Timeout != -1 {
		t.Errorf("shield down popup = %+v", sd)
	}

	// c1's exit closes its shield-down alert; c2's exit its prompt.
	r.srv.Reset()
	r.popups.HandleEvent(r.ctx, event.Event{Type: event.ContainerExited, Container: "c1", Reason: "poststop"})
	calls = r.waitCalls(t, "container stopped", hasSummary("Container stopped: c1"))
	if !slices.ContainsFunc(calls, func(c notifytest.Call) bool { return c.Method == "CloseNotification" && c.ID == sd.ID }) {
		t.Errorf("shield-down popup %d not closed: %s", sd.ID, notifytest.Describe(calls))
	}
	if n := lastNotify(t, calls); n.Body != "Reason: poststop" || !cmp.Equal(map[string]any{"urgency": byte(0), "transient": true}, hints(n)) {
		t.Errorf("container stopped popup = %+v", n)
	}
	r.popups.HandleEvent(r.ctx, event.Event{Type: event.ContainerExited, Container: "c2"})
	r.waitCalls(t, "c2 prompt closed", func(calls []notifytest.Call) bool {
		return slices.ContainsFunc(calls, func(c notifytest.Call) bool { return c.Method == "CloseNotification" })
	})
	if p, _ := r.popups.Pending(); p != 0 {
		t.Errorf("pending = %d after every container exited", p)
	}
}

func TestPopupsRepostOnDaemonRestart(t *testing.T) {
	r := newRig(t, fullCaps, nil)
	r.popups.ShowBlocked(r.ctx, blockedEv("c", "1", "a.example"))
	r.popups.ShowBlocked(r.ctx, blockedEv("c", "2", "b.example"))
	before := notifies(r.srv.Calls())
	r.srv.Reset()
	if err := r.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	calls := r.waitCalls(t, "re-post", func(calls []notifytest.Call) bool { return len(notifies(calls)) == 2 })
	for i, n := range notifies(calls) {
		if n.ReplacesID != 0 || n.Summary != before[i].Summary || len(n.Actions) != 4 || n.Sender != before[i].Sender {
			t.Errorf("re-post %d = %+v, want fresh %q", i, n, before[i].Summary)
		}
	}
	// The new ids work: a click reaches the callback.
	if err := r.srv.Invoke(notifies(calls)[1].ID, "deny"); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-r.actions:
		if v.RequestID != "c:2" || v.Action != "deny" {
			t.Errorf("action = %+v", v)
		}
	case <-time.After(wait):
		t.Fatalf("no action after restart")
	}
}

func TestPopupsServerArrivesLater(t *testing.T) {
	r := newRig(t, nil, nil) // no notification server on the bus yet
	r.popups.ShowBlocked(r.ctx, blockedEv("c", "1", "a.example"))
	if p, v := r.popups.Pending(); p != 1 || v != 0 {
		t.Fatalf("pending %d visible %d, want 1 0", p, v)
	}
	r.srv = notifytest.NewServer(t, r.bus.Addr, fullCaps)
	calls := r.waitCalls(t, "prompt posted", hasSummary("Blocked: a.example:443"))
	if n := lastNotify(t, calls); len(n.Actions) != 4 {
		t.Errorf("late prompt = %+v", n)
	}
}

func TestPopupsFloodSummary(t *testing.T) {
	r := newRig(t, fullCaps, &notify.PopupsConfig{MaxVisible: 5})
	for i := range 8 {
		r.popups.ShowBlocked(r.ctx, blockedEv("c", string(rune('a'+i)), string(rune('a'+i))+".example"))
	}
	// Summary updates are throttled to one a second; Flush shows the last.
	r.clock.Advance(2 * time.Second)
	r.popups.Flush(r.ctx)
	calls := r.srv.Calls()
	var prompts []notifytest.Call
	var summary notifytest.Call
	for _, n := range notifies(calls) {
		if strings.HasPrefix(n.Summary, "Blocked: ") {
			prompts = append(prompts, n)
		} else {
			summary = n
		}
	}
	if len(prompts) != 5 {
		t.Fatalf("%d prompts shown, want 5: %s", len(prompts), notifytest.Describe(calls))
	}
	if summary.Summary != "3 more waiting — clearancectl pending" {
		t.Fatalf("summary = %q", summary.Summary)
	}
	if summary.Body != "h.example:443 · warp-core/t42 · build\ng.example:443 · warp-core/t42 · build\nf.example:443 · warp-core/t42 · build" || len(summary.Actions) != 0 {
		t.Errorf("summary = %+v", summary)
	}
	// A dismissed prompt frees a slot: the oldest held-back one is shown
	// and the summary counts down (after its one-second throttle).
	r.srv.Reset()
	r.clock.Advance(2 * time.Second)
	if err := r.srv.Dismiss(prompts[0].ID, 2); err != nil {
		t.Fatal(err)
	}
	calls = r.waitCalls(t, "promotion", hasSummary("2 more waiting — clearancectl pending"))
	if !hasSummary("Blocked: f.example:443")(calls) {
		t.Errorf("oldest held-back prompt not shown: %s", notifytest.Describe(calls))
	}
	// Verdicts on the rest empty the queue and close the summary.
	for i := range 8 {
		r.popups.HandleEvent(r.ctx, event.Event{Type: event.VerdictApplied, Container: "c", RequestID: "c:" + string(rune('a'+i)), Action: "allow", OK: true})
	}
	r.waitCalls(t, "summary closed", func(calls []notifytest.Call) bool {
		return slices.ContainsFunc(calls, func(c notifytest.Call) bool { return c.Method == "CloseNotification" && c.ID == summary.ID })
	})
	if p, v := r.popups.Pending(); p != 0 || v != 0 {
		t.Errorf("pending %d visible %d, want 0", p, v)
	}
}

func TestPopupsRateLimit(t *testing.T) {
	r := newRig(t, fullCaps, &notify.PopupsConfig{MaxVisible: 10, RatePerMinute: 2})
	for i := range 4 {
		r.popups.ShowBlocked(r.ctx, blockedEv("c", string(rune('a'+i)), string(rune('a'+i))+".example"))
	}
	// Another container has its own budget.
	r.popups.ShowBlocked(r.ctx, blockedEv("d", "1", "z.example"))
	r.clock.Advance(2 * time.Second) // past the summary throttle, not enough for a token
	r.popups.Flush(r.ctx)
	calls := r.srv.Calls()
	for _, s := range []string{"Blocked: a.example:443", "Blocked: b.example:443", "Blocked: z.example:443", "2 more waiting — clearancectl pending"} {
		if !hasSummary(s)(calls) {
			t.Errorf("missing %q: %s", s, notifytest.Describe(calls))
		}
	}
	if hasSummary("Blocked: c.example:443")(calls) {
		t.Errorf("rate limit not applied: %s", notifytest.Describe(calls))
	}
	// A minute later Flush shows the rest.
	r.clock.Advance(time.Minute)
	r.popups.Flush(r.ctx)
	calls = r.srv.Calls()
	if !hasSummary("Blocked: c.example:443")(calls) || !hasSummary("Blocked: d.example:443")(calls) {
		t.Errorf("held-back prompts not shown after a minute: %s", notifytest.Describe(calls))
	}
	if _, v := r.popups.Pending(); v != 5 {
		t.Errorf("visible = %d, want 5", v)
	}
}

func TestPopupsNoActionsCapability(t *testing.T) {
	r := newRig(t, []string{"body"}, nil)
	r.popups.ShowBlocked(r.ctx, blockedEv("c", "1", "a.example"))
	r.clock.Advance(2 * time.Second) // past the summary's update throttle
	r.popups.ShowBlocked(r.ctx, blockedEv("c", "2", "b&<i>.example"))
	ns := notifies(r.srv.Calls())
	if len(ns) != 2 {
		t.Fatalf("want one notice updated once: %s", notifytest.Describe(ns))
	}
	for _, n := range ns {
		if len(n.Actions) != 0 {
			t.Errorf("notice has buttons: %+v", n)
		}
		if !strings.Contains(n.Body, "clearancectl watch") || !strings.Contains(n.Body, "clearancectl allow ID") {
			t.Errorf("notice does not point at clearancectl: %q", n.Body)
		}
	}
	if ns[0].Summary != "1 blocked connection waiting for a verdict" || ns[1].Summary != "2 blocked connections waiting for a verdict" ||
		ns[1].ReplacesID != ns[0].ID {
		t.Errorf("notice = %s", notifytest.Describe(ns))
	}
	// No body-markup: plain text, nothing escaped.
	if !strings.Contains(ns[1].Body, "Latest: b&<i>.example:443") || !strings.Contains(ns[1].Body, "(ID c:2)") {
		t.Errorf("notice body = %q", ns[1].Body)
	}
	r.popups.HandleEvent(r.ctx, event.Event{Type: event.VerdictApplied, Container: "c", RequestID: "c:1", Action: "allow", OK: true})
	r.popups.HandleEvent(r.ctx, event.Event{Type: event.VerdictApplied, Container: "c", RequestID: "c:2", Action: "allow", OK: true})
	r.waitCalls(t, "notice closed", func(calls []notifytest.Call) bool {
		return slices.ContainsFunc(calls, func(c notifytest.Call) bool { return c.Method == "CloseNotification" && c.ID == ns[0].ID })
	})
}

// hostileStrings are values a container could put into a domain or a
// dossier.
var hostileStrings = map[string]string{
	"markup": "<b>x</b>&amp;<span foreground='red'>y</span>",
	"ansi":   "\x1b[2J\x1b[31mred\x1b]8;;http://evil/\x07z",
	"rtl":    "moc.elpmaxe\u202e\u2066x\u2069",
	"10KiB":  strings.Repeat("n", 10<<10),
}

func TestPopupsHostileStringsInert(t *testing.T) {
	for _, markup := range []bool{true, false} {
		caps := []string{"actions", "body"}
		if markup {
			caps = append(caps, "body-markup")
		}
		r := newRig(t, caps, &notify.PopupsConfig{MaxVisible: 100})
		for name, s := range hostileStrings {
			ev := event.Event{Type: event.ConnectionBlocked, Container: s, RequestID: name, Dest: s, Port: 1, Proto: 6,
				Domain: s, Dossier: map[string]string{"project": s, "task": s, "name": s}}
			r.popups.ShowBlocked(r.ctx, ev)
		}
		for _, n := range notifies(r.srv.Calls()) {
			for _, txt := range []string{n.Summary, n.Body} {
				for _, rn := range txt {
					if (rn < 0x20 && rn != '\n') || rn == 0x7f || (rn >= 0x80 && rn <= 0x9f) ||
						(rn >= 0x202a && rn <= 0x202e) || (rn >= 0x2066 && rn <= 0x2069) {
						t.Fatalf("markup=%v: control rune %U reached the server in %q", markup, rn, txt)
					}
				}
				if len(txt) > 4096 {
					t.Errorf("markup=%v: %d-byte text reached the server", markup, len(txt))
				}
				stripped := strings.NewReplacer("&amp;", "", "&lt;", "", "&gt;", "").Replace(txt)
				if markup && strings.ContainsAny(stripped, "<>&") {
					t.Errorf("markup survived escaping: %q", txt)
				}
				if !markup && strings.Contains(txt, "&lt;") {
					t.Errorf("escaped for a server without body-markup: %q", txt)
				}
			}
		}
	}
}

func BenchmarkNotify(b *testing.B) {
	bus := notifytest.NewBus(b)
	srv := notifytest.NewServer(b, bus.Addr, fullCaps)
	ctx := testutil.Context(b)
	c, err := notify.Dial(ctx, bus.Addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Disconnect()
	go func() {
		for range c.Events() {
		}
	}()
	b.Run("client", func(b *testing.B) {
		ev := blockedEv("c", "1", "registry.example.net")
		start := time.Now()
		for b.Loop() {
			p := render.Blocked(ev, 1, time.Time{})
			if _, err := c.Notify(ctx, notify.FromPopup(p, 0, []render.Action{render.ActionAllowButton, render.ActionDenyButton})); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "us/notify")
		srv.Reset()
	})
	b.Run("popups-coalesced", func(b *testing.B) {
		pop := notify.NewPopups(c, &notify.PopupsConfig{RatePerMinute: 1 << 30})
		i := 0
		start := time.Now()
		for b.Loop() {
			i++
			// Notify returns once the server replied: it has received it.
			pop.ShowBlocked(ctx, blockedEv("c", strconv.Itoa(i), "registry.example.net"))
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "us/event")
		srv.Reset()
	})
}

func TestPopupsOutcomeAfterServerClosedDecidedPrompt(t *testing.T) {
	// Servers that ignore "resident" close the popup when a button is
	// clicked; the outcome then gets a popup of its own.
	r := newRig(t, fullCaps, nil)
	r.popups.ShowBlocked(r.ctx, blockedEv("c", "1", "a.example"))
	id := lastNotify(t, r.srv.Calls()).ID
	r.srv.Invoke(id, "allow")
	r.srv.Dismiss(id, 2)
	select {
	case <-r.actions:
	case <-time.After(wait):
		t.Fatalf("no action callback")
	}
	// The close is handled after the action (signal order); wait for the
	// prompt to leave the visible set.
	deadline := time.Now().Add(wait)
	for _, v := r.popups.Pending(); v != 0; _, v = r.popups.Pending() {
		if time.Now().After(deadline) {
			t.Fatalf("prompt still visible after the server closed it")
		}
		time.Sleep(time.Millisecond)
	}
	r.popups.HandleEvent(r.ctx, event.Event{Type: event.VerdictApplied, Container: "c", RequestID: "c:1", Action: "allow", OK: true})
	if n := lastNotify(t, r.srv.Calls()); n.Summary != "Allowed: a.example" || n.ReplacesID != 0 {
		t.Errorf("outcome = %+v", n)
	}
}

func TestPopupsCategories(t *testing.T) {
	r := newRig(t, fullCaps, &notify.PopupsConfig{Categories: []string{notify.CategoryContainerStarted, "bogus"}})
	r.popups.HandleEvent(r.ctx, blockedEv("c", "1", "a.example"))
	r.popups.HandleEvent(r.ctx, event.Event{Type: event.ShieldUp, Container: "c"})
	r.popups.HandleEvent(r.ctx, event.Event{Type: event.ContainerStarted, Container: "c"})
	ns := notifies(r.srv.Calls())
	if len(ns) != 1 || ns[0].Summary != "Container started: c" {
		t.Errorf("with only container_started enabled: %s", notifytest.Describe(ns))
	}
	if p, _ := r.popups.Pending(); p != 0 {
		t.Errorf("blocked disabled still tracked %d prompts", p)
	}
}

// TestObserveNoticeShownOnce: the hub_notice of a container in observe
// mode is a security alert shown once per notifier, however often the
// hub sends it (once per subscription); a container's blocked prompt
// shows the container's own reason as its unverified claim.
func TestObserveNoticeShownOnce(t *testing.T) {
	r := newRig(t, fullCaps, nil)
	notice := event.Event{Type: event.HubNotice, Container: "c1", Dossier: map[string]string{"name": "learner"},
		Reason: "OBSERVE MODE: this container's firewall is NOT ENFORCED."}
	r.popups.HandleEvent(r.ctx, notice)
	calls := r.waitCalls(t, "notice", hasSummary("clearance hub: learner"))
	n := lastNotify(t, calls)
	if n.Body != notice.Reason || hints(n)["urgency"] != byte(2) {
		t.Errorf("notice popup = %+v", n)
	}
	r.srv.Reset()
	r.popups.HandleEvent(r.ctx, notice) // the same notice again: a new subscription
	ev := blockedEv("c1", "1", "api.example.com")
	ev.Reason = "fetching deps"
	r.popups.HandleEvent(r.ctx, ev)
	calls = r.waitCalls(t, "prompt", hasSummary("Blocked: api.example.com:443"))
	for _, c := range calls {
		if c.Method == "Notify" && strings.HasPrefix(c.Summary, "clearance hub") {
			t.Errorf("notice shown twice: %s", notifytest.Describe(calls))
		}
	}
	if n := lastNotify(t, calls); !strings.Contains(n.Body, `The container says (unverified): "fetching deps"`) {
		t.Errorf("prompt body %q lacks the reason", n.Body)
	}
}

// TestPopupsNoticeOnceAndRateLimited: a notice is shown once per key
// (whatever repeats it, a closed popup or a server restart), spends the
// container's rate-limit tokens like a prompt and waits for Flush when
// there is none, and a cleared one may be shown again.
func TestPopupsNoticeOnceAndRateLimited(t *testing.T) {
	r := newRig(t, fullCaps, &notify.PopupsConfig{MaxVisible: 10, RatePerMinute: 1})
	ev := event.Event{Type: event.HubNotice, Container: "c", Reason: "runs on its defaults: x.yaml:3: bad"}
	const summary = "clearance hub: c"
	r.popups.ShowBlocked(r.ctx, blockedEv("c", "a", "a.example")) // spends c's one token
	r.popups.HandleEvent(r.ctx, ev)
	if hasSummary(summary)(r.srv.Calls()) {
		t.Fatalf("the notice was shown past the rate limit: %s", notifytest.Describe(r.srv.Calls()))
	}
	r.clock.Advance(time.Minute)
	r.popups.Flush(r.ctx)
	calls := r.waitCalls(t, "the notice after a minute", hasSummary(summary))
	n := lastNotify(t, calls)
	if n.Body != ev.Reason {
		t.Errorf("notice body %q", n.Body)
	}

	// Repeats: the same event again, the operator closing it, a new
	// server: never shown again.
	r.clock.Advance(time.Hour)
	r.popups.HandleEvent(r.ctx, ev)
	if err := r.srv.Dismiss(n.ID, 2); err != nil {
		t.Fatal(err)
	}
	r.popups.HandleSignal(r.ctx, notify.DaemonRestarted{})
	r.popups.Flush(r.ctx)
	if got := len(slices.DeleteFunc(notifies(r.srv.Calls()), func(c notifytest.Call) bool { return c.Summary != summary })); got != 1 {
		t.Errorf("the notice was shown %d times, want once: %s", got, notifytest.Describe(r.srv.Calls()))
	}
	if st := r.popups.Stats(); st.Notices != 1 {
		t.Errorf("notices kept: %d", st.Notices)
	}

	// Forget (the container is gone) drops it; shown again after that.
	r.popups.Forget(r.ctx, "c")
	if st := r.popups.Stats(); st.Notices != 0 {
		t.Errorf("notices after Forget: %d", st.Notices)
	}
	r.popups.HandleEvent(r.ctx, ev)
	r.waitCalls(t, "the notice after Forget", func(calls []notifytest.Call) bool {
		return len(slices.DeleteFunc(notifies(calls), func(c notifytest.Call) bool { return c.Summary != summary })) == 2
	})
}
