// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// maxBatch bounds the elements of one background refresh Learn call.
const maxBatch = 1024

type learnKey struct {
	addr  netip.Addr
	proto uint8
	port  uint16
}

func keyOf(el *Element) learnKey { return learnKey{el.Addr, el.Proto, el.Port} }

// learnEntry is what the forwarder knows of one element in the kernel.
type learnEntry struct {
	// expires is a lower bound of the element's expiry in the kernel:
	// the start of the Learn call that acknowledged it plus its Timeout.
	// Zero: never acknowledged.
	expires time.Time
	// fl is the Learn call in flight for the element, if any; answers
	// needing the element wait for it instead of starting another.
	fl *flight
	// flExpires is the expiry fl gives when it succeeds.
	flExpires time.Time
}

// flight is one Learn call. done is closed when it returned; err is its
// result, readable after done.
type flight struct {
	done chan struct{}
	err  error
}

// learnTable remembers what the forwarder learned. Safe for concurrent use.
type learnTable struct {
	mu      sync.Mutex
	max     int
	m       map[learnKey]*learnEntry
	refresh map[learnKey]Element // waiting for the background refresher
	kick    chan struct{}        // capacity 1: there is something to refresh
}

func newLearnTable(max int) *learnTable {
	return &learnTable{
		max:     max,
		m:       make(map[learnKey]*learnEntry),
		refresh: make(map[learnKey]Element),
		kick:    make(chan struct{}, 1),
	}
}

func (t *learnTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// forget drops the entries of addr, or all of them for the zero Addr.
// An entry with a Learn in flight is dropped too: completeLearn finds
// it gone and records nothing.
func (t *learnTable) forget(addr netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !addr.IsValid() {
		t.m = make(map[learnKey]*learnEntry)
		t.refresh = make(map[learnKey]Element)
		return
	}
	for k := range t.m {
		if k.addr == addr {
			delete(t.m, k)
			delete(t.refresh, k)
		}
	}
}

// entry returns the entry of k, creating it. The caller holds t.mu.
func (t *learnTable) entry(k learnKey, now time.Time) *learnEntry {
	if e := t.m[k]; e != nil {
		return e
	}
	if len(t.m) >= t.max {
		t.evict(now)
	}
	e := &learnEntry{}
	t.m[k] = e
	return e
}

// evict makes room: expired entries first, then any entry with nothing in
// flight, down to 7/8 of the cap. Forgetting an element is safe: an
// answer needing it is held while it is learned again. The caller holds
// t.mu.
func (t *learnTable) evict(now time.Time) {
	for k, e := range t.m {
		if e.fl == nil && !e.expires.After(now) {
			delete(t.m, k)
			delete(t.refresh, k)
		}
	}
	for k, e := range t.m {
		if len(t.m) < t.max-t.max/8 {
			break
		}
		if e.fl == nil {
			delete(t.m, k)
			delete(t.refresh, k)
		}
	}
}

// gate makes sure every element of els is in the kernel before the answer
// for q is released. It reports ok false if the answer must be replaced by
// SERVFAIL (Learn failed, HoldMax passed or ctx ended). With nowait, it
// reports blocked instead of starting or waiting for a Learn call.
//
// An element is released at once when the kernel has it for at least half
// its new Timeout more, or for at least HoldMargin more, in which case a
// background refresh is queued. Otherwise the answer waits for the Learn
// call in flight for the element, or for one new call made for all such
// elements of this answer.
func (f *Forwarder) gate(ctx context.Context, q *query, els []Element, arrived time.Time, nowait bool) (ok, blocked bool) {
	t := f.learned
	now := f.now()
	var (
		wait  []*flight
		batch []Element
		kick  bool
		nf    *flight
	)
	t.mu.Lock()
	for i := range els {
		el := &els[i]
		k := keyOf(el)
		e := t.m[k]
		if e != nil && !e.expires.IsZero() {
			left := e.expires.Sub(now)
			if left >= el.Timeout/2 {
				continue
			}
			if left >= HoldMargin {
				if e.fl == nil {
					if old, ok := t.refresh[k]; !ok || old.Timeout < el.Timeout {
						t.refresh[k] = *el
					}
					kick = true
				}
				continue
			}
		}
		if nowait {
			t.mu.Unlock()
			f.kickRefresh(kick)
			return false, true
		}
		if e != nil && e.fl != nil {
			if !slices.Contains(wait, e.fl) {
				wait = append(wait, e.fl)
			}
			continue
		}
		if nf == nil {
			nf = &flight{done: make(chan struct{})}
			wait = append(wait, nf)
		}
		e = t.entry(k, now)
		e.fl, e.flExpires = nf, now.Add(el.Timeout)
		delete(t.refresh, k)
		batch = append(batch, *el)
	}
	t.mu.Unlock()
	f.kickRefresh(kick)
	if len(wait) == 0 {
		return true, false
	}
	if nf != nil {
		f.startLearn(nf, batch, now, f.cfg.HoldMax, false)
	}
	if f.cfg.NoHold {
		return true, false // measuring the race the hold closes: learn, but do not wait
	}
	f.st.held.Add(1)

	timer := time.NewTimer(f.cfg.HoldMax - time.Since(arrived))
	defer timer.Stop()
	for _, fl := range wait {
		select {
		case <-fl.done:
			if fl.err != nil {
				return false, false
			}
		case <-timer.C:
			f.st.holdTimeouts.Add(1)
			f.logHold.warn(f, "answer held too long, sent SERVFAIL", "name", q.name, "hold_max", f.cfg.HoldMax)
			if f.cfg.OnHoldTimeout != nil {
				f.cfg.OnHoldTimeout(q.name)
			}
			return false, false
		case <-ctx.Done():
			return false, false
		}
	}
	return true, false
}

// kickRefresh wakes the refresher if kick is set.
func (f *Forwarder) kickRefresh(kick bool) {
	if kick {
		select {
		case f.learned.kick <- struct{}{}:
		default:
		}
	}
}

// startLearn calls Learn for els in the background (ctx ends after
// timeout or with Run) and completes fl with the result. The elements'
// entries must already point at fl.
func (f *Forwarder) startLearn(fl *flight, els []Element, start time.Time, timeout time.Duration, refresh bool) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		ctx, cancel := context.WithTimeout(f.bg, timeout)
		err := f.cfg.Learner.Learn(ctx, els)
		cancel()
		f.completeLearn(fl, els, start, err, refresh)
	}()
}

