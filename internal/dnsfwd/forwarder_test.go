// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func allowAll() *rulePolicy { return newPolicy(rule{pattern: "*"}) }

func TestUnmatchedPassesUnchanged(t *testing.T) {
	e := start(t, Config{Policy: newPolicy(rule{pattern: "github.com"})})
	e.up.set("example.org", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "example.org", 60, "192.0.2.1", "192.0.2.2")}})

	got := roundTrip(t, e.client(t), queryMsg(t, 0x1234, "example.org", dnsmessage.TypeA))
	want := bytes.Clone(e.up.lastSent())
	binary.BigEndian.PutUint16(want, 0x1234)
	if !bytes.Equal(got, want) {
		t.Fatalf("reply differs from upstream's answer with the client's id:\n got %x\nwant %x", got, want)
	}
	if b := e.learner.all(); len(b) != 0 {
		t.Errorf("learned %v for an unmatched name", b)
	}
	if diff := cmp.Diff([]string{"example.org"}, e.fwd.Names(netip.MustParseAddr("192.0.2.2"))); diff != "" {
		t.Errorf("Names (-want +got):\n%s", diff)
	}
	st := e.fwd.Stats()
	diffStats(t, "counters", [4]uint64{1, 1, 1, 0}, [4]uint64{st.QueriesUDP, st.Forwarded, st.Answers, st.Held})
}

func TestAnswerHeldUntilLearned(t *testing.T) {
	entered := make(chan []Element, 1)
	release := make(chan struct{})
	var returned atomic.Bool
	l := &fakeLearner{hook: func(ctx context.Context, els []Element) error {
		entered <- els
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		returned.Store(true)
		return nil
	}}
	e := start(t, Config{
		Policy:  newPolicy(rule{pattern: "*.github.com", grant: Grant{Rule: "*.github.com:443/tcp", Proto: 6, Port: 443}}),
		Learner: l,
		HoldMax: time.Minute,
	})
	e.up.set("api.github.com", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "api.github.com", 60, "140.82.112.5")}})

	c := e.client(t)
	type result struct {
		learnReturned bool
		reply         []byte
		err           error
	}
	got := make(chan result, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		got <- result{returned.Load(), buf[:n], err}
	}()
	if _, err := c.Write(queryMsg(t, 7, "api.github.com", dnsmessage.TypeA)); err != nil {
		t.Fatal(err)
	}
	els := <-entered
	// A correct forwarder sends nothing until Learn returns, whatever the
	// wait; the grace period only gives a wrong one time to show itself.
	select {
	case r := <-got:
		t.Fatalf("answer %x reached the client while Learn was running", r.reply)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.learnReturned {
		t.Fatal("answer reached the client before Learn returned")
	}
	if got := answerAddrs(unpack(t, r.reply)); !cmp.Equal(got, []string{"140.82.112.5"}) {
		t.Errorf("answer addresses %v", got)
	}
	want := []Element{{Addr: netip.MustParseAddr("140.82.112.5"), Proto: 6, Port: 443, Timeout: DefaultMinTTL,
		Name: "api.github.com", Rule: "*.github.com:443/tcp"}}
	if diff := cmp.Diff(want, els, addrCmp); diff != "" {
		t.Errorf("learned (-want +got):\n%s", diff)
	}
	if st := e.fwd.Stats(); st.Held != 1 || st.Learned != 1 {
		t.Errorf("held %d learned %d, want 1 1", st.Held, st.Learned)
	}
}

func TestHoldTimeoutServfail(t *testing.T) {
	l := &fakeLearner{hook: func(ctx context.Context, els []Element) error {
		<-ctx.Done()
		return ctx.Err()
	}}
	timeouts := make(chan string, 1)
	learnDone := make(chan error, 2)
	e := start(t, Config{
		Policy:        newPolicy(rule{pattern: "github.com"}),
		Learner:       l,
		HoldMax:       50 * time.Millisecond,
		OnHoldTimeout: func(name string) { timeouts <- name },
	}, func(f *Forwarder) { f.learnDone = func(err error) { learnDone <- err } })
	e.up.set("github.com", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "github.com", 60, "140.82.121.3")}})

	m := e.ask(t, "GitHub.com", dnsmessage.TypeA)
	if m.Header.RCode != dnsmessage.RCodeServerFailure || len(m.Answers) != 0 {
		t.Fatalf("reply %v with %d answers, want SERVFAIL and none", m.Header.RCode, len(m.Answers))
	}
	if len(m.Questions) != 1 || m.Questions[0].Name.String() != "GitHub.com." {
		t.Errorf("questions %v, want the client's", m.Questions)
	}
	if name := <-timeouts; name != "github.com" {
		t.Errorf("OnHoldTimeout(%q), want github.com", name)
	}
	if err := <-learnDone; err == nil {
		t.Error("the timed-out Learn succeeded")
	}
	if st := e.fwd.Stats(); st.HoldTimeouts != 1 || st.LearnErrors != 1 || st.Learned != 0 {
		t.Errorf("hold timeouts %d learn errors %d learned %d, want 1 1 0", st.HoldTimeouts, st.LearnErrors, st.Learned)
	}

	// Not considered learned: the next answer is learned again.
	l.setHook(nil)
	if m := e.ask(t, "github.com", dnsmessage.TypeA); m.Header.RCode != dnsmessage.RCodeSuccess {
		t.Fatalf("second reply %v", m.Header.RCode)
	}
	if n := len(l.all()); n != 2 {
		t.Errorf("%d Learn calls, want 2", n)
	}
}

func TestLearnErrorServfail(t *testing.T) {
	l := &fakeLearner{hook: func(context.Context, []Element) error { return errLearn }}
	e := start(t, Config{Policy: newPolicy(rule{pattern: "github.com"}), Learner: l})
	e.up.set("github.com", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "github.com", 60, "140.82.121.3")}})
	if m := e.ask(t, "github.com", dnsmessage.TypeA); m.Header.RCode != dnsmessage.RCodeServerFailure {
		t.Fatalf("reply %v, want SERVFAIL", m.Header.RCode)
	}
	if st := e.fwd.Stats(); st.LearnErrors != 1 || st.HoldTimeouts != 0 {
		t.Errorf("learn errors %d hold timeouts %d, want 1 0", st.LearnErrors, st.HoldTimeouts)
	}
	if got := e.fwd.Names(netip.MustParseAddr("140.82.121.3")); got != nil {
		t.Errorf("Names of an address never released: %v", got)
	}
}

