// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubclient_test

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hubclient"
	"github.com/terok-ai/clearance/internal/testenv/hubtest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// recorder is a Handler that keeps what it is given.
type recorder struct {
	mu        sync.Mutex
	connected bool
	hub1      bool
	backlog   []string
	events    []string
}

func (r *recorder) Connected(_ context.Context, pending []orgterokclearancehub1.PendingRequest, hub1 bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.connected, r.hub1 = true, hub1
	for _, p := range pending {
		r.backlog = append(r.backlog, p.Request_id)
	}
	return nil
}

func (r *recorder) Event(_ context.Context, ev orgterokclearance1.ClearanceEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev.Type+":"+ev.Request_id)
	return nil
}

func (r *recorder) snapshot() (connected, hub1 bool, backlog, events []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.connected, r.hub1, append([]string(nil), r.backlog...), append([]string(nil), r.events...)
}

// subscribe runs Subscribe until the test ends, returning its result.
func subscribe(t *testing.T, path string, h hubclient.Handler) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	calls := &hubclient.Caller{Path: path}
	done := make(chan error, 1)
	go func() {
		_, err := hubclient.Subscribe(ctx, path, calls, h)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Subscribe did not return when its context ended")
		}
		calls.Close()
	})
	return done
}

// A hub with org.terok.ClearanceHub1.Follow gives its backlog and then
// its events on one connection: what was pending before, and what is
// blocked after, each exactly once.
func TestSubscribeFollowsBacklogThenEvents(t *testing.T) {
	th := hubtest.Serve(t, filepath.Join(testutil.ShortDir(t), "hub.sock"), hubtest.Options{Container: "c"})
	th.Hub.Publish(event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:1", Dest: "198.51.100.1", Port: 443, Proto: 6})
	var rec recorder
	subscribe(t, th.Path, &rec)
	testutil.Eventually(t, 0, "connected", func() bool { c, _, _, _ := rec.snapshot(); return c })
	th.Hub.Publish(event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:2", Dest: "198.51.100.2", Port: 443, Proto: 6})
	testutil.Eventually(t, 0, "the event after", func() bool { _, _, _, ev := rec.snapshot(); return len(ev) > 0 })
	_, hub1, backlog, events := rec.snapshot()
	if !hub1 || len(backlog) != 1 || backlog[0] != "c:1" {
		t.Errorf("backlog %v (hub1 %v), want [c:1]", backlog, hub1)
	}
	if len(events) != 1 || events[0] != "connection_blocked:c:2" {
		t.Errorf("events %v, want the one blocked after", events)
	}
}

// seedHub serves org.terok.Clearance1 alone, as the seed does: no
// Follow, no Pending.
type seedHub struct {
	orgterokclearance1.VarlinkInterface
}

func (*seedHub) Subscribe(ctx context.Context, c orgterokclearance1.VarlinkCall) error {
	c.Continues = true
	if err := c.ReplySubscribe(ctx, orgterokclearance1.ClearanceEvent{Type: event.ConnectionBlocked, Request_id: "s:1",
		Container: "c", Dest: "192.0.2.1", Port: 443, Proto: 6, Dossier: map[string]string{}}); err != nil {
		return err
	}
	select {
	case <-varlinkapi.Hangup(&c.Call):
	case <-ctx.Done():
	}
	return nil
}

// A hub without Follow is subscribed to the seed's way, and says it
// has no backlog to give.
func TestSubscribeFallsBackForASeedHub(t *testing.T) {
	svc, err := varlink.NewService("terok", "seed", "0.8", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.RegisterInterface(orgterokclearance1.VarlinkNew(&seedHub{})); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(testutil.ShortDir(t), "hub.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		(&varlinkapi.Server{Service: svc}).Serve(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-served })

	var rec recorder
	subscribe(t, path, &rec)
	testutil.Eventually(t, 0, "the seed's event", func() bool { _, _, _, ev := rec.snapshot(); return len(ev) > 0 })
	connected, hub1, backlog, events := rec.snapshot()
	if !connected || hub1 || backlog != nil || events[0] != "connection_blocked:s:1" {
		t.Errorf("connected %v hub1 %v backlog %v events %v", connected, hub1, backlog, events)
	}
}
