package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Defaults for [Ruleset] fields left zero.
const (
	DefaultGroup       = 100
	DefaultBlockPrefix = "CLEARANCE_BLOCKED: "
	DefaultDNSPrefix   = "CLEARANCE_DNS: "
)

// maxPrefixLen is the longest log prefix the kernel accepts
// (NF_LOG_PREFIXLEN 128, including the NUL).
const maxPrefixLen = 127

// Ruleset configures the built-in ruleset installed by [Firewall.Engage].
// The zero value is valid: group 100, the default prefixes, no resolvers
// and an empty initial policy.
type Ruleset struct {
	// Group is the NFLOG group blocked packets and DNS replies are logged to.
	// Zero means DefaultGroup (100); group 0 itself cannot be selected.
	Group uint16
	// BlockPrefix is the log prefix of blocked (rejected) packets.
	// Empty means DefaultBlockPrefix.
	BlockPrefix string
	// DNSPrefix is the log prefix of DNS replies from the resolvers.
	// Empty means DefaultDNSPrefix.
	DNSPrefix string
	// Resolvers are the DNS servers whose port 53 (UDP and TCP) is open and
	// whose UDP replies are logged with DNSPrefix.
	Resolvers []netip.Addr
	// Allow and Deny are the initial policy, loaded without timeout. Single
	// addresses go to the host sets, wider prefixes to the _net sets.
	// Prefixes nested inside another prefix of the same list are dropped
	// (the wider one already covers them).
	Allow, Deny []netip.Prefix
	// TCPReset refuses blocked TCP connections with a TCP reset instead of
	// ICMP admin-prohibited. A locally sent SYN rejected with ICMP while
	// connect() still holds the socket only records a soft error, so a
	// blocking connect() fails after the SYN's first retransmission (~1 s,
	// and the packet is logged twice); a reset is processed as soon as the
	// socket is released.
	TCPReset bool
}

func (rs Ruleset) withDefaults() (Ruleset, error) {
	if rs.Group == 0 {
		rs.Group = DefaultGroup
	}
	if rs.BlockPrefix == "" {
		rs.BlockPrefix = DefaultBlockPrefix
	}
	if rs.DNSPrefix == "" {
		rs.DNSPrefix = DefaultDNSPrefix
	}
	for _, p := range []string{rs.BlockPrefix, rs.DNSPrefix} {
		if len(p) > maxPrefixLen {
			return rs, fmt.Errorf("log prefix %q longer than %d bytes", p, maxPrefixLen)
		}
	}
	return rs, nil
}

// entry is one element to load into a set at engage time.
type entry struct {
	p   netip.Prefix
	ttl time.Duration
}

// plan computes the elements per set name for Engage: the initial policy
// plus the preserved elements of a previous engagement. A preserved element
// wins over a policy entry for the same prefix, in either list, so a runtime
// verdict survives re-engaging. Within an interval set, entries nested in a
// wider entry are dropped (the kernel rejects overlapping intervals).
func plan(l Layout, rs Ruleset, preserved map[string][]entry) (map[string][]entry, error) {
	out := make(map[string][]entry)
	kept := make(map[netip.Prefix]bool) // preserved prefixes, either list
	for _, es := range preserved {
		for _, e := range es {
			kept[e.p] = true
		}
	}
	for name, es := range preserved {
		out[name] = append(out[name], es...)
	}
	for _, l2 := range []struct {
		action string
		ps     []netip.Prefix
	}{{actionAllow, rs.Allow}, {actionDeny, rs.Deny}} {
		seen := make(map[netip.Prefix]bool)
		for _, raw := range l2.ps {
			p, err := normalize(raw)
			if err != nil {
				return nil, fmt.Errorf("initial %s policy: %w", l2.action, err)
			}
			if kept[p] || seen[p] {
				continue
			}
			seen[p] = true
			name := l.list(l2.action, p.Addr().Is4()).target(p.IsSingleIP())
			out[name] = append(out[name], entry{p: p})
		}
	}
	for name, es := range out {
		out[name] = dropNested(es)
	}
	return out, nil
}

// dropNested sorts es by prefix and removes entries contained in a wider one.
func dropNested(es []entry) []entry {
	slices.SortFunc(es, func(a, b entry) int {
		if c := a.p.Bits() - b.p.Bits(); c != 0 {
			return c
		}
		return a.p.Addr().Compare(b.p.Addr())
	})
	var kept []entry
	for _, e := range es {
		if !slices.ContainsFunc(kept, func(k entry) bool { return k.p.Overlaps(e.p) }) {
			kept = append(kept, e)
		}
	}
	slices.SortFunc(kept, func(a, b entry) int { return a.p.Addr().Compare(b.p.Addr()) })
	return kept
}