func TestLearnedReleasedAtOnce(t *testing.T) {
	e := start(t, Config{Policy: newPolicy(rule{pattern: "github.com"})})
	e.up.set("github.com", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "github.com", 60, "140.82.121.3", "140.82.121.4")}})
	e.ask(t, "github.com", dnsmessage.TypeA)
	e.learner.setHook(func(ctx context.Context, els []Element) error {
		t.Errorf("Learn(%v) for elements learned a moment ago", els)
		return nil
	})
	if m := e.ask(t, "github.com", dnsmessage.TypeA); len(m.Answers) != 2 {
		t.Fatalf("second reply has %d answers", len(m.Answers))
	}
	if st := e.fwd.Stats(); st.Held != 1 || st.Refreshes != 0 {
		t.Errorf("held %d refreshes %d, want 1 0", st.Held, st.Refreshes)
	}
}

func TestConcurrentAnswersShareOneLearn(t *testing.T) {
	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	l := &fakeLearner{hook: func(ctx context.Context, els []Element) error {
		entered <- struct{}{}
		<-release
		return nil
	}}
	e := start(t, Config{Policy: newPolicy(rule{pattern: "github.com"}), Learner: l, HoldMax: time.Minute})
	e.up.set("github.com", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "github.com", 60, "140.82.121.3")}})
	c1, c2 := e.client(t), e.client(t)
	c1.Write(queryMsg(t, 1, "github.com", dnsmessage.TypeA))
	<-entered
	c2.Write(queryMsg(t, 2, "github.com", dnsmessage.TypeA))
	// The second answer joins the Learn in flight; once it is held, the
	// forwarder has two answers held and one Learn call.
	testutil.Eventually(t, 10*time.Second, "condition", func() bool { return e.fwd.Stats().Held == 2 })
	close(release)
	for _, c := range []net.Conn{c1, c2} {
		if m := unpack(t, readReply(t, c)); m.Header.RCode != dnsmessage.RCodeSuccess {
			t.Errorf("reply %v", m.Header.RCode)
		}
	}
	if n := len(l.all()); n != 1 {
		t.Errorf("%d Learn calls, want 1", n)
	}
}

func TestRefresh(t *testing.T) {
	clk := newClock()
	calls := make(chan []Element, 4)
	l := &fakeLearner{calls: calls}
	learned := make(chan []Element, 4)
	e := start(t, Config{
		Policy:    newPolicy(rule{pattern: "github.com"}),
		Learner:   l,
		Now:       clk.Now,
		OnLearned: func(els []Element) { learned <- els },
	})
	e.up.set("github.com", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "github.com", 60, "140.82.121.3")}})

	e.ask(t, "github.com", dnsmessage.TypeA)
	<-calls
	<-learned

	// 2 min left of 5: under half, over HoldMargin: released at once,
	// refreshed in the background (which blocks until released here).
	clk.Add(3 * time.Minute)
	release := make(chan struct{})
	l.setHook(func(ctx context.Context, els []Element) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if m := e.ask(t, "github.com", dnsmessage.TypeA); m.Header.RCode != dnsmessage.RCodeSuccess {
		t.Fatalf("reply %v", m.Header.RCode)
	}
	refresh := <-calls
	if len(refresh) != 1 || refresh[0].Timeout != DefaultMinTTL {
		t.Errorf("refresh batch %v", refresh)
	}
	close(release)
	<-learned
	l.setHook(nil)

	// The refresh (at +3 min) lasts until +8 min; at +7m40s 20 s are
	// left, under HoldMargin: held.
	clk.Add(4*time.Minute + 40*time.Second)
	e.ask(t, "github.com", dnsmessage.TypeA)
	<-calls
	if st := e.fwd.Stats(); st.Held != 2 || st.Refreshes != 1 {
		t.Errorf("held %d refreshes %d, want 2 1", st.Held, st.Refreshes)
	}
}

