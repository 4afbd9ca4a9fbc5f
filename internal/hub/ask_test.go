// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hub

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

func askEv(dest, domain, reason string) event.Event {
	return event.Event{Container: "c", Dest: dest, Domain: domain, Port: 443, Proto: 6, Reason: reason}
}

// TestAskIsARequest: an ask becomes a pending connection_blocked request
// carrying the container's reason; a second ask for the same destination
// joins it, a blocked packet to the name that follows is that request,
// not a second prompt; Await returns the verdict with who decided, its
// scope and expiry.
func TestAskIsARequest(t *testing.T) {
	app := &stubApplier{res: ApplyResult{OK: true, Expires: time.Unix(1_900_000_000, 0)}}
	h := New(Config{Container: "c", Applier: app})
	sub := h.Subscribe()
	defer sub.Close()

	id, fresh := h.Ask(askEv("", "api.example.com", "fetching deps"))
	if !fresh || id == "" {
		t.Fatalf("Ask = %q, %v; want a new request", id, fresh)
	}
	evs := drain(sub)
	if len(evs) != 1 || evs[0].Type != event.ConnectionBlocked || evs[0].Reason != "fetching deps" ||
		evs[0].Domain != "api.example.com" || evs[0].Dest != "" || evs[0].RequestID != id {
		t.Fatalf("events %+v, want one connection_blocked with the reason", evs)
	}
	if id2, fresh := h.Ask(askEv("", "api.example.com", "again")); id2 != id || fresh {
		t.Errorf("second ask = %q, %v; want to join %q", id2, fresh, id)
	}
	if got := h.Blocked(blockedEv("c", "", "192.0.2.7", "api.example.com")); got != id {
		t.Errorf("blocked packet to the asked name = request %q, want %q", got, id)
	}
	if n := len(h.Pending()); n != 1 {
		t.Fatalf("%d pending, want 1", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	if o := h.Await(ctx, id); o.State != OutcomePending {
		t.Errorf("Await before a verdict = %+v, want pending", o)
	}
	cancel()

	got := make(chan Outcome, 1)
	awaiting(t, h, func() { got <- h.Await(context.Background(), id) })
	dctx := WithOperator(context.Background(), Operator{UID: 1000, User: "alice", Channel: "notifier"})
	if _, err := h.Decide(dctx, id, event.ActionAllow, ScopeOnce, 0, false); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-got:
		if o.State != OutcomeDecided || o.Action != event.ActionAllow || o.Scope != ScopeOnce ||
			!o.Expires.Equal(app.res.Expires) || o.By != "by alice (uid 1000) via notifier" {
			t.Errorf("Await = %+v", o)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Await did not return after the verdict")
	}
	if app.calls[0].Dest != "api.example.com" || app.calls[0].IP != "" || app.calls[0].Name() != "api.example.com" {
		t.Errorf("applied %+v, want a verdict on the name alone", app.calls[0])
	}
	if o := h.Await(context.Background(), "nope-1"); o.State != OutcomeGone {
		t.Errorf("Await of an unknown id = %+v, want gone", o)
	}
}

// TestAskJoinsBlockedRequest: the container was blocked first and asks
// afterwards: the ask joins the pending request and gives it its reason,
// re-announcing the prompt.
func TestAskJoinsBlockedRequest(t *testing.T) {
	h := New(Config{Container: "c", Applier: &stubApplier{}})
	id := h.Blocked(blockedEv("c", "", "192.0.2.7", "api.example.com"))
	sub := h.Subscribe()
	defer sub.Close()
	got, fresh := h.Ask(askEv("", "api.example.com", "need it"))
	if got != id || fresh {
		t.Fatalf("Ask = %q, %v; want to join %q", got, fresh, id)
	}
	evs := drain(sub)
	if len(evs) != 1 || evs[0].Reason != "need it" || evs[0].RequestID != id {
		t.Errorf("events %+v, want the prompt again with the reason", evs)
	}
	if p := h.Pending(); len(p) != 1 || p[0].Event.Reason != "need it" {
		t.Errorf("pending %+v", p)
	}
}

// TestAwaitGone: a request purged with its container, or expired,
// answers gone; a failed verdict leaves it pending.
func TestAwaitGone(t *testing.T) {
	clk := newClock()
	app := &stubApplier{res: ApplyResult{OK: false, Stderr: "nope"}}
	h := New(Config{Container: "c", Applier: app, Now: clk.now, PendingTTL: time.Minute})
	id, _ := h.Ask(askEv("192.0.2.9", "", "x"))
	if _, err := h.Decide(context.Background(), id, event.ActionAllow, ScopeOnce, 0, false); err == nil {
		t.Fatal("Decide with a failing applier succeeded")
	}
	if o := h.outcome(id); o.State != OutcomePending {
		t.Errorf("after a failed verdict = %+v, want pending", o)
	}
	got := make(chan Outcome, 1)
	awaiting(t, h, func() { got <- h.Await(context.Background(), id) })
	clk.add(2 * time.Minute)
	h.Expire()
	select {
	case o := <-got:
		if o.State != OutcomeGone {
			t.Errorf("Await after expiry = %+v, want gone", o)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Await did not return after the request expired")
	}
	id2, _ := h.Ask(askEv("192.0.2.10", "", "y"))
	h.Publish(event.Event{Type: event.ContainerExited, Container: "c"})
	if o := h.outcome(id2); o.State != OutcomeGone {
		t.Errorf("after the container exited = %+v, want gone", o)
	}
}

// TestObserved: each destination is recorded once; the events are
// "observed", never pending; observe mode is announced to subscribers
// present and future.
func TestObserved(t *testing.T) {
	h := New(Config{Container: "c"})
	early := h.Subscribe()
	defer early.Close()
	h.SetObserving(true, map[string]string{"project": "p"})
	ev := event.Event{Container: "c", Dest: "192.0.2.1", Port: 443, Proto: 6, Domain: "a.example"}
	if !h.Observed(ev) || h.Observed(ev) {
		t.Error("the same destination was not recorded exactly once")
	}
	ev.Port = 80
	if !h.Observed(ev) {
		t.Error("another port is another destination")
	}
	if n := len(h.Pending()); n != 0 {
		t.Errorf("%d pending after observed connections", n)
	}
	evs := drain(early)
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if strings.Join(types, ",") != "hub_notice,observed,observed" {
		t.Errorf("events %v", types)
	}
	if !strings.Contains(evs[0].Reason, "NOT ENFORCED") || evs[0].Dossier["project"] != "p" {
		t.Errorf("notice %+v", evs[0])
	}
	late := h.Subscribe()
	defer late.Close()
	if evs := drain(late); len(evs) != 1 || evs[0].Type != event.HubNotice {
		t.Errorf("a later subscriber got %+v, want the notice", evs)
	}
	if !h.Stats().Observing {
		t.Error("Stats does not say observing")
	}
}

// awaiting runs await on a goroutine of its own and returns once it has
// taken the hub's change channel, so what the test does next happens
// while it waits.
func awaiting(t *testing.T, h *Hub, await func()) {
	t.Helper()
	before := h.waiters.taken()
	go await()
	testutil.Eventually(t, 0, "Await waiting", func() bool { return h.waiters.taken() > before })
}
