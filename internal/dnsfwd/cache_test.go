// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// upstreamAsked is how many queries the fake upstream received.
func (e *env) upstreamAsked() int { return int(e.up.n.Load()) }

func TestCacheHitDecrementsTTLAndKeepsClientCase(t *testing.T) {
	clk := newClock()
	e := start(t, Config{Now: clk.Now, Policy: allowAll()})
	e.up.set("a.test", &fakeName{sets: [][]dnsmessage.Resource{
		concat([]dnsmessage.Resource{rrCNAME(t, "a.test", "edge.test", 300)}, rrA(t, "edge.test", 60, "192.0.2.1")),
	}})
	first := e.ask(t, "a.test", dnsmessage.TypeA)
	if first.Header.RCode != dnsmessage.RCodeSuccess || len(first.Answers) != 2 {
		t.Fatalf("first answer: %v", first)
	}

	clk.Add(10*time.Second + time.Millisecond)
	id := e.nextID()
	raw := roundTrip(t, e.client(t), queryMsg(t, id, "A.TeSt", dnsmessage.TypeA))
	m := unpack(t, raw)
	if e.upstreamAsked() != 1 {
		t.Fatalf("upstream asked %d times, want 1 (the second query is a hit)", e.upstreamAsked())
	}
	if m.Header.ID != id || m.Questions[0].Name.String() != "A.TeSt." {
		t.Errorf("hit id %d question %q, want %d and the client's own case", m.Header.ID, m.Questions[0].Name, id)
	}
	// 10.001 s elapsed: every TTL is 11 s less (rounded up, never longer
	// than what is left).
	for i, rr := range m.Answers {
		if want := first.Answers[i].Header.TTL - 11; rr.Header.TTL != want {
			t.Errorf("answer %d TTL %d, want %d", i, rr.Header.TTL, want)
		}
	}
	if diff := answerAddrs(m); len(diff) != 1 || diff[0] != "192.0.2.1" {
		t.Errorf("hit addresses %v", diff)
	}
	if st := e.fwd.Stats(); st.CacheHits != 1 || st.CacheKnown != 1 || st.Forwarded != 1 {
		t.Errorf("stats hits %d known %d forwarded %d, want 1 1 1", st.CacheHits, st.CacheKnown, st.Forwarded)
	}
	// Over TCP too, from the answer received over UDP.
	if m := e.askTCP(t, "a.test", dnsmessage.TypeA); len(m.Answers) != 2 || e.upstreamAsked() != 1 {
		t.Errorf("tcp hit: %d answers, upstream asked %d", len(m.Answers), e.upstreamAsked())
	}
}

func TestCacheNeverServesPastTTL(t *testing.T) {
	clk := newClock()
	e := start(t, Config{Now: clk.Now})
	e.up.set("a.test", &fakeName{sets: [][]dnsmessage.Resource{
		rrA(t, "a.test", 60, "192.0.2.1"),
		rrA(t, "a.test", 60, "192.0.2.2"),
	}})
	e.ask(t, "a.test", dnsmessage.TypeA)
	clk.Add(59 * time.Second)
	m := e.ask(t, "a.test", dnsmessage.TypeA)
	if e.upstreamAsked() != 1 || m.Answers[0].Header.TTL != 1 {
		t.Fatalf("at 59 s: upstream asked %d, TTL %d; want a hit with 1 s left", e.upstreamAsked(), m.Answers[0].Header.TTL)
	}
	clk.Add(time.Second)
	m = e.ask(t, "a.test", dnsmessage.TypeA)
	if e.upstreamAsked() != 2 || answerAddrs(m)[0] != "192.0.2.2" {
		t.Fatalf("at 60 s: upstream asked %d, answer %v; want upstream's next answer", e.upstreamAsked(), answerAddrs(m))
	}
	// A clock that went back serves nothing either.
	clk.Add(-time.Hour)
	e.ask(t, "a.test", dnsmessage.TypeA)
	if e.upstreamAsked() != 3 {
		t.Errorf("clock set back: upstream asked %d, want 3", e.upstreamAsked())
	}
}