func TestElements(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	addr := netip.MustParseAddr
	const q = "www.example.com"
	tests := []struct {
		name    string
		rules   []rule
		qtype   dnsmessage.Type
		answer  []dnsmessage.Resource
		maxTTL  time.Duration
		want    []Element
		wantErr bool
	}{
		{
			name:   "short TTL is raised to MinTTL, proto and port come from the grant",
			rules:  []rule{{pattern: q, grant: Grant{Rule: "r", Proto: 6, Port: 443}}},
			answer: rrA(t, q, 60, "192.0.2.1"),
			want:   []Element{{Addr: addr("192.0.2.1"), Proto: 6, Port: 443, Timeout: 5 * time.Minute, Name: q, Rule: "r"}},
		},
		{
			name:   "long TTL is kept",
			rules:  []rule{{pattern: q}},
			answer: rrA(t, q, 3600, "192.0.2.1"),
			want:   []Element{{Addr: addr("192.0.2.1"), Timeout: time.Hour, Name: q, Rule: q}},
		},
		{
			name:   "MaxTTL caps a huge TTL",
			rules:  []rule{{pattern: q}},
			answer: rrA(t, q, 1<<31-1, "192.0.2.1"),
			maxTTL: 2 * time.Hour,
			want:   []Element{{Addr: addr("192.0.2.1"), Timeout: 2 * time.Hour, Name: q, Rule: q}},
		},
		{
			name:   "the grant's Until caps the timeout",
			rules:  []rule{{pattern: q, grant: Grant{Until: now.Add(90 * time.Second)}}},
			answer: rrA(t, q, 3600, "192.0.2.1"),
			want:   []Element{{Addr: addr("192.0.2.1"), Timeout: 90 * time.Second, Name: q, Rule: q}},
		},
		{
			name:   "an expired grant learns nothing",
			rules:  []rule{{pattern: q, grant: Grant{Until: now.Add(-time.Second)}}},
			answer: rrA(t, q, 3600, "192.0.2.1"),
		},
		{
			name: "one element per address, proto and port: the longest timeout wins",
			rules: []rule{
				{pattern: q, grant: Grant{Rule: "timed", Until: now.Add(time.Minute)}},
				{pattern: "*.example.com", grant: Grant{Rule: "policy"}},
				{pattern: "www.*", grant: Grant{Rule: "dns", Proto: 17, Port: 53}},
			},
			answer: rrA(t, q, 60, "192.0.2.1", "192.0.2.2"),
			want: []Element{
				{Addr: addr("192.0.2.1"), Timeout: 5 * time.Minute, Name: q, Rule: "policy"},
				{Addr: addr("192.0.2.2"), Timeout: 5 * time.Minute, Name: q, Rule: "policy"},
			},
		},
		{
			name:   "two ports, two elements per address",
			rules:  []rule{{pattern: q, grant: Grant{Rule: "https", Proto: 6, Port: 443}}, {pattern: "*.example.com", grant: Grant{Rule: "quic", Proto: 17, Port: 443}}},
			answer: rrA(t, q, 60, "192.0.2.1"),
			want: []Element{
				{Addr: addr("192.0.2.1"), Proto: 6, Port: 443, Timeout: 5 * time.Minute, Name: q, Rule: "https"},
				{Addr: addr("192.0.2.1"), Proto: 17, Port: 443, Timeout: 5 * time.Minute, Name: q, Rule: "quic"},
			},
		},
		{
			name:  "the smallest TTL on the chain",
			rules: []rule{{pattern: q}},
			answer: concat([]dnsmessage.Resource{rrCNAME(t, q, "edge.cdn.test", 400)},
				rrA(t, "edge.cdn.test", 7200, "198.51.100.7")),
			want: []Element{{Addr: addr("198.51.100.7"), Timeout: 400 * time.Second, Name: q, Rule: q}},
		},
		{
			name:   "AAAA only",
			rules:  []rule{{pattern: q}},
			qtype:  dnsmessage.TypeAAAA,
			answer: rrA(t, q, 600, "2001:db8::1", "2001:db8::2"),
			want: []Element{
				{Addr: addr("2001:db8::1"), Timeout: 10 * time.Minute, Name: q, Rule: q},
				{Addr: addr("2001:db8::2"), Timeout: 10 * time.Minute, Name: q, Rule: q},
			},
		},
		{
			name:   "a 4-in-6 mapped AAAA is learned as IPv4",
			rules:  []rule{{pattern: q}},
			qtype:  dnsmessage.TypeAAAA,
			answer: rrA(t, q, 600, "::ffff:192.0.2.9"),
			want:   []Element{{Addr: addr("192.0.2.9"), Timeout: 10 * time.Minute, Name: q, Rule: q}},
		},
		{
			name:   "an unspecified address is not learned",
			rules:  []rule{{pattern: q}},
			answer: rrA(t, q, 600, "0.0.0.0", "192.0.2.3"),
			want:   []Element{{Addr: addr("192.0.2.3"), Timeout: 10 * time.Minute, Name: q, Rule: q}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, Config{Policy: newPolicy(tt.rules...), Now: clk.Now, MaxTTL: tt.maxTTL})
			e.up.set(q, &fakeName{sets: [][]dnsmessage.Resource{tt.answer}})
			qtype := tt.qtype
			if qtype == 0 {
				qtype = dnsmessage.TypeA
			}
			if m := e.ask(t, q, qtype); m.Header.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != len(tt.answer) {
				t.Fatalf("reply %v with %d answers", m.Header.RCode, len(m.Answers))
			}
			var got []Element
			for _, b := range e.learner.all() {
				got = append(got, b...)
			}
			if diff := cmp.Diff(tt.want, got, addrCmp); diff != "" {
				t.Errorf("learned (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDeny(t *testing.T) {
	answer := concat([]dnsmessage.Resource{rrCNAME(t, "cdn.example.org", "t.tracker.test", 60)},
		rrA(t, "t.tracker.test", 60, "203.0.113.9"))
	tests := []struct {
		name       string
		mode       DenyMode
		qname      string
		rules      []rule
		wantRCode  dnsmessage.RCode
		wantPass   bool // the answer passes unchanged
		wantAsked  bool // upstream was asked
		wantReport string
	}{
		{
			name: "nxdomain for a denied question, upstream not asked", mode: DenyNXDomain, qname: "ads.example.org",
			rules:     []rule{{pattern: "*.example.org"}, {pattern: "ads.example.org", deny: true}},
			wantRCode: dnsmessage.RCodeNameError, wantReport: "ads.example.org",
		},
		{
			name: "refused for a denied question", mode: DenyRefused, qname: "ads.example.org",
			rules:     []rule{{pattern: "ads.example.org", deny: true}},
			wantRCode: dnsmessage.RCodeRefused, wantReport: "ads.example.org",
		},
		{
			name: "pass-and-drop forwards, reports, learns nothing", mode: DenyPassAndDrop, qname: "ads.example.org",
			rules:     []rule{{pattern: "*.example.org"}, {pattern: "ads.example.org", deny: true}},
			wantRCode: dnsmessage.RCodeSuccess, wantPass: true, wantAsked: true, wantReport: "ads.example.org",
		},
		{
			name: "nxdomain for a denied cname target, even if the question is allowed", mode: DenyNXDomain, qname: "cdn.example.org",
			rules:     []rule{{pattern: "cdn.example.org"}, {pattern: "*.tracker.test", deny: true}},
			wantRCode: dnsmessage.RCodeNameError, wantAsked: true, wantReport: "*.tracker.test",
		},
		{
			name: "refused for a denied cname target", mode: DenyRefused, qname: "cdn.example.org",
			rules:     []rule{{pattern: "*.tracker.test", deny: true}},
			wantRCode: dnsmessage.RCodeRefused, wantAsked: true, wantReport: "*.tracker.test",
		},
		{
			name: "pass-and-drop for a denied cname target", mode: DenyPassAndDrop, qname: "cdn.example.org",
			rules:     []rule{{pattern: "cdn.example.org"}, {pattern: "*.tracker.test", deny: true}},
			wantRCode: dnsmessage.RCodeSuccess, wantPass: true, wantAsked: true, wantReport: "*.tracker.test",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type report struct {
				Name  string
				QType uint16
				Rule  string
			}
			var (
				mu      sync.Mutex
				reports []report
			)
			e := start(t, Config{
				Policy:   newPolicy(tt.rules...),
				DenyMode: tt.mode,
				OnDenied: func(name string, qtype uint16, rule string) {
					mu.Lock()
					reports = append(reports, report{name, qtype, rule})
					mu.Unlock()
				},
			})
			e.up.set("ads.example.org", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "ads.example.org", 60, "203.0.113.8")}})
			e.up.set("cdn.example.org", &fakeName{sets: [][]dnsmessage.Resource{answer}})

			c := e.client(t)
			reply := roundTrip(t, c, queryMsg(t, 99, tt.qname, dnsmessage.TypeA, ednsOpt(1232)))
			m := unpack(t, reply)
			if m.Header.RCode != tt.wantRCode || m.Header.ID != 99 {
				t.Fatalf("reply rcode %v id %d, want %v 99", m.Header.RCode, m.Header.ID, tt.wantRCode)
			}
			if asked := len(e.up.queries()) > 0; asked != tt.wantAsked {
				t.Errorf("upstream asked: %v, want %v", asked, tt.wantAsked)
			}
			if tt.wantPass {
				want := bytes.Clone(e.up.lastSent())
				binary.BigEndian.PutUint16(want, 99)
				if !bytes.Equal(reply, want) {
					t.Errorf("pass-and-drop changed the answer:\n got %x\nwant %x", reply, want)
				}
			} else {
				if len(m.Answers) != 0 || len(m.Authorities) != 0 {
					t.Errorf("denial carries %d answers, %d authorities", len(m.Answers), len(m.Authorities))
				}
				if len(m.Questions) != 1 || m.Questions[0].Name.String() != tt.qname+"." {
					t.Errorf("questions %v, want %s", m.Questions, tt.qname)
				}
				if len(m.Additionals) != 1 || m.Additionals[0].Header.Type != dnsmessage.TypeOPT {
					t.Errorf("additionals %v, want the OPT", m.Additionals)
				}
			}
			if b := e.learner.all(); len(b) != 0 {
				t.Errorf("learned %v for a denied name", b)
			}
			mu.Lock()
			defer mu.Unlock()
			if diff := cmp.Diff([]report{{tt.qname, 1, tt.wantReport}}, reports); diff != "" {
				t.Errorf("OnDenied (-want +got):\n%s", diff)
			}
			if st := e.fwd.Stats(); st.Denied != 1 {
				t.Errorf("denied %d, want 1", st.Denied)
			}
		})
	}
}

