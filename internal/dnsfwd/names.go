// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"net/netip"
	"sync"
	"time"
)

// smallName is how many addresses a name keeps in a slice before it
// switches to a map.
const smallName = 16

// nameTable remembers, per address, the question names it was an answer
// for (at most maxNamesPerAddr, most recent first), and per name its
// addresses. Addresses are kept in LRU order and capped; a name lives as
// long as one of its addresses does. Safe for concurrent use.
type nameTable struct {
	mu     sync.Mutex
	max    int
	byAddr map[netip.Addr]*addrEntry
	byName map[string]*nameEntry
	lru    lruList[addrEntry, *addrEntry]
}

type addrEntry struct {
	addr  netip.Addr
	refs  [maxNamesPerAddr]nameRef
	nrefs int
	lruLink[addrEntry]
}

type nameRef struct {
	name    *nameEntry
	expires int64 // unix nanoseconds
}

type nameEntry struct {
	name  string
	addrs []netip.Addr            // up to smallName addresses
	set   map[netip.Addr]struct{} // beyond, instead of addrs
}

func newNameTable(max int) *nameTable {
	return &nameTable{
		max:    max,
		byAddr: make(map[netip.Addr]*addrEntry),
		byName: make(map[string]*nameEntry),
	}
}

func (t *nameTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byAddr)
}

// observe records that addrs were an answer for name at now, each kept
// for ttl(addr).
func (t *nameTable) observe(name string, addrs []addrTTL, now time.Time, ttl func(uint32) time.Duration) {
	if len(addrs) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ne := t.byName[name]
	if ne == nil {
		ne = &nameEntry{name: name}
		t.byName[name] = ne
	}
	nowNs := now.UnixNano()
	for _, a := range addrs {
		exp := now.Add(ttl(a.ttl)).UnixNano()
		ae := t.byAddr[a.addr]
		if ae == nil {
			ae = &addrEntry{addr: a.addr}
			t.byAddr[a.addr] = ae
			t.lru.pushFront(ae)
			for len(t.byAddr) > t.max {
				t.remove(t.lru.tail)
			}
		} else {
			t.lru.moveToFront(ae)
		}
		t.purge(ae, nowNs)
		idx := -1
		for i := 0; i < ae.nrefs; i++ {
			if ae.refs[i].name == ne {
				idx = i
				exp = max(exp, ae.refs[i].expires)
				break
			}
		}
		if idx < 0 {
			if ae.nrefs == maxNamesPerAddr {
				t.dropRef(ae, ae.nrefs-1)
			}
			idx = ae.nrefs
			ae.nrefs++
			ne.add(a.addr)
		}
		copy(ae.refs[1:idx+1], ae.refs[:idx])
		ae.refs[0] = nameRef{ne, exp}
	}
	// dropRef deletes a name that lost its last address; an eviction or a
	// purge above may have done so to ne on the way.
	if ne.empty() {
		if t.byName[name] == ne {
			delete(t.byName, name)
		}
	} else {
		t.byName[name] = ne
	}
}

// lookup returns the live names of addr, most recent first.
func (t *nameTable) lookup(addr netip.Addr, now time.Time) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	ae := t.byAddr[addr]
	if ae == nil {
		return nil
	}
	t.lru.moveToFront(ae)
	nowNs := now.UnixNano()
	var out []string
	for i := 0; i < ae.nrefs; i++ {
		if ae.refs[i].expires > nowNs {
			out = append(out, ae.refs[i].name.name)
		}
	}
	return out
}

// addrs returns the addresses name is live for.
func (t *nameTable) addrs(name string, now time.Time) []netip.Addr {
	t.mu.Lock()
	defer t.mu.Unlock()
	ne := t.byName[name]
	if ne == nil {
		return nil
	}
	nowNs := now.UnixNano()
	var out []netip.Addr
	live := func(a netip.Addr) {
		ae := t.byAddr[a]
		if ae == nil {
			return
		}
		for i := 0; i < ae.nrefs; i++ {
			if ae.refs[i].name == ne && ae.refs[i].expires > nowNs {
				out = append(out, a)
				return
			}
		}
	}
	if ne.set != nil {
		for a := range ne.set {
			live(a)
		}
	} else {
		for _, a := range ne.addrs {
			live(a)
		}
	}
	return out
}

// purge drops the expired names of ae. The caller holds t.mu.
func (t *nameTable) purge(ae *addrEntry, nowNs int64) {
	for i := ae.nrefs - 1; i >= 0; i-- {
		if ae.refs[i].expires <= nowNs {
			t.dropRef(ae, i)
		}
	}
}

// dropRef removes the i-th name of ae. The caller holds t.mu.
func (t *nameTable) dropRef(ae *addrEntry, i int) {
	ne := ae.refs[i].name
	ne.remove(ae.addr)
	if ne.empty() && t.byName[ne.name] == ne {
		delete(t.byName, ne.name)
	}
	copy(ae.refs[i:], ae.refs[i+1:ae.nrefs])
	ae.nrefs--
	ae.refs[ae.nrefs] = nameRef{}
}

// remove forgets ae. The caller holds t.mu.
func (t *nameTable) remove(ae *addrEntry) {
	for ae.nrefs > 0 {
		t.dropRef(ae, ae.nrefs-1)
	}
	delete(t.byAddr, ae.addr)
	t.lru.unlink(ae)
}

func (ne *nameEntry) add(a netip.Addr) {
	if ne.set != nil {
		ne.set[a] = struct{}{}
		return
	}
	if len(ne.addrs) < smallName {
		ne.addrs = append(ne.addrs, a)
		return
	}
	ne.set = make(map[netip.Addr]struct{}, 2*smallName)
	for _, x := range ne.addrs {
		ne.set[x] = struct{}{}
	}
	ne.set[a] = struct{}{}
	ne.addrs = nil
}

func (ne *nameEntry) remove(a netip.Addr) {
	if ne.set != nil {
		delete(ne.set, a)
		return
	}
	for i, x := range ne.addrs {
		if x == a {
			last := len(ne.addrs) - 1
			ne.addrs[i] = ne.addrs[last]
			ne.addrs = ne.addrs[:last]
			return
		}
	}
}

func (ne *nameEntry) empty() bool {
	return len(ne.addrs) == 0 && len(ne.set) == 0
}
