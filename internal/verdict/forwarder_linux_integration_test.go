// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/verdict"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// TestIntegrationForwarder checks that Forwarder hands over sockets that
// live in the container's namespace, carry the mark, and receive the
// container's DNS queries through the redirect it installed; that
// UpstreamTCP and Learn work; and that bad input is refused.
func TestIntegrationForwarder(t *testing.T) {
	ctr := startContainer(t)
	e := startService(t, "")
	rec := ctr.rec("f0f0f0000001")
	rec.Resolvers = []string{"192.0.2.53"} // ignored: the service's configuration names resolvers
	writeRecord(t, e.root, 0, rec)
	ctx := testutil.Context(t)
	c := e.dial(t)
	const id = "f0f0f0000001"

	if _, err := c.Forwarder(ctx, id, nil); errName(err) != "FirewallFailed" {
		t.Fatalf("Forwarder before Engage = %v, want FirewallFailed", err)
	}
	if _, _, err := c.Engage(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	fwd, err := c.Forwarder(ctx, id, nil)
	if err != nil {
		t.Fatalf("Forwarder: %v", err)
	}
	defer fwd.Close()
	var names []string
	for n := range fwd.Sockets {
		names = append(names, n)
	}
	slices.Sort(names)
	// The test container has no IPv6 address but ::1 on lo.
	want := []string{verdict.SockTCP4, verdict.SockTCP6, verdict.SockUDP4, verdict.SockUDP6, verdict.SockUp4, verdict.SockUp6}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("sockets %v, want %v", names, want)
	}
	if fwd.Mark != nft.DefaultDNSMark || fwd.Port == 0 {
		t.Errorf("mark %#x port %d", fwd.Mark, fwd.Port)
	}
	if !slices.Equal(fwd.Resolvers, []string{dummyAddr.String()}) {
		t.Errorf("resolvers %v, want the configured %v", fwd.Resolvers, dummyAddr)
	}
	for name, f := range fwd.Sockets {
		mark, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_MARK)
		if err != nil || mark != nft.DefaultDNSMark {
			t.Errorf("%s: SO_MARK %#x, %v", name, mark, err)
		}
		if ns := socketNetns(t, f); ns != ctr.id.Ino {
			t.Errorf("%s: in netns %d, want the container's %d", name, ns, ctr.id.Ino)
		}
	}

	// A query from the container to any resolver lands on udp4.
	pc, err := net.FilePacketConn(fwd.Sockets[verdict.SockUDP4])
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ns := ctr.nsFile(t)
	err = netns.Do(int(ns.Fd()), func() error {
		c, err := net.Dial("udp", netip.AddrPortFrom(peerAddr, 53).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("query"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, from, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "query" {
		t.Fatalf("forwarder socket read %q from %v: %v", buf[:n], from, err)
	}

	// A second Forwarder call moves the redirect to its new port.
	fwd2, err := c.Forwarder(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	fwd2.Close()
	x, err := c.Explain(ctx, id, peerAddr.String(), 53, "udp", nil)
	if err != nil || x.Reason != string(nft.ReasonDNS) || x.Verdict != nft.VerdictRedirect {
		t.Errorf("Explain(:53) = %+v, %v", x, err)
	}

	tcp, err := c.UpstreamTCP(ctx, id, "ip4", 3, nil)
	if err != nil || len(tcp) != 3 {
		t.Fatalf("UpstreamTCP = %d sockets, %v", len(tcp), err)
	}
	for _, f := range tcp {
		typ, _ := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_TYPE)
		dom, _ := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_DOMAIN)
		mark, _ := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_MARK)
		if typ != unix.SOCK_STREAM || dom != unix.AF_INET || mark != nft.DefaultDNSMark || socketNetns(t, f) != ctr.id.Ino {
			t.Errorf("upstream tcp socket: type %d domain %d mark %#x", typ, dom, mark)
		}
		f.Close()
	}
	for _, tt := range []struct {
		family string
		count  int
	}{{"ip5", 1}, {"ip4", 0}, {"ip6", 17}} {
		if _, err := c.UpstreamTCP(ctx, id, tt.family, tt.count, nil); !isInvalidParameter(err) {
			t.Errorf("UpstreamTCP(%s, %d) = %v, want InvalidParameter", tt.family, tt.count, err)
		}
	}

	// Learn: the element appears in List as learned, with its comment.
	l := verdictclient.Learned{IP: peerAddr.String(), Proto: "tcp", Port: 443, TTL: time.Minute, Comment: "api.example.com"}
	if err := c.Learn(ctx, id, []verdictclient.Learned{l}, nil); err != nil {
		t.Fatalf("Learn: %v", err)
	}
	els, err := c.List(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, el := range els {
		if el.List == nft.ListLearned && el.Dest == peerAddr.String() && el.Comment == "api.example.com" &&
			el.Proto != nil && *el.Proto == "tcp" && el.Port != nil && *el.Port == 443 && el.Timeout_sec == 60 {
			found = true
		}
	}
	if !found {
		t.Errorf("learned element not listed: %+v", els)
	}
	if err := c.Unlearn(ctx, id, []verdictclient.Learned{l}, nil); err != nil {
		t.Fatalf("Unlearn: %v", err)
	}
	for _, bad := range []verdictclient.Learned{
		{IP: "10.0.0.0/8", TTL: time.Minute},
		{IP: "not an address", TTL: time.Minute},
		{IP: "192.0.2.1"},
		{IP: "192.0.2.1", TTL: 8 * 24 * time.Hour},
		{IP: "192.0.2.1", Proto: "icmp", Port: 1, TTL: time.Minute},
		{IP: "192.0.2.1", Port: 80, TTL: time.Minute},
		{IP: "192.0.2.1", TTL: time.Minute, Comment: "bad\ncomment"},
	} {
		if err := c.Learn(ctx, id, []verdictclient.Learned{bad}, nil); !isInvalidParameter(err) {
			t.Errorf("Learn(%+v) = %v, want InvalidParameter", bad, err)
		}
	}
	many := make([]verdictclient.Learned, 1025)
	for i := range many {
		many[i] = verdictclient.Learned{IP: "192.0.2.1", TTL: time.Minute}
	}
	if err := c.Learn(ctx, id, many, nil); !isInvalidParameter(err) {
		t.Errorf("Learn(1025 elements) = %v, want InvalidParameter", err)
	}

	// Apply narrowed to one port, with the name it is about.
	res, err := c.Apply(ctx, verdictclient.ApplyRequest{Container: id, IP: peerAddr.String(), Action: "allow",
		Scope: "container", Proto: "tcp", Port: 8443, Name: "*.example.com"}, nil)
	if err != nil || !res.OK {
		t.Fatalf("Apply with port = %+v, %v", res, err)
	}
	x, err = c.Explain(ctx, id, peerAddr.String(), 8443, "tcp", nil)
	if err != nil || x.Reason != string(nft.ReasonAllowed) {
		t.Errorf("Explain after a port verdict = %+v, %v", x, err)
	}
	if x, _ := c.Explain(ctx, id, peerAddr.String(), 8444, "tcp", nil); x.Reason != string(nft.ReasonBlocked) {
		t.Errorf("Explain of another port = %+v", x)
	}
	if err := c.Revoke(ctx, id, peerAddr.String(), "tcp", 8443, nil); err != nil {
		t.Fatal(err)
	}
	if x, _ := c.Explain(ctx, id, peerAddr.String(), 8443, "tcp", nil); x.Reason != string(nft.ReasonBlocked) {
		t.Errorf("Explain after Revoke = %+v", x)
	}
	for _, r := range []verdictclient.ApplyRequest{
		{Container: id, IP: peerAddr.String(), Action: "allow", Scope: "once", Proto: "tcp"},
		{Container: id, IP: peerAddr.String(), Action: "allow", Scope: "once", Port: 70000, Proto: "tcp"},
		{Container: id, IP: peerAddr.String(), Action: "allow", Scope: "once", Port: 80, Proto: "gre"},
		{Container: id, IP: peerAddr.String(), Action: "allow", Scope: "once", Name: "two words"},
	} {
		if _, err := c.Apply(ctx, r, nil); !isInvalidParameter(err) {
			t.Errorf("Apply(%+v) = %v, want InvalidParameter", r, err)
		}
	}
}

func isInvalidParameter(err error) bool {
	var ip *varlink.InvalidParameter
	return errors.As(err, &ip)
}

// socketNetns returns the inode of the network namespace a socket lives
// in (SIOCGSKNS).
func socketNetns(t *testing.T, f *os.File) uint64 {
	t.Helper()
	fd, err := unix.IoctlRetInt(int(f.Fd()), unix.SIOCGSKNS)
	if err != nil {
		t.Fatalf("SIOCGSKNS: %v", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestIntegrationGuardSparesLearn fills the container's namespace past
// the guard's table bound: calls that read the ruleset (List, Engage) are
// refused before they read it, while Learn, which reads nothing, still
// adds its element (the guard's dumps are not on the path of every DNS
// answer with a new address).
func TestIntegrationGuardSparesLearn(t *testing.T) {
	ctr := startContainer(t)
	e := startService(t, "")
	const id = "f0f0f0000002"
	writeRecord(t, e.root, 0, ctr.rec(id))
	ctx := testutil.Context(t)
	c := e.dial(t)
	if _, _, err := c.Engage(ctx, id, nil); err != nil {
		t.Fatal(err)
	}

	f := ctr.nsFile(t)
	conn, err := nft.Dial(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseLasting()
	for i := range verdict.GuardMaxTables + 1 {
		conn.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "filler" + strconv.Itoa(i)})
		if i%32 == 31 || i == verdict.GuardMaxTables { // batches the socket's buffer takes the acks of
			if err := conn.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}

	if _, err := c.List(ctx, id, nil); errName(err) != "FirewallFailed" || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("List with %d tables = %v, want FirewallFailed: larger than the service reads", verdict.GuardMaxTables+1, err)
	}
	l := verdictclient.Learned{IP: peerAddr.String(), Proto: "tcp", Port: 443, TTL: time.Minute, Comment: "api.example.com"}
	if err := c.Learn(ctx, id, []verdictclient.Learned{l}, nil); err != nil {
		t.Fatalf("Learn with a ruleset past the guard: %v", err)
	}
	// The element is in the kernel: read the learned set directly.
	sets, err := conn.GetSets(&nftables.Table{Family: nftables.TableFamilyINet, Name: nft.Builtin.Table})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range sets {
		if !strings.HasPrefix(s.Name, "dns4") {
			continue
		}
		els, err := conn.GetSetElements(s)
		if err != nil {
			t.Fatal(err)
		}
		n += len(els)
	}
	if n == 0 {
		t.Errorf("no learned element in the kernel after Learn (sets %d)", len(sets))
	}
}
