// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nft_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/testenv/netnstest"
)

// udpEcho serves UDP on addr inside ns and answers every datagram with
// tag followed by the datagram.
func udpEcho(t *testing.T, ns *os.File, addr, tag string) *net.UDPAddr {
	t.Helper()
	var pc net.PacketConn
	netnstest.Exec(t, ns, func() error {
		var err error
		pc, err = net.ListenPacket("udp", addr)
		return err
	})
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(tag), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr)
}

// query sends msg over a socket opened in ns (marked with mark unless 0)
// to dst and returns the reply.
func query(t *testing.T, ns *os.File, mark int, dst string, msg string) (string, error) {
	t.Helper()
	var c net.Conn
	netnstest.Exec(t, ns, func() error {
		d := net.Dialer{Timeout: time.Second}
		if mark != 0 {
			d.Control = func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark) }); err != nil {
					return err
				}
				return serr
			}
		}
		var err error
		c, err = d.Dial("udp", dst)
		return err
	})
	defer c.Close()
	c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// TestIntegrationDNSRedirect checks the forwarder plumbing in a real
// kernel: without a forwarder, DNS is refused at once; with one, every
// query to port 53 of any address lands on the forwarder's loopback port;
// only the forwarder's marked socket reaches the resolver, and SetDNSPort
// and re-engaging keep the redirect.
func TestIntegrationDNSRedirect(t *testing.T) {
	tb := newTestbed(t)
	fw := tb.fw
	res := netip.AddrPortFrom(hostAddr, 53)
	udpEcho(t, tb.host, res.String(), "resolver:")
	if err := fw.Engage(nft.Ruleset{Resolvers: []netip.Addr{hostAddr}}); err != nil {
		t.Fatal(err)
	}
	if p, err := fw.DNSPort(); err != nil || p != 0 {
		t.Fatalf("DNSPort before a forwarder = %d, %v", p, err)
	}

	// No forwarder yet: refused at once (the rejected send fails with
	// EPERM, or the port unreachable arrives), not a timeout and not a
	// prompt.
	start := time.Now()
	_, err := query(t, tb.ctr, 0, res.String(), "q1")
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EPERM) {
		t.Fatalf("query without a forwarder = %v, want ECONNREFUSED or EPERM", err)
	}
	t.Logf("refused after %v", time.Since(start))
	if err := dialIn(t, tb.ctr, "tcp", res.String()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("TCP DNS without a forwarder = %v, want ECONNREFUSED (reset)", err)
	}

	// The forwarder's listener on 127.0.0.1 and its marked upstream
	// socket, opened in the container's namespace.
	fwd := udpEcho(t, tb.ctr, "127.0.0.1:0", "forwarder:")
	if err := fw.SetDNSPort(uint16(fwd.Port), 0); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{res.String(), "127.0.0.53:53", "10.254.77.2:53"} {
		got, err := query(t, tb.ctr, 0, dst, "q2")
		if err != nil || got != "forwarder:q2" {
			t.Errorf("query to %s = %q, %v; want the forwarder's answer", dst, got, err)
		}
	}
	// TCP lands on the forwarder's TCP listener at the same port.
	var tln net.Listener
	netnstest.Exec(t, tb.ctr, func() error {
		var err error
		tln, err = net.Listen("tcp", fwd.String())
		return err
	})
	defer tln.Close()
	if err := dialIn(t, tb.ctr, "tcp", res.String()); err != nil {
		t.Errorf("TCP DNS with a forwarder: %v", err)
	}
	// The marked socket is not redirected and reaches the resolver.
	if got, err := query(t, tb.ctr, nft.DefaultDNSMark, res.String(), "q3"); err != nil || got != "resolver:q3" {
		t.Errorf("marked query = %q, %v; want the resolver's answer", got, err)
	}
	// Marked, but not to a resolver's port 53: blocked like anything else.
	udpEcho(t, tb.host, netip.AddrPortFrom(hostAddr, 5300).String(), "other:")
	if got, err := query(t, tb.ctr, nft.DefaultDNSMark, netip.AddrPortFrom(hostAddr, 5300).String(), "q4"); err == nil {
		t.Errorf("marked query to port 5300 passed: %q", got)
	}

	// Re-engaging keeps the port; SetDNSPort moves it.
	if err := fw.Engage(nft.Ruleset{Resolvers: []netip.Addr{hostAddr}}); err != nil {
		t.Fatal(err)
	}
	if p, err := fw.DNSPort(); err != nil || p != uint16(fwd.Port) {
		t.Fatalf("DNSPort after re-engage = %d, %v; want %d", p, err, fwd.Port)
	}
	fwd2 := udpEcho(t, tb.ctr, "127.0.0.1:0", "second:")
	if err := fw.SetDNSPort(uint16(fwd2.Port), 0); err != nil {
		t.Fatal(err)
	}
	if got, err := query(t, tb.ctr, 0, res.String(), "q5"); err != nil || got != "second:q5" {
		t.Errorf("query after SetDNSPort = %q, %v", got, err)
	}
	x := explainIs(t, fw, hostAddr, 53, nft.ReasonDNS, "")
	if x.Verdict != nft.VerdictRedirect {
		t.Errorf("Explain(:53) verdict = %s, want redirect", x.Verdict)
	}
	text := run(t, tb.ctr, "nft", "list", "chain", "inet", "clearance", "dns")
	for _, want := range []string{"meta mark != 0x636c7200 udp dport 53 redirect to :", "meta mark != 0x636c7200 tcp dport 53 redirect to :"} {
		if !strings.Contains(text, want) {
			t.Errorf("nat chain lacks %q:\n%s", want, text)
		}
	}
}

