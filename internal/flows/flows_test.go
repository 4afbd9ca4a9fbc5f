// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package flows

import (
	"net/netip"
	"testing"

	"github.com/ti-mo/conntrack"
)

func flow(dst string, proto uint8, dport uint16) conntrack.Flow {
	var f conntrack.Flow
	f.TupleOrig.IP.SourceAddress = netip.MustParseAddr("10.0.0.2")
	f.TupleOrig.IP.DestinationAddress = netip.MustParseAddr(dst)
	f.TupleOrig.Proto.Protocol = proto
	f.TupleOrig.Proto.SourcePort = 40000
	f.TupleOrig.Proto.DestinationPort = dport
	return f
}

func TestMatch(t *testing.T) {
	host := netip.MustParsePrefix("192.0.2.7/32")
	tests := []struct {
		name string
		m    Match
		f    conntrack.Flow
		want bool
	}{
		{"the host, any port", Match{Dst: host}, flow("192.0.2.7", 6, 443), true},
		{"another host", Match{Dst: host}, flow("192.0.2.8", 6, 443), false},
		{"a prefix", Match{Dst: netip.MustParsePrefix("192.0.2.0/24")}, flow("192.0.2.200", 17, 53), true},
		{"the port", Match{Dst: host, Proto: 6, Port: 443}, flow("192.0.2.7", 6, 443), true},
		{"another port", Match{Dst: host, Proto: 6, Port: 443}, flow("192.0.2.7", 6, 80), false},
		{"another protocol", Match{Dst: host, Proto: 6, Port: 443}, flow("192.0.2.7", 17, 443), false},
		{"IPv6", Match{Dst: netip.MustParsePrefix("2001:db8::1/128"), Proto: 6}, flow("2001:db8::1", 6, 22), true},
		{"IPv4 flow, IPv6 prefix", Match{Dst: netip.MustParsePrefix("::ffff:192.0.2.7/128")}, flow("192.0.2.7", 6, 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.m.matches(tt.f); got != tt.want {
				t.Errorf("matches = %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := Cut(-1, Match{}); err == nil {
		t.Error("Cut with an invalid destination succeeded")
	}
}
