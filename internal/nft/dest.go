// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nft

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Dest is what one set element covers: an address or CIDR prefix, either
// whole (every protocol and port) or narrowed to one transport protocol
// and port.
type Dest struct {
	// Prefix is the address (/32 or /128) or CIDR prefix.
	Prefix netip.Prefix
	// Proto is the IP protocol number (6 tcp, 17 udp, 132 sctp); 0 means
	// every protocol and port, and then Port must be 0.
	Proto uint8
	// Port is the destination port; 0 when Proto is 0.
	Port uint16
}

// HostDest returns the whole-host Dest of a single address.
func HostDest(a netip.Addr) Dest { return Dest{Prefix: Host(a)} }

// PrefixDest returns the whole Dest of a prefix.
func PrefixDest(p netip.Prefix) Dest { return Dest{Prefix: p} }

// ServiceDest returns the Dest of one protocol and port of a prefix.
func ServiceDest(p netip.Prefix, proto uint8, port uint16) Dest {
	return Dest{Prefix: p, Proto: proto, Port: port}
}

// Whole reports whether d covers every protocol and port.
func (d Dest) Whole() bool { return d.Proto == 0 }

// Single reports whether d is one address (not a wider prefix).
func (d Dest) Single() bool { return d.Prefix.IsSingleIP() }

// String formats d as "192.0.2.1", "198.51.100.0/24", "192.0.2.1:443/tcp"
// or "[2001:db8::1]:53/udp".
func (d Dest) String() string {
	var a string
	if d.Prefix.IsSingleIP() {
		a = d.Prefix.Addr().String()
	} else {
		a = d.Prefix.String()
	}
	if d.Whole() {
		return a
	}
	if d.Prefix.Addr().Is6() {
		a = "[" + a + "]"
	}
	return a + ":" + strconv.Itoa(int(d.Port)) + "/" + ProtoName(d.Proto)
}

// ProtoName returns "tcp", "udp", "sctp" or the number.
func ProtoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// ParseProto is the inverse of [ProtoName] for "tcp", "udp" and "sctp".
func ParseProto(s string) (uint8, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return unix.IPPROTO_TCP, nil
	case "udp":
		return unix.IPPROTO_UDP, nil
	case "sctp":
		return unix.IPPROTO_SCTP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want tcp, udp or sctp)", s)
}

// normalizeDest checks d and returns it with its prefix normalised (see
// normalize).
func normalizeDest(d Dest) (Dest, error) {
	p, err := normalize(d.Prefix)
	if err != nil {
		return Dest{}, err
	}
	d.Prefix = p
	switch {
	case d.Proto == 0 && d.Port != 0:
		return Dest{}, fmt.Errorf("%v: port %d without a protocol", p, d.Port)
	case d.Proto != 0 && d.Port == 0:
		return Dest{}, fmt.Errorf("%v: protocol %s without a port", p, ProtoName(d.Proto))
	}
	return d, nil
}