// A hit is gated like an upstream answer: when its addresses are not
// known to be in the kernel for long enough (removed behind the
// forwarder's back, or near their expiry), it is held until Learn
// returned, and never released when Learn fails.
func TestCacheHitHeldUntilLearned(t *testing.T) {
	clk := newClock()
	e := start(t, Config{Now: clk.Now, Policy: allowAll(), MinTTL: time.Second})
	e.up.set("a.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "a.test", 3600, "192.0.2.1")}})
	e.ask(t, "a.test", dnsmessage.TypeA)
	if n := len(e.learner.all()); n != 1 {
		t.Fatalf("%d learn calls, want 1", n)
	}
	e.ask(t, "a.test", dnsmessage.TypeA)
	if n := len(e.learner.all()); n != 1 || e.upstreamAsked() != 1 {
		t.Fatalf("hit with the element in the kernel: %d learn calls, upstream %d; want 1 1", n, e.upstreamAsked())
	}

	// The element was removed from the kernel: the hit is learned again
	// first, and SERVFAIL when that fails.
	e.fwd.Forget(netip.Addr{})
	e.learner.setHook(func(context.Context, []Element) error { return errors.New("verdict service down") })
	if m := e.ask(t, "a.test", dnsmessage.TypeA); m.Header.RCode != dnsmessage.RCodeServerFailure || len(m.Answers) != 0 {
		t.Fatalf("hit after Forget with Learn failing: %v %d answers, want SERVFAIL", m.Header.RCode, len(m.Answers))
	}
	e.learner.setHook(nil)
	if m := e.ask(t, "a.test", dnsmessage.TypeA); m.Header.RCode != dnsmessage.RCodeSuccess {
		t.Fatalf("hit after Forget: %v", m.Header.RCode)
	}
	if n := len(e.learner.all()); n != 3 || e.upstreamAsked() != 1 {
		t.Fatalf("%d learn calls, upstream %d; want 3 1", n, e.upstreamAsked())
	}

	// Near the end of its TTL, the hit is covered by the element learned
	// for the whole TTL: released at once.
	clk.Add(3600*time.Second - HoldMargin + time.Second)
	left := HoldMargin - time.Second
	if m := e.ask(t, "a.test", dnsmessage.TypeA); m.Header.RCode != dnsmessage.RCodeSuccess || len(e.learner.all()) != 3 {
		t.Fatalf("hit with %v left: %v, %d learn calls; want released without one", left, m.Header.RCode, len(e.learner.all()))
	}
	// An element expired in the kernel (its expiry forced into the past)
	// is learned again, for the TTL left, before the hit goes out.
	e.fwd.learned.mu.Lock()
	for _, le := range e.fwd.learned.m {
		le.expires = clk.Now().Add(-time.Second)
	}
	e.fwd.learned.mu.Unlock()
	e.learner.setHook(func(context.Context, []Element) error { return errors.New("no") })
	if m := e.ask(t, "a.test", dnsmessage.TypeA); m.Header.RCode != dnsmessage.RCodeServerFailure {
		t.Fatalf("hit whose element expired, Learn failing: %v, want SERVFAIL", m.Header.RCode)
	}
	e.learner.setHook(nil)
	m := e.ask(t, "a.test", dnsmessage.TypeA)
	b := e.learner.all()
	last := b[len(b)-1]
	if m.Header.RCode != dnsmessage.RCodeSuccess || len(last) != 1 || last[0].Timeout != left {
		t.Fatalf("relearned %+v, answer %v; want the element for the %v left", last, m.Header.RCode, left)
	}
	if e.upstreamAsked() != 1 {
		t.Errorf("upstream asked %d, want 1", e.upstreamAsked())
	}
}

// The policy is decided again on every hit: a name denied after its
// answer was cached (here the CNAME target) gets NXDOMAIN.
func TestCacheHitFollowsPolicyChange(t *testing.T) {
	p := newPolicy(rule{pattern: "*.test"})
	e := start(t, Config{Policy: p})
	e.up.set("a.test", &fakeName{sets: [][]dnsmessage.Resource{
		concat([]dnsmessage.Resource{rrCNAME(t, "a.test", "b.test", 300)}, rrA(t, "b.test", 300, "192.0.2.1")),
	}})
	if m := e.ask(t, "a.test", dnsmessage.TypeA); m.Header.RCode != dnsmessage.RCodeSuccess {
		t.Fatal(m.Header.RCode)
	}
	p.mu.Lock()
	p.rules = []rule{{pattern: "b.test", deny: true}, {pattern: "*.test"}}
	p.mu.Unlock()
	if m := e.ask(t, "a.test", dnsmessage.TypeA); m.Header.RCode != dnsmessage.RCodeNameError || len(m.Answers) != 0 {
		t.Fatalf("hit for a chain denied since: %v, %d answers; want NXDOMAIN", m.Header.RCode, len(m.Answers))
	}
	if e.upstreamAsked() != 1 || e.fwd.Stats().Denied != 1 {
		t.Errorf("upstream %d denied %d, want 1 1", e.upstreamAsked(), e.fwd.Stats().Denied)
	}
}

// What must not be served from the cache goes upstream every time.
func TestCacheNotCached(t *testing.T) {
	e := start(t, Config{})
	soa := func(q dnsmessage.Question) []byte {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true, RCode: dnsmessage.RCodeNameError})
		b.StartQuestions()
		b.Question(q)
		b.StartAuthorities()
		b.SOAResource(dnsmessage.ResourceHeader{Name: mustName(t, "test."), Class: dnsmessage.ClassINET, TTL: 3600},
			dnsmessage.SOAResource{NS: mustName(t, "ns.test."), MBox: mustName(t, "h.test."), MinTTL: 3600})
		out, _ := b.Finish()
		return out
	}
	e.up.set("servfail.test", &fakeName{rcode: dnsmessage.RCodeServerFailure})
	e.up.set("refused.test", &fakeName{rcode: dnsmessage.RCodeRefused})
	e.up.set("tc.test", &fakeName{tcOverUDP: true, sets: [][]dnsmessage.Resource{rrA(t, "tc.test", 60, "192.0.2.1")}})
	e.up.set("zero.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "zero.test", 0, "192.0.2.1")}})
	e.up.set("nxnosoa.test", &fakeName{rcode: dnsmessage.RCodeNameError})
	e.up.set("cookie.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "cookie.test", 60, "192.0.2.1")}})
	e.up.set("nx.test", &fakeName{raw: soa})
	cookie := ednsOpt(1232, dnsmessage.Option{Code: 10, Data: []byte("12345678")})

	for _, tt := range []struct {
		name string
		opt  []dnsmessage.Resource
	}{
		{"servfail.test", nil}, {"refused.test", nil}, {"tc.test", nil}, {"zero.test", nil},
		{"nxnosoa.test", nil}, {"cookie.test", []dnsmessage.Resource{cookie}},
	} {
		before := e.upstreamAsked()
		e.ask(t, tt.name, dnsmessage.TypeA, tt.opt...)
		e.ask(t, tt.name, dnsmessage.TypeA, tt.opt...)
		if got := e.upstreamAsked() - before; got != 2 {
			t.Errorf("%s: upstream asked %d times for two queries, want 2 (not cached)", tt.name, got)
		}
	}
	if st := e.fwd.Stats(); st.CacheHits != 0 {
		t.Errorf("cache hits %d, want 0", st.CacheHits)
	}

	// A negative answer with an SOA is cached, but for NegativeCacheTTL
	// at most whatever its TTLs say.
	clk := newClock()
	e = start(t, Config{Now: clk.Now})
	e.up.set("nx.test", &fakeName{raw: soa})
	e.ask(t, "nx.test", dnsmessage.TypeA)
	clk.Add(NegativeCacheTTL - time.Second)
	if m := e.ask(t, "nx.test", dnsmessage.TypeA); m.Header.RCode != dnsmessage.RCodeNameError || e.upstreamAsked() != 1 {
		t.Fatalf("negative hit: %v, upstream %d", m.Header.RCode, e.upstreamAsked())
	}
	clk.Add(time.Second)
	e.ask(t, "nx.test", dnsmessage.TypeA)
	if e.upstreamAsked() != 2 {
		t.Errorf("negative answer served past %v", NegativeCacheTTL)
	}
}

// The key keeps apart what changes the answer: type, EDNS, DO, CD; and a
// UDP client gets no cached answer longer than its payload size.
func TestCacheKey(t *testing.T) {
	e := start(t, Config{})
	e.up.set("a.test", &fakeName{sets: [][]dnsmessage.Resource{
		concat(rrA(t, "a.test", 60, "192.0.2.1"), []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: mustName(t, "a.test."), Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET, TTL: 60},
			Body:   &dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("2001:db8::1").As16()},
		}}),
	}})
	do := ednsOpt(1232)
	do.Header.SetEDNS0(1232, 0, true)
	asks := []struct {
		qtype dnsmessage.Type
		opt   []dnsmessage.Resource
	}{
		{dnsmessage.TypeA, nil},
		{dnsmessage.TypeAAAA, nil},
		{dnsmessage.TypeA, []dnsmessage.Resource{ednsOpt(1232)}},
		{dnsmessage.TypeA, []dnsmessage.Resource{do}},
	}
	for i, a := range asks {
		e.ask(t, "a.test", a.qtype, a.opt...)
		if e.upstreamAsked() != i+1 {
			t.Fatalf("query %d (%v, opt %v) was served from another's entry", i, a.qtype, a.opt)
		}
	}
	for _, a := range asks {
		e.ask(t, "a.test", a.qtype, a.opt...)
	}
	if e.upstreamAsked() != len(asks) {
		t.Errorf("upstream asked %d, want %d: each variant hits its own entry", e.upstreamAsked(), len(asks))
	}
	// CD set: its own entry.
	msg := queryMsg(t, 77, "a.test", dnsmessage.TypeA)
	msg[3] |= 0x10 // CD
	roundTrip(t, e.client(t), msg)
	if e.upstreamAsked() != len(asks)+1 {
		t.Errorf("a CD query was served from the entry of a validating one")
	}

	// 40 addresses: 700 bytes, cached for a client taking 4096, not
	// served to one taking 512 (the same key).
	var many []string
	for i := range 40 {
		many = append(many, "192.0.2."+strconv.Itoa(i+1))
	}
	e.up.set("big.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "big.test", 60, many...)}})
	before := e.upstreamAsked()
	if m := e.ask(t, "big.test", dnsmessage.TypeA, ednsOpt(4096)); len(m.Answers) != 40 {
		t.Fatalf("big answer: %d records", len(m.Answers))
	}
	if m := e.ask(t, "big.test", dnsmessage.TypeA, ednsOpt(512)); !m.Header.Truncated || e.upstreamAsked() != before+2 {
		t.Errorf("512-byte client: truncated %v, upstream asked %d more; want upstream's truncated answer", m.Header.Truncated, e.upstreamAsked()-before)
	}
}

