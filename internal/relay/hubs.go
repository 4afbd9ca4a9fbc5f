// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hubclient"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// hubCallTimeout bounds one call to a local hub; a verdict may wait for
// the firewall (the hub's own bound is 15 s).
const hubCallTimeout = 30 * time.Second

// localHub is one local hub the relay follows. Its fields are guarded by
// mu; sock and id never change.
type localHub struct {
	id   string
	sock string
	done chan struct{}

	mu      sync.Mutex
	up      bool
	started int64 // the hub instance's start (Stats.started_usec)
	policy  string
	pending map[string]Blocked
}

func (h *localHub) snapshot() (ContainerInfo, []Blocked) {
	h.mu.Lock()
	defer h.mu.Unlock()
	info := ContainerInfo{ID: h.id, Policy: h.policy, HubStarted: h.started, Pending: len(h.pending), Up: h.up}
	out := make([]Blocked, 0, len(h.pending))
	for _, b := range h.pending {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FirstUsec < out[j].FirstUsec })
	return info, out
}

func (h *localHub) lookup(requestID string) (Blocked, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, ok := h.pending[requestID]
	return b, ok
}

func (h *localHub) startedUsec() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.started
}

// scanHubs starts a follower for every hub socket that appeared; a
// follower ends when its socket disappears.
func (r *Relay) scanHubs(ctx context.Context) {
	seen := map[string]bool{}
	socks, err := hubclient.Discover(r.cfg.HubGlob)
	if err != nil {
		r.log.Warn("hub globs", "err", err)
	}
	for _, m := range socks {
		id := filepath.Base(filepath.Dir(m))
		if !ValidToken(id) || seen[id] {
			continue
		}
		seen[id] = true
		r.mu.Lock()
		_, known := r.hubs[id]
		if !known {
			h := &localHub{id: id, sock: m, done: make(chan struct{}), pending: map[string]Blocked{}}
			h.policy = readPolicy(filepath.Dir(m))
			r.hubs[id] = h
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.follow(ctx, h)
			}()
		}
		r.mu.Unlock()
		if !known {
			r.presenceChanged()
		}
	}
}

// readPolicy returns the policy name of the container's runtime record
// next to its hub socket, "" when there is none.
func readPolicy(dir string) string {
	rec, err := record.Read(filepath.Join(dir, "container.json"))
	if err != nil {
		return ""
	}
	return rec.Policy
}

// follow follows one hub until ctx ends or its socket is gone: a
// Subscribe stream, reconnected with backoff.
func (r *Relay) follow(ctx context.Context, h *localHub) {
	defer close(h.done)
	defer func() {
		r.mu.Lock()
		delete(r.hubs, h.id)
		r.mu.Unlock()
		r.presenceChanged()
	}()
	defer func() {
		h.mu.Lock()
		h.up = false
		h.mu.Unlock()
	}()
	warned := false
	calls := &hubclient.Caller{Path: h.sock, Timeout: hubCallTimeout}
	defer calls.Close()
	hubclient.Follow(ctx, h.sock, calls, hubclient.FollowOptions{
		BackoffMin: 50 * time.Millisecond,
		BackoffMax: 2 * time.Second,
		Handler: func(bool) hubclient.Handler {
			return &relayHandler{r: r, h: h, calls: calls, resync: make(chan struct{}, 1)}
		},
		Ended: func(connected bool, err error, _ time.Duration) hubclient.Next {
			h.mu.Lock()
			h.up = false
			h.mu.Unlock()
			if _, serr := os.Stat(h.sock); errors.Is(serr, os.ErrNotExist) {
				r.log.Info("hub gone", "container", h.id)
				return hubclient.Stop
			}
			if connected {
				warned = false
				r.log.Warn("hub stream lost", "container", h.id, "err", err)
				r.presenceChanged()
			} else if !warned {
				// A hub that cannot be followed (not up yet, or a seed hub
				// without org.terok.ClearanceHub1): said once, retried.
				warned = true
				r.log.Warn("hub not followed, retrying", "container", h.id, "err", err)
			}
			return hubclient.Retry
		},
	})
}

// relayHandler publishes one subscription of a local hub.
type relayHandler struct {
	r      *Relay
	h      *localHub
	calls  *hubclient.Caller
	resync chan struct{}
}

func (s *relayHandler) Connected(ctx context.Context, reqs []orgterokclearancehub1.PendingRequest, hub1 bool) error {
	r, h := s.r, s.h
	if !hub1 {
		return errors.New("not a clearance hub (no org.terok.ClearanceHub1): a seed hub is not relayed")
	}
	var st orgterokclearancehub1.HubStats
	err := s.calls.Call(ctx, func(ctx context.Context, c *varlink.Connection) error {
		var err error
		st, err = orgterokclearancehub1.Stats().Call(ctx, c)
		return err
	})
	if err != nil {
		return err
	}
	now := r.cfg.Now().UnixMicro()
	pending := make(map[string]Blocked, len(reqs))
	for _, p := range reqs {
		pending[p.Request_id] = Blocked{Host: r.cfg.Host, Container: h.id, RequestID: p.Request_id,
			Dest: p.Dest, Domain: p.Domain, Port: p.Port, Proto: p.Proto, Dossier: p.Dossier,
			Count: p.Count, FirstUsec: p.First_seen_usec, HubStarted: st.Started_usec, AtUsec: now}
	}
	h.mu.Lock()
	h.up, h.started, h.pending = true, st.Started_usec, pending
	h.mu.Unlock()
	r.presenceChanged()
	for _, b := range pending {
		r.publishBlocked(b)
	}
	// The hub says nothing of requests it drops without a verdict of
	// their own (superseded by a verdict on the same destination, or
	// purged after hub.pending_ttl): the pending set is fetched again
	// after each verdict and every resync interval, until the
	// subscription ends (ctx).
	go func() {
		t := time.NewTicker(resyncInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-s.resync:
			}
			r.resync(ctx, h)
		}
	}()
	return nil
}