// build queues the whole built-in table on c: the table is created if
// missing, deleted and re-created in the same batch, so the result is
// atomic and independent of what was there.
func build(c *nftables.Conn, l Layout, rs Ruleset, elems map[string][]entry) error {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: l.Table}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	sets := make(map[string]*nftables.Set)
	addSet := func(name string, v4, interval, timeout bool, els []nftables.SetElement) error {
		s := &nftables.Set{
			Table:      t,
			Name:       name,
			KeyType:    nftables.TypeIP6Addr,
			Interval:   interval,
			HasTimeout: timeout,
		}
		if v4 {
			s.KeyType = nftables.TypeIPAddr
		}
		sets[name] = s
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("add set %s: %w", name, err)
		}
		for _, e := range elems[name] {
			enc, err := encode(s, e.p, e.ttl)
			if err != nil {
				return fmt.Errorf("add %v to set %s: %w", e.p, name, err)
			}
			els = append(els, enc...)
		}
		if len(els) > 0 {
			if err := c.SetAddElements(s, els); err != nil {
				return fmt.Errorf("add elements to set %s: %w", name, err)
			}
		}
		return nil
	}

	var res4, res6 []nftables.SetElement
	for _, r := range rs.Resolvers {
		r = r.Unmap().WithZone("")
		if r.Is4() {
			res4 = append(res4, nftables.SetElement{Key: r.AsSlice()})
		} else if r.Is6() {
			res6 = append(res6, nftables.SetElement{Key: r.AsSlice()})
		}
	}
	if err := addSet(l.Resolver4, true, false, false, dedupeKeys(res4)); err != nil {
		return err
	}
	if err := addSet(l.Resolver6, false, false, false, dedupeKeys(res6)); err != nil {
		return err
	}
	for _, ref := range l.listSets() {
		names := l.list(ref.list, ref.v4)
		interval := ref.name == names.Net
		if err := addSet(ref.name, ref.v4, interval, !interval, nil); err != nil {
			return err
		}
	}

	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	drop := &expr.Verdict{Kind: expr.VerdictDrop}

	policyDrop, policyAccept := nftables.ChainPolicyDrop, nftables.ChainPolicyAccept
	out := c.AddChain(&nftables.Chain{
		Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &policyDrop,
	})
	in := c.AddChain(&nftables.Chain{
		Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policyAccept,
	})
	rule := func(ch *nftables.Chain, es ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: es})
	}

	// oifname "lo" accept
	rule(out, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("lo")}, accept)
	// ct state established,related accept
	rule(out, &expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)}, accept)
	// ip/ip6 daddr @resolverN udp/tcp dport 53 accept
	for _, v4 := range []bool{true, false} {
		s := sets[l.Resolver4]
		if !v4 {
			s = sets[l.Resolver6]
		}
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			es := addrMatch(v4, false, s)
			es = append(es, portMatch(proto, 2, 53)...)
			rule(out, append(es, accept)...)
		}
	}
	// Deny before allow: deny wins. Deny drops silently (no log, no prompt).
	for _, ref := range l.listSets() {
		v := accept
		if ref.list == actionDeny {
			v = drop
		}
		rule(out, append(addrMatch(ref.v4, false, sets[ref.name]), v)...)
	}
	// Everything else: log to NFLOG (the prompt) and reject.
	blockLog := func() *expr.Log {
		return &expr.Log{
			Key:        1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_QTHRESHOLD,
			Group:      rs.Group,
			QThreshold: 1,
			Data:       []byte(rs.BlockPrefix),
		}
	}
	if rs.TCPReset {
		rule(out,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			blockLog(),
			&expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
	}
	rule(out, blockLog(),
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED})

	// Input: log UDP DNS replies from the resolvers (the hub names
	// destinations from them); the chain accepts everything.
	for _, v4 := range []bool{true, false} {
		s := sets[l.Resolver4]
		if !v4 {
			s = sets[l.Resolver6]
		}
		es := addrMatch(v4, true, s)
		es = append(es, portMatch(unix.IPPROTO_UDP, 0, 53)...)
		rule(in, append(es, &expr.Log{
			Key:        1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_QTHRESHOLD,
			Group:      rs.Group,
			QThreshold: 1,
			Data:       []byte(rs.DNSPrefix),
		})...)
	}
	return nil
}

// addrMatch matches "ip daddr @s" (or saddr, or ip6) in an inet table.
func addrMatch(v4, src bool, s *nftables.Set) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV6), uint32(24), uint32(16)
	if src {
		off = 8
	}
	if v4 {
		proto, off, n = unix.NFPROTO_IPV4, 16, 4
		if src {
			off = 12
		}
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}
}

// portMatch matches "udp/tcp dport|sport P"; off is 0 for sport, 2 for dport.
func portMatch(proto byte, off uint32, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

func dedupeKeys(els []nftables.SetElement) []nftables.SetElement {
	var out []nftables.SetElement
	for _, e := range els {
		if !slices.ContainsFunc(out, func(o nftables.SetElement) bool { return string(o.Key) == string(e.Key) }) {
			out = append(out, e)
		}
	}
	return out
}
