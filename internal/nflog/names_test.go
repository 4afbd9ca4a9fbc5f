// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nflog

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestNames(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	a1 := netip.MustParseAddr("192.0.2.1")
	a2 := netip.MustParseAddr("2001:db8::2")
	mapped := netip.MustParseAddr("::ffff:192.0.2.1")

	type lookup struct {
		addr     netip.Addr
		at       time.Duration
		wantName string
		wantOK   bool
	}
	tests := []struct {
		name    string
		names   *Names
		observe []Answer
		lookups []lookup
	}{
		{
			name:    "TTL above the floor is honoured",
			names:   &Names{},
			observe: []Answer{{Name: "a.test", Addr: a1, TTL: 300}},
			lookups: []lookup{
				{a1, 299 * time.Second, "a.test", true},
				{a1, 300 * time.Second, "", false},
				{a1, 299 * time.Second, "", false}, // removed on expiry
			},
		},
		{
			name:    "short TTL is raised to the floor",
			names:   &Names{},
			observe: []Answer{{Name: "a.test", Addr: a1, TTL: 1}},
			lookups: []lookup{
				{a1, 59 * time.Second, "a.test", true},
				{a1, 60 * time.Second, "", false},
			},
		},
		{
			name:    "long TTL is capped",
			names:   &Names{MaxTTL: time.Hour},
			observe: []Answer{{Name: "a.test", Addr: a1, TTL: 1 << 31}},
			lookups: []lookup{
				{a1, time.Hour - time.Second, "a.test", true},
				{a1, time.Hour, "", false},
			},
		},
		{
			name:    "IPv6 and IPv4-mapped lookups",
			names:   &Names{},
			observe: []Answer{{Name: "a.test", Addr: a1, TTL: 300}, {Name: "b.test", Addr: a2, TTL: 300}},
			lookups: []lookup{
				{a2, 0, "b.test", true},
				{mapped, 0, "a.test", true},
				{netip.MustParseAddr("192.0.2.3"), 0, "", false},
			},
		},
		{
			name:  "later answer for the same address wins",
			names: &Names{},
			observe: []Answer{
				{Name: "a.test", Addr: a1, TTL: 300},
				{Name: "c.test", Addr: a1, TTL: 600},
			},
			lookups: []lookup{{a1, 500 * time.Second, "c.test", true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.names.Observe(tt.observe, t0)
			for _, l := range tt.lookups {
				name, ok := tt.names.Lookup(l.addr, t0.Add(l.at))
				if name != l.wantName || ok != l.wantOK {
					t.Errorf("Lookup(%v, +%v) = (%q, %v), want (%q, %v)", l.addr, l.at, name, ok, l.wantName, l.wantOK)
				}
			}
		})
	}
}

func TestNamesCapDropsLeastRecentlyUsed(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	n := &Names{MaxEntries: 3}
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}) }
	for i := range 3 {
		n.Observe([]Answer{{Name: fmt.Sprintf("h%d.test", i), Addr: addr(i), TTL: 300}}, t0)
	}
	n.Lookup(addr(0), t0) // 0 is now the most recently used; 1 the least
	n.Observe([]Answer{{Name: "h3.test", Addr: addr(3), TTL: 300}}, t0)
	if got := n.Len(); got != 3 {
		t.Errorf("Len() = %d, want 3", got)
	}
	for i, want := range []bool{true, false, true, true} {
		if _, ok := n.Lookup(addr(i), t0); ok != want {
			t.Errorf("Lookup(%v) ok = %v, want %v", addr(i), ok, want)
		}
	}
}

func TestNamesConcurrent(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	var n Names
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				a := netip.AddrFrom4([4]byte{10, byte(g), byte(i >> 8), byte(i)})
				n.Observe([]Answer{{Name: "x.test", Addr: a, TTL: 60}}, t0)
				n.Lookup(a, t0)
			}
		}()
	}
	wg.Wait()
	if got := n.Len(); got != DefaultNamesMaxEntries {
		t.Errorf("Len() = %d, want the default cap %d", got, DefaultNamesMaxEntries)
	}
}