// TestIntegrationPortsAndLearned checks verdicts narrowed to one port and
// the learned sets: an element for one port opens that port only, learned
// elements carry their comment and time out, re-learning refreshes.
func TestIntegrationPortsAndLearned(t *testing.T) {
	tb := newTestbed(t)
	fw := tb.fw
	if err := fw.Learn([]nft.Learned{{Dest: nft.HostDest(hostAddr), Timeout: time.Minute}}); !errors.Is(err, nft.ErrNotEngaged) {
		t.Fatalf("Learn before engage = %v, want ErrNotEngaged", err)
	}
	if err := fw.Engage(nft.Ruleset{}); err != nil {
		t.Fatal(err)
	}
	port := uint16(tb.port)
	other := nft.ServiceDest(nft.Host(hostAddr), unix.IPPROTO_TCP, port+1)
	if err := fw.Apply("allow", other, 0, "other port"); err != nil {
		t.Fatal(err)
	}
	if err := tb.dial(t); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("connect with another port allowed = %v, want EHOSTUNREACH", err)
	}
	udp := nft.ServiceDest(nft.Host(hostAddr), unix.IPPROTO_UDP, port)
	if err := fw.Apply("allow", udp, 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := tb.dial(t); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("connect with udp of the port allowed = %v, want EHOSTUNREACH", err)
	}
	this := nft.ServiceDest(nft.Host(hostAddr), unix.IPPROTO_TCP, port)
	if err := fw.Apply("allow", this, time.Hour, "github.com"); err != nil {
		t.Fatal(err)
	}
	if err := tb.dial(t); err != nil {
		t.Fatalf("connect with the port allowed: %v", err)
	}
	x := explainIs(t, fw, hostAddr, port, nft.ReasonAllowed, "allow4_port")
	if x.Match.Comment != "github.com" || x.Match.Dest != this || x.Match.Timeout != time.Hour {
		t.Errorf("matched element = %+v", x.Match)
	}
	// A deny of the same port replaces the allow.
	if err := fw.Apply("deny", this, 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := tb.dial(t); !isTimeout(err) {
		t.Fatalf("connect after a port deny = %v, want a timeout", err)
	}
	if err := fw.Revoke(this); err != nil {
		t.Fatal(err)
	}

	// Learned: passes, shows its comment, refreshes, expires.
	l := nft.Learned{Dest: this, Timeout: time.Minute, Comment: "api.example.com"}
	if err := fw.Learn([]nft.Learned{l, {Dest: nft.HostDest(netip.MustParseAddr("2001:db8::7")), Timeout: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	if err := tb.dial(t); err != nil {
		t.Fatalf("connect to a learned address: %v", err)
	}
	x = explainIs(t, fw, hostAddr, port, nft.ReasonLearned, "dns4_port")
	if x.Match.Comment != "api.example.com" || x.Match.List != nft.ListLearned || !x.Match.Allows() {
		t.Errorf("learned element = %+v", x.Match)
	}
	l.Timeout = time.Second
	if err := fw.Learn([]nft.Learned{l}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		x, err := fw.Explain(hostAddr, unix.IPPROTO_TCP, port)
		if err != nil {
			t.Fatal(err)
		}
		if x.Reason == nft.ReasonBlocked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("learned element did not expire within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := fw.Unlearn([]nft.Dest{nft.HostDest(netip.MustParseAddr("2001:db8::7")), this}); err != nil {
		t.Fatal(err)
	}
	explainIs(t, fw, netip.MustParseAddr("2001:db8::7"), 443, nft.ReasonBlocked, "")
	for _, bad := range []nft.Learned{
		{Dest: nft.PrefixDest(netip.MustParsePrefix("10.0.0.0/8")), Timeout: time.Minute},
		{Dest: this},
		{Dest: this, Timeout: 30 * 24 * time.Hour},
	} {
		if err := fw.Learn([]nft.Learned{bad}); err == nil {
			t.Errorf("Learn(%+v) = nil error", bad)
		}
	}
	// Re-engaging keeps learned and port elements.
	if err := fw.Learn([]nft.Learned{{Dest: this, Timeout: time.Hour, Comment: "kept"}}); err != nil {
		t.Fatal(err)
	}
	if err := fw.Engage(nft.Ruleset{}); err != nil {
		t.Fatal(err)
	}
	x = explainIs(t, fw, hostAddr, port, nft.ReasonLearned, "dns4_port")
	if x.Match.Comment != "kept" {
		t.Errorf("learned element after re-engage = %+v", x.Match)
	}
	if el := findDest(t, fw, "allow4_port", other); el == nil || el.Comment != "other port" {
		t.Errorf("port element after re-engage = %+v", el)
	}
}

func findDest(t *testing.T, fw *nft.Firewall, set string, d nft.Dest) *nft.Element {
	t.Helper()
	els, err := fw.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range els {
		if e.Set == set && e.Dest == d {
			return &e
		}
	}
	return nil
}

// dialIn connects from inside ns and closes the connection again.
func dialIn(t *testing.T, ns *os.File, network, addr string) error {
	t.Helper()
	var derr error
	netnstest.Exec(t, ns, func() error {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
		}
		derr = err
		return nil
	})
	return derr
}

// TestIntegrationIPv6Allow checks that an allowed IPv6 destination on the
// link connects: neighbour discovery must pass the output drop.
func TestIntegrationIPv6Allow(t *testing.T) {
	tb := newTestbed(t)
	host6, ctr6 := netip.MustParseAddr("fd00:77::1"), netip.MustParseAddr("fd00:77::2")
	run(t, tb.ctr, "ip", "-6", "addr", "add", ctr6.String()+"/64", "dev", "clv0", "nodad")
	run(t, tb.host, "ip", "-6", "addr", "add", host6.String()+"/64", "dev", "clv1", "nodad")
	var ln net.Listener
	netnstest.Exec(t, tb.host, func() error {
		var err error
		ln, err = net.Listen("tcp6", "["+host6.String()+"]:0")
		return err
	})
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := ln.Addr().String()
	if err := tb.fw.Engage(nft.Ruleset{}); err != nil {
		t.Fatal(err)
	}
	// Flush the neighbour cache an earlier probe may have filled.
	run(t, tb.ctr, "ip", "-6", "neigh", "flush", "dev", "clv0")
	// Refused, or (the ICMPv6 error arrives while connect() holds the
	// socket, a soft error) timed out.
	if err := dialIn(t, tb.ctr, "tcp6", addr); err == nil {
		t.Fatal("connect to a blocked v6 host passed")
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	if err := tb.fw.Apply("allow", nft.ServiceDest(nft.Host(host6), unix.IPPROTO_TCP, port), 0, ""); err != nil {
		t.Fatal(err)
	}
	run(t, tb.ctr, "ip", "-6", "neigh", "flush", "dev", "clv0")
	if err := dialIn(t, tb.ctr, "tcp6", addr); err != nil {
		t.Fatalf("connect to an allowed v6 host: %v", err)
	}
}

// TestIntegrationCountersAndEngageInPlace checks that set elements count
// what they match, and that engaging an intact table again updates it in
// place (counters kept, resolvers replaced, missing policy entries added)
// while a table of another shape is rebuilt (elements kept).
func TestIntegrationCountersAndEngageInPlace(t *testing.T) {
	tb := newTestbed(t)
	fw := tb.fw
	rs := nft.Ruleset{Resolvers: []netip.Addr{hostAddr}}
	if err := fw.Engage(rs); err != nil {
		t.Fatal(err)
	}
	port := uint16(tb.port)
	this := nft.ServiceDest(nft.Host(hostAddr), unix.IPPROTO_TCP, port)
	if err := fw.Apply("allow", this, 0, ""); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := tb.dial(t); err != nil {
			t.Fatal(err)
		}
	}
	el := findDest(t, fw, "allow4_port", this)
	if el == nil || el.Packets < 3 || el.Bytes == 0 {
		t.Fatalf("counted element = %+v, want at least 3 packets (3 SYNs)", el)
	}
	before := el.Packets

	// Same shape, other resolvers and a new policy entry: in place.
	rs.Resolvers = []netip.Addr{netip.MustParseAddr("10.254.77.3")}
	rs.Allow = prefixDests("192.0.2.10/32", "198.51.100.0/24")
	if err := fw.Engage(rs); err != nil {
		t.Fatal(err)
	}
	if el := findDest(t, fw, "allow4_port", this); el == nil || el.Packets < before {
		t.Errorf("counter after an in-place engage = %+v, want ≥ %d packets", el, before)
	}
	for _, want := range []string{"allow4 192.0.2.10/32", "allow4_net 198.51.100.0/24"} {
		if !slices.Contains(listPrefixes(t, fw), want) {
			t.Errorf("policy entry %s not added in place: %v", want, listPrefixes(t, fw))
		}
	}
	text := run(t, tb.ctr, "nft", "list", "table", "inet", "clearance")
	if !strings.Contains(text, "10.254.77.3") || strings.Contains(text, "resolver4 {\n\t\ttype ipv4_addr\n\t\telements = { 10.254.77.1") {
		t.Errorf("resolvers not replaced:\n%s", text)
	}
	if !strings.Contains(text, `comment "clearance ruleset `) || !strings.Contains(text, "counter") {
		t.Errorf("no fingerprint comment or counters:\n%s", text)
	}
	// Another shape (TCP reset): rebuilt, the element kept.
	rs.TCPReset = true
	if err := fw.Engage(rs); err != nil {
		t.Fatal(err)
	}
	if el := findDest(t, fw, "allow4_port", this); el == nil {
		t.Error("element lost by a rebuild")
	}
	if !strings.Contains(run(t, tb.ctr, "nft", "list", "chain", "inet", "clearance", "output"), "reject with tcp reset") {
		t.Error("a new shape did not rebuild the table")
	}
}
