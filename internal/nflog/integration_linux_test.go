// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nflog

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// waitTimeout is the generous bound for conditions in kernel tests.
const waitTimeout = 30 * time.Second

// bindInNS binds group inside ns and returns the socket.
func bindInNS(tb testing.TB, ns *testNetNS, group uint16) *os.File {
	tb.Helper()
	var f *os.File
	if err := ns.Do(func() (err error) {
		f, err = Bind(group, 0)
		return err
	}); err != nil {
		tb.Fatalf("Bind: %v", err)
	}
	return f
}

// passFD sends f over a unix socket pair with SCM_RIGHTS, as the verdict
// service does, closes f, and returns the received descriptor as a plain
// (blocking, unpolled) *os.File, as a varlink client would get it.
func passFD(tb testing.TB, f *os.File) *os.File {
	tb.Helper()
	defer f.Close()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	must(tb, err)
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])
	rc, err := f.SyscallConn()
	must(tb, err)
	var serr error
	must(tb, rc.Control(func(fd uintptr) {
		serr = unix.Sendmsg(sp[0], []byte{0}, unix.UnixRights(int(fd)), nil, 0)
	}))
	must(tb, serr)
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(sp[1], buf, oob, unix.MSG_CMSG_CLOEXEC)
	must(tb, err)
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	must(tb, err)
	fds, err := unix.ParseUnixRights(&msgs[0])
	must(tb, err)
	must(tb, unix.SetNonblock(fds[0], false))
	return os.NewFile(uintptr(fds[0]), "received")
}

// runReader runs r on an ordinary goroutine (in the host netns) until the
// test ends, sending records to the returned channel. fn, if set, runs
// first for every record (on Run's goroutine).
func runReader(tb testing.TB, r *Reader, fn func(Record)) <-chan Record {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	recs := make(chan Record, 1024)
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(rec Record) {
			if fn != nil {
				fn(rec)
			}
			select {
			case recs <- rec:
			default: // the test stopped listening
			}
		})
	}()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			tb.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return recs
}

// sendUDP sends one datagram from src to dst inside ns, from an
// unconnected socket (so ICMP errors are not reported back).
func sendUDP(ns *testNetNS, src, dst netip.AddrPort, n int) error {
	return ns.Do(func() error {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(src))
		if err != nil {
			return err
		}
		defer c.Close()
		for range n {
			if _, err := c.WriteToUDPAddrPort([]byte("x"), dst); err != nil {
				return err
			}
		}
		return nil
	})
}

// connectTCP connects from src to dst inside ns and returns the error.
func connectTCP(ns *testNetNS, src, dst netip.AddrPort) error {
	return ns.Do(func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(src), Timeout: waitTimeout}
		c, err := d.Dial("tcp", dst.String())
		if err == nil {
			c.Close()
		}
		return err
	})
}

