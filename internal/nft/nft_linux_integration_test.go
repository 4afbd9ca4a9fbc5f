// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nft_test

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"

	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/testenv/netnstest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// Test addresses: a private /30 between two anonymous namespaces, no
// default route, nothing leaves the test's namespaces.
var (
	hostAddr = netip.MustParseAddr("10.254.77.1")
	ctrAddr  = netip.MustParseAddr("10.254.77.2")
	resolver = netip.MustParseAddr("10.254.77.1")
)

// testbed is a "container" netns connected by a veth pair to a "test host"
// netns that runs a TCP listener.
type testbed struct {
	ctr, host *os.File
	port      int
	conn      *nftables.Conn
	fw        *nft.Firewall
}

func newTestbed(t *testing.T) *testbed {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "nsenter")
	checkHostClean(t)
	tb := &testbed{ctr: netnstest.NewNetNS(t), host: netnstest.NewNetNS(t)}
	run(t, tb.ctr, "ip", "link", "add", "clv0", "type", "veth", "peer", "name", "clv1", "netns", netnstest.Path(tb.host))
	run(t, tb.ctr, "ip", "addr", "add", ctrAddr.String()+"/30", "dev", "clv0")
	run(t, tb.ctr, "ip", "link", "set", "clv0", "up")
	run(t, tb.host, "ip", "addr", "add", hostAddr.String()+"/30", "dev", "clv1")
	run(t, tb.host, "ip", "link", "set", "clv1", "up")

	var ln net.Listener
	netnstest.Exec(t, tb.host, func() error {
		var err error
		ln, err = net.Listen("tcp4", hostAddr.String()+":0")
		return err
	})
	tb.port = ln.Addr().(*net.TCPAddr).Port
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })

	c, err := nft.Dial(int(tb.ctr.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseLasting() })
	tb.conn = c
	tb.fw = nft.New(c, nft.Builtin)

	// The veth needs a moment to come up (carrier, ARP): wait until the
	// unfiltered path works.
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := tb.dial(t)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("test host unreachable without a firewall: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return tb
}

// checkHostClean fails if the test process's own (host) netns has a
// clearance table, now or when the test ends.
func checkHostClean(t *testing.T) {
	t.Helper()
	check := func() {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range tables {
			if tt.Name == nft.Builtin.Table {
				t.Errorf("host netns has table inet %s", tt.Name)
			}
		}
	}
	check()
	t.Cleanup(check)
}

