// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hubclient"
	"github.com/terok-ai/clearance/internal/varlinkapi"
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

// run follows the hub until ctx ends. Waits between attempts are
// BackoffMin, doubling up to BackoffMax, reset after every successful
// connection and by Poke.
func (h *hubConn) run(ctx context.Context) {
	defer h.caller.Close()
	backoff := h.opts.BackoffMin
	everConnected := false
	for {
		connected, err := h.session(ctx, everConnected)
		if ctx.Err() != nil {
			return
		}
		if r := !connected && errors.Is(err, syscall.ECONNREFUSED); h.refused.Swap(r) != r {
			h.sink.hubChanged(h)
		}
		if denied(err) {
			// The socket's group changed under us, or its mode: retrying
			// cannot help until it changes again (the watcher pokes).
			h.log.Info("no permission to connect to the hub; waiting until its socket changes", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-h.poke:
				backoff = h.opts.BackoffMin
				continue
			}
		}
		if connected {
			everConnected = true
			backoff = h.opts.BackoffMin
			h.log.Info("hub stream ended; reconnecting", "err", err, "in", backoff)
		} else {
			h.log.Info("hub connection failed; retrying", "err", err, "in", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-h.poke:
			t.Stop()
			backoff = h.opts.BackoffMin
		case <-t.C:
			backoff = min(2*backoff, h.opts.BackoffMax)
		}
	}
}

// session connects, delivers the pending set and then the stream until it
// ends. connected reports whether the subscription was established.
func (h *hubConn) session(ctx context.Context, reconnect bool) (connected bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, interrupt, err := varlinkapi.DialInterruptible(sctx, h.path)
	if err != nil {
		return false, err
	}
	defer stream.Close()
	// The receive function keeps the Send context, but the library can
	// miss a cancellation that races with arriving data; shutting the
	// read side ends a blocked receive for sure.
	stop := context.AfterFunc(sctx, interrupt)
	defer stop()
	recv, err := orgterokclearance1.Subscribe().Send(sctx, stream, varlink.More)
	if err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	h.caller.Close() // a call connection from before the restart is stale
	pending, err := h.pending(sctx)
	if err != nil {
		// A seed hub has no org.terok.ClearanceHub1: go on without the
		// backlog. A transport failure means the hub is gone again.
		if varlinkapi.ErrorName(err) == "" {
			return false, err
		}
		h.log.Debug("hub has no pending list", "err", err)
	}
	h.hub1.Store(err == nil)
	h.connected.Store(true)
	h.refused.Store(false)
	h.sink.hubChanged(h)
	defer h.connected.Store(false)
	if reconnect {
		h.log.Info("reconnected to hub")
		h.sink.hubReconnected(sctx, h)
	} else {
		h.log.Info("subscribed to hub", "pending", len(pending))
	}
	backlog := make(map[string]bool, len(pending))
	for _, p := range pending {
		backlog[p.Request_id] = true
		h.sink.hubEvent(sctx, h, event.Event{
			Type: event.ConnectionBlocked, Container: p.Container, RequestID: p.Request_id,
			Dest: p.Dest, Port: p.Port, Proto: p.Proto, Domain: p.Domain, Dossier: p.Dossier,
		})
	}
	for {
		w, flags, err := recv(sctx)
		if err != nil {
			return true, err
		}
		ev := fromWire(w)
		// The same block may be both in the backlog and in the first
		// events of the stream: show it once. Later repeats (the hub's
		// re-announcements) count.
		if ev.Type == event.ConnectionBlocked && backlog[ev.RequestID] {
			delete(backlog, ev.RequestID)
		} else {
			h.sink.hubEvent(sctx, h, ev)
		}
		if flags&varlink.Continues == 0 {
			return true, errors.New("stream ended")
		}
	}
}

func fromWire(w orgterokclearance1.ClearanceEvent) event.Event {
	ev := event.Event{
		Type: w.Type, Container: w.Container, RequestID: w.Request_id, Dest: w.Dest,
		Port: w.Port, Proto: w.Proto, Domain: w.Domain, Action: w.Action, OK: w.Ok,
		Reason: w.Reason, Dossier: w.Dossier,
	}
	ev.Normalize()
	return ev
}

// pending fetches the hub's backlog on the call connection.
func (h *hubConn) pending(ctx context.Context) ([]orgterokclearancehub1.PendingRequest, error) {
	var out []orgterokclearancehub1.PendingRequest
	err := h.caller.Call(ctx, func(ctx context.Context, c *varlink.Connection) error {
		var err error
		out, err = orgterokclearancehub1.Pending().Call(ctx, c)
		return err
	})
	return out, err
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
