// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nflog

import (
	"bytes"
	"encoding/binary"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// update rewrites the fixtures in testdata/: the built ones from
// TestFixtures, the kernel captures from the integration tests.
var update = flag.Bool("update", false, "rewrite testdata fixtures")

func readFixture(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatalf("read fixture: %v", err)
	}
	return b
}

func writeFixture(tb testing.TB, name string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
		tb.Fatalf("write fixture: %v", err)
	}
}

// TestFixtures checks that the synthetic fixtures in testdata are what
// their generator builds; with -update it rewrites them.
func TestFixtures(t *testing.T) {
	for name, b := range builtFixtures(t) {
		if *update {
			writeFixture(t, name, b)
			continue
		}
		got, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatalf("fixture %s: %v (run go test -run TestFixtures -update)", name, err)
		}
		if !bytes.Equal(got, b) {
			t.Errorf("testdata/%s differs from its generator (run go test -run TestFixtures -update)", name)
		}
	}
}

var (
	v4a = netip.MustParseAddr("10.0.0.2")
	v4b = netip.MustParseAddr("192.0.2.80")
	v6a = netip.MustParseAddr("fd00::2")
	v6b = netip.MustParseAddr("2001:db8::80")
)

func builtFixtures(tb testing.TB) map[string][]byte {
	tcpSYN := l4ports(40000, 443, 20) // 20-byte TCP header
	udp := udpDatagram(40001, 53, []byte("hello"))
	m := map[string][]byte{
		"ipv4-tcp-syn.bin":     ipv4(ProtoTCP, v4a, v4b, 0, nil, tcpSYN),
		"ipv4-udp.bin":         ipv4(ProtoUDP, v4a, v4b, 0, nil, udp),
		"ipv4-options-udp.bin": ipv4(ProtoUDP, v4a, v4b, 0, []byte{1, 1, 1, 0}, udp),
		"ipv4-fragment.bin":    ipv4(ProtoUDP, v4a, v4b, 185, nil, []byte("later fragment bytes")),
		"ipv4-first-frag.bin":  ipv4(ProtoUDP, v4a, v4b, 0x2000, nil, udp), // MF set, offset 0
		"ipv4-icmp.bin":        ipv4(ProtoICMP, v4a, v4b, 0, nil, []byte{8, 0, 0, 0, 0, 1, 0, 1}),
		"ipv4-sctp.bin":        ipv4(ProtoSCTP, v4a, v4b, 0, nil, l4ports(5000, 3868, 12)),
		"ipv6-tcp-hbh-dstopts.bin": ipv6(v6a, v6b,
			[]extHdr{{ipv6HopByHop, padN(8)}, {ipv6DstOpts, padN(16)}}, ProtoTCP, tcpSYN),
		"ipv6-udp-routing-ah.bin": ipv6(v6a, v6b,
			[]extHdr{{ipv6Routing, padN(8)}, {ipv6AH, ahBody(16)}}, ProtoUDP, udp),
		"ipv6-fragment-first.bin": ipv6(v6a, v6b, []extHdr{{ipv6Fragment, fragBody(0, true)}}, ProtoUDP, udp),
		"ipv6-fragment-later.bin": ipv6(v6a, v6b, []extHdr{{ipv6Fragment, fragBody(1232, false)}}, ProtoUDP, []byte("more")),
		"ipv6-udplite.bin":        ipv6(v6a, v6b, nil, ProtoUDPLite, l4ports(7000, 7001, 8)),
		"ipv6-icmpv6.bin":         ipv6(v6a, v6b, nil, ProtoICMPv6, []byte{128, 0, 0, 0, 0, 1, 0, 1}),
		"ipv6-ext-chain-long.bin": ipv6(v6a, v6b, repeatExt(ipv6DstOpts, maxExtHeaders+1), ProtoTCP, tcpSYN),
	}

	// DNS replies.
	q := dnsmessage.MustNewName("WWW.Example.test.")
	edge := dnsmessage.MustNewName("www.example.test.cdn.test.")
	edge2 := dnsmessage.MustNewName("e1.cdn.test.")
	m["dns-a.bin"] = ipv4(ProtoUDP, v4b, v4a, 0, nil, udpDatagram(53, 40001,
		dnsReply(tb, q, dnsmessage.RCodeSuccess, func(b *dnsmessage.Builder) {
			aRR(tb, b, q, 300, [4]byte{192, 0, 2, 80})
			aRR(tb, b, q, 30, [4]byte{192, 0, 2, 81})
		})))
	m["dns-cname-chain.bin"] = ipv4(ProtoUDP, v4b, v4a, 0, nil, udpDatagram(53, 40001,
		dnsReply(tb, q, dnsmessage.RCodeSuccess, func(b *dnsmessage.Builder) {
			cnameRR(tb, b, q, 3600, edge)
			cnameRR(tb, b, edge, 120, edge2)
			aRR(tb, b, edge2, 20, [4]byte{198, 51, 100, 7})
			// Not reachable from the question: ignored.
			aRR(tb, b, dnsmessage.MustNewName("evil.test."), 20, [4]byte{203, 0, 113, 66})
		})))
	m["dns-aaaa-v6.bin"] = ipv6(v6b, v6a, nil, ProtoUDP, udpDatagram(53, 40002,
		dnsReply(tb, q, dnsmessage.RCodeSuccess, func(b *dnsmessage.Builder) {
			aaaaRR(tb, b, q, 600, v6b.As16())
		})))
	m["dns-nxdomain.bin"] = ipv4(ProtoUDP, v4b, v4a, 0, nil, udpDatagram(53, 40001,
		dnsReply(tb, q, dnsmessage.RCodeNameError, func(*dnsmessage.Builder) {})))
	m["dns-query.bin"] = ipv4(ProtoUDP, v4a, v4b, 0, nil, udpDatagram(53, 53, dnsQuery(tb, q)))
	m["dns-from-other-port.bin"] = ipv4(ProtoUDP, v4b, v4a, 0, nil, udpDatagram(5353, 40001,
		dnsReply(tb, q, dnsmessage.RCodeSuccess, func(b *dnsmessage.Builder) {
			aRR(tb, b, q, 300, [4]byte{192, 0, 2, 80})
		})))
	m["dns-pointer-loop.bin"] = ipv4(ProtoUDP, v4b, v4a, 0, nil, udpDatagram(53, 40001, dnsPointerLoop()))
	m["dns-long-name.bin"] = ipv4(ProtoUDP, v4b, v4a, 0, nil, udpDatagram(53, 40001, dnsLongName(300)))
	return m
}