// run runs a command inside ns and returns its stdout.
func run(t *testing.T, ns *os.File, args ...string) string {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + netnstest.Path(ns), "--"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// dial connects from the container to the test host with a short timeout.
func (tb *testbed) dial(t *testing.T) error {
	t.Helper()
	var derr error
	netnstest.Exec(t, tb.ctr, func() error {
		d := net.Dialer{Timeout: 300 * time.Millisecond}
		c, err := d.Dial("tcp4", netip.AddrPortFrom(hostAddr, uint16(tb.port)).String())
		if err == nil {
			c.Close()
		}
		derr = err
		return nil
	})
	return derr
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestIntegrationEngageApplyExpire(t *testing.T) {
	tb := newTestbed(t)
	testutil.RequireTool(t, "nft")
	fw := tb.fw

	if err := tb.dial(t); err != nil {
		t.Fatalf("connect before engage: %v", err)
	}
	if _, err := fw.List(); !errors.Is(err, nft.ErrNotEngaged) {
		t.Fatalf("List before engage = %v, want ErrNotEngaged", err)
	}
	if err := fw.Apply("allow", nft.HostDest(hostAddr), 0, ""); !errors.Is(err, nft.ErrNotEngaged) {
		t.Fatalf("Apply before engage = %v, want ErrNotEngaged", err)
	}

	rs := nft.Ruleset{
		Resolvers: []netip.Addr{resolver, netip.MustParseAddr("fd00:77::1")},
		Allow: prefixDests(
			"192.0.2.10/32",
			"198.51.100.0/24",
			"198.51.100.128/25", // nested: dropped
			"2001:db8::1/128",
		),
		Deny: prefixDests("203.0.113.0/24"),
	}
	if err := fw.Engage(rs); err != nil {
		t.Fatal(err)
	}
	checkRuleset(t, tb)

	err := tb.dial(t)
	t.Logf("connect while blocked: %v", err)
	if !errors.Is(err, syscall.EHOSTUNREACH) && !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EACCES) {
		t.Fatalf("connect while blocked = %v, want a refusal (EHOSTUNREACH)", err)
	}
	if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("connect while blocked = %v; this kernel reported EHOSTUNREACH before", err)
	}
	explainIs(t, fw, hostAddr, uint16(tb.port), nft.ReasonBlocked, "")
	explainIs(t, fw, resolver, 53, nft.ReasonDNS, "")
	explainIs(t, fw, netip.MustParseAddr("127.0.0.1"), 80, nft.ReasonLoopback, "")
	explainIs(t, fw, netip.MustParseAddr("198.51.100.7"), 443, nft.ReasonAllowed, "allow4_net")
	explainIs(t, fw, netip.MustParseAddr("203.0.113.9"), 443, nft.ReasonDenied, "deny4_net")
	explainIs(t, fw, netip.MustParseAddr("2001:db8::1"), 443, nft.ReasonAllowed, "allow6")

	// Engaging twice is idempotent and keeps runtime elements.
	if err := fw.Apply("allow", nft.HostDest(netip.MustParseAddr("192.0.2.99")), time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	before := listPrefixes(t, fw)
	if err := fw.Engage(rs); err != nil {
		t.Fatalf("second engage: %v", err)
	}
	if diff := cmp.Diff(before, listPrefixes(t, fw)); diff != "" {
		t.Errorf("elements changed by re-engage (-want +got):\n%s", diff)
	}
	checkRuleset(t, tb)

	// allow → connects.
	if err := fw.Apply("allow", nft.HostDest(hostAddr), 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := tb.dial(t); err != nil {
		t.Fatalf("connect after allow: %v", err)
	}
	explainIs(t, fw, hostAddr, uint16(tb.port), nft.ReasonAllowed, "allow4")

	// deny → silently dropped: the connect times out.
	if err := fw.Apply("deny", nft.HostDest(hostAddr), 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := tb.dial(t); !isTimeout(err) {
		t.Fatalf("connect after deny = %v, want a timeout", err)
	}
	x := explainIs(t, fw, hostAddr, uint16(tb.port), nft.ReasonDenied, "deny4")
	if len(x.Shadowed) != 0 {
		t.Errorf("deny left the allow element in place: %+v", x.Shadowed)
	}

	// once (1 s) → connects, then expires and is refused again.
	if err := fw.Apply("allow", nft.HostDest(hostAddr), time.Second, ""); err != nil {
		t.Fatal(err)
	}
	el := findElement(t, fw, "allow4", nft.Host(hostAddr))
	if el == nil || el.Timeout != time.Second || el.Expires <= 0 || el.Expires > time.Second {
		t.Fatalf("once element = %+v, want timeout 1s and expiry within 1s", el)
	}
	if findElement(t, fw, "deny4", nft.Host(hostAddr)) != nil {
		t.Fatal("allow left the deny element in place")
	}
	if err := tb.dial(t); err != nil {
		t.Fatalf("connect after once-allow: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for findElement(t, fw, "allow4", nft.Host(hostAddr)) != nil {
		if time.Now().After(deadline) {
			t.Fatal("once element did not expire within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := tb.dial(t); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("connect after expiry = %v, want EHOSTUNREACH", err)
	}
	explainIs(t, fw, hostAddr, uint16(tb.port), nft.ReasonBlocked, "")

	// Revoke removes from both lists; revoking again is fine.
	if err := fw.Apply("deny", nft.HostDest(netip.MustParseAddr("2001:db8::1")), 0, ""); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := fw.Revoke(nft.HostDest(netip.MustParseAddr("2001:db8::1"))); err != nil {
			t.Fatal(err)
		}
	}
	explainIs(t, fw, netip.MustParseAddr("2001:db8::1"), 443, nft.ReasonBlocked, "")

	if err := fw.Disengage(); err != nil {
		t.Fatal(err)
	}
	if err := fw.Disengage(); err != nil {
		t.Fatalf("second disengage: %v", err)
	}
	if out := run(t, tb.ctr, "nft", "list", "tables"); strings.Contains(out, "clearance") {
		t.Fatalf("table left after disengage: %s", out)
	}
	if err := tb.dial(t); err != nil {
		t.Fatalf("connect after disengage: %v", err)
	}
	explainIs(t, fw, hostAddr, uint16(tb.port), nft.ReasonNotEngaged, "")
}

func TestIntegrationApplyEdgeCases(t *testing.T) {
	tb := newTestbed(t)
	fw := tb.fw
	if err := fw.Engage(nft.Ruleset{Allow: prefixDests("10.0.0.0/8")}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		action  string
		dest    string
		ttl     time.Duration
		wantErr error
		anyErr  bool
	}{
		{name: "cidr into net set", action: "deny", dest: "172.16.0.0/12"},
		{name: "same cidr again", action: "deny", dest: "172.16.0.0/12"},
		{name: "nested cidr", action: "deny", dest: "172.16.1.0/24", wantErr: nft.ErrOverlap},
		{name: "cidr with ttl", action: "allow", dest: "192.168.0.0/16", ttl: time.Minute, wantErr: nft.ErrNoTimeout},
		{name: "address inside allowed cidr", action: "allow", dest: "10.1.2.3/32", ttl: time.Minute},
		{name: "ipv4-mapped address", action: "allow", dest: "::ffff:192.0.2.1/128"},
		{name: "v6 cidr", action: "allow", dest: "2001:db8:1::/48"},
		{name: "last v4 address", action: "deny", dest: "255.255.255.255/32"},
		{name: "whole v6 space", action: "deny", dest: "::/0"},
		{name: "bad action", action: "maybe", dest: "192.0.2.1/32", wantErr: nft.ErrAction},
		{name: "negative ttl", action: "allow", dest: "192.0.2.1/32", ttl: -time.Second, anyErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := fw.Apply(tt.action, nft.PrefixDest(netip.MustParsePrefix(tt.dest)), tt.ttl, "")
			switch {
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("Apply = %v, want %v", err, tt.wantErr)
			case tt.anyErr && err == nil:
				t.Fatal("Apply = nil, want an error")
			case tt.wantErr == nil && !tt.anyErr && err != nil:
				t.Fatalf("Apply = %v", err)
			}
		})
	}
	got := listPrefixes(t, fw)
	want := []string{
		"deny4_net 172.16.0.0/12", "deny4 255.255.255.255/32", "deny6_net ::/0",
		"allow4_net 10.0.0.0/8", "allow4 10.1.2.3/32", "allow4 192.0.2.1/32", "allow6_net 2001:db8:1::/48",
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("elements (-want +got):\n%s", diff)
	}
	// The deny wins for an address both allowed and denied by CIDR.
	x := explainIs(t, fw, netip.MustParseAddr("2001:db8:1::5"), 443, nft.ReasonDenied, "deny6_net")
	if len(x.Shadowed) != 1 || x.Shadowed[0].Set != "allow6_net" {
		t.Errorf("shadowed = %+v, want the allow6_net element", x.Shadowed)
	}
	for _, p := range []string{"172.16.0.0/12", "255.255.255.255/32", "::/0"} {
		if err := fw.Revoke(nft.PrefixDest(netip.MustParsePrefix(p))); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(listPrefixes(t, fw)); got != 4 {
		t.Errorf("after revoke: %d elements, want 4", got)
	}
	if err := fw.Disengage(); err != nil {
		t.Fatal(err)
	}
}

func TestIntegrationShieldLayout(t *testing.T) {
	testutil.RequireRoot(t)
	nftPath := testutil.RequireTool(t, "nft", "nsenter")
	ns := netnstest.NewNetNS(t)
	c, err := nft.Dial(int(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseLasting()
	fw := nft.New(c, nft.Shield)
	if err := fw.Engage(nft.Ruleset{}); !errors.Is(err, nft.ErrNotEngaged) {
		t.Fatalf("Engage without shield table = %v, want ErrNotEngaged", err)
	}
	// A table shaped like terok-shield 0.6.37's (sets only).
	cmd := exec.Command("nsenter", "--net="+netnstest.Path(ns), "--", nftPath, "-f", "-")
	cmd.Stdin = strings.NewReader(`table inet terok_shield {
	set allow_v4 { type ipv4_addr; flags interval; }
	set allow_v6 { type ipv6_addr; flags interval; }
	set deny_v4 { type ipv4_addr; flags interval; }
	set deny_v6 { type ipv6_addr; flags interval; }
}
add element inet terok_shield allow_v4 { 140.82.112.0/20 }
`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
	if err := fw.Engage(nft.Ruleset{}); err != nil {
		t.Fatalf("Engage on shield table: %v", err)
	}
	if err := fw.Apply("allow", nft.HostDest(netip.MustParseAddr("192.0.2.1")), 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := fw.Apply("allow", nft.HostDest(netip.MustParseAddr("192.0.2.2")), time.Minute, ""); !errors.Is(err, nft.ErrNoTimeout) {
		t.Fatalf("timed allow in shield set = %v, want ErrNoTimeout", err)
	}
	if err := fw.Apply("deny", nft.PrefixDest(netip.MustParsePrefix("2001:db8::/32")), 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := fw.Apply("deny", nft.HostDest(netip.MustParseAddr("192.0.2.1")), 0, ""); err != nil {
		t.Fatal(err)
	}
	want := []string{"allow_v4 140.82.112.0/20", "deny_v4 192.0.2.1/32", "deny_v6 2001:db8::/32"}
	if diff := cmp.Diff(want, listPrefixes(t, fw)); diff != "" {
		t.Errorf("elements (-want +got):\n%s", diff)
	}
	out := run(t, ns, "nft", "list", "table", "inet", "terok_shield")
	for _, s := range []string{"192.0.2.1", "2001:db8::/32", "140.82.112.0/20"} {
		if !strings.Contains(out, s) {
			t.Errorf("nft list lacks %s:\n%s", s, out)
		}
	}
	if err := fw.Disengage(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(run(t, ns, "nft", "list", "tables"), "terok_shield") {
		t.Error("Disengage deleted the shield's table")
	}
}

// checkRuleset cross-checks the table with the nft CLI inside the netns.
func checkRuleset(t *testing.T, tb *testbed) {
	t.Helper()
	text := run(t, tb.ctr, "nft", "list", "table", "inet", "clearance")
	for _, want := range []string{
		`chain output {`,
		`type filter hook output priority filter; policy drop;`,
		`oifname "lo" accept`,
		`ct state established,related accept`,
		`meta mark 0x636c7200 ip daddr @resolver4 udp dport 53 accept`,
		`meta mark 0x636c7200 ip daddr @resolver4 tcp dport 53 accept`,
		`meta mark 0x636c7200 ip6 daddr @resolver6 udp dport 53 accept`,
		`udp dport 53 reject`,
		`tcp dport 53 reject with tcp reset`,
		`ip daddr . meta l4proto . th dport @deny4_port drop`,
		`ip6 daddr . meta l4proto . th dport @allow6_netport accept`,
		`ip daddr @dns4 accept`,
		`ip daddr . meta l4proto . th dport @dns4_port accept`,
		`ip6 daddr . meta l4proto . th dport @dns6_port accept`,
		`ip daddr @deny4 drop`,
		`ip6 daddr @deny6_net drop`,
		`ip daddr @allow4 accept`,
		`ip6 daddr @allow6_net accept`,
		`log prefix "CLEARANCE_BLOCKED: " group 100 queue-threshold 1 reject with icmpx admin-prohibited`,
		`type nat hook output priority -100; policy accept;`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("nft list table lacks %q:\n%s", want, text)
		}
	}
	// Rule order: deny before allow before the terminal log+reject.
	order := []string{`dport 53 reject`, `@deny4 drop`, `@deny6_netport drop`, `@allow4 accept`, `@allow6_netport accept`,
		`@dns4 accept`, `@dns6_port accept`, `log prefix "CLEARANCE_BLOCKED: "`}
	last := -1
	for _, s := range order {
		i := strings.Index(text, s)
		if i < last {
			t.Errorf("%q out of order in:\n%s", s, text)
		}
		last = i
	}

	var doc struct {
		Nftables []struct {
			Set *struct {
				Name  string   `json:"name"`
				Type  any      `json:"type"`
				Flags []string `json:"flags"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(run(t, tb.ctr, "nft", "-j", "list", "table", "inet", "clearance")), &doc); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range doc.Nftables {
		if o.Set != nil {
			typ, _ := o.Set.Type.(string)
			if parts, ok := o.Set.Type.([]any); ok { // a concatenation
				var ss []string
				for _, p := range parts {
					ss = append(ss, p.(string))
				}
				typ = strings.Join(ss, " . ")
			}
			got[o.Set.Name] = typ + " " + strings.Join(o.Set.Flags, ",")
		}
	}
	want := map[string]string{
		"resolver4": "ipv4_addr ", "resolver6": "ipv6_addr ",
		"allow4": "ipv4_addr timeout", "allow6": "ipv6_addr timeout",
		"deny4": "ipv4_addr timeout", "deny6": "ipv6_addr timeout",
		"allow4_net": "ipv4_addr interval", "allow6_net": "ipv6_addr interval",
		"deny4_net": "ipv4_addr interval", "deny6_net": "ipv6_addr interval",
		"allow4_port": "ipv4_addr . inet_proto . inet_service timeout", "allow6_port": "ipv6_addr . inet_proto . inet_service timeout",
		"deny4_port": "ipv4_addr . inet_proto . inet_service timeout", "deny6_port": "ipv6_addr . inet_proto . inet_service timeout",
		"allow4_netport": "ipv4_addr . inet_proto . inet_service interval", "allow6_netport": "ipv6_addr . inet_proto . inet_service interval",
		"deny4_netport": "ipv4_addr . inet_proto . inet_service interval", "deny6_netport": "ipv6_addr . inet_proto . inet_service interval",
		"dns4": "ipv4_addr timeout", "dns6": "ipv6_addr timeout",
		"dns4_port": "ipv4_addr . inet_proto . inet_service timeout", "dns6_port": "ipv6_addr . inet_proto . inet_service timeout",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sets per nft -j (-want +got):\n%s", diff)
	}
}

func explainIs(t *testing.T, fw *nft.Firewall, dst netip.Addr, port uint16, want nft.Reason, set string) nft.Explanation {
	t.Helper()
	x, err := fw.Explain(dst, 6, port)
	if err != nil {
		t.Fatal(err)
	}
	gotSet := ""
	if x.Match != nil {
		gotSet = x.Match.Set
	}
	if x.Reason != want || gotSet != set {
		t.Errorf("Explain(%v, %d) = %s (set %q), want %s (set %q)", dst, port, x.Reason, gotSet, want, set)
	}
	return x
}

func listPrefixes(t *testing.T, fw *nft.Firewall) []string {
	t.Helper()
	els, err := fw.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range els {
		d := e.Dest.Prefix.String()
		if !e.Dest.Whole() {
			d = e.Dest.String()
		}
		out = append(out, e.Set+" "+d)
	}
	slices.Sort(out)
	return out
}

func findElement(t *testing.T, fw *nft.Firewall, set string, p netip.Prefix) *nft.Element {
	t.Helper()
	els, err := fw.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range els {
		if e.Set == set && e.Dest.Prefix == p {
			return &e
		}
	}
	return nil
}

func prefixDests(ss ...string) []nft.Dest {
	var out []nft.Dest
	for _, s := range ss {
		out = append(out, nft.PrefixDest(netip.MustParsePrefix(s)))
	}
	return out
}
