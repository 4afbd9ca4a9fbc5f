// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package lab

import (
	"net/netip"
	"strings"
	"sync"

	"golang.org/x/net/dns/dnsmessage"
)

// Rotor is a [DNSAnswer] that hands out a new address of [HostRange] for
// every A question about a name under its zone: the case a firewall that
// follows DNS must get right, a name whose next answer is an address never
// seen before. Names outside the zone do not exist. Safe for concurrent
// use.
type Rotor struct {
	// Zone is the suffix the rotor answers for ("rot.test": rot.test and
	// every name below it).
	Zone string

	mu   sync.Mutex
	next netip.Addr
}

// Answer implements [DNSAnswer]. Its records have TTL 0: a name that
// answers every question with another address is one no resolver may
// cache (the forwarder's cache included), or the next question would
// not see the next address.
func (r *Rotor) Answer(name string, qtype dnsmessage.Type) ([]netip.Addr, uint32, bool) {
	if name != r.Zone && !strings.HasSuffix(name, "."+r.Zone) {
		return nil, 0, false
	}
	if qtype != dnsmessage.TypeA {
		return nil, 0, true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.next.IsValid() || !HostRange.Contains(r.next) {
		r.next = HostRange.Addr().Next()
	}
	a := r.next
	r.next = r.next.Next()
	return []netip.Addr{a}, 0, true
}
