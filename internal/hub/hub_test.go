// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

type stubApplier struct {
	mu    sync.Mutex
	res   ApplyResult
	err   error
	panic bool
	calls []ApplyRequest // with VerdictID cleared: it is random
	ids   []string       // the VerdictIDs of calls
}

func (s *stubApplier) Apply(ctx context.Context, req ApplyRequest) (ApplyResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids = append(s.ids, req.VerdictID)
	req.VerdictID = ""
	s.calls = append(s.calls, req)
	if s.panic {
		panic("boom")
	}
	return s.res, s.err
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Unix(1_800_000_000, 0)} }
func blockedEv(ctr, id, dest, domain string) event.Event {
	return event.Event{Type: event.ConnectionBlocked, Container: ctr, RequestID: id, Dest: dest,
		Port: 443, Proto: 6, Domain: domain}
}

func drain(s *Subscription) []event.Event {
	var out []event.Event
	for {
		ev, ok := s.Next()
		if !ok {
			return out
		}
		out = append(out, ev)
	}
}

func ids(evs []event.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type+":"+e.RequestID)
	}
	return out
}

func TestBindingRecordsDomainElseIP(t *testing.T) {
	tests := []struct {
		name       string
		ev         event.Event
		wantTarget string
	}{
		{"domain preferred", blockedEv("c", "c:1", "198.51.100.1", "registry.example.net"), "registry.example.net"},
		{"ip when no domain", blockedEv("c", "c:1", "198.51.100.1", ""), "198.51.100.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New(Config{})
			h.Publish(tt.ev)
			p := h.Pending()
			if len(p) != 1 || p[0].Event.Target() != tt.wantTarget {
				t.Fatalf("pending = %+v, want target %s", p, tt.wantTarget)
			}
			if p[0].Event.Dossier == nil {
				t.Fatal("dossier is nil")
			}
		})
	}
}

func TestPurgeOnLifecycle(t *testing.T) {
	for _, typ := range []string{event.ShieldDown, event.ShieldDisengaged, event.ContainerExited} {
		t.Run(typ, func(t *testing.T) {
			h := New(Config{})
			h.Publish(blockedEv("a", "a:1", "198.51.100.1", ""))
			h.Publish(blockedEv("a", "a:2", "198.51.100.2", ""))
			h.Publish(blockedEv("b", "b:1", "198.51.100.1", ""))
			h.Publish(event.Event{Type: typ, Container: "a"})
			var got []string
			for _, p := range h.Pending() {
				got = append(got, p.Event.RequestID)
			}
			if diff := cmp.Diff([]string{"b:1"}, got); diff != "" {
				t.Fatalf("pending after %s (-want +got):\n%s", typ, diff)
			}
		})
	}
}

func TestFanOutDropOldest(t *testing.T) {
	h := New(Config{QueueDepth: 2})
	s1, s2 := h.Subscribe(), h.Subscribe()
	defer s1.Close()
	defer s2.Close()
	for i := 0; i < 4; i++ {
		h.Publish(blockedEv("c", fmt.Sprintf("c:%d", i), "198.51.100.1", ""))
	}
	want := []string{"connection_blocked:c:2", "connection_blocked:c:3"}
	for i, s := range []*Subscription{s1, s2} {
		if diff := cmp.Diff(want, ids(drain(s))); diff != "" {
			t.Fatalf("subscriber %d (-want +got):\n%s", i, diff)
		}
	}
	if got := h.Stats().Dropped; got != 4 {
		t.Fatalf("dropped = %d, want 4", got)
	}
}

