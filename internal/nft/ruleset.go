// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nft

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Defaults for [Ruleset] fields left zero.
const (
	DefaultGroup       = 100
	DefaultBlockPrefix = "CLEARANCE_BLOCKED: "
	// DefaultObservePrefix is the log prefix of new connections an
	// observe-mode ruleset lets through.
	DefaultObservePrefix = "CLEARANCE_OBSERVED: "
	// DefaultDNSMark is the firewall mark ("clr\0") of the DNS
	// forwarder's upstream sockets: only packets carrying it reach the
	// resolvers, and they are not redirected to the forwarder again.
	DefaultDNSMark = 0x636c7200
)

// maxPrefixLen is the longest log prefix the kernel accepts
// (NF_LOG_PREFIXLEN 128, including the NUL).
const maxPrefixLen = 127

// Ruleset configures the built-in ruleset installed by [Firewall.Engage].
// The zero value is valid: group 100, the default prefix and mark, no
// resolvers, no forwarder yet (DNS refused) and an empty initial policy.
type Ruleset struct {
	// Group is the NFLOG group blocked packets are logged to. Zero means
	// DefaultGroup (100); group 0 itself cannot be selected.
	Group uint16
	// BlockPrefix is the log prefix of blocked (rejected) packets.
	// Empty means DefaultBlockPrefix.
	BlockPrefix string
	// Resolvers are the DNS servers the forwarder's marked packets may
	// reach on port 53 (UDP and TCP).
	Resolvers []netip.Addr
	// DNSMark is the mark of the forwarder's upstream sockets (zero:
	// DefaultDNSMark).
	DNSMark uint32
	// DNSPort is the port of the forwarder's listeners on 127.0.0.1 and
	// ::1 that every DNS query (udp and tcp port 53, any address) is
	// redirected to. Zero keeps the port of the ruleset being replaced;
	// if there is none, DNS is refused at once (ICMP port unreachable,
	// TCP reset) until [Firewall.SetDNSPort] names one.
	DNSPort uint16
	// Allow and Deny are the initial policy, loaded without timeout.
	// Entries nested inside a wider one of the same list, protocol and
	// port are dropped (the wider one already covers them).
	Allow, Deny []Dest
	// TCPReset refuses blocked TCP connections with a TCP reset instead of
	// ICMP admin-prohibited. A locally sent SYN rejected with ICMP while
	// connect() still holds the socket only records a soft error, so a
	// blocking connect() fails after the SYN's first retransmission (~1 s,
	// and the packet is logged twice); a reset is processed as soon as the
	// socket is released.
	TCPReset bool
	// Observe makes the ruleset log and let through what it would block:
	// the final rule logs a new connection to Group with ObservePrefix and
	// accepts it. Deny sets still drop, loopback and DNS are as in
	// enforcing mode. The table then does not enforce anything but
	// explicit denies, and says so: its fingerprint and its final rule's
	// comment name observe mode, and [Firewall.Explain] reports
	// ReasonObserved.
	Observe bool
	// ObservePrefix is the log prefix in observe mode. Empty means
	// DefaultObservePrefix.
	ObservePrefix string
}

func (rs Ruleset) withDefaults() (Ruleset, error) {
	if rs.Group == 0 {
		rs.Group = DefaultGroup
	}
	if rs.BlockPrefix == "" {
		rs.BlockPrefix = DefaultBlockPrefix
	}
	if rs.DNSMark == 0 {
		rs.DNSMark = DefaultDNSMark
	}
	if rs.ObservePrefix == "" {
		rs.ObservePrefix = DefaultObservePrefix
	}
	for _, p := range []string{rs.BlockPrefix, rs.ObservePrefix} {
		if len(p) > maxPrefixLen {
			return rs, fmt.Errorf("log prefix %q longer than %d bytes", p, maxPrefixLen)
		}
	}
	if rs.ObservePrefix == rs.BlockPrefix {
		return rs, fmt.Errorf("observe log prefix %q equals the block prefix", rs.ObservePrefix)
	}
	return rs, nil
}

// entry is one element to load into a set at engage time.
type entry struct {
	d       Dest
	ttl     time.Duration
	comment string
}