func TestIntegrationBindAndRead(t *testing.T) {
	ns := newTestNetNS(t)
	ns.nft(t, `table inet t {
	chain out {
		type filter hook output priority 0; policy accept;
		udp dport 9 log group 7 prefix "TEST: "
		tcp dport 18080 log group 7 prefix "TEST: " reject
	}
}`)
	r, err := NewReader(passFD(t, bindInNS(t, ns, 7)), testutil.Logger(t))
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	recs := runReader(t, r, nil)

	lo4, lo6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	type key struct {
		dst   netip.AddrPort
		proto uint8
	}
	cases := []struct {
		fixture string
		key     key
		send    func() error
	}{
		{"kernel-ipv4-udp.bin", key{netip.MustParseAddrPort("127.0.0.2:9"), ProtoUDP}, func() error {
			return sendUDP(ns, netip.AddrPortFrom(lo4, 40009), netip.MustParseAddrPort("127.0.0.2:9"), 1)
		}},
		{"kernel-ipv4-tcp-syn.bin", key{netip.MustParseAddrPort("127.0.0.3:18080"), ProtoTCP}, func() error {
			return connectTCP(ns, netip.AddrPortFrom(lo4, 40010), netip.MustParseAddrPort("127.0.0.3:18080"))
		}},
		{"kernel-ipv6-udp.bin", key{netip.MustParseAddrPort("[::1]:9"), ProtoUDP}, func() error {
			return sendUDP(ns, netip.AddrPortFrom(lo6, 40009), netip.MustParseAddrPort("[::1]:9"), 1)
		}},
		{"kernel-ipv6-tcp-syn.bin", key{netip.MustParseAddrPort("[::1]:18080"), ProtoTCP}, func() error {
			return connectTCP(ns, netip.AddrPortFrom(lo6, 40010), netip.MustParseAddrPort("[::1]:18080"))
		}},
	}
	for _, c := range cases {
		t.Run(c.fixture, func(t *testing.T) {
			err := c.send()
			if c.key.proto == ProtoTCP {
				if !errors.Is(err, unix.ECONNREFUSED) {
					t.Fatalf("connect to %v: %v, want connection refused (the reject rule)", c.key.dst, err)
				}
			} else if err != nil {
				t.Fatalf("send to %v: %v", c.key.dst, err)
			}
			rec := waitRecord(t, recs, func(rec Record) bool {
				p, err := ParsePacket(rec.Payload)
				return err == nil && (key{netip.AddrPortFrom(p.Dst, p.DstPort), p.Proto}) == c.key
			})
			wantHw := uint16(0x0800)
			if c.key.dst.Addr().Is6() {
				wantHw = 0x86dd
			}
			got := struct {
				Prefix     string
				Hook       uint8
				HwProtocol uint16
			}{rec.Prefix, rec.Hook, rec.HwProtocol}
			want := got
			want.Prefix, want.Hook, want.HwProtocol = "TEST: ", 3, wantHw
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("record (-want +got):\n%s", diff)
			}
			if *update {
				writeFixture(t, c.fixture, rec.Payload)
			}
		})
	}
	if s := r.Stats(); s.Records < uint64(len(cases)) {
		t.Errorf("Stats().Records = %d, want at least %d", s.Records, len(cases))
	}
}

// waitRecord returns the first record from recs that match accepts.
func waitRecord(tb testing.TB, recs <-chan Record, match func(Record) bool) Record {
	tb.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case rec := <-recs:
			if match(rec) {
				return rec
			}
		case <-timeout:
			tb.Fatalf("no matching record within %v", waitTimeout)
		}
	}
}

func TestIntegrationDNS(t *testing.T) {
	ns := newTestNetNS(t)
	ns.nft(t, `table inet t {
	chain in {
		type filter hook input priority 0; policy accept;
		udp sport 53 log group 7 prefix "DNS: "
	}
}`)
	r, err := NewReader(bindInNS(t, ns, 7), testutil.Logger(t))
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	recs := runReader(t, r, nil)

	var srv net.PacketConn
	if err := ns.Do(func() (err error) {
		srv, err = net.ListenPacket("udp4", "127.0.0.53:53")
		return err
	}); err != nil {
		t.Fatalf("listen: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveDNS(t, srv, netip.MustParseAddr("127.0.0.9"))
	}()
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})

	err = ns.Do(func() error {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:40053")))
		if err != nil {
			return err
		}
		defer c.Close()
		q := dnsQuery(t, dnsmessage.MustNewName("example.test."))
		if _, err := c.WriteToUDPAddrPort(q, netip.MustParseAddrPort("127.0.0.53:53")); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(waitTimeout))
		_, _, err = c.ReadFromUDPAddrPort(make([]byte, 512))
		return err
	})
	if err != nil {
		t.Fatalf("query: %v", err)
	}

	rec := waitRecord(t, recs, func(rec Record) bool { return rec.Prefix == "DNS: " })
	if rec.Hook != 1 {
		t.Errorf("record hook %d, want 1 (input)", rec.Hook)
	}
	got, err := ParseDNS(rec.Payload)
	if err != nil {
		t.Fatalf("ParseDNS: %v", err)
	}
	want := []Answer{{Name: "example.test", Addr: netip.MustParseAddr("127.0.0.9"), TTL: 60}}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("ParseDNS (-want +got):\n%s", diff)
	}
	if *update {
		writeFixture(t, "kernel-dns-a.bin", rec.Payload)
	}
}

