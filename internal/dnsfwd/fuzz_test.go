// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// nopPacketConn stands for an upstream socket the fuzz targets never use
// (they replace the exchange).
type nopPacketConn struct{ net.PacketConn }

// fuzzForwarder is a forwarder that is never Run: the targets call admit
// and resolve directly, with exchange answering in memory.
func fuzzForwarder(t *testing.T, l Learner) *Forwarder {
	f, err := New(Config{
		Upstream: Upstream{Servers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}, UDP4: nopPacketConn{}},
		Policy:   allowAll(),
		Learner:  l,
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// handle runs a client message through the forwarder as a serving loop
// would and returns the reply, nil for none.
func handle(f *Forwarder, msg []byte, tcp bool) []byte {
	q, reply := f.admit(msg, tcp)
	if q != nil {
		reply = f.resolve(context.Background(), q)
	}
	f.wg.Wait() // Learn calls in the background
	return reply
}

const fuzzUpstreamID = 0x4242

// answerTo answers the upstream query wire with one A record for its
// question.
func answerTo(wire []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(wire)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: h.ID, Response: true, RecursionAvailable: true},
		Questions: []dnsmessage.Question{q},
		Answers: []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
			Body:   &dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}},
		}},
	}
	return m.Pack()
}

func FuzzQuery(f *testing.F) {
	pack := func(m dnsmessage.Message) []byte {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	qn := func(name string, typ dnsmessage.Type) []dnsmessage.Question {
		return []dnsmessage.Question{{Name: mustName(f, name), Type: typ, Class: dnsmessage.ClassINET}}
	}
	f.Add(queryMsg(f, 1, "www.example.com", dnsmessage.TypeA), false)
	f.Add(queryMsg(f, 2, "WwW.ExAmPlE.CoM", dnsmessage.TypeAAAA, ednsOpt(4096, dnsmessage.Option{Code: 10, Data: []byte("12345678")})), true)
	f.Add(pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 3}, Questions: append(qn("a.test", dnsmessage.TypeA), qn("b.test", dnsmessage.TypeA)...)}), false)
	f.Add(pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 4, OpCode: 5}, Questions: qn("a.test", dnsmessage.TypeSOA)}), false)
	f.Add(pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 5, Response: true}, Questions: qn("a.test", dnsmessage.TypeA)}), false)
	f.Add(pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 6}, Questions: qn("a.test", dnsmessage.TypeAXFR)}), true)
	f.Add(pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 7}, Questions: qn(".", dnsmessage.TypeNS)}), false)
	f.Add([]byte{0, 8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}, false) // pointer loop
	f.Add([]byte{0, 9}, false)
	f.Add([]byte{}, false)

	f.Fuzz(func(t *testing.T, msg []byte, tcp bool) {
		l := &fakeLearner{}
		fw := fuzzForwarder(t, l)
		fw.exchange = func(ctx context.Context, q *query) ([]byte, error) { return answerTo(q.wire) }
		reply := handle(fw, msg, tcp)

		isQuery := len(msg) >= 12 && msg[2]&0x80 == 0
		if reply == nil {
			if isQuery {
				t.Fatalf("no reply to a query header %x", msg)
			}
			return
		}
		if !isQuery {
			t.Fatalf("reply %x to a message that deserves none", reply)
		}
		var m dnsmessage.Message
		if err := m.Unpack(reply); err != nil {
			t.Fatalf("reply %x does not parse: %v", reply, err)
		}
		if id := binary.BigEndian.Uint16(msg); m.Header.ID != id || !m.Header.Response {
			t.Fatalf("reply id %d response %v, want %d true", m.Header.ID, m.Header.Response, id)
		}
		learned := map[netip.Addr]bool{}
		for _, b := range l.all() {
			for _, e := range b {
				learned[e.Addr] = true
			}
		}
		for _, a := range answerAddrs(m) {
			if !learned[netip.MustParseAddr(a)] {
				t.Fatalf("reply carries %s, never learned", a)
			}
		}
	})
}

