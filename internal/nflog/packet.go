// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nflog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// IP protocol numbers that [ParsePacket] knows about.
const (
	ProtoICMP    uint8 = 1
	ProtoTCP     uint8 = 6
	ProtoUDP     uint8 = 17
	ProtoICMPv6  uint8 = 58
	ProtoSCTP    uint8 = 132
	ProtoUDPLite uint8 = 136
)

// IPv6 extension headers skipped by [ParsePacket].
const (
	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6Fragment = 44
	ipv6AH       = 51
	ipv6DstOpts  = 60
)

// maxExtHeaders bounds the IPv6 extension header chain [ParsePacket] walks.
// RFC 8200 expects at most a handful; a longer chain is hostile.
const maxExtHeaders = 8

// ErrTruncated reports that a header ends beyond the captured bytes.
// Parse errors wrap it, so callers can test with [errors.Is].
var ErrTruncated = errors.New("truncated")

// Packet is the part of an IP packet's headers that identifies a
// destination.
type Packet struct {
	// Src and Dst are the packet's addresses. IPv4 addresses are plain 4-byte
	// addresses, never IPv4-mapped IPv6.
	Src, Dst netip.Addr
	// Proto is the transport protocol: for IPv6 the next header after the
	// skipped extension headers.
	Proto uint8
	// SrcPort and DstPort are set for TCP, UDP, SCTP and UDP-Lite when the
	// packet carries the transport header; they are 0 for other protocols
	// and for non-first fragments.
	SrcPort, DstPort uint16
	// Fragment is true for a non-first fragment, which carries no transport
	// header and therefore no ports.
	Fragment bool
}

// HasPorts reports whether p.Proto is a protocol with port numbers and the
// ports were read from the packet.
func (p Packet) HasPorts() bool {
	return hasPorts(p.Proto) && !p.Fragment
}

func hasPorts(proto uint8) bool {
	switch proto {
	case ProtoTCP, ProtoUDP, ProtoSCTP, ProtoUDPLite:
		return true
	}
	return false
}

// ParsePacket parses the IPv4 or IPv6 packet that starts at b[0] (an NFLOG
// payload: the L3 header, no link layer). b may be cut short by the NFLOG
// copy range; only headers that end beyond len(b) are errors (wrapping
// [ErrTruncated]). It never panics and does not retain b.
func ParsePacket(b []byte) (Packet, error) {
	p, _, err := parsePacket(b)
	return p, err
}

// parsePacket is [ParsePacket] that also returns the transport payload: the
// bytes after the transport header, for UDP only (nil otherwise).
func parsePacket(b []byte) (Packet, []byte, error) {
	if len(b) < 1 {
		return Packet{}, nil, fmt.Errorf("parse ip header: empty packet: %w", ErrTruncated)
	}
	switch b[0] >> 4 {
	case 4:
		return parseIPv4(b)
	case 6:
		return parseIPv6(b)
	default:
		return Packet{}, nil, fmt.Errorf("parse ip header: unknown version %d", b[0]>>4)
	}
}

func parseIPv4(b []byte) (Packet, []byte, error) {
	const minLen = 20
	if len(b) < minLen {
		return Packet{}, nil, fmt.Errorf("parse ipv4 header: %d bytes: %w", len(b), ErrTruncated)
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < minLen {
		return Packet{}, nil, fmt.Errorf("parse ipv4 header: header length %d below 20", ihl)
	}
	if len(b) < ihl {
		return Packet{}, nil, fmt.Errorf("parse ipv4 header: header length %d beyond %d bytes: %w", ihl, len(b), ErrTruncated)
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < ihl {
		return Packet{}, nil, fmt.Errorf("parse ipv4 header: total length %d below header length %d", total, ihl)
	}
	p := Packet{
		Src:   netip.AddrFrom4([4]byte(b[12:16])),
		Dst:   netip.AddrFrom4([4]byte(b[16:20])),
		Proto: b[9],
	}
	// The copy range may have cut the packet; never read past either end.
	end := min(total, len(b))
	if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
		p.Fragment = true
		return p, nil, nil
	}
	payload, err := parseL4(&p, b[ihl:end])
	return p, payload, err
}

func parseIPv6(b []byte) (Packet, []byte, error) {
	const hdrLen = 40
	if len(b) < hdrLen {
		return Packet{}, nil, fmt.Errorf("parse ipv6 header: %d bytes: %w", len(b), ErrTruncated)
	}
	p := Packet{
		Src: netip.AddrFrom16([16]byte(b[8:24])),
		Dst: netip.AddrFrom16([16]byte(b[24:40])),
	}
	end := len(b)
	if pl := int(binary.BigEndian.Uint16(b[4:6])); pl != 0 { // 0: jumbogram, length in hop-by-hop
		end = min(end, hdrLen+pl)
	}
	next, rest := b[6], b[hdrLen:end]
	for i := 0; ; i++ {
		var n int
		switch next {
		case ipv6HopByHop, ipv6Routing, ipv6DstOpts:
			if len(rest) < 2 {
				return Packet{}, nil, fmt.Errorf("parse ipv6 extension header %d: %w", next, ErrTruncated)
			}
			n = (int(rest[1]) + 1) * 8
		case ipv6AH:
			if len(rest) < 2 {
				return Packet{}, nil, fmt.Errorf("parse ipv6 extension header %d: %w", next, ErrTruncated)
			}
			n = (int(rest[1]) + 2) * 4
		case ipv6Fragment:
			n = 8
			if len(rest) < n {
				return Packet{}, nil, fmt.Errorf("parse ipv6 fragment header: %w", ErrTruncated)
			}
			if binary.BigEndian.Uint16(rest[2:4])>>3 != 0 {
				p.Proto = rest[0]
				p.Fragment = true
				return p, nil, nil
			}
		default:
			p.Proto = next
			payload, err := parseL4(&p, rest)
			return p, payload, err
		}
		if i >= maxExtHeaders {
			return Packet{}, nil, fmt.Errorf("parse ipv6 extension headers: more than %d", maxExtHeaders)
		}
		if len(rest) < n {
			return Packet{}, nil, fmt.Errorf("parse ipv6 extension header %d: length %d beyond %d bytes: %w", next, n, len(rest), ErrTruncated)
		}
		next, rest = rest[0], rest[n:]
	}
}

// parseL4 fills p's ports from the transport header at the start of b and
// returns the UDP payload (nil for other protocols).
func parseL4(p *Packet, b []byte) ([]byte, error) {
	if !hasPorts(p.Proto) {
		return nil, nil
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("parse protocol %d ports: %d bytes: %w", p.Proto, len(b), ErrTruncated)
	}
	p.SrcPort = binary.BigEndian.Uint16(b[0:2])
	p.DstPort = binary.BigEndian.Uint16(b[2:4])
	if p.Proto != ProtoUDP {
		return nil, nil
	}
	const udpLen = 8
	if len(b) < udpLen {
		return nil, fmt.Errorf("parse udp header: %d bytes: %w", len(b), ErrTruncated)
	}
	end := len(b)
	if l := int(binary.BigEndian.Uint16(b[4:6])); l >= udpLen && l < end {
		end = l
	}
	return b[udpLen:end], nil
}
