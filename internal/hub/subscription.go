// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hub

import (
	"sync"

	"github.com/terok-ai/clearance/internal/event"
)

// Subscription is one subscriber's bounded queue of events.
//
// Events are queued by the hub without ever blocking; when the queue is
// full the oldest queued event is dropped. The subscriber waits on
// [Subscription.Ready] and drains with [Subscription.Next]. A Subscription
// is used by one consumer goroutine; Close may be called from any.
type Subscription struct {
	h     *Hub
	ready chan struct{}

	mu     sync.Mutex
	queue  []*Item // ring buffer
	head   int
	n      int
	drops  uint64
	closed bool
}

// Subscribe registers a new subscriber. It receives every event published
// from now on (there is no replay; see [Hub.Pending]). The caller must
// Close it.
func (h *Hub) Subscribe() *Subscription {
	s, _ := h.subscribe(false)
	return s
}

// SubscribePending is [Hub.Subscribe] and [Hub.Pending] in one step: the
// requests pending at the moment the subscription starts, and a
// subscription that receives every event published after that moment.
// A request blocked concurrently is in one of the two, never in neither.
func (h *Hub) SubscribePending() (*Subscription, []PendingRequest) {
	return h.subscribe(true)
}

func (h *Hub) subscribe(withPending bool) (*Subscription, []PendingRequest) {
	s := &Subscription{h: h, ready: make(chan struct{}, 1), queue: make([]*Item, h.cfg.QueueDepth)}
	var pending []PendingRequest
	h.mu.Lock()
	if withPending {
		pending = h.pendingLocked()
	}
	h.subs[s] = struct{}{}
	if h.cfg.Notice != "" {
		s.push(&Item{Event: event.Event{Type: event.HubNotice, Container: h.cfg.Container, Reason: h.cfg.Notice,
			Dossier: map[string]string{}}})
	}
	h.mu.Unlock()
	if h.Observing() {
		s.push(&Item{Event: h.observeNotice()})
	}
	if withPending {
		sortPending(pending)
	}
	return s, pending
}

// Item is one queued event. The same Item is queued for every
// subscriber, so an encoding of it is computed once and shared.
type Item struct {
	Event event.Event

	once sync.Once
	enc  []byte
}

// Encoded returns encode(it.Event), computing it on the first call only.
// Every caller must pass the same encoder: the subscribers of one
// interface share the result. The returned slice must not be modified.
func (it *Item) Encoded(encode func(event.Event) []byte) []byte {
	it.once.Do(func() { it.enc = encode(it.Event) })
	return it.enc
}

// push queues ev and reports whether an older event had to be dropped.
func (s *Subscription) push(ev *Item) (dropped bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	if s.n == len(s.queue) {
		s.head = (s.head + 1) % len(s.queue)
		s.n--
		s.drops++
		dropped = true
	}
	s.queue[(s.head+s.n)%len(s.queue)] = ev
	s.n++
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
	return dropped
}

// Ready returns a channel that receives a value when events may be
// waiting. After a receive, drain with Next until it reports false.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Next removes and returns the oldest queued event.
func (s *Subscription) Next() (event.Event, bool) {
	it, ok := s.NextItem()
	if !ok {
		return event.Event{}, false
	}
	return it.Event, true
}

// NextItem removes and returns the oldest queued item.
func (s *Subscription) NextItem() (*Item, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 {
		return nil, false
	}
	it := s.queue[s.head]
	s.queue[s.head] = nil
	s.head = (s.head + 1) % len(s.queue)
	s.n--
	return it, true
}

// Wake makes Ready fire again, for a consumer that stopped draining
// before the queue was empty.
func (s *Subscription) Wake() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Delivered records that n events taken with Next reached the subscriber.
func (s *Subscription) Delivered(n int) { s.h.eventsOut.Add(uint64(n)) }

// Drops returns how many events this subscriber lost to a full queue.
func (s *Subscription) Drops() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drops
}

// Close unregisters the subscriber and frees its queue. It is idempotent.
func (s *Subscription) Close() {
	s.h.mu.Lock()
	delete(s.h.subs, s)
	s.h.mu.Unlock()
	s.mu.Lock()
	s.closed = true
	s.queue, s.n = nil, 0
	s.mu.Unlock()
}
