package nft

import (
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

// encode returns the set elements that store p in s with the given timeout
// (0 = permanent). Hash sets take a single address; interval sets take a
// start element and an exclusive end element (omitted when the range runs to
// the last address of the family, as nft does). On interval sets the kernel
// accepts a timeout only on the start element.
func encode(s *nftables.Set, p netip.Prefix, ttl time.Duration) ([]nftables.SetElement, error) {
	if err := checkFamily(s, p); err != nil {
		return nil, err
	}
	if ttl > 0 && !s.HasTimeout {
		return nil, fmt.Errorf("set %s: %w", s.Name, ErrNoTimeout)
	}
	if ttl > 0 && ttl < time.Millisecond {
		ttl = time.Millisecond // the kernel counts in ms; 0 would mean permanent
	}
	if !s.Interval {
		if !p.IsSingleIP() {
			return nil, fmt.Errorf("set %s holds single addresses, not %v", s.Name, p)
		}
		return []nftables.SetElement{{Key: p.Addr().AsSlice(), Timeout: ttl}}, nil
	}
	els := []nftables.SetElement{{Key: p.Addr().AsSlice(), Timeout: ttl}}
	if end := lastAddr(p).Next(); end.IsValid() {
		els = append(els, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
	}
	return els, nil
}

// encodeDelete returns the elements that delete the stored element e from s.
func encodeDelete(s *nftables.Set, e stored) []nftables.SetElement {
	if !s.Interval {
		return []nftables.SetElement{{Key: e.first.AsSlice()}}
	}
	els := []nftables.SetElement{{Key: e.first.AsSlice()}}
	if e.hasEnd {
		els = append(els, nftables.SetElement{Key: e.last.Next().AsSlice(), IntervalEnd: true})
	}
	return els
}

func checkFamily(s *nftables.Set, p netip.Prefix) error {
	switch {
	case s.KeyType.Bytes == 4 && p.Addr().Is4(), s.KeyType.Bytes == 16 && p.Addr().Is6():
		return nil
	}
	return fmt.Errorf("set %s (type %s) cannot hold %v", s.Name, s.KeyType.Name, p)
}

// stored is one logical element of a set: a single address in a hash set,
// or a start/end pair in an interval set.
type stored struct {
	ipRange
	timeout time.Duration
	expires time.Duration
	comment string
	hasEnd  bool // interval sets: an end element exists (false: runs to the last address)
}

// decode turns the raw elements of s (as returned by GetSetElements, in any
// order) into logical elements sorted by address. End elements left behind
// by an expired interval start are skipped, as the kernel skips them.
func decode(s *nftables.Set, raw []nftables.SetElement) []stored {
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