func TestOutOfChainRecordsNeverLearned(t *testing.T) {
	const q = "www.example.com"
	answer := concat(
		rrA(t, "other.test", 60, "203.0.113.66"), // before the chain, not in it
		[]dnsmessage.Resource{rrCNAME(t, q, "edge.cdn.test", 60)},
		rrA(t, q, 60, "203.0.113.77"), // owned by a link that has a CNAME: not the end
		rrA(t, "edge.cdn.test", 60, "198.51.100.7"),
		[]dnsmessage.Resource{rrCNAME(t, "unrelated.test", "edge.cdn.test", 60)},
	)
	glue := rrA(t, "ns.cdn.test", 60, "203.0.113.88")
	tests := []struct {
		name  string
		rules []rule
	}{
		{"allowed by the question", []rule{{pattern: q}}},
		{"allowed by the cname target", []rule{{pattern: "*.cdn.test"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPolicy(tt.rules...)
			e := start(t, Config{Policy: p})
			e.up.set(q, &fakeName{sets: [][]dnsmessage.Resource{answer}, additional: glue})
			m := e.ask(t, q, dnsmessage.TypeA)
			if len(m.Answers) != len(answer) || len(m.Additionals) != 1 {
				t.Fatalf("reply has %d answers %d additionals: sections dropped", len(m.Answers), len(m.Additionals))
			}
			if diff := cmp.Diff([]string{"198.51.100.7"}, e.learner.addrsLearned()); diff != "" {
				t.Errorf("learned (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([][]string{{q}, {q, "edge.cdn.test"}}, p.seen()); diff != "" {
				t.Errorf("policy asked (-want +got):\n%s", diff)
			}
			for _, a := range []string{"203.0.113.66", "203.0.113.77", "203.0.113.88"} {
				if n := e.fwd.Names(netip.MustParseAddr(a)); n != nil {
					t.Errorf("Names(%s) = %v", a, n)
				}
			}
			if diff := cmp.Diff([]string{q}, e.fwd.Names(netip.MustParseAddr("198.51.100.7"))); diff != "" {
				t.Errorf("Names (-want +got):\n%s", diff)
			}
		})
	}
}

// rawAnswer packs a reply to q with the given answer records, then lets
// edit change the bytes.
func rawAnswer(tb testing.TB, answers []dnsmessage.Resource, edit func([]byte) []byte) func(dnsmessage.Question) []byte {
	return func(q dnsmessage.Question) []byte {
		m := dnsmessage.Message{Header: dnsmessage.Header{Response: true, RecursionAvailable: true},
			Questions: []dnsmessage.Question{q}, Answers: answers}
		b, err := m.Pack()
		if err != nil {
			tb.Errorf("pack: %v", err)
			return nil
		}
		if edit != nil {
			b = edit(b)
		}
		return b
	}
}

func TestMalformedAnswersServfail(t *testing.T) {
	const q = "www.example.com"
	long := []dnsmessage.Resource{rrCNAME(t, q, "l1.test", 60)}
	for i := 1; i < maxChain; i++ {
		long = append(long, rrCNAME(t, seq("l", maxChain)[i-1]+".test", seq("l", maxChain)[i]+".test", 60))
	}
	long = append(long, rrA(t, seq("l", maxChain)[maxChain-1]+".test", 60, "192.0.2.1")...)
	badA := dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: mustName(t, q), Class: dnsmessage.ClassINET, TTL: 60},
		Body:   &dnsmessage.UnknownResource{Type: dnsmessage.TypeA, Data: []byte{192, 0, 2, 1, 192, 0, 2, 2}},
	}
	tests := []struct {
		name    string
		answers []dnsmessage.Resource
		edit    func([]byte) []byte
	}{
		{"cname loop", concat([]dnsmessage.Resource{rrCNAME(t, q, "a.test", 60), rrCNAME(t, "a.test", q, 60)}, rrA(t, "a.test", 60, "192.0.2.1")), nil},
		{"cname fork", concat([]dnsmessage.Resource{rrCNAME(t, q, "a.test", 60), rrCNAME(t, q, "b.test", 60)}, rrA(t, "a.test", 60, "192.0.2.1"), rrA(t, "b.test", 60, "192.0.2.2")), nil},
		{"chain too long", long, nil},
		{"A record of 8 bytes", []dnsmessage.Resource{badA}, nil},
		{"cut inside a record", rrA(t, q, 60, "192.0.2.1", "192.0.2.2"), func(b []byte) []byte { return b[:len(b)-3] }},
		{"answer count beyond the records", rrA(t, q, 60, "192.0.2.1"), func(b []byte) []byte { b[7]++; return b }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, Config{Policy: allowAll()})
			e.up.set(q, &fakeName{raw: rawAnswer(t, tt.answers, tt.edit)})
			if m := e.ask(t, q, dnsmessage.TypeA); m.Header.RCode != dnsmessage.RCodeServerFailure || len(m.Answers) != 0 {
				t.Fatalf("reply %v with %d answers, want SERVFAIL", m.Header.RCode, len(m.Answers))
			}
			if got := e.learner.addrsLearned(); got != nil {
				t.Errorf("learned %v from a malformed answer", got)
			}
			if st := e.fwd.Stats(); st.Malformed != 1 {
				t.Errorf("malformed %d, want 1", st.Malformed)
			}
		})
	}
}