// plan computes the elements per set name for Engage: the initial policy
// plus the preserved elements of a previous engagement. A preserved element
// wins over a policy entry for the same destination, in either list, so a
// runtime verdict survives re-engaging. Within an interval set, entries
// nested in a wider entry with the same protocol and port are dropped (the
// kernel rejects overlapping intervals).
func plan(l Layout, rs Ruleset, preserved map[string][]entry) (map[string][]entry, error) {
	out := make(map[string][]entry)
	kept := make(map[Dest]bool) // preserved destinations, either list
	for _, es := range preserved {
		for _, e := range es {
			kept[e.d] = true
		}
	}
	for name, es := range preserved {
		out[name] = append(out[name], es...)
	}
	for _, l2 := range []struct {
		action string
		ds     []Dest
	}{{actionAllow, rs.Allow}, {actionDeny, rs.Deny}} {
		seen := make(map[Dest]bool)
		for _, raw := range l2.ds {
			d, err := normalizeDest(raw)
			if err != nil {
				return nil, fmt.Errorf("initial %s policy: %w", l2.action, err)
			}
			if kept[d] || seen[d] {
				continue
			}
			seen[d] = true
			name, d := l.list(l2.action, d.Prefix.Addr().Is4()).target(d)
			if name == "" {
				return nil, fmt.Errorf("initial %s policy: no set for %v", l2.action, d)
			}
			out[name] = append(out[name], entry{d: d})
		}
	}
	for name, es := range out {
		out[name] = dropNested(es)
	}
	return out, nil
}

// dropNested sorts es and removes entries contained in a wider one with
// the same protocol and port.
func dropNested(es []entry) []entry {
	slices.SortFunc(es, func(a, b entry) int {
		if c := a.d.Prefix.Bits() - b.d.Prefix.Bits(); c != 0 {
			return c
		}
		return a.d.Prefix.Addr().Compare(b.d.Prefix.Addr())
	})
	var kept []entry
	for _, e := range es {
		if !slices.ContainsFunc(kept, func(k entry) bool {
			return k.d.Proto == e.d.Proto && k.d.Port == e.d.Port && k.d.Prefix.Overlaps(e.d.Prefix)
		}) {
			kept = append(kept, e)
		}
	}
	slices.SortFunc(kept, func(a, b entry) int {
		if c := a.d.Prefix.Addr().Compare(b.d.Prefix.Addr()); c != 0 {
			return c
		}
		if a.d.Proto != b.d.Proto {
			return int(a.d.Proto) - int(b.d.Proto)
		}
		return int(a.d.Port) - int(b.d.Port)
	})
	return kept
}