func TestVerdictSemantics(t *testing.T) {
	tests := []struct {
		name        string
		container   string
		id          string
		dest        string
		action      string
		res         ApplyResult
		applyErr    error
		panic       bool
		wantErr     error
		wantPending bool
		wantApplied bool // a verdict_applied event is fanned out
		wantOK      bool
	}{
		{name: "success consumes", container: "c", id: "c:1", dest: "registry.example.net", action: "allow",
			res: ApplyResult{OK: true}, wantApplied: true, wantOK: true},
		{name: "invalid action first", container: "zz", id: "ghost", dest: "zz", action: "maybe",
			wantErr: &InvalidActionError{Action: "maybe"}, wantPending: true},
		{name: "unknown request", container: "c", id: "ghost:42", dest: "registry.example.net", action: "allow",
			wantErr: &UnknownRequestError{RequestID: "ghost:42"}, wantPending: true},
		{name: "mismatch keeps binding", container: "d", id: "c:1", dest: "registry.example.net", action: "deny",
			wantErr: &TupleMismatchError{ExpectedContainer: "c", ExpectedDest: "registry.example.net",
				GotContainer: "d", GotDest: "registry.example.net"}, wantPending: true},
		{name: "firewall refusal restores", container: "c", id: "c:1", dest: "registry.example.net", action: "allow",
			res: ApplyResult{Stderr: "nft lock"}, wantErr: &ApplyFailedError{Action: "allow", Stderr: "nft lock"},
			wantPending: true, wantApplied: true},
		{name: "transport error restores", container: "c", id: "c:1", dest: "registry.example.net", action: "allow",
			applyErr: errors.New("verdict service gone"), wantErr: &ApplyFailedError{Action: "allow", Stderr: "verdict service gone"},
			wantPending: true, wantApplied: true},
		{name: "panicking applier restores", container: "c", id: "c:1", dest: "registry.example.net", action: "deny",
			panic: true, wantErr: &ApplyFailedError{Action: "deny", Stderr: "verdict applier panicked: boom"},
			wantPending: true, wantApplied: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ap := &stubApplier{res: tt.res, err: tt.applyErr, panic: tt.panic}
			h := New(Config{Applier: ap})
			h.Publish(blockedEv("c", "c:1", "198.51.100.1", "registry.example.net"))
			sub := h.Subscribe()
			defer sub.Close()
			err := h.Verdict(context.Background(), tt.container, tt.id, tt.dest, tt.action)
			if diff := cmp.Diff(tt.wantErr, err, cmp.Comparer(func(a, b error) bool {
				return (a == nil) == (b == nil) && (a == nil || a.Error() == b.Error())
			})); diff != "" {
				t.Fatalf("error (-want +got):\n%s", diff)
			}
			if got := len(h.Pending()) == 1; got != tt.wantPending {
				t.Fatalf("pending = %v, want %v", got, tt.wantPending)
			}
			evs := drain(sub)
			if got := len(evs) == 1; got != tt.wantApplied {
				t.Fatalf("events = %+v", evs)
			}
			if tt.wantApplied {
				want := event.Event{Type: event.VerdictApplied, Container: tt.container, RequestID: tt.id,
					Action: tt.action, OK: tt.wantOK, Reason: "by an unknown caller via unknown", Dossier: map[string]string{}}
				if diff := cmp.Diff(want, evs[0]); diff != "" {
					t.Fatalf("verdict_applied (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestVerdictRacingContainerExitIsNotRestored(t *testing.T) {
	h := New(Config{})
	block, entered := make(chan struct{}), make(chan struct{})
	h.cfg.Applier = applierFunc(func(ctx context.Context, req ApplyRequest) (ApplyResult, error) {
		close(entered) // the request has been claimed
		<-block
		return ApplyResult{}, errors.New("netns gone")
	})
	h.Publish(blockedEv("c", "c:1", "198.51.100.1", ""))
	done := make(chan error)
	go func() { done <- h.Verdict(context.Background(), "c", "c:1", "198.51.100.1", "allow") }()
	<-entered
	h.Publish(event.Event{Type: event.ContainerExited, Container: "c", Reason: "poststop"})
	close(block)
	if err := <-done; err == nil {
		t.Fatal("verdict succeeded")
	}
	if n := len(h.Pending()); n != 0 {
		t.Fatalf("a request of an exited container was restored (%d pending)", n)
	}
}

type applierFunc func(context.Context, ApplyRequest) (ApplyResult, error)

func (f applierFunc) Apply(ctx context.Context, r ApplyRequest) (ApplyResult, error) {
	return f(ctx, r)
}

func TestSupersededRequestsDecidedTogether(t *testing.T) {
	h := New(Config{Applier: &stubApplier{res: ApplyResult{OK: true}}})
	// A producer that re-emits the same target under new ids (the seed's
	// shield does, every 30 s): deciding the newest decides them all, so
	// the old ids do not linger (the seed kept them forever).
	h.Publish(blockedEv("c", "c:1", "198.51.100.1", "a.example"))
	h.Publish(blockedEv("c", "c:2", "198.51.100.1", "a.example"))
	h.Publish(blockedEv("c", "c:3", "198.51.100.9", "b.example"))
	if err := h.Verdict(context.Background(), "c", "c:2", "a.example", "allow"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range h.Pending() {
		got = append(got, p.Event.RequestID)
	}
	if diff := cmp.Diff([]string{"c:3"}, got); diff != "" {
		t.Fatalf("pending (-want +got):\n%s", diff)
	}
}

func TestPendingExpiresAndIsBounded(t *testing.T) {
	c := newClock()
	h := New(Config{PendingTTL: time.Minute, MaxPending: 3, Now: c.now})
	for i := 0; i < 5; i++ {
		h.Publish(blockedEv("c", fmt.Sprintf("c:%d", i), "198.51.100.1", ""))
		c.add(time.Second)
	}
	var got []string
	for _, p := range h.Pending() {
		got = append(got, p.Event.RequestID)
	}
	if diff := cmp.Diff([]string{"c:2", "c:3", "c:4"}, got); diff != "" {
		t.Fatalf("bounded pending (-want +got):\n%s", diff)
	}
	c.add(time.Minute)
	if n := h.Expire(); n != 3 || len(h.Pending()) != 0 {
		t.Fatalf("expired %d, %d left", n, len(h.Pending()))
	}
}

func TestBlockedCoalescesRepeats(t *testing.T) {
	c := newClock()
	h := New(Config{Container: "c", Reemit: time.Second, Now: c.now})
	sub := h.Subscribe()
	defer sub.Close()
	ev := event.Event{Container: "c", Dest: "198.51.100.1", Port: 443, Proto: 6}
	id := h.Blocked(ev)
	for i := 0; i < 1000; i++ {
		if got := h.Blocked(ev); got != id {
			t.Fatalf("repeat got a new id %s", got)
		}
	}
	c.add(2 * time.Second)
	h.Blocked(ev)
	other := h.Blocked(event.Event{Container: "c", Dest: "198.51.100.1", Port: 80, Proto: 6})
	if other == id {
		t.Fatal("another port shares the request id")
	}
	if diff := cmp.Diff([]string{"connection_blocked:" + id, "connection_blocked:" + id, "connection_blocked:" + other},
		ids(drain(sub))); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	p := h.Pending()
	if p[0].Count != 1002 {
		t.Fatalf("count = %d, want 1002", p[0].Count)
	}
}

func TestRequestIDsUniqueAcrossHubs(t *testing.T) {
	a, b := New(Config{}), New(Config{})
	if a.NewRequestID() == b.NewRequestID() {
		t.Fatal("two hub instances issued the same first id")
	}
}

func TestDecideScopes(t *testing.T) {
	ap := &stubApplier{res: ApplyResult{OK: true, Expires: time.Unix(1_800_003_600, 0)}}
	h := New(Config{Applier: ap})
	h.Publish(blockedEv("c", "c:1", "198.51.100.1", ""))
	if _, err := h.Decide(context.Background(), "c:1", "allow", "sometimes", 0, false); !errors.As(err, new(*InvalidScopeError)) {
		t.Fatalf("bad scope err = %v", err)
	}
	ctx := WithOperator(context.Background(), Operator{UID: 1000, Channel: "clearancectl"})
	exp, err := h.Decide(ctx, "c:1", "allow", ScopeOnce, time.Hour, false)
	if err != nil || exp.Unix() != 1_800_003_600 {
		t.Fatalf("decide = %v, %v", exp, err)
	}
	want := []ApplyRequest{{Container: "c", Dest: "198.51.100.1", IP: "198.51.100.1", Port: 443, Proto: 6,
		Action: "allow", Scope: ScopeOnce, TTL: time.Hour}}
	if diff := cmp.Diff(want, ap.calls); diff != "" {
		t.Fatalf("apply (-want +got):\n%s", diff)
	}
}

// BenchmarkFanOut10 measures the in-memory fan-out: Emit to ten
// subscribers that drain their queues as fast as they can. The producer
// is not paced, so a subscriber that falls more than QueueDepth behind
// loses its oldest events; the timer runs until every fan-out has been
// taken by its subscriber or dropped. delivered/s is the rate at which
// one subscriber received events, delivered_% and dropped_% split the
// 10·N fan-outs: ns/op alone would count dropped events as work done.
func BenchmarkFanOut10(b *testing.B) {
	const subs = 10
	h := New(Config{QueueDepth: 1024})
	var wg sync.WaitGroup
	got := make([]atomic.Int64, subs)
	all := make([]*Subscription, subs)
	for i := range subs {
		s := h.Subscribe()
		all[i] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Until every event this subscriber was sent has arrived or
			// been dropped.
			for got[i].Load()+int64(s.Drops()) < int64(b.N) {
				<-s.Ready()
				for _, ok := s.Next(); ok; _, ok = s.Next() {
					got[i].Add(1)
				}
			}
		}()
	}
	ev := event.Event{Type: event.ShieldUp, Container: "c", Dossier: map[string]string{}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.Emit(ev)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		b.Fatal("subscribers did not account for every event within 30 s: events lost")
	}
	b.StopTimer()
	var delivered, dropped int64
	for i, s := range all {
		delivered += got[i].Load()
		dropped += int64(s.Drops())
		s.Close()
	}
	total := int64(subs) * int64(b.N)
	if delivered+dropped != total {
		b.Fatalf("delivered %d + dropped %d != %d fan-outs", delivered, dropped, total)
	}
	b.ReportMetric(float64(delivered)/subs/b.Elapsed().Seconds(), "delivered/s")
	b.ReportMetric(100*float64(delivered)/float64(total), "delivered_%")
	b.ReportMetric(100*float64(dropped)/float64(total), "dropped_%")
}

type revokingApplier struct {
	stubApplier
	revoked []string
}

func (r *revokingApplier) Revoke(ctx context.Context, req ApplyRequest) error {
	container, ip := req.Container, req.IP
	r.revoked = append(r.revoked, container+"/"+ip)
	return nil
}

func TestTimedVerdictExpiresByWallClock(t *testing.T) {
	c := newClock()
	ap := &revokingApplier{stubApplier: stubApplier{res: ApplyResult{OK: true, Expires: c.t.Add(time.Hour)}}}
	h := New(Config{Applier: ap, Now: c.now})
	sub := h.Subscribe()
	defer sub.Close()
	h.Publish(blockedEv("c", "c:1", "198.51.100.1", "a.example"))
	if _, err := h.Decide(context.Background(), "c:1", "allow", ScopeOnce, time.Hour, false); err != nil {
		t.Fatal(err)
	}
	drain(sub)
	c.add(59 * time.Minute)
	if n := h.ExpireVerdicts(context.Background()); n != 0 {
		t.Fatalf("expired %d before the TTL", n)
	}
	// A suspend: the wall clock jumps past the expiry at once.
	c.add(3 * time.Hour)
	if n := h.ExpireVerdicts(context.Background()); n != 1 {
		t.Fatalf("expired %d, want 1", n)
	}
	if diff := cmp.Diff([]string{"c/198.51.100.1"}, ap.revoked); diff != "" {
		t.Fatalf("revoked (-want +got):\n%s", diff)
	}
	evs := drain(sub)
	if len(evs) != 1 || evs[0].Type != event.VerdictExpired || evs[0].Domain != "a.example" {
		t.Fatalf("events = %+v", evs)
	}
	if n := h.ExpireVerdicts(context.Background()); n != 0 {
		t.Fatalf("expired again: %d", n)
	}
}

func TestLastingVerdictCancelsExpiry(t *testing.T) {
	c := newClock()
	ap := &revokingApplier{stubApplier: stubApplier{res: ApplyResult{OK: true, Expires: c.t.Add(time.Minute)}}}
	h := New(Config{Applier: ap, Now: c.now})
	h.Publish(blockedEv("c", "c:1", "198.51.100.1", ""))
	h.Decide(context.Background(), "c:1", "allow", ScopeOnce, time.Minute, false)
	ap.res = ApplyResult{OK: true}
	h.Publish(blockedEv("c", "c:2", "198.51.100.1", ""))
	h.Decide(context.Background(), "c:2", "allow", ScopeContainer, 0, false)
	c.add(time.Hour)
	if n := h.ExpireVerdicts(context.Background()); n != 0 || len(ap.revoked) != 0 {
		t.Fatalf("a container-scoped verdict was revoked by an older timer: %v", ap.revoked)
	}
}

func TestLateRecordsAfterVerdictAreNoNewPrompt(t *testing.T) {
	c := newClock()
	h := New(Config{Container: "c", Applier: &stubApplier{res: ApplyResult{OK: true}}, Now: c.now})
	sub := h.Subscribe()
	defer sub.Close()
	ev := event.Event{Container: "c", Dest: "198.51.100.1", Port: 443, Proto: 6}
	id := h.Blocked(ev)
	if _, err := h.Decide(context.Background(), id, "allow", ScopeOnce, 0, false); err != nil {
		t.Fatal(err)
	}
	drain(sub)
	// Records the kernel logged before the element landed.
	c.add(100 * time.Millisecond)
	if got := h.Blocked(ev); got != "" {
		t.Fatalf("a record right after the verdict made request %s", got)
	}
	if evs := drain(sub); len(evs) != 0 {
		t.Fatalf("events = %+v", evs)
	}
	// Much later (the verdict expired, say), it is a new request again.
	c.add(time.Minute)
	if got := h.Blocked(ev); got == "" || got == id {
		t.Fatalf("after the grace period: id %q", got)
	}
}

func TestRecordsDuringVerdictInFlightAreCounted(t *testing.T) {
	block, entered := make(chan struct{}), make(chan struct{})
	h := New(Config{Container: "c", Applier: applierFunc(func(ctx context.Context, req ApplyRequest) (ApplyResult, error) {
		close(entered) // the request has been claimed
		<-block
		return ApplyResult{OK: true}, nil
	})})
	sub := h.Subscribe()
	defer sub.Close()
	ev := event.Event{Container: "c", Dest: "198.51.100.1", Port: 443, Proto: 6}
	id := h.Blocked(ev)
	drain(sub)
	done := make(chan error)
	go func() {
		_, err := h.Decide(context.Background(), id, "allow", ScopeOnce, 0, false)
		done <- err
	}()
	<-entered
	if got := h.Blocked(ev); got != id {
		t.Fatalf("a record while the verdict is in flight made request %q, want it counted on %s", got, id)
	}
	if _, err := h.Decide(context.Background(), id, "deny", ScopeOnce, 0, false); !errors.As(err, new(*UnknownRequestError)) {
		t.Fatalf("second verdict while the first is in flight: %v", err)
	}
	close(block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	evs := drain(sub)
	if len(evs) != 1 || evs[0].Type != event.VerdictApplied {
		t.Fatalf("events = %+v, want only verdict_applied", evs)
	}
}

func TestStateSurvivesARestart(t *testing.T) {
	c := newClock()
	ap := &stubApplier{res: ApplyResult{OK: true, Expires: c.t.Add(time.Hour)}}
	var changes int
	h := New(Config{Container: "c", Applier: ap, Now: c.now, OnChange: func() { changes++ }})
	r1 := h.Blocked(event.Event{Container: "c", Dest: "192.0.2.1", Port: 443, Proto: 6, Domain: "a.example"})
	r2 := h.Blocked(event.Event{Container: "c", Dest: "192.0.2.2", Port: 80, Proto: 6})
	if _, err := h.Decide(context.Background(), r1, "allow", ScopeOnce, time.Hour, false); err != nil {
		t.Fatal(err)
	}
	if changes < 3 {
		t.Errorf("OnChange called %d times for two requests and a verdict", changes)
	}
	st := h.State()
	if len(st.Pending) != 1 || st.Pending[0].Event.RequestID != r2 || len(st.Expiry) != 1 {
		t.Fatalf("state = %+v", st)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}

	// The next process of the hub.
	ap2 := &revokingApplier{stubApplier: stubApplier{res: ApplyResult{OK: true}}}
	h2 := New(Config{Container: "c", Applier: ap2, Now: c.now})
	h2.Restore(back)
	pend := h2.Pending()
	if len(pend) != 1 || pend[0].Event.RequestID != r2 || pend[0].Event.Dest != "192.0.2.2" {
		t.Fatalf("pending after restore = %+v", pend)
	}
	// A repeat of the pending destination is the same request, not a new one.
	if id := h2.Blocked(event.Event{Container: "c", Dest: "192.0.2.2", Port: 80, Proto: 6}); id != r2 {
		t.Errorf("repeat after restore got request %q, want %q", id, r2)
	}
	// New ids continue after the old ones.
	r3 := h2.Blocked(event.Event{Container: "c", Dest: "192.0.2.3", Port: 80, Proto: 6})
	if r3 == r1 || r3 == r2 || !strings.HasPrefix(r3, st.IDBase+"-") {
		t.Errorf("new id %q after %q and %q", r3, r1, r2)
	}
	// The timed verdict still ends, revoked and announced.
	c.add(2 * time.Hour)
	if n := h2.ExpireVerdicts(context.Background()); n != 1 || len(ap2.revoked) != 1 || ap2.revoked[0] != "c/192.0.2.1" {
		t.Errorf("after restore: %d expired, revoked %v", n, ap2.revoked)
	}
	// A request older than the pending TTL is not restored.
	h3 := New(Config{Container: "c", Now: c.now, PendingTTL: time.Minute})
	h3.Restore(back)
	if len(h3.Pending()) != 0 {
		t.Errorf("stale request restored")
	}
}

func TestSecondDecideNamesWhoDecided(t *testing.T) {
	ap := &stubApplier{res: ApplyResult{OK: true}}
	clk := newClock()
	h := New(Config{Applier: ap, Now: clk.now})
	h.Publish(blockedEv("c", "c:1", "198.51.100.1", ""))
	h.Publish(event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:2",
		Dest: "198.51.100.1", Port: 443, Proto: 6})
	sub := h.Subscribe()
	defer sub.Close()
	alice := Operator{UID: 1000, User: "alice", Channel: "clearancectl"}
	if _, err := h.Decide(WithOperator(context.Background(), alice), "c:1", "allow", ScopeOnce, 0, false); err != nil {
		t.Fatal(err)
	}
	evs := drain(sub)
	if len(evs) != 1 || evs[0].Reason != "by alice (uid 1000) via clearancectl" {
		t.Fatalf("verdict_applied = %+v, want who decided in reason", evs)
	}
	decidedAt := clk.now()
	clk.add(time.Minute)
	bob := WithOperator(context.Background(), Operator{UID: 1001, User: "bob", Channel: "notifier"})
	// The request itself and the one it superseded: both name alice, and
	// nothing is applied a second time.
	for _, id := range []string{"c:1", "c:2"} {
		_, err := h.Decide(bob, id, "deny", ScopeOnce, 0, false)
		var done *AlreadyDecidedError
		if !errors.As(err, &done) {
			t.Fatalf("%s: second decide err = %v, want AlreadyDecidedError", id, err)
		}
		if done.RequestID != id || done.Action != "allow" || done.By != alice || !done.At.Equal(decidedAt) {
			t.Fatalf("%s: already decided = %+v", id, done)
		}
		if want := `request "` + id + `" was already decided: allow by alice (uid 1000) via clearancectl`; err.Error() != want {
			t.Fatalf("error text = %q, want %q", err, want)
		}
	}
	// The seed's Verdict keeps its UnknownRequest.
	if err := h.Verdict(bob, "c", "c:1", "198.51.100.1", "deny"); !errors.As(err, new(*UnknownRequestError)) {
		t.Fatalf("seed verdict err = %v, want UnknownRequestError", err)
	}
	if len(ap.calls) != 1 || len(drain(sub)) != 0 {
		t.Fatalf("applied %d times, want once and no second event", len(ap.calls))
	}
	// Forgotten after doneKept: an unknown request again.
	clk.add(doneKept)
	h.Publish(blockedEv("c", "c:3", "198.51.100.3", ""))
	if _, err := h.Decide(bob, "c:3", "deny", ScopeOnce, 0, false); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c:1", "c:9"} {
		if _, err := h.Decide(bob, id, "deny", ScopeOnce, 0, false); !errors.As(err, new(*UnknownRequestError)) {
			t.Fatalf("%s: err = %v, want UnknownRequestError", id, err)
		}
	}
}

func TestDescribeOperator(t *testing.T) {
	for _, tt := range []struct {
		op   Operator
		want string
	}{
		{Operator{UID: 1000, User: "alice", Channel: "clearancectl"}, "by alice (uid 1000) via clearancectl"},
		{Operator{UID: 1234, Channel: "notifier"}, "by uid 1234 via notifier"},
		{Operator{UID: -1, User: "ignored"}, "by an unknown caller"},
	} {
		if got := tt.op.Describe(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.op, got, tt.want)
		}
	}
}

// TestVerdictRecordsOutcome: the hub's record of each verdict is the
// operator side's, with a verdict id the applier got too, and says what
// became of it: applied, applied but not saved to policy, refused, or
// unknown when the verdict service went away before its reply.
func TestVerdictRecordsOutcome(t *testing.T) {
	for _, tt := range []struct {
		name      string
		res       ApplyResult
		err       error
		wantMsgID string
		outcome   string
	}{
		{"applied", ApplyResult{OK: true}, nil, audit.MsgVerdict, audit.OutcomeApplied},
		{"not saved", ApplyResult{OK: true, NotSaved: true, Stderr: "disk full"}, nil, audit.MsgVerdict, audit.OutcomeNotSaved},
		{"refused", ApplyResult{Stderr: "nft: no such table"}, nil, audit.MsgVerdictFailed, audit.OutcomeRefused},
		{"unknown", ApplyResult{}, &OutcomeUnknownError{Err: errors.New("EOF")}, audit.MsgVerdictFailed, audit.OutcomeUnknown},
		{"service unreachable", ApplyResult{}, errors.New("dial: connection refused"), audit.MsgVerdictFailed, audit.OutcomeRefused},
	} {
		t.Run(tt.name, func(t *testing.T) {
			log, rec := testutil.NewRecorder()
			ap := &stubApplier{res: tt.res, err: tt.err}
			h := New(Config{Applier: ap, Log: log, Policy: "dev", Project: "proj"})
			h.Publish(blockedEv("c", "c:1", "198.51.100.1", "api.example.com"))
			ctx := WithOperator(context.Background(), Operator{UID: 1000, User: "alice", Channel: "clearancectl"})
			_, err := h.Decide(ctx, "c:1", "allow", ScopeAlways, 0, false)
			if (err == nil) != (tt.wantMsgID == audit.MsgVerdict) {
				t.Fatalf("decide err = %v", err)
			}
			recs := rec.With(audit.FieldMessageID, tt.wantMsgID)
			if len(recs) != 1 {
				t.Fatalf("%d records with MESSAGE_ID %s, want 1", len(recs), tt.wantMsgID)
			}
			id := ap.ids[0]
			if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
				t.Fatalf("verdict id %q is not 16 hex digits", id)
			}
			got := recs[0].Attrs
			for k, want := range map[string]string{
				audit.FieldVerdictID: id, audit.FieldSide: audit.SideOperator, audit.FieldOutcome: tt.outcome,
				audit.FieldOperatorUID: "1000", audit.FieldOperator: "alice", audit.FieldChannel: "clearancectl",
				audit.FieldAction: "allow", audit.FieldScope: "always", audit.FieldDomain: "api.example.com",
				audit.FieldDest: "198.51.100.1", audit.FieldPolicy: "dev", audit.FieldProject: "proj",
			} {
				if got[k] != want {
					t.Errorf("%s = %q, want %q", k, got[k], want)
				}
			}
			if tt.res.NotSaved && !strings.Contains(recs[0].Message, "not saved to policy") {
				t.Errorf("message %q does not say the verdict was not saved", recs[0].Message)
			}
		})
	}
	// Two verdicts never share an id.
	ap := &stubApplier{res: ApplyResult{OK: true}}
	h := New(Config{Applier: ap})
	h.Publish(blockedEv("c", "c:1", "198.51.100.1", ""))
	h.Publish(blockedEv("c", "c:2", "198.51.100.2", ""))
	h.Decide(context.Background(), "c:1", "allow", ScopeOnce, 0, false)
	h.Decide(context.Background(), "c:2", "allow", ScopeOnce, 0, false)
	if len(ap.ids) != 2 || ap.ids[0] == ap.ids[1] {
		t.Errorf("verdict ids %q, want two different ones", ap.ids)
	}
}

// An "always" verdict is followed by verdict_saved, saying what the
// policy now holds and who decided; other scopes and failures are not.
func TestAlwaysVerdictIsAnnouncedSaved(t *testing.T) {
	ap := &stubApplier{res: ApplyResult{OK: true}}
	h := New(Config{Applier: ap})
	sub := h.Subscribe()
	defer sub.Close()
	ctx := WithOperator(context.Background(), Operator{UID: 1000, User: "alice", Channel: "notifier"})
	h.Publish(blockedEv("c", "c:1", "198.51.100.1", "api.example.org"))
	h.Publish(blockedEv("c", "c:2", "198.51.100.2", ""))
	h.Publish(blockedEv("c", "c:3", "198.51.100.3", ""))
	if _, err := h.Decide(ctx, "c:1", "allow", ScopeAlways, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Decide(ctx, "c:2", "deny", ScopeAlways, 0, true); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Decide(ctx, "c:3", "allow", ScopeContainer, 0, false); err != nil {
		t.Fatal(err)
	}
	var saved []event.Event
	for _, ev := range drain(sub) {
		if ev.Type == event.VerdictSaved {
			saved = append(saved, ev)
		}
	}
	want := []event.Event{
		{Type: event.VerdictSaved, Container: "c", RequestID: "c:1", Dest: "198.51.100.1", Domain: "api.example.org",
			Port: 443, Proto: 6, Action: "allow", OK: true, Reason: "by alice (uid 1000) via notifier", Dossier: map[string]string{}},
		{Type: event.VerdictSaved, Container: "c", RequestID: "c:2", Dest: "198.51.100.2",
			Action: "deny", OK: true, Reason: "by alice (uid 1000) via notifier", Dossier: map[string]string{}},
	}
	if diff := cmp.Diff(want, saved); diff != "" {
		t.Errorf("verdict_saved (-want +got):\n%s", diff)
	}
}

// SubscribePending takes the backlog and starts the subscription at one
// moment: with requests published concurrently, every one of them is in
// the backlog or in the stream. Pending then Subscribe (two steps) loses
// what lands between them; this is what a reconnecting client relies on.
func TestSubscribePendingLosesNothing(t *testing.T) {
	const n = 2000
	h := New(Config{QueueDepth: n, MaxPending: n})
	started := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i++ {
			if i == n/4 {
				close(started)
			}
			h.Publish(blockedEv("c", fmt.Sprintf("c:%d", i), fmt.Sprintf("198.51.%d.%d", 100+i/250, i%250), ""))
		}
	}()
	<-started
	sub, pending := h.SubscribePending()
	defer sub.Close()
	<-done
	seen := map[string]bool{}
	for _, p := range pending {
		seen[p.Event.RequestID] = true
	}
	for _, ev := range drain(sub) {
		seen[ev.RequestID] = true
	}
	for i := 0; i < n; i++ {
		if id := fmt.Sprintf("c:%d", i); !seen[id] {
			t.Fatalf("%s is neither in the backlog (%d) nor in the stream", id, len(pending))
		}
	}
	if len(pending) == 0 || len(pending) == n {
		t.Logf("the subscription started at the edge of the publishing (%d pending)", len(pending))
	}
}

// ttlApplier applies every verdict, timed ones until now+TTL (30 s for
// scope once without a TTL, like verdict.once_ttl in the soak).
type ttlApplier struct{ now func() time.Time }

func (a ttlApplier) Apply(_ context.Context, req ApplyRequest) (ApplyResult, error) {
	ttl := req.TTL
	if ttl == 0 && req.Scope == ScopeOnce {
		ttl = 30 * time.Second
	}
	res := ApplyResult{OK: true}
	if ttl > 0 {
		res.Expires = a.now().Add(ttl)
	}
	return res, nil
}

func (ttlApplier) Revoke(context.Context, ApplyRequest) error { return nil }

// TestStateBoundedUnderSteadyTraffic is the soak's traffic on a fake
// clock: a block a second, each to a new destination, decided in turn
// Allow, Deny (scope once, 30 s) and allow for 20 s, with the daemon's
// once-a-second Expire and ExpireVerdicts, for three times the 10 minutes
// decided requests are remembered. What the hub keeps must then be what
// its windows hold (decided ids of the last 10 minutes, verdicts of the
// last 30 s, destinations of the last 2 s), not the run's history.
// Counts, not memory: the soak (test/bench) measures memory.
func TestStateBoundedUnderSteadyTraffic(t *testing.T) {
	clk := newClock()
	h := New(Config{Container: "c", Applier: ttlApplier{clk.now}, Now: clk.now})
	sub := h.Subscribe()
	defer sub.Close()
	const seconds = int(3 * doneKept / time.Second)
	for i := range seconds {
		id := fmt.Sprintf("c:%d", i)
		h.Publish(event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: id,
			Dest: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Port: 443, Proto: 6})
		action, ttl := []string{"allow", "deny", "allow"}[i%3], []time.Duration{0, 0, 20 * time.Second}[i%3]
		if _, err := h.Decide(context.Background(), id, action, ScopeOnce, ttl, false); err != nil {
			t.Fatalf("decide %s: %v", id, err)
		}
		clk.add(time.Second)
		h.Expire()
		h.ExpireVerdicts(context.Background())
		drain(sub)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	got := map[string]int{"pending": len(h.pending), "order": len(h.order), "flows": len(h.flows),
		"inflight": len(h.inflight), "decided": len(h.decided), "expiry": len(h.expiry), "done": len(h.done)}
	limit := map[string]int{"pending": 0, "order": 64, "flows": 0, "inflight": 0,
		"decided": int(decidedGrace / time.Second), "expiry": 30, "done": int(doneKept/time.Second) + 1}
	for k, n := range got {
		if n > limit[k] {
			t.Errorf("after %d decided requests the hub keeps %d %s, want at most %d", seconds, n, k, limit[k])
		}
	}
	t.Logf("kept after %d requests: %v", seconds, got)
}
