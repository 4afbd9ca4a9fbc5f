// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func fixedTTL(d time.Duration) func(uint32) time.Duration {
	return func(uint32) time.Duration { return d }
}

func at(addrs ...string) []addrTTL {
	var out []addrTTL
	for _, a := range addrs {
		out = append(out, addrTTL{addr: netip.MustParseAddr(a)})
	}
	return out
}

func addrStrings(as []netip.Addr) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	sortStrings(out)
	return out
}

func TestNameTable(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ttl := fixedTTL(time.Minute)
	type obs struct {
		name  string
		addrs []string
	}
	tests := []struct {
		name      string
		max       int
		observe   []obs
		touch     []string // looked up after observing, in order
		then      []obs    // observed after the touches
		wantNames map[string][]string
		wantAddrs map[string][]string
	}{
		{
			name:      "least recently used address goes first; a lookup counts as use",
			max:       2,
			observe:   []obs{{"a.test", []string{"192.0.2.1"}}, {"b.test", []string{"192.0.2.2"}}},
			touch:     []string{"192.0.2.1"},
			then:      []obs{{"c.test", []string{"192.0.2.3"}}},
			wantNames: map[string][]string{"192.0.2.1": {"a.test"}, "192.0.2.2": nil, "192.0.2.3": {"c.test"}},
			wantAddrs: map[string][]string{"a.test": {"192.0.2.1"}, "b.test": nil, "c.test": {"192.0.2.3"}},
		},
		{
			name: "at most four names per address, oldest dropped",
			max:  8,
			observe: []obs{
				{"n1.test", []string{"192.0.2.1"}}, {"n2.test", []string{"192.0.2.1"}}, {"n3.test", []string{"192.0.2.1"}},
				{"n4.test", []string{"192.0.2.1"}}, {"n5.test", []string{"192.0.2.1"}}, {"n3.test", []string{"192.0.2.1"}},
			},
			wantNames: map[string][]string{"192.0.2.1": {"n3.test", "n5.test", "n4.test", "n2.test"}},
			wantAddrs: map[string][]string{"n1.test": nil, "n2.test": {"192.0.2.1"}},
		},
		{
			name:      "an answer larger than the cap keeps its last addresses",
			max:       2,
			observe:   []obs{{"a.test", []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}}},
			wantNames: map[string][]string{"192.0.2.1": nil, "192.0.2.3": {"a.test"}},
			wantAddrs: map[string][]string{"a.test": {"192.0.2.2", "192.0.2.3"}},
		},
		{
			name:      "a name with many addresses",
			max:       100,
			observe:   []obs{{"big.test", seqAddrs(40)}},
			wantAddrs: map[string][]string{"big.test": sorted(seqAddrs(40))},
		},
		{
			name:      "many addresses, then evicted down to a few",
			max:       20,
			observe:   []obs{{"big.test", seqAddrs(40)}},
			wantAddrs: map[string][]string{"big.test": sorted(seqAddrs(40)[20:])},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nt := newNameTable(tt.max)
			for _, o := range tt.observe {
				nt.observe(o.name, at(o.addrs...), now, ttl)
			}
			for _, a := range tt.touch {
				nt.lookup(netip.MustParseAddr(a), now)
			}
			for _, o := range tt.then {
				nt.observe(o.name, at(o.addrs...), now, ttl)
			}
			for a, want := range tt.wantNames {
				if diff := cmp.Diff(want, nt.lookup(netip.MustParseAddr(a), now)); diff != "" {
					t.Errorf("names of %s (-want +got):\n%s", a, diff)
				}
			}
			for n, want := range tt.wantAddrs {
				if diff := cmp.Diff(want, addrStrings(nt.addrs(n, now))); diff != "" {
					t.Errorf("addresses of %s (-want +got):\n%s", n, diff)
				}
			}
			if len(nt.byAddr) > tt.max {
				t.Errorf("%d addresses kept, cap %d", len(nt.byAddr), tt.max)
			}
			checkNameTable(t, nt)
		})
	}
}

func TestNameTableExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	nt := newNameTable(8)
	nt.observe("short.test", at("192.0.2.1"), now, fixedTTL(time.Minute))
	nt.observe("long.test", at("192.0.2.1"), now, fixedTTL(time.Hour))
	later := now.Add(2 * time.Minute)
	if diff := cmp.Diff([]string{"long.test"}, nt.lookup(netip.MustParseAddr("192.0.2.1"), later)); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
	if got := nt.addrs("short.test", later); got != nil {
		t.Errorf("addresses of an expired name: %v", got)
	}
	// A later, shorter answer does not shorten what is known.
	nt.observe("long.test", at("192.0.2.1"), later, fixedTTL(time.Minute))
	if got := nt.lookup(netip.MustParseAddr("192.0.2.1"), now.Add(30*time.Minute)); len(got) != 1 {
		t.Errorf("names at +30m: %v", got)
	}
	// The expired name is purged on the next observation of the address.
	if _, ok := nt.byName["short.test"]; ok {
		t.Error("expired name still indexed")
	}
	checkNameTable(t, nt)
}

// checkNameTable verifies the table's invariants: both indexes agree and
// the LRU list holds exactly the addresses.
func checkNameTable(t *testing.T, nt *nameTable) {
	t.Helper()
	n := 0
	for ae := nt.lru.head; ae != nil; ae = ae.next {
		n++
		if nt.byAddr[ae.addr] != ae {
			t.Errorf("lru entry %s not indexed", ae.addr)
		}
		for i := 0; i < ae.nrefs; i++ {
			ne := ae.refs[i].name
			if nt.byName[ne.name] != ne {
				t.Errorf("name %s of %s not indexed", ne.name, ae.addr)
			}
			if !has(ne, ae.addr) {
				t.Errorf("name %s lacks %s", ne.name, ae.addr)
			}
		}
	}
	if n != len(nt.byAddr) {
		t.Errorf("lru has %d entries, index %d", n, len(nt.byAddr))
	}
	for name, ne := range nt.byName {
		if ne.empty() {
			t.Errorf("empty name %s indexed", name)
		}
	}
}

func has(ne *nameEntry, a netip.Addr) bool {
	if ne.set != nil {
		_, ok := ne.set[a]
		return ok
	}
	for _, x := range ne.addrs {
		if x == a {
			return true
		}
	}
	return false
}

func seqAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("198.51.100.%d", i+1)
	}
	return out
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	sortStrings(s)
	return s
}