// ipv4 builds an IPv4 packet. fragField is the flags+fragment-offset field.
func ipv4(proto uint8, src, dst netip.Addr, fragField uint16, opts, payload []byte) []byte {
	ihl := 20 + len(opts)
	b := make([]byte, ihl, ihl+len(payload))
	b[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(ihl+len(payload)))
	binary.BigEndian.PutUint16(b[4:], 0x1234)
	binary.BigEndian.PutUint16(b[6:], fragField)
	b[8] = 64
	b[9] = proto
	copy(b[12:], src.AsSlice())
	copy(b[16:], dst.AsSlice())
	copy(b[20:], opts)
	return append(b, payload...)
}

type extHdr struct {
	typ  uint8
	body []byte // everything after the next-header byte
}

// ipv6 builds an IPv6 packet with the given extension headers.
func ipv6(src, dst netip.Addr, exts []extHdr, proto uint8, payload []byte) []byte {
	var rest []byte
	next := proto
	for i := len(exts) - 1; i >= 0; i-- {
		h := append([]byte{next}, exts[i].body...)
		rest = append(h, rest...)
		next = exts[i].typ
	}
	rest = append(rest, payload...)
	b := make([]byte, 40, 40+len(rest))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(rest)))
	b[6] = next
	b[7] = 64
	copy(b[8:], src.AsSlice())
	copy(b[24:], dst.AsSlice())
	return append(b, rest...)
}

// padN is the body of a hop-by-hop/destination-options/routing header of n
// bytes in all: length byte ((n/8)-1) and PadN filling.
func padN(n int) []byte {
	b := make([]byte, n-1)
	b[0] = byte(n/8 - 1)
	if n-2 >= 2 {
		b[1], b[2] = 1, byte(n-4) // PadN option
	}
	return b
}

