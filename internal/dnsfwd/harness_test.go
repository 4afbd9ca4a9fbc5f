// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// ---- leak check ----

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// ---- DNS message helpers ----

func mustName(tb testing.TB, s string) dnsmessage.Name {
	tb.Helper()
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	n, err := dnsmessage.NewName(s)
	if err != nil {
		tb.Fatalf("name %q: %v", s, err)
	}
	return n
}

func rrA(tb testing.TB, owner string, ttl uint32, addrs ...string) []dnsmessage.Resource {
	tb.Helper()
	var out []dnsmessage.Resource
	for _, s := range addrs {
		a := netip.MustParseAddr(s)
		h := dnsmessage.ResourceHeader{Name: mustName(tb, owner), Class: dnsmessage.ClassINET, TTL: ttl}
		if a.Is4() {
			h.Type = dnsmessage.TypeA
			out = append(out, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: a.As4()}})
		} else {
			h.Type = dnsmessage.TypeAAAA
			out = append(out, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
		}
	}
	return out
}

func rrCNAME(tb testing.TB, owner, target string, ttl uint32) dnsmessage.Resource {
	tb.Helper()
	return dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: mustName(tb, owner), Type: dnsmessage.TypeCNAME, Class: dnsmessage.ClassINET, TTL: ttl},
		Body:   &dnsmessage.CNAMEResource{CNAME: mustName(tb, target)},
	}
}

func concat(rrs ...[]dnsmessage.Resource) []dnsmessage.Resource {
	var out []dnsmessage.Resource
	for _, r := range rrs {
		out = append(out, r...)
	}
	return out
}

// ednsOpt is the client OPT record used by tests: size and options.
func ednsOpt(size int, opts ...dnsmessage.Option) dnsmessage.Resource {
	var h dnsmessage.ResourceHeader
	h.SetEDNS0(size, 0, false)
	return dnsmessage.Resource{Header: h, Body: &dnsmessage.OPTResource{Options: opts}}
}

// queryMsg packs a query with one question; opt, if given, is added.
func queryMsg(tb testing.TB, id uint16, name string, qtype dnsmessage.Type, opt ...dnsmessage.Resource) []byte {
	tb.Helper()
	m := dnsmessage.Message{
		Header:      dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions:   []dnsmessage.Question{{Name: mustName(tb, name), Type: qtype, Class: dnsmessage.ClassINET}},
		Additionals: opt,
	}
	b, err := m.Pack()
	if err != nil {
		tb.Fatalf("pack query: %v", err)
	}
	return b
}

func unpack(tb testing.TB, b []byte) dnsmessage.Message {
	tb.Helper()
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		tb.Fatalf("unpack reply %x: %v", b, err)
	}
	return m
}

// answerAddrs returns the A and AAAA addresses of m's answer section.
func answerAddrs(m dnsmessage.Message) []string {
	var out []string
	for _, r := range m.Answers {
		switch b := r.Body.(type) {
		case *dnsmessage.AResource:
			out = append(out, netip.AddrFrom4(b.A).String())
		case *dnsmessage.AAAAResource:
			out = append(out, netip.AddrFrom16(b.AAAA).String())
		}
	}
	return out
}

// ---- fake upstream resolver ----

// fakeName is how the fake upstream answers one name.
type fakeName struct {
	// sets are the answer sections, one per query in turn. CNAMEs and
	// records of other names are always included; A and AAAA records of
	// the question's type only.
	sets       [][]dnsmessage.Resource
	additional []dnsmessage.Resource
	rcode      dnsmessage.RCode
	tcOverUDP  bool // answer TC=1 without records over UDP
	silent     bool // never answer
	spoof      bool // send forged replies before the real one (UDP)
	// raw, if set, returns the reply's bytes; the fake sets their id.
	raw func(q dnsmessage.Question) []byte
	n   int
}

type seenQuery struct {
	Name    string
	Type    dnsmessage.Type
	TCP     bool
	EDNS    int // the UDP size of the query's OPT; 0 without
	Options []dnsmessage.Option
}

// fakeUpstream is a resolver on 127.0.0.1, UDP and TCP on one port.
type fakeUpstream struct {
	tb      testing.TB
	udp     *net.UDPConn
	tcp     *net.TCPListener
	spoofer *net.UDPConn
	addr    netip.AddrPort

	mu    sync.Mutex
	names map[string]*fakeName
	seen  []seenQuery
	sent  [][]byte      // every reply sent, in order
	hold  chan struct{} // when set, answers wait until it is closed
	n     atomic.Int64  // queries received
	quiet bool          // record nothing (benchmarks)

	done chan struct{}
	wg   sync.WaitGroup
}