// keyType returns the key type of a set of kind k for a family.
func keyType(k setKind, v4 bool) nftables.SetDatatype {
	addr := nftables.TypeIP6Addr
	if v4 {
		addr = nftables.TypeIPAddr
	}
	if k.concat() {
		return nftables.MustConcatSetType(addr, nftables.TypeInetProto, nftables.TypeInetService)
	}
	return addr
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
	addSet := func(name string, k setKind, v4, timeout, counter bool, els []nftables.SetElement) error {
		s := &nftables.Set{
			Table:         t,
			Name:          name,
			KeyType:       keyType(k, v4),
			Interval:      k.interval(),
			Concatenation: k.concat(),
			HasTimeout:    timeout,
			Counter:       counter,
		}
		sets[name] = s
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("add set %s: %w", name, err)
		}
		for _, e := range elems[name] {
			enc, err := encode(s, k, e.d, e.ttl, e.comment)
			if err != nil {
				return fmt.Errorf("add %v to set %s: %w", e.d, name, err)
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

	res4, res6 := resolverElements(rs.Resolvers)
	if err := addSet(l.Resolver4, kindHost, true, false, false, res4); err != nil {
		return err
	}
	if err := addSet(l.Resolver6, kindHost, false, false, false, res6); err != nil {
		return err
	}
	for _, ref := range l.listSets() {
		// Hash sets time out (verdicts, learned addresses); interval sets
		// hold the policy's CIDRs, which do not. Every element counts the
		// packets and bytes it let through (or dropped).
		if err := addSet(ref.name, ref.kind, ref.v4, !ref.kind.interval(), true, nil); err != nil {
			return err
		}
	}

	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	drop := &expr.Verdict{Kind: expr.VerdictDrop}

	policyDrop := nftables.ChainPolicyDrop
	out := c.AddChain(&nftables.Chain{
		Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &policyDrop,
	})
	outRules := 1 // the fingerprinted first rule below
	rule := func(ch *nftables.Chain, es ...expr.Any) {
		if ch == out {
			outRules++
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: es})
	}

	// oifname "lo" accept, marked with the ruleset's fingerprint (a rule
	// comment): Engage compares it to decide whether the table is intact.
	c.AddRule(&nftables.Rule{Table: t, Chain: out, UserData: fingerprintComment(rs), Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("lo")}, accept}})
	// ip daddr 127.0.0.0/8 accept; ip6 daddr ::1 accept: queries the nat
	// chain redirected to the forwarder's listeners. The output hook sees
	// the device the packet was routed to before the redirect (oifname is
	// not "lo" for a query to a resolver on eth0), so match the address;
	// loopback addresses never leave the namespace.
	rule(out, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}}, accept)
	rule(out, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: netip.IPv6Loopback().AsSlice()}, accept)
	// meta l4proto ipv6-icmp icmpv6 type { 130-136, 143 } accept: IPv6
	// needs neighbour discovery (133-136) to reach anything on the link,
	// allowed destinations included, and the kernel sends MLD (130-132,
	// 143) for the groups it joins. None of these leave the link.
	icmp6 := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
	}
	rule(out, append(slices.Clone(icmp6), &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{130}, ToData: []byte{136}}, accept)...)
	rule(out, append(slices.Clone(icmp6), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{143}}, accept)...)
	// ct state established,related accept
	rule(out, &expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)}, accept)
	// meta mark M ip/ip6 daddr @resolverN udp/tcp dport 53 accept: only
	// the forwarder's own upstream sockets reach the resolvers.
	for _, v4 := range []bool{true, false} {
		s := sets[l.Resolver4]
		if !v4 {
			s = sets[l.Resolver6]
		}
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			es := markMatch(expr.CmpOpEq, rs.DNSMark)
			es = append(es, addrMatch(v4, false, s)...)
			es = append(es, portMatch(proto, 2, 53)...)
			rule(out, append(es, accept)...)
		}
	}
	// Any other DNS was not redirected (no forwarder yet): refuse it at
	// once, without a log (no prompt for port 53).
	rule(out, append(portMatch(unix.IPPROTO_UDP, 2, 53),
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH})...)
	rule(out, append(portMatch(unix.IPPROTO_TCP, 2, 53), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})...)
	// Deny before allow: deny wins. Deny drops silently (no log, no prompt).
	for _, ref := range l.listSets() {
		v := accept
		if ref.list == actionDeny {
			v = drop
		}
		var m []expr.Any
		if ref.kind.concat() {
			m = concatMatch(ref.v4, sets[ref.name])
		} else {
			m = addrMatch(ref.v4, false, sets[ref.name])
		}
		rule(out, append(m, v)...)
	}
	if rs.Observe {
		// Observe mode: everything else is logged (each new connection
		// once: established packets were accepted above) and let
		// through. The rule's comment says it, for whoever lists the
		// ruleset with nft.
		outRules++
		c.AddRule(&nftables.Rule{Table: t, Chain: out, UserData: userdata.AppendString(nil, udataRuleComment, lastComment(rs, outRules)),
			Exprs: []expr.Any{&expr.Log{
				Key:        1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_QTHRESHOLD,
				Group:      rs.Group,
				QThreshold: 1,
				Data:       []byte(rs.ObservePrefix),
			}, accept}})
		addInput(c, t)
		addNAT(c, t, l, rs.DNSMark, rs.DNSPort)
		return nil
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
	// The last rule says how many the chain has: Verify notices one
	// deleted, added or replaced in the namespace.
	outRules++
	c.AddRule(&nftables.Rule{Table: t, Chain: out, UserData: userdata.AppendString(nil, udataRuleComment, lastComment(rs, outRules)),
		Exprs: []expr.Any{blockLog(),
			&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}})

	addInput(c, t)
	addNAT(c, t, l, rs.DNSMark, rs.DNSPort)
	return nil
}

// addInput queues the input chain (policy accept): it drops a TCP segment
// that would create a conntrack entry without being a SYN. The kernel's
// loose pick-up would otherwise let the remote side revive a connection
// whose entry a revoke or deny just deleted: the server's next segment
// would make a new entry in its direction, and the container's answers
// would then pass output as "established". Inbound connections (a SYN)
// are untouched.
//
//	meta l4proto tcp ct state new tcp flags & (fin|syn|rst|ack) != syn drop
func addInput(c *nftables.Conn, t *nftables.Table) {
	policyAccept := nftables.ChainPolicyAccept
	in := c.AddChain(&nftables.Chain{
		Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policyAccept,
	})
	const (
		tcpFIN = 0x01
		tcpSYN = 0x02
		tcpRST = 0x04
		tcpACK = 0x10
	)
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1,
			Mask: []byte{tcpFIN | tcpSYN | tcpRST | tcpACK}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{tcpSYN}},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
}

