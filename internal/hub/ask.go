// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hub

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/event"
)

// Ask records a request the container made itself before connecting
// (its ask endpoint): ev names the destination (Dest, an address, or
// Domain, a name, with Dest empty), Port, Proto, and in Reason the
// container's own words, already sanitised. It becomes a pending
// connection_blocked request like a blocked packet: fanned out, audited,
// decided with Verdict or Decide. A request already pending for the same
// destination is joined instead (the reason is added to it when it had
// none, and the prompt re-announced), and so is a blocked packet that
// follows for the same destination. It returns the request id and
// whether the request is new.
func (h *Hub) Ask(ev event.Event) (id string, fresh bool) {
	ev.Type = event.ConnectionBlocked
	ev.Normalize()
	h.eventsIn.Add(1)
	now := h.cfg.Now()
	key := flowKey{ev.Container, ev.Dest, ev.Domain, ev.Port, ev.Proto}
	h.mu.Lock()
	p, ok := h.flows[key]
	if !ok || !(p.live || p.claimed) {
		p, ok = h.samePendingLocked(ev)
	}
	if ok {
		id = p.ev.RequestID
		p.last = now
		if p.ev.Reason == "" && ev.Reason != "" && !p.claimed {
			p.ev.Reason = ev.Reason
			p.lastEmit = now
			h.fanOutLocked(p.ev)
		}
		h.mu.Unlock()
		ev.RequestID = id
		h.auditAsked(ev, false)
		return id, false
	}
	ev.RequestID = h.NewRequestID()
	h.addPendingLocked(ev, now, key, true)
	h.fanOutLocked(ev)
	h.mu.Unlock()
	h.auditAsked(ev, true)
	h.changed()
	return ev.RequestID, true
}

// samePendingLocked finds a live request for ev's destination, port and
// protocol: by address when ev has one, else by name.
func (h *Hub) samePendingLocked(ev event.Event) (*pending, bool) {
	for _, q := range h.pending {
		if q.container != ev.Container || q.ev.Port != ev.Port || q.ev.Proto != ev.Proto || q.ev.Type != event.ConnectionBlocked {
			continue
		}
		if (ev.Dest != "" && q.ev.Dest == ev.Dest) || (ev.Dest == "" && ev.Domain != "" && q.ev.Domain == ev.Domain) {
			return q, true
		}
	}
	return nil, false
}

func (h *Hub) auditAsked(ev event.Event, fresh bool) {
	args := append([]any{keyMessageID, audit.MsgAsked}, h.eventAttrs(ev)...)
	args = append(args, keyPolicy, h.cfg.Policy, keyProject, h.cfg.Project, keyReason, ev.Reason,
		audit.FieldAskNew, strconv.FormatBool(fresh))
	h.log.Info("the container asks for "+ev.Target()+":"+strconv.FormatInt(ev.Port, 10)+": "+strconv.Quote(ev.Reason), args...)
}

// Outcome is where a request stands, as [Hub.Await] reports it.
type Outcome struct {
	// State is "pending" (still waiting for a verdict), "decided", or
	// "gone" (no longer pending and not decided recently: it expired,
	// was purged with its container or evicted, or the id is unknown).
	State string
	// Action, Scope, Expires, By and At describe a decided request:
	// the verdict, its scope, when it ends (zero: it does not), who
	// decided ([Operator.Describe]) and when.
	Action  string
	Scope   string
	Expires time.Time
	By      string
	At      time.Time
}

// States of [Outcome].
const (
	OutcomePending = "pending"
	OutcomeDecided = "decided"
	OutcomeGone    = "gone"
)

// Await waits until request id is decided or gone, or ctx ends, and
// reports where it stands then. A verdict that failed leaves the request
// pending (the operator may retry), so Await keeps waiting. It never
// changes the request.
func (h *Hub) Await(ctx context.Context, id string) Outcome {
	for {
		ch := h.waiters.channel() // before looking: a change after the look closes it
		if o := h.outcome(id); o.State != OutcomePending {
			return o
		}
		select {
		case <-ctx.Done():
			return Outcome{State: OutcomePending}
		case <-ch:
		}
	}
}

// outcome reports where request id stands now.
func (h *Hub) outcome(id string) Outcome {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.pending[id]; ok {
		return Outcome{State: OutcomePending}
	}
	if _, ok := h.inflight[id]; ok {
		return Outcome{State: OutcomePending}
	}
	if d, ok := h.done[id]; ok {
		return Outcome{State: OutcomeDecided, Action: d.action, Scope: d.scope, Expires: d.expires,
			By: d.by.Describe(), At: d.at}
	}
	return Outcome{State: OutcomeGone}
}

// waiters is a broadcast: every change of the hub's state closes the
// current channel.
type waiters struct {
	mu    sync.Mutex
	ch    chan struct{}
	takes uint64 // channel calls: a test waits for a waiter to be there
}

func (w *waiters) channel() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.takes++
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

// taken is how many times channel was called.
func (w *waiters) taken() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.takes
}

func (w *waiters) wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}