// refChain is an independent reading of an answer: the addresses owned by
// the end of the CNAME chain from qname (canonical) in the answer section,
// and whether the chain is valid (no fork, no loop, at most maxChain
// names). ok is false when the answer section does not parse.
func refChain(msg []byte, qname string) (addrs map[netip.Addr]bool, valid, ok bool) {
	var p dnsmessage.Parser
	if _, err := p.Start(msg); err != nil {
		return nil, false, false
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil, false, false
	}
	lowerASCII := func(n dnsmessage.Name) string {
		b := []byte(n.String())
		for i, c := range b {
			if 'A' <= c && c <= 'Z' {
				b[i] = c + 32
			}
		}
		return string(bytes.TrimSuffix(b, []byte(".")))
	}
	type rr struct {
		owner string
		addr  netip.Addr
	}
	targets := map[string]map[string]bool{}
	var rrs []rr
	for {
		h, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return nil, false, false
		}
		switch {
		case h.Class == dnsmessage.ClassINET && h.Type == dnsmessage.TypeCNAME:
			c, err := p.CNAMEResource()
			if err != nil {
				return nil, false, false
			}
			o := lowerASCII(h.Name)
			if targets[o] == nil {
				targets[o] = map[string]bool{}
			}
			targets[o][lowerASCII(c.CNAME)] = true
		case h.Class == dnsmessage.ClassINET && h.Type == dnsmessage.TypeA && h.Length == 4:
			a, err := p.AResource()
			if err != nil {
				return nil, false, false
			}
			rrs = append(rrs, rr{lowerASCII(h.Name), netip.AddrFrom4(a.A)})
		case h.Class == dnsmessage.ClassINET && h.Type == dnsmessage.TypeAAAA && h.Length == 16:
			a, err := p.AAAAResource()
			if err != nil {
				return nil, false, false
			}
			rrs = append(rrs, rr{lowerASCII(h.Name), netip.AddrFrom16(a.AAAA).Unmap()})
		default:
			if err := p.SkipAnswer(); err != nil {
				return nil, false, false
			}
		}
	}
	seen := map[string]bool{qname: true}
	cur := qname
	for len(targets[cur]) > 0 {
		if len(targets[cur]) > 1 {
			return nil, false, true
		}
		var next string
		for n := range targets[cur] {
			next = n
		}
		if seen[next] || len(seen) == maxChain {
			return nil, false, true
		}
		seen[next] = true
		cur = next
	}
	addrs = map[netip.Addr]bool{}
	for _, r := range rrs {
		if r.owner == cur && !r.addr.IsUnspecified() {
			addrs[r.addr] = true
		}
	}
	return addrs, true, true
}