// Each forwarder (each container) has its own cache.
func TestCachePerForwarder(t *testing.T) {
	e1 := start(t, Config{})
	e1.up.set("a.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "a.test", 600, "192.0.2.1")}})
	e1.ask(t, "a.test", dnsmessage.TypeA)
	// In a subtest: its leak check starts once e1 is fully up.
	t.Run("second container", func(t *testing.T) {
		e2 := start(t, Config{})
		e2.up.set("a.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "a.test", 600, "198.51.100.2")}})
		if got := answerAddrs(e2.ask(t, "a.test", dnsmessage.TypeA)); len(got) != 1 || got[0] != "198.51.100.2" {
			t.Errorf("second container got %v, want its own upstream's answer", got)
		}
	})
}

func TestCacheBounds(t *testing.T) {
	e := start(t, Config{CacheEntries: 2})
	for _, n := range []string{"a.test", "b.test", "c.test"} {
		e.up.set(n, &fakeName{sets: [][]dnsmessage.Resource{rrA(t, n, 600, "192.0.2.1")}})
		e.ask(t, n, dnsmessage.TypeA)
	}
	if st := e.fwd.Stats(); st.CacheKnown != 2 {
		t.Errorf("%d cached, want 2", st.CacheKnown)
	}
	e.ask(t, "c.test", dnsmessage.TypeA)
	e.ask(t, "a.test", dnsmessage.TypeA) // the least recently used: evicted
	if e.upstreamAsked() != 4 {
		t.Errorf("upstream asked %d, want 4", e.upstreamAsked())
	}

	// Bytes: entries of 4 KiB each stop at MaxCacheBytes.
	c := newAnswerCache(100000)
	now := time.Unix(1_800_000_000, 0)
	for i := range 2 * MaxCacheBytes / MaxCacheAnswer {
		name := "n" + strconv.Itoa(i) + ".test"
		q, _ := parseQuery(queryMsg(t, 1, name, dnsmessage.TypeTXT))
		resp := padded(t, q, MaxCacheAnswer)
		c.store(q, resp, &answer{rcode: dnsmessage.RCodeSuccess, chain: []string{name}}, now)
		if c.bytes > MaxCacheBytes {
			t.Fatalf("%d bytes cached after %d answers, more than %d", c.bytes, i+1, MaxCacheBytes)
		}
	}
	if n := c.len(); n != MaxCacheBytes/MaxCacheAnswer {
		t.Errorf("%d entries of %d bytes kept, want %d", n, MaxCacheAnswer, MaxCacheBytes/MaxCacheAnswer)
	}
	// One byte more than MaxCacheAnswer is not kept at all.
	q, _ := parseQuery(queryMsg(t, 1, "big.test", dnsmessage.TypeTXT))
	c.flush()
	c.store(q, padded(t, q, MaxCacheAnswer+1), &answer{rcode: dnsmessage.RCodeSuccess, chain: []string{"big.test"}}, now)
	if c.len() != 0 {
		t.Error("an answer over MaxCacheAnswer was cached")
	}
}

// padded returns an answer to q of exactly size bytes: one TXT record
// whose strings fill it.
func padded(t testing.TB, q *query, size int) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true})
	b.StartQuestions()
	b.Question(q.question)
	b.StartAnswers()
	base, _ := b.Finish()
	// header 12 + question, then name pointer 2 + 10 fixed + rdata
	rdata := size - len(base) - 12
	var txt []string
	for rdata > 0 {
		n := min(rdata-1, 255)
		txt = append(txt, string(bytes.Repeat([]byte{'x'}, n)))
		rdata -= n + 1
	}
	b = dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true})
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q.question)
	b.StartAnswers()
	b.TXTResource(dnsmessage.ResourceHeader{Name: q.question.Name, Class: dnsmessage.ClassINET, TTL: 600}, dnsmessage.TXTResource{TXT: txt})
	out, err := b.Finish()
	if err != nil || len(out) != size {
		t.Fatalf("padded answer of %d bytes, want %d: %v", len(out), size, err)
	}
	return out
}

