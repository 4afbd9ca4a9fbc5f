// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hubclient"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// hubSink is what a hub connection reports to: the daemon.
type hubSink interface {
	// hubEvent delivers one event of hub h.
	hubEvent(ctx context.Context, h *hubConn, ev event.Event)
	// hubReconnected is called when h connected again after losing its
	// connection, before the new pending set is delivered.
	hubReconnected(ctx context.Context, h *hubConn)
	// hubChanged is called when h's connection state changed (connected,
	// refused); it must not block.
	hubChanged(h *hubConn)
}

// hubConn follows one hub socket: a Subscribe stream on one connection
// and calls (Pending, Verdict, Decide) on a second one, reconnecting with
// backoff when the hub restarts.
//
// run owns the stream connection; the call connection (a
// hubclient.Caller) is shared by run (Pending) and verdict goroutines.
type hubConn struct {
	path string
	log  *slog.Logger
	opts *Options
	sink hubSink

	poke      chan struct{} // reconnect now, with the backoff reset
	connected atomic.Bool
	refused   atomic.Bool // the last attempt found nobody listening (ECONNREFUSED)
	hub1      atomic.Bool // the hub speaks org.terok.ClearanceHub1 (a seed hub does not)

	caller hubclient.Caller
}

func newHubConn(path string, opts *Options, sink hubSink) *hubConn {
	return &hubConn{
		path: path,
		log:  opts.Logger.With("hub", path),
		opts: opts,
		sink: sink,
		poke: make(chan struct{}, 1),

		caller: hubclient.Caller{Path: path, Timeout: opts.CallTimeout},
	}
}

// Poke asks a waiting connection loop to try again at once.
func (h *hubConn) Poke() {
	select {
	case h.poke <- struct{}{}:
	default:
	}
}

// run follows the hub until ctx ends (hubclient.Follow). Waits between
// attempts are BackoffMin, doubling up to BackoffMax, reset after every
// successful connection and by Poke; a socket we may not connect to is
// tried again only when poked (its mode or group changed).
func (h *hubConn) run(ctx context.Context) {
	defer h.caller.Close()
	defer h.connected.Store(false)
	hubclient.Follow(ctx, h.path, &h.caller, hubclient.FollowOptions{
		BackoffMin: h.opts.BackoffMin,
		BackoffMax: h.opts.BackoffMax,
		Poke:       h.poke,
		Handler: func(reconnect bool) hubclient.Handler {
			return &sessionHandler{h: h, reconnect: reconnect}
		},
		Ended: func(connected bool, err error, wait time.Duration) hubclient.Next {
			h.connected.Store(false)
			if r := !connected && errors.Is(err, syscall.ECONNREFUSED); h.refused.Swap(r) != r {
				h.sink.hubChanged(h)
			}
			if denied(err) {
				h.log.Info("no permission to connect to the hub; waiting until its socket changes", "err", err)
				return hubclient.WaitForPoke
			}
			if connected {
				h.log.Info("hub stream ended; reconnecting", "err", err, "in", wait)
			} else {
				h.log.Info("hub connection failed; retrying", "err", err, "in", wait)
			}
			return hubclient.Retry
		},
	})
}

// sessionHandler delivers one subscription's backlog and events to the
// hub's sink, showing a request that is in both once.
type sessionHandler struct {
	h         *hubConn
	reconnect bool
	backlog   map[string]bool
}

func (s *sessionHandler) Connected(ctx context.Context, pending []orgterokclearancehub1.PendingRequest, hub1 bool) error {
	h := s.h
	if !hub1 {
		h.log.Debug("hub has no pending list (a seed hub)")
	}
	h.hub1.Store(hub1)
	h.connected.Store(true)
	h.refused.Store(false)
	h.sink.hubChanged(h)
	if s.reconnect {
		h.log.Info("reconnected to hub")
		h.sink.hubReconnected(ctx, h)
	} else {
		h.log.Info("subscribed to hub", "pending", len(pending))
	}
	s.backlog = make(map[string]bool, len(pending))
	for _, p := range pending {
		s.backlog[p.Request_id] = true
		h.sink.hubEvent(ctx, h, hubclient.FromPending(p))
	}
	return nil
}

func (s *sessionHandler) Event(ctx context.Context, w orgterokclearance1.ClearanceEvent) error {
	ev := hubclient.FromWire(w)
	// The same block may be both in the backlog and in the first events
	// of the stream: show it once. Later repeats (the hub's
	// re-announcements) count.
	if ev.Type == event.ConnectionBlocked && s.backlog[ev.RequestID] {
		delete(s.backlog, ev.RequestID)
		return nil
	}
	s.h.sink.hubEvent(ctx, s.h, ev)
	return nil
}

// verdict sends the operator's choice: Decide(action, once, ttl) naming
// the notifier as the channel (the hub audits it and tells the other
// channels who decided), or the seed's Verdict to a seed hub.
func (h *hubConn) verdict(ctx context.Context, container, requestID, target, action string, allowFor time.Duration) error {
	return h.caller.Call(ctx, func(ctx context.Context, c *varlink.Connection) error {
		if allowFor > 0 || h.hub1.Load() {
			_, _, err := orgterokclearancehub1.Decide().Call(ctx, c, requestID, action, "once",
				int64((allowFor+time.Second-1)/time.Second), nil, &channelNotifier)
			return err
		}
		_, err := orgterokclearance1.Verdict().Call(ctx, c, container, requestID, target, action)
		return err
	})
}

// denied reports whether err is a refused permission to connect: a hub
// socket of a group we are not a member of.
func denied(err error) bool {
	return errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)
}

// channelNotifier is how the notifier names itself to a hub (audited).
var channelNotifier = "notifier"
