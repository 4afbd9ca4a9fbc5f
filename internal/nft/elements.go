// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
)

// normalize returns p masked, with IPv4-mapped IPv6 addresses turned into
// IPv4 and any zone dropped, or an error for an invalid prefix.
func normalize(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("invalid prefix %v", p)
	}
	a, bits := p.Addr().WithZone(""), p.Bits()
	if a.Is4In6() {
		if bits < 96 {
			return netip.Prefix{}, fmt.Errorf("prefix %v: IPv4-mapped prefix shorter than /96", p)
		}
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

// Host returns the single-address prefix of a (/32 or /128), unmapping an
// IPv4-mapped IPv6 address first.
func Host(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen())
}

// lastAddr returns the last address covered by p (p must be masked).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// ipRange is an inclusive address range as stored in an interval set.
type ipRange struct {
	first, last netip.Addr
}

func (r ipRange) overlaps(o ipRange) bool {
	return r.first.Compare(o.last) <= 0 && o.first.Compare(r.last) <= 0
}

func (r ipRange) contains(a netip.Addr) bool {
	return r.first.Compare(a) <= 0 && a.Compare(r.last) <= 0
}

// prefix returns the range as a CIDR prefix if it is exactly one.
func (r ipRange) prefix() (netip.Prefix, bool) {
	for bits := 0; bits <= r.first.BitLen(); bits++ {
		p := netip.PrefixFrom(r.first, bits)
		if p.Masked().Addr() == r.first && lastAddr(p.Masked()) == r.last {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func rangeOf(p netip.Prefix) ipRange {
	return ipRange{first: p.Addr(), last: lastAddr(p)}
}

// concatKey is the key of an address . inet_proto . inet_service element:
// each field padded to a 4-byte register.
func concatKey(a netip.Addr, proto uint8, port uint16) []byte {
	b := a.AsSlice()
	b = append(b, proto, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, port)
	return append(b, 0, 0)
}

// splitConcat is the inverse of concatKey.
func splitConcat(key []byte) (netip.Addr, uint8, uint16, bool) {
	n := len(key) - 8
	if n != 4 && n != 16 {
		return netip.Addr{}, 0, 0, false
	}
	a, ok := netip.AddrFromSlice(key[:n])
	return a, key[n], binary.BigEndian.Uint16(key[n+4:]), ok
}

// maxComment is the longest element comment stored (nft's own limit).
const maxComment = 127

func clipComment(s string) string {
	if len(s) > maxComment {
		return s[:maxComment]
	}
	return s
}

// encode returns the set elements that store d in s (a set of kind k)
// with the given timeout (0 = permanent) and comment. Hash sets take a
// single key; interval sets of addresses take a start element and an
// exclusive end element (omitted when the range runs to the last address
// of the family, as nft does; the kernel accepts a timeout only on the
// start); interval sets of concatenations take one element with an
// inclusive key end.
func encode(s *nftables.Set, k setKind, d Dest, ttl time.Duration, comment string) ([]nftables.SetElement, error) {
	p := d.Prefix
	if err := checkFamily(s, k, p); err != nil {
		return nil, err
	}
	if ttl > 0 && !s.HasTimeout {
		return nil, fmt.Errorf("set %s: %w", s.Name, ErrNoTimeout)
	}
	if ttl > 0 && ttl < time.Millisecond {
		ttl = time.Millisecond // the kernel counts in ms; 0 would mean permanent
	}
	comment = clipComment(comment)
	if k.concat() == d.Whole() {
		return nil, fmt.Errorf("set %s cannot hold %v", s.Name, d)
	}
	switch k {
	case kindHostPort:
		if !p.IsSingleIP() {
			return nil, fmt.Errorf("set %s holds single addresses, not %v", s.Name, p)
		}
		return []nftables.SetElement{{Key: concatKey(p.Addr(), d.Proto, d.Port), Timeout: ttl, Comment: comment}}, nil
	case kindNetPort:
		return []nftables.SetElement{{Key: concatKey(p.Addr(), d.Proto, d.Port),
			KeyEnd: concatKey(lastAddr(p), d.Proto, d.Port), Timeout: ttl, Comment: comment}}, nil
	}
	if !s.Interval {
		if !p.IsSingleIP() {
			return nil, fmt.Errorf("set %s holds single addresses, not %v", s.Name, p)
		}
		return []nftables.SetElement{{Key: p.Addr().AsSlice(), Timeout: ttl, Comment: comment}}, nil
	}
	els := []nftables.SetElement{{Key: p.Addr().AsSlice(), Timeout: ttl, Comment: comment}}
	if end := lastAddr(p).Next(); end.IsValid() {
		els = append(els, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
	}
	return els, nil
}

// encodeDelete returns the elements that delete the stored element e from
// s (a set of kind k).
func encodeDelete(s *nftables.Set, k setKind, e stored) []nftables.SetElement {
	switch {
	case k == kindHostPort:
		return []nftables.SetElement{{Key: concatKey(e.first, e.proto, e.port)}}
	case k == kindNetPort:
		return []nftables.SetElement{{Key: concatKey(e.first, e.proto, e.port), KeyEnd: concatKey(e.last, e.proto, e.port)}}
	case !s.Interval:
		return []nftables.SetElement{{Key: e.first.AsSlice()}}
	}
	els := []nftables.SetElement{{Key: e.first.AsSlice()}}
	if e.hasEnd {
		els = append(els, nftables.SetElement{Key: e.last.Next().AsSlice(), IntervalEnd: true})
	}
	return els
}

func checkFamily(s *nftables.Set, k setKind, p netip.Prefix) error {
	bytes := s.KeyType.Bytes
	if k.concat() {
		bytes -= 8
	}
	switch {
	case bytes == 4 && p.Addr().Is4(), bytes == 16 && p.Addr().Is6():
		return nil
	}
	return fmt.Errorf("set %s (type %s) cannot hold %v", s.Name, s.KeyType.Name, p)
}

// stored is one logical element of a set: a single address or a
// concatenation in a hash set, or a range in an interval set.
type stored struct {
	ipRange
	proto   uint8  // concatenation sets only
	port    uint16 // concatenation sets only
	timeout time.Duration
	expires time.Duration
	comment string
	hasEnd  bool // interval sets of addresses: an end element exists (false: runs to the last address)

	packets, bytes uint64 // the element's counter (sets with counters)
}

// counted copies el's counter into st.
func (st *stored) counted(el nftables.SetElement) {
	if c := el.Counter; c != nil {
		st.packets, st.bytes = c.Packets, c.Bytes
	}
}

// dest returns what e covers, and false for a range that is not a CIDR
// prefix (only possible in sets written by other tools).
func (e stored) dest() (Dest, bool) {
	p, ok := e.prefix()
	return Dest{Prefix: p, Proto: e.proto, Port: e.port}, ok
}

// decode turns the raw elements of s (a set of kind k, as returned by
// GetSetElements, in any order) into logical elements sorted by address.
// End elements left behind by an expired interval start are skipped, as
// the kernel skips them.
func decode(s *nftables.Set, k setKind, raw []nftables.SetElement) []stored {
	if k.concat() {
		return decodeConcat(raw)
	}
	type point struct {
		addr netip.Addr
		el   nftables.SetElement
	}
	pts := make([]point, 0, len(raw))
	for _, e := range raw {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			continue
		}
		pts = append(pts, point{a, e})
	}
	slices.SortFunc(pts, func(x, y point) int {
		if c := x.addr.Compare(y.addr); c != 0 {
			return c
		}
		// An end element sorts before a start at the same address.
		switch {
		case x.el.IntervalEnd && !y.el.IntervalEnd:
			return -1
		case !x.el.IntervalEnd && y.el.IntervalEnd:
			return 1
		}
		return 0
	})
	var out []stored
	for i, pt := range pts {
		if pt.el.IntervalEnd {
			continue
		}
		st := stored{
			ipRange: ipRange{first: pt.addr, last: pt.addr},
			timeout: pt.el.Timeout,
			expires: pt.el.Expires,
			comment: pt.el.Comment,
		}
		st.counted(pt.el)
		if s.Interval {
			switch {
			case i+1 < len(pts) && pts[i+1].el.IntervalEnd:
				st.last = pts[i+1].addr.Prev()
				st.hasEnd = true
			case i+1 < len(pts):
				st.last = pts[i+1].addr.Prev()
			default:
				st.last = maxAddr(pt.addr)
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(x, y stored) int { return x.first.Compare(y.first) })
	return out
}

// decodeConcat decodes address . proto . port elements, with an inclusive
// key end for interval sets. Elements whose proto or port vary over their
// range (written by other tools) are skipped.
func decodeConcat(raw []nftables.SetElement) []stored {
	var out []stored
	for _, e := range raw {
		a, proto, port, ok := splitConcat(e.Key)
		if !ok {
			continue
		}
		last := a
		if len(e.KeyEnd) > 0 {
			b, proto2, port2, ok := splitConcat(e.KeyEnd)
			if !ok || proto2 != proto || port2 != port {
				continue
			}
			last = b
		}
		st := stored{
			ipRange: ipRange{first: a, last: last},
			proto:   proto, port: port,
			timeout: e.Timeout, expires: e.Expires, comment: e.Comment,
		}
		st.counted(e)
		out = append(out, st)
	}
	slices.SortFunc(out, func(x, y stored) int {
		if c := x.first.Compare(y.first); c != 0 {
			return c
		}
		if x.proto != y.proto {
			return int(x.proto) - int(y.proto)
		}
		return int(x.port) - int(y.port)
	})
	return out
}

func maxAddr(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	var b [16]byte
	for i := range b {
		b[i] = 0xff
	}
	return netip.AddrFrom16(b)
}
