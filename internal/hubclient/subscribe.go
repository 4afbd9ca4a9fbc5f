// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubclient

import (
	"context"
	"errors"
	"fmt"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// ErrStreamEnded is returned by Subscribe when the hub ended the stream
// itself (a reply without "continues").
var ErrStreamEnded = errors.New("the hub ended the stream")

// Handler receives what one subscription delivers. An error it returns
// ends the subscription with that error.
type Handler interface {
	// Connected is called once the subscription stands, with the hub's
	// pending requests; hub1 is false for a hub without
	// org.terok.ClearanceHub1 (the seed's), which has no backlog to give.
	Connected(ctx context.Context, pending []orgterokclearancehub1.PendingRequest, hub1 bool) error
	// Event is called for every event of the stream, in order. The same
	// blocked request may come both in the backlog and among the first
	// events.
	Event(ctx context.Context, ev orgterokclearance1.ClearanceEvent) error
}

// Subscribe follows the hub at path once: on a connection of its own it
// calls org.terok.ClearanceHub1.Follow, which gives the pending backlog
// and starts the event stream at one moment, so that nothing blocked in
// between is lost. A hub without Follow (the seed's, or an older one) is
// subscribed to with org.terok.Clearance1.Subscribe instead and its
// backlog fetched afterwards on calls (closed first in either case: a
// connection from before a hub restart is stale). It then delivers to h
// until the stream ends, the hub goes away or ctx ends; a blocked
// receive is interrupted then, whatever the library does with the
// context. connected reports whether the subscription stood (Connected
// was called and accepted it), which callers use to reset their
// reconnect backoff.
func Subscribe(ctx context.Context, path string, calls *Caller, h Handler) (connected bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, interrupt, err := varlinkapi.DialInterruptible(sctx, path)
	if err != nil {
		return false, err
	}
	defer stream.Close()
	stop := context.AfterFunc(sctx, interrupt)
	defer stop()
	calls.Close()
	recv, err := orgterokclearancehub1.Follow().Send(sctx, stream, varlink.More)
	if err != nil {
		return false, fmt.Errorf("follow: %w", err)
	}
	pending, _, _, err := recv(sctx)
	switch name := varlinkapi.ErrorName(err); {
	case err == nil:
		if pending == nil {
			return false, errors.New("follow: the hub's first reply carries no backlog")
		}
		if err := h.Connected(sctx, *pending, true); err != nil {
			return false, err
		}
		for {
			_, w, flags, err := recv(sctx)
			if err != nil {
				return true, err
			}
			if w == nil {
				return true, errors.New("follow: a reply without an event")
			}
			if err := h.Event(sctx, orgterokclearance1.ClearanceEvent(*w)); err != nil {
				return true, err
			}
			if flags&varlink.Continues == 0 {
				return true, ErrStreamEnded
			}
		}
	case name == errInterfaceNotFound || name == errMethodNotFound:
		return subscribeCompat(sctx, stream, calls, h)
	default:
		return false, fmt.Errorf("follow: %w", err)
	}
}

const (
	errInterfaceNotFound = "org.varlink.service.InterfaceNotFound"
	errMethodNotFound    = "org.varlink.service.MethodNotFound"
)

// subscribeCompat is Subscribe for a hub without Follow: subscribe on
// stream, then fetch the backlog on calls where the hub has one. A
// request blocked between the two may reach neither (the seed's
// protocol has no way to close that gap).
func subscribeCompat(ctx context.Context, stream *varlink.Connection, calls *Caller, h Handler) (bool, error) {
	recv, err := orgterokclearance1.Subscribe().Send(ctx, stream, varlink.More)
	if err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	var pending []orgterokclearancehub1.PendingRequest
	err = calls.Call(ctx, func(ctx context.Context, c *varlink.Connection) error {
		var err error
		pending, err = orgterokclearancehub1.Pending().Call(ctx, c)
		return err
	})
	hub1 := err == nil
	if err != nil && varlinkapi.ErrorName(err) == "" {
		return false, err // a transport failure: the hub is gone again
	}
	if err := h.Connected(ctx, pending, hub1); err != nil {
		return false, err
	}
	for {
		w, flags, err := recv(ctx)
		if err != nil {
			return true, err
		}
		if err := h.Event(ctx, w); err != nil {
			return true, err
		}
		if flags&varlink.Continues == 0 {
			return true, ErrStreamEnded
		}
	}
}

// FromWire converts a wire event to the event the clients work with.
func FromWire(w orgterokclearance1.ClearanceEvent) event.Event {
	ev := event.Event{
		Type: w.Type, Container: w.Container, RequestID: w.Request_id, Dest: w.Dest,
		Port: w.Port, Proto: w.Proto, Domain: w.Domain, Action: w.Action, OK: w.Ok,
		Reason: w.Reason, Dossier: w.Dossier,
	}
	ev.Normalize()
	return ev
}

// FromPending converts a pending request of the backlog to the
// connection_blocked event it stands for.
func FromPending(p orgterokclearancehub1.PendingRequest) event.Event {
	ev := event.Event{
		Type: event.ConnectionBlocked, Container: p.Container, RequestID: p.Request_id,
		Dest: p.Dest, Port: p.Port, Proto: p.Proto, Domain: p.Domain, Dossier: p.Dossier,
	}
	if p.Reason != nil {
		ev.Reason = *p.Reason // the container asked, and said why
	}
	return ev
}