func newFakeUpstream(tb testing.TB) *fakeUpstream {
	tb.Helper()
	return newFakeUpstreamOn(tb, netip.MustParseAddr("127.0.0.1"))
}

// newFakeUpstreamOn starts a fake upstream on ip (127.0.0.1 or ::1).
func newFakeUpstreamOn(tb testing.TB, ip netip.Addr) *fakeUpstream {
	tb.Helper()
	u := &fakeUpstream{tb: tb, names: map[string]*fakeName{}, done: make(chan struct{})}
	for i := 0; ; i++ {
		uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			tb.Fatal(err)
		}
		port := uc.LocalAddr().(*net.UDPAddr).Port
		tl, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))))
		if err != nil {
			uc.Close()
			if i < 20 {
				continue
			}
			tb.Fatal(err)
		}
		u.udp, u.tcp = uc, tl
		u.addr = netip.AddrPortFrom(ip, uint16(port))
		break
	}
	sp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		tb.Fatal(err)
	}
	u.spoofer = sp
	u.wg.Add(2)
	go u.serveUDP()
	go u.serveTCP()
	tb.Cleanup(u.close)
	return u
}

func (u *fakeUpstream) close() {
	close(u.done)
	u.udp.Close()
	u.tcp.Close()
	u.spoofer.Close()
	u.wg.Wait()
}

// set configures how name (canonical) is answered.
func (u *fakeUpstream) set(name string, fn *fakeName) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.names[name] = fn
}

// holdAnswers makes answers wait until the returned func is called.
func (u *fakeUpstream) holdAnswers() (release func()) {
	ch := make(chan struct{})
	u.mu.Lock()
	u.hold = ch
	u.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			u.hold = nil
			u.mu.Unlock()
			close(ch)
		})
	}
}

func (u *fakeUpstream) queries() []seenQuery {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenQuery(nil), u.seen...)
}

func (u *fakeUpstream) lastSent() []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.sent) == 0 {
		return nil
	}
	return u.sent[len(u.sent)-1]
}

func (u *fakeUpstream) serveUDP() {
	defer u.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := u.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		req := bytes.Clone(buf[:n])
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			u.answer(req, false, func(b []byte) { u.udp.WriteToUDPAddrPort(b, from) }, from)
		}()
	}
}

func (u *fakeUpstream) serveTCP() {
	defer u.wg.Done()
	for {
		c, err := u.tcp.Accept()
		if err != nil {
			return
		}
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			defer c.Close()
			go func() { <-u.done; c.Close() }()
			var mu sync.Mutex
			for {
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				req := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, req); err != nil {
					return
				}
				u.answer(req, true, func(b []byte) {
					mu.Lock()
					defer mu.Unlock()
					out := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
					c.Write(append(out, b...))
				}, netip.AddrPort{})
			}
		}()
	}
}

// answer builds and sends the reply to req.
func (u *fakeUpstream) answer(req []byte, tcp bool, send func([]byte), from netip.AddrPort) {
	u.n.Add(1)
	var m dnsmessage.Message
	if err := m.Unpack(req); err != nil || len(m.Questions) != 1 {
		return
	}
	q := m.Questions[0]
	name := strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))
	seen := seenQuery{Name: name, Type: q.Type, TCP: tcp}
	var clientOPT *dnsmessage.Resource
	for i, r := range m.Additionals {
		if r.Header.Type == dnsmessage.TypeOPT {
			seen.EDNS = int(r.Header.Class)
			seen.Options = r.Body.(*dnsmessage.OPTResource).Options
			clientOPT = &m.Additionals[i]
		}
	}
	u.mu.Lock()
	if !u.quiet {
		u.seen = append(u.seen, seen)
	}
	hold := u.hold
	fn := u.names[name]
	var set []dnsmessage.Resource
	if fn != nil && len(fn.sets) > 0 {
		set = fn.sets[fn.n%len(fn.sets)]
		fn.n++
	}
	u.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-u.done:
			return
		}
	}
	if fn != nil && fn.silent {
		return
	}
	var out []byte
	if fn != nil && fn.raw != nil {
		out = fn.raw(q)
		if len(out) >= 2 {
			binary.BigEndian.PutUint16(out, m.Header.ID)
		}
	} else {
		r := dnsmessage.Message{
			Header: dnsmessage.Header{ID: m.Header.ID, Response: true, RecursionDesired: m.Header.RecursionDesired,
				RecursionAvailable: true, RCode: dnsmessage.RCodeNameError},
			Questions: m.Questions,
		}
		if fn != nil {
			r.Header.RCode = fn.rcode
			for _, rr := range set {
				t := rr.Header.Type
				if t == dnsmessage.TypeA && q.Type == dnsmessage.TypeAAAA || t == dnsmessage.TypeAAAA && q.Type == dnsmessage.TypeA {
					continue
				}
				r.Answers = append(r.Answers, rr)
			}
			r.Additionals = append(r.Additionals, fn.additional...)
		}
		limit := 512
		if clientOPT != nil {
			limit = max(512, int(clientOPT.Header.Class))
			var opts []dnsmessage.Option
			for _, o := range clientOPT.Body.(*dnsmessage.OPTResource).Options {
				if o.Code == 10 { // echo a cookie, as a resolver would
					opts = append(opts, dnsmessage.Option{Code: 10, Data: append(bytes.Clone(o.Data), "servercookie"...)})
				}
			}
			r.Additionals = append(r.Additionals, ednsOpt(1232, opts...))
		}
		var err error
		if out, err = r.Pack(); err != nil {
			u.tb.Errorf("fake upstream: pack reply: %v", err)
			return
		}
		if !tcp && (len(out) > limit || fn != nil && fn.tcOverUDP) {
			r.Header.Truncated = true
			r.Answers, r.Additionals = nil, nil
			if clientOPT != nil {
				r.Additionals = []dnsmessage.Resource{ednsOpt(1232)}
			}
			out, _ = r.Pack()
		}
	}
	if fn != nil && fn.spoof && !tcp {
		u.sendSpoofs(m, from)
	}
	u.mu.Lock()
	if !u.quiet {
		u.sent = append(u.sent, bytes.Clone(out))
	}
	u.mu.Unlock()
	send(out)
}

