// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hub

import (
	"sort"
	"time"

	"github.com/terok-ai/clearance/internal/event"
)

// State is what a hub keeps across a restart of its process: the requests
// still waiting for a verdict (with their ids, so a subscriber that
// reconnects sees the same request again, not a second prompt) and the
// timed verdicts whose expiry the hub enforces. The daemon stores it in a
// memfd kept in systemd's file descriptor store.
type State struct {
	// IDBase and Seq continue the hub's request ids, so ids issued after
	// the restart never repeat one issued before.
	IDBase string `json:"id_base"`
	Seq    uint64 `json:"seq"`
	// Pending are the requests waiting for a verdict, oldest first.
	Pending []PendingState `json:"pending"`
	// Expiry are the timed verdicts not yet ended.
	Expiry []ExpiryState `json:"expiry"`
}

// PendingState is one request of [State].
type PendingState struct {
	Event event.Event `json:"event"`
	Count int64       `json:"count"`
	First time.Time   `json:"first"`
	Last  time.Time   `json:"last"`
	// Coalesces is true for a request from the hub's own NFLOG watch:
	// repeats of its destination are counted, not prompted again.
	Coalesces bool `json:"coalesces"`
}

// ExpiryState is one timed verdict of [State].
type ExpiryState struct {
	Request ApplyRequest `json:"request"`
	At      time.Time    `json:"at"`
}

// State returns a snapshot of what must survive a restart.
func (h *Hub) State() State {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := State{IDBase: h.idBase, Seq: h.seq.Load(), Pending: []PendingState{}, Expiry: []ExpiryState{}}
	for _, p := range h.pending {
		ev := p.ev
		ev.Dossier = cloneMap(ev.Dossier)
		st.Pending = append(st.Pending, PendingState{Event: ev, Count: p.count, First: p.first, Last: p.last, Coalesces: p.hasFlow})
	}
	sort.Slice(st.Pending, func(i, j int) bool {
		if !st.Pending[i].First.Equal(st.Pending[j].First) {
			return st.Pending[i].First.Before(st.Pending[j].First)
		}
		return st.Pending[i].Event.RequestID < st.Pending[j].Event.RequestID
	})
	for _, e := range h.expiry {
		st.Expiry = append(st.Expiry, ExpiryState{Request: e.req, At: e.at})
	}
	sort.Slice(st.Expiry, func(i, j int) bool { return st.Expiry[i].At.Before(st.Expiry[j].At) })
	return st
}

// Restore loads a [State] saved by a previous process of this hub. Call it
// before the hub serves anyone. Requests older than the pending TTL are
// dropped; everything else is as it was, ids included, so a subscriber
// that asks for Pending sees the same requests again.
func (h *Hub) Restore(st State) {
	now := h.cfg.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if st.IDBase != "" {
		h.idBase = st.IDBase
		if st.Seq > h.seq.Load() {
			h.seq.Store(st.Seq)
		}
	}
	for _, ps := range st.Pending {
		if ps.Event.RequestID == "" || now.Sub(ps.Last) > h.cfg.PendingTTL {
			continue
		}
		ev := ps.Event
		ev.Normalize()
		p := &pending{ev: ev, target: ev.Target(), count: ps.Count, first: ps.First, last: ps.Last, lastEmit: ps.Last,
			container: ev.Container, hasFlow: ps.Coalesces}
		if ps.Coalesces {
			p.flow = flowKey{ev.Container, ev.Dest, ev.Domain, ev.Port, ev.Proto}
		}
		if old, ok := h.pending[ev.RequestID]; ok {
			h.removeLocked(old)
		}
		h.insertLocked(p)
	}
	for _, e := range st.Expiry {
		h.expiry[keyOf(e.Request)] = expiring{req: e.Request, at: e.At}
	}
}

// changed tells the owner (Config.OnChange) that the state changed.
func (h *Hub) changed() {
	h.waiters.wake()
	if h.cfg.OnChange != nil {
		h.cfg.OnChange()
	}
}