func TestQuestionCaseCanonicalised(t *testing.T) {
	p := newPolicy(rule{pattern: "www.github.com"})
	e := start(t, Config{Policy: p})
	e.up.set("www.github.com", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "www.github.com", 60, "140.82.121.3")}})
	m := e.ask(t, "wWw.GiThUb.CoM", dnsmessage.TypeA)
	if got := m.Questions[0].Name.String(); got != "wWw.GiThUb.CoM." {
		t.Errorf("reply question %q, want the client's case", got)
	}
	if diff := cmp.Diff([][]string{{"www.github.com"}}, p.seen()); diff != "" {
		t.Errorf("policy asked (-want +got):\n%s", diff)
	}
	if b := e.learner.all(); len(b) != 1 || b[0][0].Name != "www.github.com" {
		t.Errorf("learned %v", b)
	}
	if diff := cmp.Diff([]string{"www.github.com"}, e.fwd.Names(netip.MustParseAddr("140.82.121.3"))); diff != "" {
		t.Errorf("Names (-want +got):\n%s", diff)
	}
}

func TestQueryValidation(t *testing.T) {
	pack := func(m dnsmessage.Message) []byte {
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	qn := func(name string, typ dnsmessage.Type) dnsmessage.Question {
		return dnsmessage.Question{Name: mustName(t, name), Type: typ, Class: dnsmessage.ClassINET}
	}
	opt := ednsOpt(1232)
	tests := []struct {
		name      string
		msg       []byte
		wantRCode dnsmessage.RCode
		noReply   bool
	}{
		{"two questions", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 5}, Questions: []dnsmessage.Question{qn("a.test", dnsmessage.TypeA), qn("b.test", dnsmessage.TypeA)}}), dnsmessage.RCodeFormatError, false},
		{"no question", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 5}}), dnsmessage.RCodeFormatError, false},
		{"opcode STATUS", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 5, OpCode: 2}, Questions: []dnsmessage.Question{qn("a.test", dnsmessage.TypeA)}}), dnsmessage.RCodeNotImplemented, false},
		{"opcode UPDATE", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 5, OpCode: 5}, Questions: []dnsmessage.Question{qn("a.test", dnsmessage.TypeSOA)}}), dnsmessage.RCodeNotImplemented, false},
		{"zone transfer", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 5}, Questions: []dnsmessage.Question{qn("a.test", dnsmessage.TypeAXFR)}}), dnsmessage.RCodeNotImplemented, false},
		{"two OPT records", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 5}, Questions: []dnsmessage.Question{qn("a.test", dnsmessage.TypeA)}, Additionals: []dnsmessage.Resource{opt, opt}}), dnsmessage.RCodeFormatError, false},
		{"question cut short", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 5}, Questions: []dnsmessage.Question{qn("a.test", dnsmessage.TypeA)}})[:16], dnsmessage.RCodeFormatError, false},
		{"a response", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 5, Response: true}, Questions: []dnsmessage.Question{qn("a.test", dnsmessage.TypeA)}}), 0, true},
		{"shorter than a header", []byte{0, 5, 1, 0, 0}, 0, true},
		{"empty", nil, 0, true},
	}
	e := start(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.client(t)
			if _, err := c.Write(tt.msg); err != nil {
				t.Fatal(err)
			}
			// A good query behind it: its reply comes first if the bad
			// message got none.
			good := queryMsg(t, 6, "ok.test", dnsmessage.TypeA)
			if tt.noReply {
				c.Write(good)
			}
			m := unpack(t, readReply(t, c))
			if tt.noReply {
				if m.Header.ID != 6 {
					t.Fatalf("got a reply with id %d to a message that deserves none", m.Header.ID)
				}
				return
			}
			if m.Header.ID != 5 || !m.Header.Response || m.Header.RCode != tt.wantRCode {
				t.Fatalf("reply id %d rcode %v, want 5 %v", m.Header.ID, m.Header.RCode, tt.wantRCode)
			}
		})
	}
	for _, q := range e.up.queries() {
		if q.Name != "ok.test" {
			t.Errorf("upstream asked for %q", q.Name)
		}
	}
}