// sendSpoofs sends three forged replies to the query m from 'from':
// wrong id, wrong source, wrong question; each carries 6.6.6.6.
func (u *fakeUpstream) sendSpoofs(m dnsmessage.Message, to netip.AddrPort) {
	forge := func(id uint16, q dnsmessage.Question) []byte {
		r := dnsmessage.Message{
			Header:    dnsmessage.Header{ID: id, Response: true, RecursionAvailable: true},
			Questions: []dnsmessage.Question{q},
			Answers:   rrA(u.tb, q.Name.String(), 3600, "6.6.6.6"),
		}
		b, _ := r.Pack()
		return b
	}
	q := m.Questions[0]
	u.udp.WriteToUDPAddrPort(forge(m.Header.ID+1, q), to)
	u.spoofer.WriteToUDPAddrPort(forge(m.Header.ID, q), to)
	other := q
	other.Name = mustName(u.tb, "evil.example")
	u.udp.WriteToUDPAddrPort(forge(m.Header.ID, other), to)
}

// ---- fake learner, policy, clock ----

// fakeLearner records every batch. hook, if set, runs inside Learn
// (after the batch is recorded) and decides its result.
type fakeLearner struct {
	mu      sync.Mutex
	batches [][]Element
	hook    func(ctx context.Context, els []Element) error
	calls   chan []Element // if set, every batch is also sent here
}

func (l *fakeLearner) Learn(ctx context.Context, els []Element) error {
	l.mu.Lock()
	cp := append([]Element(nil), els...)
	l.batches = append(l.batches, cp)
	hook, calls := l.hook, l.calls
	l.mu.Unlock()
	if calls != nil {
		select {
		case calls <- cp:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if hook != nil {
		return hook(ctx, els)
	}
	return nil
}

func (l *fakeLearner) setHook(h func(ctx context.Context, els []Element) error) {
	l.mu.Lock()
	l.hook = h
	l.mu.Unlock()
}

func (l *fakeLearner) all() [][]Element {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]Element(nil), l.batches...)
}

// addrsLearned returns the distinct addresses of every batch, sorted.
func (l *fakeLearner) addrsLearned() []string {
	seen := map[string]bool{}
	var out []string
	for _, b := range l.all() {
		for _, e := range b {
			if s := e.Addr.String(); !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	sortStrings(out)
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// rule is one line of rulePolicy: pattern "name", "*.suffix" (one or more
// labels) or "*" (everything).
type rule struct {
	pattern string
	deny    bool
	grant   Grant
}

type rulePolicy struct {
	mu    sync.Mutex
	rules []rule
	calls [][]string
}

func newPolicy(rules ...rule) *rulePolicy { return &rulePolicy{rules: rules} }

func (p *rulePolicy) Decide(names []string) Decision {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, append([]string(nil), names...))
	var d Decision
	for _, r := range p.rules {
		for _, n := range names {
			if !matchPattern(r.pattern, n) {
				continue
			}
			if r.deny {
				if !d.Deny {
					d.Deny, d.DenyBy = true, r.pattern
				}
			} else {
				g := r.grant
				if g.Rule == "" {
					g.Rule = r.pattern
				}
				d.Allow = append(d.Allow, g)
			}
			break
		}
	}
	return d
}

func (p *rulePolicy) seen() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]string(nil), p.calls...)
}