// serveDNS answers every A query on pc with addr (TTL 60) until pc is
// closed.
func serveDNS(tb testing.TB, pc net.PacketConn, addr netip.Addr) {
	buf := make([]byte, 512)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
		b.EnableCompression()
		if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
			continue
		}
		if b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60},
			dnsmessage.AResource{A: addr.As4()}) != nil {
			continue
		}
		msg, err := b.Finish()
		if err != nil {
			continue
		}
		if _, err := pc.WriteTo(msg, from); err != nil {
			tb.Logf("dns responder: %v", err)
		}
	}
}

func TestIntegrationENOBUFS(t *testing.T) {
	ns := newTestNetNS(t)
	ns.nft(t, `table inet t {
	chain out {
		type filter hook output priority 0; policy accept;
		udp dport 9 log group 7 prefix "FLOOD: "
		udp dport 10 log group 7 prefix "AFTER: "
	}
}`)
	r, err := NewReader(bindInNS(t, ns, 7), testutil.Logger(t))
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	if err := r.SetReadBuffer(4096); err != nil {
		t.Fatalf("SetReadBuffer: %v", err)
	}
	recs := runReader(t, r, func(rec Record) {
		if rec.Prefix == "FLOOD: " {
			time.Sleep(time.Millisecond) // a slow consumer
		}
	})

	src := netip.MustParseAddrPort("127.0.0.1:0")
	deadline := time.Now().Add(waitTimeout)
	for r.Stats().ENOBUFS == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no ENOBUFS after floods; stats %+v", r.Stats())
		}
		if err := sendUDP(ns, src, netip.MustParseAddrPort("127.0.0.2:9"), 3000); err != nil {
			t.Fatalf("flood: %v", err)
		}
		testutil.Within(2*time.Second, func() bool { return r.Stats().ENOBUFS > 0 })
	}

	// The reader keeps delivering after the overrun. The socket may still
	// be full when a probe arrives, so probe until one gets through.
	timeout := time.After(waitTimeout)
	for probe := 1; ; probe++ {
		if err := sendUDP(ns, src, netip.MustParseAddrPort("127.0.0.2:10"), 1); err != nil {
			t.Fatalf("probe: %v", err)
		}
		tick := time.After(200 * time.Millisecond)
	drain:
		for {
			select {
			case rec := <-recs:
				if rec.Prefix == "AFTER: " {
					t.Logf("stats after %d probes: %+v", probe, r.Stats())
					return
				}
			case <-tick:
				break drain
			case <-timeout:
				t.Fatalf("no record after the overrun within %v; stats %+v", waitTimeout, r.Stats())
			}
		}
	}
}

func TestIntegrationRunStops(t *testing.T) {
	ns := newTestNetNS(t)
	for _, how := range []string{"cancel", "close"} {
		t.Run(how, func(t *testing.T) {
			before := runtime.NumGoroutine()
			r, err := NewReader(bindInNS(t, ns, 7), testutil.Logger(t))
			if err != nil {
				t.Fatalf("NewReader: %v", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx, func(Record) {}) }()

			var want error
			switch how {
			case "cancel":
				cancel()
				want = context.Canceled
			case "close":
				r.Close()
				want = os.ErrClosed
			}
			select {
			case err := <-done:
				if !errors.Is(err, want) {
					t.Errorf("Run returned %v, want %v", err, want)
				}
			case <-time.After(waitTimeout):
				t.Fatal("Run did not return")
			}
			// The socket is closed and the group free again.
			f := bindInNS(t, ns, 7)
			f.Close()
			if !testutil.Within(5*time.Second, func() bool { return runtime.NumGoroutine() <= before }) {
				t.Errorf("goroutines: %d before, %d after Run returned", before, runtime.NumGoroutine())
			}
		})
	}
}

func TestIntegrationBindTaken(t *testing.T) {
	ns := newTestNetNS(t)
	f := bindInNS(t, ns, 7)
	err := ns.Do(func() error {
		g, err := Bind(7, 0)
		if err == nil {
			g.Close()
		}
		return err
	})
	// The kernel refuses with EPERM: the group's instance belongs to
	// another socket.
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("second Bind of group 7: %v, want EPERM", err)
	}
	// Another group is independent.
	g := bindInNS(t, ns, 8)
	g.Close()
	// Closing the socket releases the group.
	f.Close()
	f = bindInNS(t, ns, 7)
	f.Close()
}