func (s *relayHandler) Event(ctx context.Context, ev orgterokclearance1.ClearanceEvent) error {
	s.r.hubEvent(s.h, ev)
	if ev.Type == event.VerdictApplied && ev.Ok {
		select {
		case s.resync <- struct{}{}:
		default:
		}
	}
	return nil
}

// resyncInterval is how often a followed hub's pending set is fetched
// again.
const resyncInterval = 30 * time.Second

// resync replaces h's pending set with the hub's, keeping what the relay
// knew of requests still there.
func (r *Relay) resync(ctx context.Context, h *localHub) {
	start := r.cfg.Now().UnixMicro()
	_, reqs, err := hubState(ctx, h.sock)
	if err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	next := make(map[string]Blocked, len(reqs))
	for _, p := range reqs {
		if b, ok := h.pending[p.Request_id]; ok {
			b.Count = p.Count
			next[p.Request_id] = b
		}
		// A request the relay has not seen yet arrives as its event.
	}
	// A request whose event came while the set was being fetched may be
	// missing from it: keep it (dropping it here hid it from the fleet
	// until the hub announced it again).
	for id, b := range h.pending {
		if _, ok := next[id]; !ok && b.AtUsec >= start {
			next[id] = b
		}
	}
	h.pending = next
}

// hubState asks a hub for its counters and its pending requests.
func hubState(ctx context.Context, sock string) (st orgterokclearancehub1.HubStats, reqs []orgterokclearancehub1.PendingRequest, err error) {
	calls := hubclient.Caller{Path: sock, Timeout: hubCallTimeout}
	defer calls.Close()
	err = calls.Call(ctx, func(ctx context.Context, c *varlink.Connection) error {
		var err error
		if st, err = orgterokclearancehub1.Stats().Call(ctx, c); err != nil {
			return err
		}
		reqs, err = orgterokclearancehub1.Pending().Call(ctx, c)
		return err
	})
	return st, reqs, err
}

// hubEvent publishes what a hub reported.
func (r *Relay) hubEvent(h *localHub, ev orgterokclearance1.ClearanceEvent) {
	now := r.cfg.Now().UnixMicro()
	switch ev.Type {
	case event.ConnectionBlocked:
		h.mu.Lock()
		b, ok := h.pending[ev.Request_id]
		if !ok {
			b = Blocked{Host: r.cfg.Host, Container: h.id, RequestID: ev.Request_id, Dest: ev.Dest,
				Domain: ev.Domain, Port: ev.Port, Proto: ev.Proto, Dossier: ev.Dossier, FirstUsec: now,
				HubStarted: h.started}
		}
		b.Count++
		b.AtUsec, b.Replay = now, false
		h.pending[ev.Request_id] = b
		h.mu.Unlock()
		r.publishBlocked(b)
	case event.VerdictApplied:
		h.mu.Lock()
		if ev.Ok {
			delete(h.pending, ev.Request_id)
		}
		h.mu.Unlock()
		r.publish(r.subj.Outcome(r.cfg.Host, h.id), Outcome{Host: r.cfg.Host, Container: h.id, Event: ev.Type,
			RequestID: ev.Request_id, Action: ev.Action, OK: ev.Ok, By: ev.Reason, AtUsec: now})
	case event.VerdictSaved:
		// An "always" verdict given on any channel. One this relay
		// applied itself is mirrored before its reply.
		if r.takeMirroring(h.id+"/"+ev.Request_id) || h.policy == "" {
			return
		}
		b := Blocked{Dest: ev.Dest, Domain: ev.Domain, Port: ev.Port, Proto: ev.Proto}
		a, ok := alwaysOf(b, h.policy, DecideRequest{Action: ev.Action, AnyPort: ev.Port == 0}, ev.Reason, r.cfg.Host, r.cfg.Now())
		if !ok {
			r.log.Warn("always verdict not mirrored: only TCP and UDP ports can be", "container", h.id, "request_id", ev.Request_id)
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := r.mirror(r.runCtx, a); err != nil {
				r.log.Warn("always verdict not mirrored", "container", h.id, "request_id", ev.Request_id, "err", err)
			}
		}()
	case event.ContainerExited:
		h.mu.Lock()
		h.pending = map[string]Blocked{}
		h.mu.Unlock()
		r.publish(r.subj.Outcome(r.cfg.Host, h.id), Outcome{Host: r.cfg.Host, Container: h.id, Event: ev.Type,
			OK: true, By: ev.Reason, AtUsec: now})
	}
}

func (r *Relay) publishBlocked(b Blocked) {
	r.publish(r.subj.Blocked(b.Host, b.Container), b)
}

// publish sends v as JSON. While the server is unreachable nats.go keeps
// it in its reconnect buffer; what is still pending is published again
// on reconnect anyway.
func (r *Relay) publish(subject string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		r.log.Error("encode", "subject", subject, "err", err)
		return
	}
	nc := r.nc.Load()
	if nc == nil {
		return // not connected yet: what is pending is published on connect
	}
	if err := nc.Publish(subject, data); err != nil {
		r.log.Debug("publish", "subject", subject, "err", err)
	}
}