func matchPattern(pat, name string) bool {
	switch {
	case pat == "*":
		return true
	case strings.HasPrefix(pat, "*."):
		return strings.HasSuffix(name, pat[1:]) && len(name) > len(pat)-1
	}
	return pat == name
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_800_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// ---- the forwarder under test ----

type env struct {
	fwd     *Forwarder
	up      *fakeUpstream
	learner *fakeLearner
	udp     netip.AddrPort // the forwarder's client-facing UDP socket
	tcp     netip.AddrPort // and TCP listener
	ids     atomic.Uint32
}

// start runs a forwarder for cfg against a fresh fake upstream (unless
// cfg names servers) until the test ends. cfg.Learner defaults to a
// fakeLearner, cfg.Log to the test log.
func start(t testing.TB, cfg Config, prep ...func(*Forwarder)) *env {
	t.Helper()
	testutil.LeakCheck(t)
	e := &env{up: newFakeUpstream(t)}
	if cfg.Learner == nil {
		e.learner = &fakeLearner{}
		cfg.Learner = e.learner
	} else if l, ok := cfg.Learner.(*fakeLearner); ok {
		e.learner = l
	}
	if cfg.Log == nil {
		cfg.Log = testutil.Logger(t)
	}
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e.udp = uc.LocalAddr().(*net.UDPAddr).AddrPort()
	e.tcp = tl.Addr().(*net.TCPAddr).AddrPort()
	cfg.UDP = append(cfg.UDP, uc)
	cfg.TCP = append(cfg.TCP, tl)
	if len(cfg.Upstream.Servers) == 0 {
		cfg.Upstream.Servers = []netip.AddrPort{e.up.addr}
	}
	if cfg.Upstream.UDP4 == nil {
		up4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Upstream.UDP4 = up4
	}
	if cfg.Upstream.DialTCP == nil {
		cfg.Upstream.DialTCP = poolDial
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.fwd = f
	for _, p := range prep {
		p(f)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return e
}

// poolDial is an Upstream.DialTCP as the hub wires it: a fresh unconnected
// socket (standing for one of the pool) connected by ConnectFile.
func poolDial(ctx context.Context, s netip.AddrPort) (net.Conn, error) {
	dom := unix.AF_INET
	if s.Addr().Is6() {
		dom = unix.AF_INET6
	}
	fd, err := unix.Socket(dom, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return ConnectFile(ctx, os.NewFile(uintptr(fd), "pool-socket"), s)
}

func (e *env) nextID() uint16 { return uint16(e.ids.Add(1)*7919 + 1) }

// client opens a UDP socket to the forwarder.
func (e *env) client(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(e.udp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg over UDP and returns the reply.
func roundTrip(t testing.TB, c net.Conn, msg []byte) []byte {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	return readReply(t, c)
}

func readReply(t testing.TB, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	return buf[:n]
}

// ask sends a query over UDP and returns the parsed reply, checking its id.
func (e *env) ask(t testing.TB, name string, qtype dnsmessage.Type, opt ...dnsmessage.Resource) dnsmessage.Message {
	t.Helper()
	id := e.nextID()
	m := unpack(t, roundTrip(t, e.client(t), queryMsg(t, id, name, qtype, opt...)))
	if m.Header.ID != id {
		t.Fatalf("reply id %d, want %d", m.Header.ID, id)
	}
	return m
}

// dialTCP connects to the forwarder's TCP listener.
func (e *env) dialTCP(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", e.tcp.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func writeTCP(t testing.TB, c net.Conn, msg []byte) {
	t.Helper()
	if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...)); err != nil {
		t.Fatal(err)
	}
}

func readTCP(c net.Conn) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, b); err != nil {
		return nil, err
	}
	return b, nil
}

// askTCP sends a query over a new TCP connection and returns the reply.
func (e *env) askTCP(t testing.TB, name string, qtype dnsmessage.Type, opt ...dnsmessage.Resource) dnsmessage.Message {
	t.Helper()
	c := e.dialTCP(t)
	id := e.nextID()
	writeTCP(t, c, queryMsg(t, id, name, qtype, opt...))
	b, err := readTCP(c)
	if err != nil {
		t.Fatalf("read tcp reply: %v", err)
	}
	m := unpack(t, b)
	if m.Header.ID != id {
		t.Fatalf("reply id %d, want %d", m.Header.ID, id)
	}
	return m
}

func diffStats(t testing.TB, what string, want, got any) {
	t.Helper()
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("%s (-want +got):\n%s", what, d)
	}
}

var errLearn = errors.New("netlink: permission denied")

func seq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i+1)
	}
	return out
}