// addNAT queues the nat chain that redirects DNS to the forwarder's port
// (no rule when port is 0).
func addNAT(c *nftables.Conn, t *nftables.Table, l Layout, mark uint32, port uint16) {
	policyAccept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name: l.NAT, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Policy: &policyAccept,
	})
	if port == 0 {
		return
	}
	// meta mark != M udp/tcp dport 53 redirect to :port
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		es := markMatch(expr.CmpOpNeq, mark)
		es = append(es, portMatch(proto, 2, 53)...)
		es = append(es,
			&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
			&expr.Redir{RegisterProtoMin: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: es})
	}
}

// natPort returns the redirect port of the rules of the nat chain, 0 if
// there is none.
func natPort(rules []*nftables.Rule) uint16 {
	for _, r := range rules {
		for _, e := range r.Exprs {
			if im, ok := e.(*expr.Immediate); ok && len(im.Data) == 2 {
				return binaryutil.BigEndian.Uint16(im.Data)
			}
		}
	}
	return 0
}

// markMatch matches "meta mark ==/!= m".
func markMatch(op expr.CmpOp, m uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: binaryutil.NativeEndian.PutUint32(m)},
	}
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

// concatMatch matches "ip daddr . meta l4proto . th dport @s" (or ip6):
// the address from register 1 on (32-bit registers 8..), then the
// protocol and the port in the next 32-bit registers, as nft lays them out.
func concatMatch(v4 bool, s *nftables.Set) []expr.Any {
	proto, off, n, next := byte(unix.NFPROTO_IPV6), uint32(24), uint32(16), uint32(12)
	if v4 {
		proto, off, n, next = unix.NFPROTO_IPV4, 16, 4, 9
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: next},
		&expr.Payload{DestRegister: next + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
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

// resolverElements returns the resolver sets' elements, deduplicated.
func resolverElements(rs []netip.Addr) (res4, res6 []nftables.SetElement) {
	for _, r := range rs {
		r = r.Unmap().WithZone("")
		if r.Is4() {
			res4 = append(res4, nftables.SetElement{Key: r.AsSlice()})
		} else if r.Is6() {
			res6 = append(res6, nftables.SetElement{Key: r.AsSlice()})
		}
	}
	return dedupeKeys(res4), dedupeKeys(res6)
}

// rulesetVersion changes whenever build changes the table's shape (sets,
// chains, rules): a table of another version is rebuilt by Engage.
const rulesetVersion = 5

// observeComment is the comment of the final rule of an observe-mode
// ruleset, and part of its fingerprint: nft list ruleset shows it.
const observeComment = "OBSERVE MODE: NOT ENFORCED, new connections are logged and accepted"

// fingerprint identifies the shape build gives the table for rs: what
// Engage can only change by rebuilding it. Resolvers and the initial
// policy are not part of it (Engage updates them in place). An
// observe-mode ruleset says so in it.
func fingerprint(rs Ruleset) string {
	if rs.Observe {
		h := sha256.Sum256([]byte(fmt.Sprintf("v%d|%d|%s|%s|%#x|observe", rulesetVersion, rs.Group, rs.BlockPrefix,
			rs.ObservePrefix, rs.DNSMark)))
		return "clearance ruleset " + fingerprintObserve + hex.EncodeToString(h[:6])
	}
	h := sha256.Sum256([]byte(fmt.Sprintf("v%d|%d|%s|%#x|%v", rulesetVersion, rs.Group, rs.BlockPrefix, rs.DNSMark, rs.TCPReset)))
	return "clearance ruleset " + hex.EncodeToString(h[:6])
}

// lastComment is the comment of the output chain's last rule: how many
// rules the chain was built with (and, in observe mode, that it does not
// enforce, for whoever lists the ruleset with nft).
func lastComment(rs Ruleset, n int) string {
	count := countSuffix(n)
	if rs.Observe {
		return observeComment + "; " + count
	}
	return count
}

// countSuffix ends the last rule's comment: the chain's rule count.
func countSuffix(n int) string { return "clearance rules " + strconv.Itoa(n) }

// fingerprintPrefix starts every fingerprint clearance writes.
const fingerprintPrefix = "clearance ruleset "

// fingerprintObserve marks the fingerprint of an observe-mode ruleset.
const fingerprintObserve = "OBSERVE MODE (not enforced) "

func fingerprintComment(rs Ruleset) []byte {
	return userdata.AppendString(nil, udataRuleComment, fingerprint(rs))
}

// ruleComment returns a rule's comment, "" for none.
func ruleComment(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, udataRuleComment)
	return s
}

// udataRuleComment is libnftnl's NFTNL_UDATA_RULE_COMMENT (what nft shows
// as a rule's comment); google/nftables v0.3.0 defines only the set types.
const udataRuleComment userdata.Type = 0
