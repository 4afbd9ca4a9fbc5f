// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nflog

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// Defaults of [Names].
const (
	DefaultNamesMinTTL     = 60 * time.Second
	DefaultNamesMaxTTL     = 24 * time.Hour
	DefaultNamesMaxEntries = 4096
)

// Names remembers which name each address was resolved from, for one
// container, so a blocked destination can be shown by name.
//
// The zero value is ready to use with the defaults; set the fields before
// first use to change them. Names is safe for concurrent use by multiple
// goroutines. Times are passed in by the caller, so tests need no clock.
type Names struct {
	// MinTTL is the shortest time an answer is kept, whatever its DNS TTL
	// (applications connect after the TTL has run out, too). Zero means
	// [DefaultNamesMinTTL].
	MinTTL time.Duration
	// MaxTTL is the longest time an answer is kept. Zero means
	// [DefaultNamesMaxTTL].
	MaxTTL time.Duration
	// MaxEntries caps the number of addresses kept; the least recently
	// observed or looked-up address is dropped first. Zero means
	// [DefaultNamesMaxEntries].
	MaxEntries int

	mu      sync.Mutex
	entries map[netip.Addr]*list.Element // of *nameEntry
	lru     list.List                    // front: most recently used
}

type nameEntry struct {
	addr    netip.Addr
	name    string
	expires time.Time
}

// Observe records answers seen at now. A later answer for the same address
// replaces an earlier one.
func (n *Names) Observe(answers []Answer, now time.Time) {
	if len(answers) == 0 {
		return
	}
	minTTL, maxTTL, maxEntries := n.limits()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.entries == nil {
		n.entries = make(map[netip.Addr]*list.Element)
	}
	for _, a := range answers {
		if !a.Addr.IsValid() || a.Name == "" {
			continue
		}
		ttl := min(max(time.Duration(a.TTL)*time.Second, minTTL), maxTTL)
		addr := a.Addr.Unmap()
		if el, ok := n.entries[addr]; ok {
			e := el.Value.(*nameEntry)
			e.name, e.expires = a.Name, now.Add(ttl)
			n.lru.MoveToFront(el)
			continue
		}
		n.entries[addr] = n.lru.PushFront(&nameEntry{addr: addr, name: a.Name, expires: now.Add(ttl)})
		for n.lru.Len() > maxEntries {
			n.remove(n.lru.Back())
		}
	}
}

// Lookup returns the name addr was last resolved from, if that answer has
// not expired at now.
func (n *Names) Lookup(addr netip.Addr, now time.Time) (name string, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	el, ok := n.entries[addr.Unmap()]
	if !ok {
		return "", false
	}
	e := el.Value.(*nameEntry)
	if !now.Before(e.expires) {
		n.remove(el)
		return "", false
	}
	n.lru.MoveToFront(el)
	return e.name, true
}

// Len returns the number of addresses held, expired ones included until
// they are looked up or pushed out.
func (n *Names) Len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lru.Len()
}

func (n *Names) remove(el *list.Element) {
	delete(n.entries, el.Value.(*nameEntry).addr)
	n.lru.Remove(el)
}

func (n *Names) limits() (minTTL, maxTTL time.Duration, maxEntries int) {
	minTTL, maxTTL, maxEntries = n.MinTTL, n.MaxTTL, n.MaxEntries
	if minTTL <= 0 {
		minTTL = DefaultNamesMinTTL
	}
	if maxTTL <= 0 {
		maxTTL = DefaultNamesMaxTTL
	}
	maxTTL = max(maxTTL, minTTL)
	if maxEntries <= 0 {
		maxEntries = DefaultNamesMaxEntries
	}
	return minTTL, maxTTL, maxEntries
}