// Hostile bytes: recordTTLs and copyQuestionCase bound every read and
// find exactly the TTLs dnsmessage parses.
func TestRecordTTLsHostile(t *testing.T) {
	good := func() []byte {
		m := dnsmessage.Message{Header: dnsmessage.Header{Response: true},
			Questions:   []dnsmessage.Question{{Name: mustName(t, "a.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
			Answers:     rrA(t, "a.test", 77, "192.0.2.1", "192.0.2.2"),
			Additionals: []dnsmessage.Resource{ednsOpt(1232)}}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}()
	offs, minTTL, an, ok := recordTTLs(good)
	if !ok || len(offs) != 2 || minTTL != 77 || an != 2 {
		t.Fatalf("recordTTLs = %v %d %d %v, want two TTLs of 77 (not the OPT's)", offs, minTTL, an, ok)
	}
	for i := range len(good) {
		if _, _, _, ok := recordTTLs(good[:i]); ok {
			t.Errorf("truncated to %d bytes: walked", i)
		}
	}
	loop := append(bytes.Clone(good[:12]), 0xc0, 12, 0, 1, 0, 1)
	binary.BigEndian.PutUint16(loop[4:], 1)
	binary.BigEndian.PutUint16(loop[6:], 0)
	binary.BigEndian.PutUint16(loop[10:], 0)
	if _, _, _, ok := recordTTLs(loop); !ok {
		t.Error("a pointer in the question is not followed, only skipped: walks")
	}
	counts := bytes.Clone(good)
	binary.BigEndian.PutUint16(counts[6:], 0xffff)
	if _, _, _, ok := recordTTLs(counts); ok {
		t.Error("65535 answers claimed: walked")
	}
	trailing := append(bytes.Clone(good), 0)
	if _, _, _, ok := recordTTLs(trailing); ok {
		t.Error("trailing byte: walked")
	}

	n := mustName(t, "OTHER.test.")
	if copyQuestionCase(bytes.Clone(good), &n) {
		t.Error("copyQuestionCase accepted another name")
	}
	n = mustName(t, "A.TEST.")
	g := bytes.Clone(good)
	if !copyQuestionCase(g, &n) || !bytes.Contains(g, []byte("\x01A\x04TEST\x00")) {
		t.Errorf("copyQuestionCase did not write the client's case: %q", g)
	}
	n = mustName(t, "a.tes.")
	if copyQuestionCase(bytes.Clone(good), &n) {
		t.Error("copyQuestionCase accepted a shorter name")
	}
}

func FuzzRecordTTLs(f *testing.F) {
	m := dnsmessage.Message{Header: dnsmessage.Header{Response: true},
		Questions:   []dnsmessage.Question{{Name: mustName(f, "a.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
		Answers:     concat([]dnsmessage.Resource{rrCNAME(f, "a.test", "b.test", 9)}, rrA(f, "b.test", 77, "192.0.2.1")),
		Additionals: []dnsmessage.Resource{ednsOpt(1232)}}
	b, _ := m.Pack()
	f.Add(b)
	f.Add(b[:20])
	f.Add([]byte{0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xc0, 12})
	f.Fuzz(func(t *testing.T, msg []byte) {
		offs, minTTL, _, ok := recordTTLs(msg)
		if !ok {
			return
		}
		for _, o := range offs {
			if int(o)+4 > len(msg) {
				t.Fatalf("offset %d past the message (%d bytes)", o, len(msg))
			}
		}
		// Where dnsmessage reads the message, the TTLs agree.
		var p dnsmessage.Parser
		if _, err := p.Start(msg); err != nil {
			return
		}
		if err := p.SkipAllQuestions(); err != nil {
			return
		}
		var ttls []uint32
		for sec := 0; sec < 3; sec++ {
			for {
				var h dnsmessage.ResourceHeader
				var err error
				switch sec {
				case 0:
					h, err = p.AnswerHeader()
				case 1:
					h, err = p.AuthorityHeader()
				default:
					h, err = p.AdditionalHeader()
				}
				if errors.Is(err, dnsmessage.ErrSectionDone) {
					break
				}
				if err != nil {
					return
				}
				if !(sec == 2 && h.Type == dnsmessage.TypeOPT) {
					ttls = append(ttls, h.TTL)
				}
				switch sec {
				case 0:
					err = p.SkipAnswer()
				case 1:
					err = p.SkipAuthority()
				default:
					err = p.SkipAdditional()
				}
				if err != nil {
					return
				}
			}
		}
		if len(ttls) != len(offs) {
			t.Fatalf("%d TTL offsets, dnsmessage reads %d records", len(offs), len(ttls))
		}
		lo := ^uint32(0)
		for i, o := range offs {
			if got := binary.BigEndian.Uint32(msg[o:]); got != ttls[i] {
				t.Fatalf("record %d: TTL at offset %d is %d, dnsmessage reads %d", i, o, got, ttls[i])
			}
			lo = min(lo, ttls[i])
		}
		if len(ttls) > 0 && lo != minTTL {
			t.Fatalf("min TTL %d, want %d", minTTL, lo)
		}
	})
}

// A UDP query waiting for upstream holds no goroutine; Run still ends it
// at once when it stops, not at its attempt timer.
func TestRunEndsQueriesWaitingUpstream(t *testing.T) {
	testutil.LeakCheck(t)
	up := newFakeUpstream(t)
	up.set("a.test", &fakeName{silent: true})
	cl, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	up4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{UDP: []net.PacketConn{cl}, Log: testutil.Logger(t),
		Upstream: Upstream{Servers: []netip.AddrPort{up.addr}, UDP4: up4, AttemptTimeout: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	c, err := net.DialUDP("udp4", nil, cl.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(queryMsg(t, 1, "a.test", dnsmessage.TypeA)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 0, "the query upstream", func() bool { return up.n.Load() > 0 })
	if st := f.Stats(); st.InFlight != 1 {
		t.Fatalf("in flight %d, want 1", st.InFlight)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return while a query waited for upstream")
	}
	if st := f.Stats(); st.InFlight != 0 {
		t.Errorf("in flight %d after Run returned, want 0", st.InFlight)
	}
}