func TestEDNSKept(t *testing.T) {
	e := start(t, Config{})
	e.up.set("a.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "a.test", 60, "192.0.2.1")}})
	cookie := dnsmessage.Option{Code: 10, Data: []byte("client88")}
	tests := []struct {
		name     string
		size     int
		wantSize int
	}{
		{"size kept", 1232, 1232},
		{"size clamped", 65000, MaxUDPSize},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := e.ask(t, "a.test", dnsmessage.TypeA, ednsOpt(tt.size, cookie))
			seen := e.up.queries()[i]
			if seen.EDNS != tt.wantSize {
				t.Errorf("upstream saw EDNS size %d, want %d", seen.EDNS, tt.wantSize)
			}
			if diff := cmp.Diff([]dnsmessage.Option{cookie}, seen.Options); diff != "" {
				t.Errorf("upstream saw options (-want +got):\n%s", diff)
			}
			if len(m.Additionals) != 1 || m.Additionals[0].Header.Type != dnsmessage.TypeOPT {
				t.Fatalf("reply additionals %v", m.Additionals)
			}
			want := []dnsmessage.Option{{Code: 10, Data: []byte("client88servercookie")}}
			if diff := cmp.Diff(want, m.Additionals[0].Body.(*dnsmessage.OPTResource).Options); diff != "" {
				t.Errorf("reply options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTruncated(t *testing.T) {
	const q = "big.example"
	hundred := make([]string, 100)
	for i := range hundred {
		hundred[i] = netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}).String()
	}
	e := start(t, Config{Policy: newPolicy(rule{pattern: q})})
	e.up.set(q, &fakeName{sets: [][]dnsmessage.Resource{rrA(t, q, 60, hundred...)}})

	t.Run("udp client gets the truncated answer as it is", func(t *testing.T) {
		reply := roundTrip(t, e.client(t), queryMsg(t, 3, q, dnsmessage.TypeA))
		want := bytes.Clone(e.up.lastSent())
		binary.BigEndian.PutUint16(want, 3)
		if !bytes.Equal(reply, want) {
			t.Errorf("reply %x, want upstream's %x", reply, want)
		}
		if m := unpack(t, reply); !m.Header.Truncated || len(m.Answers) != 0 {
			t.Errorf("reply TC %v with %d answers", m.Header.Truncated, len(m.Answers))
		}
		if got := e.learner.addrsLearned(); got != nil {
			t.Errorf("learned %v from a truncated answer without records", got)
		}
	})
	t.Run("tcp client gets all of it over tcp, learned", func(t *testing.T) {
		m := e.askTCP(t, q, dnsmessage.TypeA)
		if len(m.Answers) != 100 || m.Header.Truncated {
			t.Fatalf("reply TC %v with %d answers", m.Header.Truncated, len(m.Answers))
		}
		qs := e.up.queries()
		if !qs[len(qs)-1].TCP {
			t.Error("upstream was not asked over tcp")
		}
		want := append([]string(nil), hundred...)
		sortStrings(want)
		if diff := cmp.Diff(want, e.learner.addrsLearned()); diff != "" {
			t.Errorf("learned (-want +got):\n%s", diff)
		}
		if n := len(e.learner.all()); n != 1 {
			t.Errorf("%d Learn calls for one answer, want 1", n)
		}
	})
	t.Run("udp client with EDNS gets all of it", func(t *testing.T) {
		if m := e.ask(t, q, dnsmessage.TypeA, ednsOpt(4096)); len(m.Answers) != 100 {
			t.Fatalf("%d answers", len(m.Answers))
		}
	})
	if st := e.fwd.Stats(); st.UpstreamTCP != 1 {
		t.Errorf("upstream tcp %d, want 1", st.UpstreamTCP)
	}
}

func TestSpoofedRepliesDropped(t *testing.T) {
	e := start(t, Config{Policy: allowAll()})
	e.up.set("a.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "a.test", 60, "192.0.2.10")}, spoof: true})
	m := e.ask(t, "a.test", dnsmessage.TypeA)
	if diff := cmp.Diff([]string{"192.0.2.10"}, answerAddrs(m)); diff != "" {
		t.Fatalf("answer (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"192.0.2.10"}, e.learner.addrsLearned()); diff != "" {
		t.Errorf("learned (-want +got):\n%s", diff)
	}
	if st := e.fwd.Stats(); st.Spoofed != 3 {
		t.Errorf("spoofed %d, want 3 (wrong id, wrong source, wrong question)", st.Spoofed)
	}
}

func TestUpstreamFailover(t *testing.T) {
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	deaf := silent.LocalAddr().(*net.UDPAddr).AddrPort()

	t.Run("the next server answers", func(t *testing.T) {
		up := newFakeUpstream(t)
		up.set("a.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "a.test", 60, "192.0.2.1")}})
		// No cache: the second query must go upstream too.
		e := start(t, Config{Upstream: Upstream{Servers: []netip.AddrPort{deaf, up.addr}, AttemptTimeout: 250 * time.Millisecond},
			CacheEntries: -1})
		if m := e.ask(t, "a.test", dnsmessage.TypeA); len(m.Answers) != 1 {
			t.Fatalf("reply %v with %d answers", m.Header.RCode, len(m.Answers))
		}
		// The deaf server is passed over from now on.
		if m := e.ask(t, "a.test", dnsmessage.TypeA); len(m.Answers) != 1 {
			t.Fatalf("reply %v with %d answers", m.Header.RCode, len(m.Answers))
		}
		if st := e.fwd.Stats(); st.UpstreamTimeouts != 1 || st.UpstreamFailures != 0 {
			t.Errorf("upstream timeouts %d failures %d, want 1 0", st.UpstreamTimeouts, st.UpstreamFailures)
		}
	})
	t.Run("servfail when every attempt fails", func(t *testing.T) {
		e := start(t, Config{Upstream: Upstream{AttemptTimeout: 20 * time.Millisecond, Attempts: 2}})
		e.up.set("a.test", &fakeName{silent: true})
		if m := e.ask(t, "a.test", dnsmessage.TypeA); m.Header.RCode != dnsmessage.RCodeServerFailure {
			t.Fatalf("reply %v", m.Header.RCode)
		}
		if st := e.fwd.Stats(); st.UpstreamTimeouts != 2 || st.UpstreamFailures != 1 {
			t.Errorf("upstream timeouts %d failures %d, want 2 1", st.UpstreamTimeouts, st.UpstreamFailures)
		}
	})
	t.Run("an upstream SERVFAIL passes through", func(t *testing.T) {
		e := start(t, Config{Policy: allowAll()})
		e.up.set("a.test", &fakeName{rcode: dnsmessage.RCodeServerFailure})
		reply := roundTrip(t, e.client(t), queryMsg(t, 8, "a.test", dnsmessage.TypeA))
		want := bytes.Clone(e.up.lastSent())
		binary.BigEndian.PutUint16(want, 8)
		if !bytes.Equal(reply, want) {
			t.Errorf("reply %x, want upstream's %x", reply, want)
		}
		if st := e.fwd.Stats(); st.UpstreamFailures != 0 {
			t.Errorf("upstream failures %d", st.UpstreamFailures)
		}
	})
}

func TestTCPClient(t *testing.T) {
	t.Run("pipelined queries on one connection", func(t *testing.T) {
		e := start(t, Config{Policy: allowAll(), MaxTCPPipeline: 2})
		names := seq("n", 6)
		for i, n := range names {
			e.up.set(n+".test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, n+".test", 60, netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}).String())}})
		}
		c := e.dialTCP(t)
		var all []byte
		for i, n := range names {
			q := queryMsg(t, uint16(100+i), n+".test", dnsmessage.TypeA)
			all = append(all, binary.BigEndian.AppendUint16(nil, uint16(len(q)))...)
			all = append(all, q...)
		}
		if _, err := c.Write(all); err != nil {
			t.Fatal(err)
		}
		got := map[uint16]string{}
		for range names {
			b, err := readTCP(c)
			if err != nil {
				t.Fatal(err)
			}
			m := unpack(t, b)
			got[m.Header.ID] = answerAddrs(m)[0]
		}
		want := map[uint16]string{}
		for i := range names {
			want[uint16(100+i)] = netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}).String()
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("answers by id (-want +got):\n%s", diff)
		}
		if st := e.fwd.Stats(); st.QueriesTCP != 6 {
			t.Errorf("tcp queries %d", st.QueriesTCP)
		}
	})
	t.Run("idle connection closed", func(t *testing.T) {
		e := start(t, Config{TCPIdleTimeout: 50 * time.Millisecond})
		c := e.dialTCP(t)
		if _, err := readTCP(c); !errors.Is(err, io.EOF) {
			t.Fatalf("read on an idle connection: %v, want EOF", err)
		}
	})
	t.Run("connection over the cap closed at once", func(t *testing.T) {
		e := start(t, Config{MaxTCPConns: 1})
		e.up.set("a.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "a.test", 60, "192.0.2.1")}})
		c1 := e.dialTCP(t)
		writeTCP(t, c1, queryMsg(t, 1, "a.test", dnsmessage.TypeA))
		if _, err := readTCP(c1); err != nil {
			t.Fatal(err)
		}
		c2 := e.dialTCP(t)
		if _, err := readTCP(c2); !errors.Is(err, io.EOF) {
			t.Fatalf("read on the connection over the cap: %v, want EOF", err)
		}
		if st := e.fwd.Stats(); st.RefusedOverload != 1 || st.TCPConns != 1 {
			t.Errorf("refused %d open %d, want 1 1", st.RefusedOverload, st.TCPConns)
		}
	})
	t.Run("message over the size cap closes", func(t *testing.T) {
		e := start(t, Config{})
		c := e.dialTCP(t)
		c.Write(binary.BigEndian.AppendUint16(nil, MaxQuerySize+1))
		if _, err := readTCP(c); !errors.Is(err, io.EOF) {
			t.Fatalf("read: %v, want EOF", err)
		}
		if st := e.fwd.Stats(); st.Malformed != 1 {
			t.Errorf("malformed %d", st.Malformed)
		}
	})
	t.Run("unparseable message closes", func(t *testing.T) {
		e := start(t, Config{})
		c := e.dialTCP(t)
		writeTCP(t, c, []byte("not dns"))
		if _, err := readTCP(c); !errors.Is(err, io.EOF) {
			t.Fatalf("read: %v, want EOF", err)
		}
	})
	t.Run("FORMERR keeps the connection", func(t *testing.T) {
		e := start(t, Config{})
		e.up.set("a.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "a.test", 60, "192.0.2.1")}})
		c := e.dialTCP(t)
		bad := queryMsg(t, 1, "a.test", dnsmessage.TypeA)
		bad[5] = 2 // two questions, one there
		writeTCP(t, c, bad)
		writeTCP(t, c, queryMsg(t, 2, "a.test", dnsmessage.TypeA))
		for _, want := range []dnsmessage.RCode{dnsmessage.RCodeFormatError, dnsmessage.RCodeSuccess} {
			b, err := readTCP(c)
			if err != nil {
				t.Fatal(err)
			}
			if m := unpack(t, b); m.Header.RCode != want {
				t.Errorf("rcode %v, want %v", m.Header.RCode, want)
			}
		}
	})
}

func TestOverload(t *testing.T) {
	t.Run("in-flight cap", func(t *testing.T) {
		e := start(t, Config{MaxInFlight: 2})
		release := e.up.holdAnswers()
		defer release()
		c := e.client(t)
		for i := 1; i <= 3; i++ {
			c.Write(queryMsg(t, uint16(i), "a.test", dnsmessage.TypeA))
		}
		m := unpack(t, readReply(t, c))
		if m.Header.ID != 3 || m.Header.RCode != dnsmessage.RCodeRefused {
			t.Fatalf("first reply id %d rcode %v, want 3 REFUSED", m.Header.ID, m.Header.RCode)
		}
		release()
		for range 2 {
			if m := unpack(t, readReply(t, c)); m.Header.RCode != dnsmessage.RCodeNameError {
				t.Errorf("held reply rcode %v", m.Header.RCode)
			}
		}
		if st := e.fwd.Stats(); st.RefusedOverload != 1 || st.InFlightPeak != 2 {
			t.Errorf("refused %d peak %d, want 1 2", st.RefusedOverload, st.InFlightPeak)
		}
	})
	t.Run("upstream rate", func(t *testing.T) {
		e := start(t, Config{Upstream: Upstream{Rate: 0.001, Burst: 2}})
		var rcodes []dnsmessage.RCode
		for range 3 {
			rcodes = append(rcodes, e.ask(t, "a.test", dnsmessage.TypeA).Header.RCode)
		}
		want := []dnsmessage.RCode{dnsmessage.RCodeNameError, dnsmessage.RCodeNameError, dnsmessage.RCodeRefused}
		if diff := cmp.Diff(want, rcodes); diff != "" {
			t.Errorf("rcodes (-want +got):\n%s", diff)
		}
	})
}

func TestNamesAndAddrs(t *testing.T) {
	clk := newClock()
	// No cache: the second question must reach upstream's rotated set.
	e := start(t, Config{Now: clk.Now, MaxNames: 4, CacheEntries: -1})
	e.up.set("a.test", &fakeName{sets: [][]dnsmessage.Resource{
		rrA(t, "a.test", 600, "192.0.2.1", "192.0.2.2"),
		rrA(t, "a.test", 600, "192.0.2.2", "192.0.2.3"),
	}})
	e.up.set("b.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "b.test", 10, "192.0.2.2")}})
	e.up.set("c.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "c.test", 10, "192.0.2.7", "192.0.2.8")}})
	addrs := func(name string) []string {
		var out []string
		for _, a := range e.fwd.Addrs(name) {
			out = append(out, a.String())
		}
		sortStrings(out)
		return out
	}
	names := func(a string) []string { return e.fwd.Names(netip.MustParseAddr(a)) }

	e.ask(t, "a.test", dnsmessage.TypeA)
	e.ask(t, "A.test", dnsmessage.TypeA) // rotated set
	e.ask(t, "b.test", dnsmessage.TypeA)
	if diff := cmp.Diff([]string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}, addrs("a.test")); diff != "" {
		t.Errorf("Addrs(a.test) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"b.test", "a.test"}, names("192.0.2.2")); diff != "" {
		t.Errorf("Names, most recent first (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"b.test"}, e.fwd.Names(netip.MustParseAddr("::ffff:192.0.2.2"))[:1]); diff != "" {
		t.Errorf("Names of a mapped address (-want +got):\n%s", diff)
	}

	// b.test's TTL of 10 s is kept for MinTTL (5 min); a.test's 600 s.
	clk.Add(5*time.Minute - time.Second)
	if diff := cmp.Diff([]string{"b.test", "a.test"}, names("192.0.2.2")); diff != "" {
		t.Errorf("Names before MinTTL (-want +got):\n%s", diff)
	}
	clk.Add(2 * time.Second)
	if diff := cmp.Diff([]string{"a.test"}, names("192.0.2.2")); diff != "" {
		t.Errorf("Names after MinTTL (-want +got):\n%s", diff)
	}
	if got := addrs("b.test"); got != nil {
		t.Errorf("Addrs(b.test) after its TTL: %v", got)
	}
	clk.Add(5 * time.Minute)
	if got := names("192.0.2.1"); got != nil {
		t.Errorf("Names after the TTL: %v", got)
	}

	// The cap: 4 addresses, least recently used out.
	names("192.0.2.2") // used
	e.ask(t, "c.test", dnsmessage.TypeA)
	if st := e.fwd.Stats(); st.NamesKnown != 4 {
		t.Errorf("names known %d, want 4", st.NamesKnown)
	}
	for a, want := range map[string]bool{"192.0.2.1": false, "192.0.2.3": false, "192.0.2.7": true, "192.0.2.8": true} {
		if got := names(a) != nil; got != want {
			t.Errorf("Names(%s) known %v, want %v", a, got, want)
		}
	}
}

func TestRun(t *testing.T) {
	t.Run("closes every socket and leaves nothing running", func(t *testing.T) {
		testutil.LeakCheck(t)
		mk := func() *net.UDPConn {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		cl, up := mk(), mk()
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := New(Config{UDP: []net.PacketConn{cl}, TCP: []net.Listener{ln},
			Upstream: Upstream{Servers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}, UDP4: up}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- f.Run(ctx) }()
		// A TCP client is connected and waiting when Run ends.
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		testutil.Eventually(t, 10*time.Second, "condition", func() bool { return f.Stats().TCPConns == 1 })
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if err := f.Run(context.Background()); err == nil {
			t.Error("second Run succeeded")
		}
		for _, pc := range []*net.UDPConn{cl, up} {
			if _, _, err := pc.ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
				t.Errorf("socket %s not closed: %v", pc.LocalAddr(), err)
			}
		}
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("listener not closed: %v", err)
		}
		if _, err := readTCP(c); !errors.Is(err, io.EOF) {
			t.Errorf("client connection: %v, want EOF", err)
		}
	})
	t.Run("a socket closed underneath ends Run with its error", func(t *testing.T) {
		testutil.LeakCheck(t)
		cl, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		up, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		f, err := New(Config{UDP: []net.PacketConn{cl},
			Upstream: Upstream{Servers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}, UDP4: up}})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error)
		go func() { done <- f.Run(context.Background()) }()
		cl.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Run: %v, want net.ErrClosed", err)
		}
	})
}

func TestNewRejects(t *testing.T) {
	up, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	v4 := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no servers", Config{Upstream: Upstream{UDP4: up}}},
		{"no port", Config{Upstream: Upstream{Servers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:0")}, UDP4: up}}},
		{"no socket for the family", Config{Upstream: Upstream{Servers: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::53]:53")}, UDP4: up}}},
		{"policy without learner", Config{Upstream: Upstream{Servers: v4, UDP4: up}, Policy: allowAll()}},
		{"unknown deny mode", Config{Upstream: Upstream{Servers: v4, UDP4: up}, DenyMode: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil {
				t.Error("New succeeded")
			}
		})
	}
}

func TestParseDenyMode(t *testing.T) {
	tests := []struct {
		in   string
		want DenyMode
		err  bool
	}{
		{"", DenyNXDomain, false},
		{"nxdomain", DenyNXDomain, false},
		{"refused", DenyRefused, false},
		{"pass-and-drop", DenyPassAndDrop, false},
		{"drop", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDenyMode(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("ParseDenyMode(%q) = %v, %v", tt.in, got, err)
			}
			if !tt.err && tt.in != "" && got.String() != tt.in {
				t.Errorf("String() = %q", got.String())
			}
		})
	}
}

func TestForget(t *testing.T) {
	tests := []struct {
		name   string
		forget netip.Addr
		want   int // Learn calls after the second answer
	}{
		{"the address", netip.MustParseAddr("140.82.121.3"), 2},
		{"everything", netip.Addr{}, 2},
		{"another address", netip.MustParseAddr("192.0.2.1"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, Config{Policy: newPolicy(rule{pattern: "github.com"})})
			e.up.set("github.com", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "github.com", 60, "140.82.121.3")}})
			e.ask(t, "github.com", dnsmessage.TypeA)
			e.fwd.Forget(tt.forget)
			e.ask(t, "github.com", dnsmessage.TypeA)
			if n := len(e.learner.all()); n != tt.want {
				t.Errorf("%d Learn calls, want %d", n, tt.want)
			}
		})
	}
}

func TestOversizedUDPAnswerDropped(t *testing.T) {
	e := start(t, Config{Policy: allowAll(), Upstream: Upstream{AttemptTimeout: 20 * time.Millisecond, Attempts: 1}})
	var addrs []string
	for i := range 300 {
		addrs = append(addrs, netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}).String())
	}
	e.up.set("big.test", &fakeName{raw: rawAnswer(t, rrA(t, "big.test", 60, addrs...), nil)})
	if m := e.ask(t, "big.test", dnsmessage.TypeA, ednsOpt(MaxUDPSize)); m.Header.RCode != dnsmessage.RCodeServerFailure {
		t.Fatalf("reply %v, want SERVFAIL", m.Header.RCode)
	}
	// Under load the reply may reach the forwarder after the attempt timed
	// out: no event to wait for but the counter.
	testutil.Eventually(t, 10*time.Second, "condition", func() bool { return e.fwd.Stats().Spoofed == 1 })
	if st := e.fwd.Stats(); st.Learned != 0 {
		t.Errorf("learned %d, want 0", st.Learned)
	}
}

func TestIPv6(t *testing.T) {
	testutil.LeakCheck(t)
	up := newFakeUpstreamOn(t, netip.MustParseAddr("::1"))
	up.set("v6.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "v6.test", 60, "2001:db8::6")}})
	listen := func(network string) *net.UDPConn {
		c, err := net.ListenUDP(network, &net.UDPAddr{IP: net.IPv6loopback})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cl, up6 := listen("udp6"), listen("udp6")
	tl, err := net.ListenTCP("tcp6", &net.TCPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	l := &fakeLearner{}
	f, err := New(Config{
		UDP:      []net.PacketConn{cl},
		TCP:      []net.Listener{tl},
		Upstream: Upstream{Servers: []netip.AddrPort{up.addr}, UDP6: up6, DialTCP: poolDial},
		Policy:   allowAll(),
		Learner:  l,
		Log:      testutil.Logger(t),
		// No cache: the TCP query must go upstream over TCP too.
		CacheEntries: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	e := &env{fwd: f, up: up, learner: l, tcp: tl.Addr().(*net.TCPAddr).AddrPort()}
	c, err := net.DialUDP("udp6", nil, cl.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := unpack(t, roundTrip(t, c, queryMsg(t, 6, "v6.test", dnsmessage.TypeAAAA)))
	if diff := cmp.Diff([]string{"2001:db8::6"}, answerAddrs(m)); diff != "" {
		t.Errorf("udp answer (-want +got):\n%s", diff)
	}
	if m := e.askTCP(t, "v6.test", dnsmessage.TypeAAAA); len(m.Answers) != 1 {
		t.Errorf("tcp answer: %v", m.Answers)
	}
	if diff := cmp.Diff([]string{"2001:db8::6"}, l.addrsLearned()); diff != "" {
		t.Errorf("learned (-want +got):\n%s", diff)
	}
	if st := f.Stats(); st.UpstreamTCP != 1 {
		t.Errorf("upstream tcp %d, want 1", st.UpstreamTCP)
	}
}
