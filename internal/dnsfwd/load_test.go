// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

func TestFlood(t *testing.T) {
	e := start(t, Config{
		Policy: allowAll(),
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		// Held queries stay in flight until released; a query the busy fake
		// upstream's socket dropped is asked again after 3 s.
		Upstream: Upstream{AttemptTimeout: 3 * time.Second},
	})
	e.up.mu.Lock()
	e.up.quiet = true
	e.up.mu.Unlock()
	e.up.set("after.test", &fakeName{sets: [][]dnsmessage.Resource{rrA(t, "after.test", 60, "192.0.2.200")}})
	release := e.up.holdAnswers() // a slow upstream: nothing answers until released
	defer release()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	c := e.client(t)
	t0 := time.Now()
	const n = 50_000
	msg := queryMsg(t, 0, "n00000.flood.test", dnsmessage.TypeA)
	for i := 0; i < n; i++ {
		binary.BigEndian.PutUint16(msg, uint16(i))
		copy(msg[13:19], fmt.Sprintf("%06d", i)[:6]) // a fresh name each time
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	// The forwarder reads its socket in order: once the reply to a query
	// sent after the flood (from another socket, whose buffer is empty)
	// is back, every datagram of the flood the kernel kept has been read.
	// The kernel drops what does not fit the forwarder's socket buffer,
	// the first of these queries too, perhaps: ask until one is answered.
	sentinel := e.client(t)
	buf := make([]byte, 512)
	for i := 0; ; i++ {
		if i == 100 {
			t.Fatal("no reply to a query behind the flood")
		}
		sentinel.Write(queryMsg(t, uint16(i), "sentinel.test", dnsmessage.TypeA))
		sentinel.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := sentinel.Read(buf); err == nil {
			if m := unpack(t, buf[:n]); m.Header.RCode != dnsmessage.RCodeRefused {
				t.Errorf("query behind the flood: %v, want REFUSED", m.Header.RCode)
			}
			break
		}
	}

	runtime.GC()
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	st := e.fwd.Stats()
	t.Logf("flood of %d in %v: queries read %d, refused %d, in flight %d, heap %d KiB → %d KiB, goroutines %d",
		n, time.Since(t0), st.QueriesUDP, st.RefusedOverload, st.InFlight, before.HeapAlloc>>10, during.HeapAlloc>>10, runtime.NumGoroutine())
	if st.InFlightPeak > DefaultMaxInFlight {
		t.Errorf("in-flight peak %d over the cap %d", st.InFlightPeak, DefaultMaxInFlight)
	}
	// Under a slow flood some held queries may have failed (SERVFAIL)
	// and freed their slot for others.
	if st.InFlight != DefaultMaxInFlight || st.RefusedOverload+uint64(st.InFlight)+st.UpstreamFailures != st.QueriesUDP {
		t.Errorf("%d queries read, %d in flight, %d refused, %d failed: want the cap in flight and the rest refused",
			st.QueriesUDP, st.InFlight, st.RefusedOverload, st.UpstreamFailures)
	}
	// Bounded by the cap, not by the flood: 50 000 held queries would take
	// hundreds of MiB.
	if grown := int64(during.HeapAlloc) - int64(before.HeapAlloc); grown > 48<<20 {
		t.Errorf("heap grew by %d MiB under the flood", grown>>20)
	}

	release()
	testutil.Eventually(t, 30*time.Second, "condition", func() bool { return e.fwd.Stats().InFlight == 0 })
	m := e.ask(t, "after.test", dnsmessage.TypeA)
	if got := answerAddrs(m); !slices.Equal(got, []string{"192.0.2.200"}) {
		t.Errorf("after the flood: rcode %v answers %v", m.Header.RCode, got)
	}
}

// ---- benchmarks ----

// countingLearner acknowledges at once and only counts.
type countingLearner struct{ calls, els atomic.Int64 }

func (l *countingLearner) Learn(ctx context.Context, els []Element) error {
	l.calls.Add(1)
	l.els.Add(int64(len(els)))
	return nil
}

// quietEnv starts a forwarder that neither logs nor limits the rate, with
// an upstream that records nothing.
func quietEnv(b *testing.B, cfg Config) *env {
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Upstream.Rate = -1
	e := start(b, cfg)
	e.up.mu.Lock()
	e.up.quiet = true
	e.up.mu.Unlock()
	return e
}

// latencies records one duration per operation and reports percentiles.
type latencies []time.Duration

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	b.ReportMetric(float64(l[len(l)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(l[len(l)*99/100].Microseconds()), "p99-µs")
}

// roundTrips sends queries for name over c, one at a time, b.N times.
func roundTrips(b *testing.B, c net.Conn, name string) latencies {
	msg := queryMsg(b, 0, name, dnsmessage.TypeA)
	buf := make([]byte, 4096)
	lat := make(latencies, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.BigEndian.PutUint16(msg, uint16(i))
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		if n < 12 || binary.BigEndian.Uint16(buf) != uint16(i) || buf[3]&0xf != 0 {
			b.Fatalf("reply %x", buf[:n])
		}
	}
	b.StopTimer()
	return lat
}

// BenchmarkForward measures a query for an allowed name whose address the
// firewall has already: the forwarder's whole path, against the same fake
// upstream asked directly. "forwarded" is answered from the cache after
// the first query; "forwarded-miss" has no cache, so each query goes
// upstream.
func BenchmarkForward(b *testing.B) {
	l := &countingLearner{}
	e := quietEnv(b, Config{Policy: newPolicy(rule{pattern: "*.github.com"}), Learner: l})
	e.up.set("api.github.com", &fakeName{sets: [][]dnsmessage.Resource{rrA(b, "api.github.com", 300, "140.82.112.5", "140.82.112.6")}})

	b.Run("direct", func(b *testing.B) {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(e.up.addr))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		roundTrips(b, c, "api.github.com").report(b)
	})
	b.Run("forwarded", func(b *testing.B) {
		c := e.client(b)
		roundTrips(b, c, "api.github.com").report(b) // the first one learns
		st := e.fwd.Stats()
		b.ReportMetric(float64(st.HoldTimeouts+st.RefusedOverload+st.UpstreamFailures), "lost")
	})
	if n := l.calls.Load(); n != 1 {
		b.Errorf("%d Learn calls, want 1", n)
	}
	b.Run("forwarded-miss", func(b *testing.B) {
		e := quietEnv(b, Config{Policy: newPolicy(rule{pattern: "*.github.com"}), Learner: &countingLearner{}, CacheEntries: -1})
		e.up.set("api.github.com", &fakeName{sets: [][]dnsmessage.Resource{rrA(b, "api.github.com", 300, "140.82.112.5", "140.82.112.6")}})
		roundTrips(b, e.client(b), "api.github.com").report(b)
		if st := e.fwd.Stats(); st.CacheHits != 0 || st.Forwarded < uint64(b.N) {
			b.Errorf("%d hits, %d forwarded of %d", st.CacheHits, st.Forwarded, b.N)
		}
	})
}

// BenchmarkNewAddress measures a query whose answer carries an address
// the firewall does not have yet, with a Learner that acknowledges at
// once: the held path.
func BenchmarkNewAddress(b *testing.B) {
	l := &countingLearner{}
	e := quietEnv(b, Config{Policy: newPolicy(rule{pattern: "*.github.com"}), Learner: l})
	var next atomic.Uint32
	e.up.set("api.github.com", &fakeName{raw: func(q dnsmessage.Question) []byte {
		n := next.Add(1)
		m := dnsmessage.Message{
			Header:    dnsmessage.Header{Response: true, RecursionAvailable: true},
			Questions: []dnsmessage.Question{q},
			Answers: []dnsmessage.Resource{{
				Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
				Body:   &dnsmessage.AResource{A: [4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}},
			}},
		}
		out, _ := m.Pack()
		return out
	}})
	lat := roundTrips(b, e.client(b), "api.github.com")
	lat.report(b)
	st := e.fwd.Stats()
	b.ReportMetric(float64(st.Held)/float64(b.N), "held/op")
	b.ReportMetric(float64(st.HoldTimeouts+st.LearnErrors+st.RefusedOverload+st.UpstreamFailures), "lost")
}

// BenchmarkNamesHeap measures the heap the forwarder keeps for 10 000
// names answered and learned (one address each): the name table and the
// learned table.
func BenchmarkNamesHeap(b *testing.B) {
	const names = 10_000
	var perName float64
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		fw := fuzzForwarderB(b)
		var n uint32
		fw.exchange = func(ctx context.Context, q *query) ([]byte, error) {
			n++
			out, err := answerTo(q.wire)
			if err == nil { // a distinct address per name
				copy(out[len(out)-4:], []byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
			}
			return out, err
		}
		for j := 0; j < names; j++ {
			if r := handle(fw, queryMsg(b, 1, fmt.Sprintf("host%05d.example.com", j), dnsmessage.TypeA), false); r == nil {
				b.Fatal("no reply")
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if st := fw.Stats(); st.NamesKnown != names || st.LearnedKnown != names {
			b.Fatalf("names %d learned %d, want %d", st.NamesKnown, st.LearnedKnown, names)
		}
		perName += float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / names
		runtime.KeepAlive(fw)
	}
	b.ReportMetric(perName/float64(b.N), "B/name")
}

func fuzzForwarderB(b *testing.B) *Forwarder {
	f, err := New(Config{
		Upstream: Upstream{Servers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}, UDP4: nopPacketConn{}, Rate: -1},
		Policy:   newPolicy(rule{pattern: "*.example.com"}),
		Learner:  &countingLearner{},
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	return f
}