// ahBody is the body of an AH header of n bytes in all (length in 4-byte
// units minus 2).
func ahBody(n int) []byte {
	b := make([]byte, n-1)
	b[0] = byte(n/4 - 2)
	return b
}

func fragBody(offset uint16, more bool) []byte {
	b := make([]byte, 7)
	v := offset &^ 7
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[1:], v)
	binary.BigEndian.PutUint32(b[3:], 0xabcdef)
	return b
}

func repeatExt(typ uint8, n int) []extHdr {
	var e []extHdr
	for range n {
		e = append(e, extHdr{typ, padN(8)})
	}
	return e
}

// l4ports returns a transport header of n bytes starting with the ports.
func l4ports(src, dst uint16, n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b[0:], src)
	binary.BigEndian.PutUint16(b[2:], dst)
	if n >= 14 {
		b[12] = 5 << 4 // TCP data offset
		b[13] = 0x02   // SYN
	}
	return b
}

func udpDatagram(src, dst uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], src)
	binary.BigEndian.PutUint16(b[2:], dst)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

func dnsReply(tb testing.TB, q dnsmessage.Name, rcode dnsmessage.RCode, answers func(*dnsmessage.Builder)) []byte {
	tb.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x4242, Response: true, RecursionDesired: true, RecursionAvailable: true, RCode: rcode})
	b.EnableCompression()
	must(tb, b.StartQuestions())
	must(tb, b.Question(dnsmessage.Question{Name: q, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}))
	must(tb, b.StartAnswers())
	answers(&b)
	msg, err := b.Finish()
	must(tb, err)
	return msg
}

func dnsQuery(tb testing.TB, q dnsmessage.Name) []byte {
	tb.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x4242, RecursionDesired: true})
	must(tb, b.StartQuestions())
	must(tb, b.Question(dnsmessage.Question{Name: q, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}))
	msg, err := b.Finish()
	must(tb, err)
	return msg
}

func aRR(tb testing.TB, b *dnsmessage.Builder, n dnsmessage.Name, ttl uint32, a [4]byte) {
	tb.Helper()
	must(tb, b.AResource(dnsmessage.ResourceHeader{Name: n, Class: dnsmessage.ClassINET, TTL: ttl}, dnsmessage.AResource{A: a}))
}

func aaaaRR(tb testing.TB, b *dnsmessage.Builder, n dnsmessage.Name, ttl uint32, a [16]byte) {
	tb.Helper()
	must(tb, b.AAAAResource(dnsmessage.ResourceHeader{Name: n, Class: dnsmessage.ClassINET, TTL: ttl}, dnsmessage.AAAAResource{AAAA: a}))
}

func cnameRR(tb testing.TB, b *dnsmessage.Builder, n dnsmessage.Name, ttl uint32, target dnsmessage.Name) {
	tb.Helper()
	must(tb, b.CNAMEResource(dnsmessage.ResourceHeader{Name: n, Class: dnsmessage.ClassINET, TTL: ttl}, dnsmessage.CNAMEResource{CNAME: target}))
}

// dnsPointerLoop is a reply whose question name is a compression pointer to
// itself.
func dnsPointerLoop() []byte {
	h := []byte{0x42, 0x42, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}
	// Question at offset 12: "a" label then a pointer back to offset 12.
	q := []byte{1, 'a', 0xc0, 12, 0, 1, 0, 1}
	// Answer: name is a pointer to 14 (the pointer itself), A record.
	a := []byte{0xc0, 14, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 9}
	return append(append(h, q...), a...)
}

// dnsLongName is a reply whose question name is n characters long (beyond
// the 255-octet wire limit), built by hand since dnsmessage refuses to.
func dnsLongName(n int) []byte {
	h := []byte{0x42, 0x42, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}
	var name []byte
	for left := n; left > 0; {
		l := min(left, 63)
		name = append(name, byte(l))
		name = append(name, strings.Repeat("x", l)...)
		left -= l + 1
	}
	name = append(name, 0)
	q := append(append([]byte{}, name...), 0, 1, 0, 1)
	a := append(append([]byte{}, name...), 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 9)
	return append(append(h, q...), a...)
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}
