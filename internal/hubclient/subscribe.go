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

// Subscribe follows the hub at path once: it subscribes on a connection
// of its own, then fetches the pending backlog on calls (closed first: a
// connection from before a hub restart is stale), and delivers to h until
// the stream ends, the hub goes away or ctx ends; a blocked receive is
// interrupted then, whatever the library does with the context.
// connected reports whether the subscription stood (Connected was
// called and accepted it), which callers use to reset their reconnect
// backoff.
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
	recv, err := orgterokclearance1.Subscribe().Send(sctx, stream, varlink.More)
	if err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	calls.Close()
	var pending []orgterokclearancehub1.PendingRequest
	err = calls.Call(sctx, func(ctx context.Context, c *varlink.Connection) error {
		var err error
		pending, err = orgterokclearancehub1.Pending().Call(ctx, c)
		return err
	})
	hub1 := err == nil
	if err != nil && varlinkapi.ErrorName(err) == "" {
		return false, err // a transport failure: the hub is gone again
	}
	if err := h.Connected(sctx, pending, hub1); err != nil {
		return false, err
	}
	for {
		w, flags, err := recv(sctx)
		if err != nil {
			return true, err
		}
		if err := h.Event(sctx, w); err != nil {
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