func FuzzAnswer(f *testing.F) {
	const qname = "www.example.com"
	q, _ := parseQuery(queryMsg(f, 1, qname, dnsmessage.TypeA))
	reply := func(answers, additionals []dnsmessage.Resource) []byte {
		m := dnsmessage.Message{Header: dnsmessage.Header{ID: fuzzUpstreamID, Response: true},
			Questions: []dnsmessage.Question{q.question}, Answers: answers, Additionals: additionals}
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(reply(rrA(f, qname, 60, "192.0.2.1", "192.0.2.2"), nil))
	f.Add(reply(concat([]dnsmessage.Resource{rrCNAME(f, qname, "Edge.CDN.test", 60)}, rrA(f, "edge.cdn.test", 60, "198.51.100.7"),
		rrA(f, qname, 60, "203.0.113.77"), rrA(f, "other.test", 60, "203.0.113.66")), rrA(f, "ns.test", 60, "203.0.113.88")))
	f.Add(reply([]dnsmessage.Resource{rrCNAME(f, qname, "a.test", 60), rrCNAME(f, "a.test", qname, 60)}, nil))
	f.Add(reply(concat([]dnsmessage.Resource{rrCNAME(f, qname, "a.test", 60), rrCNAME(f, qname, "b.test", 60)}, rrA(f, "b.test", 60, "192.0.2.9")), nil))
	f.Add(reply(rrA(f, qname, 60, "::ffff:192.0.2.5", "2001:db8::5", "0.0.0.0"), []dnsmessage.Resource{ednsOpt(1232)}))
	f.Add(reply(rrA(f, qname, 60, "192.0.2.1"), nil)[:40])
	f.Add([]byte{0x42, 0x42, 0x81, 0x80})

	f.Fuzz(func(t *testing.T, upstream []byte) {
		l := &fakeLearner{}
		fw := fuzzForwarder(t, l)
		up := bytes.Clone(upstream)
		if len(up) >= 2 {
			binary.BigEndian.PutUint16(up, fuzzUpstreamID)
		}
		fw.exchange = func(ctx context.Context, q *query) ([]byte, error) {
			if !matchReply(up, fuzzUpstreamID, q) {
				return nil, errTimeout // dropped as spoofed: the attempt times out
			}
			return bytes.Clone(up), nil
		}
		// Twice: the second query may be answered from the cache, which
		// must release the same bytes but for TTLs no longer than
		// upstream's.
		released := false
		for round := range 2 {
			clientID := uint16(0x0707 + round)
			got := handle(fw, queryMsg(t, clientID, qname, dnsmessage.TypeA), false)
			if got == nil {
				t.Fatal("no reply")
			}
			rel := len(up) >= 2 && sameButTTLs(got, setID(bytes.Clone(up), clientID))
			if !rel {
				var m dnsmessage.Message
				if err := m.Unpack(got); err != nil {
					t.Fatalf("made-up reply %x does not parse: %v", got, err)
				}
				if m.Header.ID != clientID || m.Header.RCode != dnsmessage.RCodeServerFailure || len(m.Answers) != 0 {
					t.Fatalf("made-up reply id %d rcode %v answers %d, want SERVFAIL", m.Header.ID, m.Header.RCode, len(m.Answers))
				}
			}
			released = released || rel
		}

		learned := map[netip.Addr]bool{}
		for _, b := range l.all() {
			for _, e := range b {
				if e.Name != qname {
					t.Errorf("element named %q", e.Name)
				}
				learned[e.Addr] = true
			}
		}
		want, valid, ok := refChain(up, qname)
		if !ok || !valid {
			if len(learned) > 0 {
				t.Fatalf("learned %v from an answer without a valid chain", learned)
			}
			if released && ok {
				t.Fatal("released an answer whose chain is invalid")
			}
			return
		}
		for a := range learned {
			if !want[a] {
				t.Fatalf("learned %s, not an address of the chain's end (%v)", a, want)
			}
		}
		if released {
			for a := range want {
				if !learned[a] {
					t.Fatalf("released an answer carrying %s of the chain's end without learning it", a)
				}
			}
		}
	})
}

// sameButTTLs reports whether got is want, but for record TTLs that may
// be lower and the question name's case (a cache hit's: the client's
// case); the upstream's bytes otherwise.
func sameButTTLs(got, want []byte) bool {
	if bytes.Equal(got, want) {
		return true
	}
	if len(got) != len(want) {
		return false
	}
	offs, _, _, ok := recordTTLs(want)
	if !ok {
		return false
	}
	g, w := bytes.Clone(got), bytes.Clone(want)
	for _, o := range offs {
		if binary.BigEndian.Uint32(g[o:]) > binary.BigEndian.Uint32(w[o:]) {
			return false
		}
		copy(g[o:o+4], w[o:o+4])
	}
	if end := skipName(w, 12); end > 12 {
		for i := 12; i < end; i++ {
			g[i], w[i] = lower(g[i]), lower(w[i])
		}
	}
	return bytes.Equal(g, w)
}