func (f *Forwarder) completeLearn(fl *flight, els []Element, start time.Time, err error, refresh bool) {
	t := f.learned
	t.mu.Lock()
	for i := range els {
		k := keyOf(&els[i])
		e := t.m[k]
		if e == nil || e.fl != fl {
			continue // evicted meanwhile (only if the table overflowed)
		}
		e.fl = nil
		if err == nil {
			e.expires = start.Add(els[i].Timeout)
		} else if e.expires.IsZero() {
			delete(t.m, k)
		}
	}
	t.mu.Unlock()
	// Accounted for before the answers waiting are released: whoever sees
	// an answer also sees it counted and audited.
	if err != nil {
		f.st.learnErrors.Add(1)
		f.logLearn.warn(f, "learn allowed addresses", "elements", len(els), "name", els[0].Name, "refresh", refresh, "err", err)
	} else {
		f.st.learnedEls.Add(uint64(len(els)))
		if f.cfg.OnLearned != nil {
			f.cfg.OnLearned(els)
		}
	}
	fl.err = err
	close(fl.done)
	if f.learnDone != nil {
		f.learnDone(err)
	}
}

// refresher runs the background refreshes queued by gate, in batches,
// one Learn call at a time, until ctx ends.
func (f *Forwarder) refresher(ctx context.Context) {
	t := f.learned
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		}
		for ctx.Err() == nil {
			now := f.now()
			var batch []Element
			fl := &flight{done: make(chan struct{})}
			t.mu.Lock()
			for k, el := range t.refresh {
				delete(t.refresh, k)
				e := t.entry(k, now)
				if e.fl != nil {
					continue // a held answer is learning it already
				}
				e.fl, e.flExpires = fl, now.Add(el.Timeout)
				batch = append(batch, el)
				if len(batch) == maxBatch {
					break
				}
			}
			t.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			f.st.refreshes.Add(1)
			f.startLearn(fl, batch, now, f.cfg.RefreshTimeout, true)
			select {
			case <-fl.done:
			case <-ctx.Done():
				return
			}
		}
	}
}
