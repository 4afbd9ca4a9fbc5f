// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nft

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/event"
)

var (
	set4     = &nftables.Set{Name: "allow4", KeyType: nftables.TypeIPAddr, HasTimeout: true}
	set6     = &nftables.Set{Name: "allow6", KeyType: nftables.TypeIP6Addr, HasTimeout: true}
	set4net  = &nftables.Set{Name: "allow4_net", KeyType: nftables.TypeIPAddr, Interval: true}
	set4port = &nftables.Set{Name: "allow4_port", KeyType: keyType(kindHostPort, true), HasTimeout: true, Concatenation: true}
	shield4  = &nftables.Set{Name: "allow_v4", KeyType: nftables.TypeIPAddr, Interval: true, HasTimeout: true}
	cmpAddrs = cmp.Options{
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.AllowUnexported(stored{}, ipRange{}),
	}
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"192.0.2.1/32", "192.0.2.1/32"},
		{"192.0.2.77/24", "192.0.2.0/24"},
		{"::ffff:192.0.2.1/128", "192.0.2.1/32"},
		{"::ffff:192.0.2.0/120", "192.0.2.0/24"},
		{"2001:db8::1/64", "2001:db8::/64"},
	}
	for _, tt := range tests {
		got, err := normalize(netip.MustParsePrefix(tt.in))
		if err != nil || got.String() != tt.want {
			t.Errorf("normalize(%s) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	if _, err := normalize(netip.Prefix{}); err == nil {
		t.Error("normalize(zero) = nil error")
	}
	if _, err := normalize(netip.MustParsePrefix("::ffff:0.0.0.0/80")); err == nil {
		t.Error("normalize(short mapped prefix) = nil error")
	}
	if got := Host(netip.MustParseAddr("::ffff:10.0.0.1")); got.String() != "10.0.0.1/32" {
		t.Errorf("Host(mapped) = %v", got)
	}
}

func TestEncode(t *testing.T) {
	k := func(s string) []byte { return netip.MustParseAddr(s).AsSlice() }
	tests := []struct {
		name    string
		set     *nftables.Set
		p       string
		ttl     time.Duration
		want    []nftables.SetElement
		wantErr bool
	}{
		{name: "v4 key is 4 bytes", set: set4, p: "192.0.2.1/32", want: []nftables.SetElement{{Key: k("192.0.2.1")}}},
		{name: "v4 with timeout", set: set4, p: "192.0.2.1/32", ttl: time.Second,
			want: []nftables.SetElement{{Key: k("192.0.2.1"), Timeout: time.Second}}},
		{name: "sub-ms ttl rounds up", set: set4, p: "192.0.2.1/32", ttl: time.Microsecond,
			want: []nftables.SetElement{{Key: k("192.0.2.1"), Timeout: time.Millisecond}}},
		{name: "v6 key is 16 bytes", set: set6, p: "2001:db8::1/128", want: []nftables.SetElement{{Key: k("2001:db8::1")}}},
		{name: "wrong family", set: set4, p: "2001:db8::1/128", wantErr: true},
		{name: "cidr into hash set", set: set4, p: "192.0.2.0/24", wantErr: true},
		{name: "interval pair", set: set4net, p: "192.0.2.0/24",
			want: []nftables.SetElement{{Key: k("192.0.2.0")}, {Key: k("192.0.3.0"), IntervalEnd: true}}},
		{name: "timeout on interval set without flag", set: set4net, p: "192.0.2.0/24", ttl: time.Second, wantErr: true},
		{name: "timeout only on the start", set: shield4, p: "192.0.2.1/32", ttl: time.Minute,
			want: []nftables.SetElement{{Key: k("192.0.2.1"), Timeout: time.Minute}, {Key: k("192.0.2.2"), IntervalEnd: true}}},
		{name: "range to the end has no end element", set: set4net, p: "255.0.0.0/8",
			want: []nftables.SetElement{{Key: k("255.0.0.0")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := kindHost
			if tt.set.Interval {
				k = kindNet
			}
			got, err := encode(tt.set, k, PrefixDest(netip.MustParsePrefix(tt.p)), tt.ttl, "")
			if (err != nil) != tt.wantErr {
				t.Fatalf("encode error = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("encode (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	k := func(s string) []byte { return netip.MustParseAddr(s).AsSlice() }
	a := netip.MustParseAddr
	// Kernel dumps come newest/highest first, end before start.
	raw := []nftables.SetElement{
		{Key: k("255.255.255.255")},              // open-ended last address
		{Key: k("192.0.3.0"), IntervalEnd: true}, // 192.0.2.0/24
		{Key: k("192.0.2.0"), Timeout: time.Minute, Expires: time.Second},
		{Key: k("172.16.0.2"), IntervalEnd: true}, // orphan: its start expired
		{Key: k("10.0.0.6"), IntervalEnd: true},
		{Key: k("10.0.0.5")},
	}
	got := decode(set4net, kindNet, raw)
	want := []stored{
		{ipRange: ipRange{a("10.0.0.5"), a("10.0.0.5")}, hasEnd: true},
		{ipRange: ipRange{a("192.0.2.0"), a("192.0.2.255")}, timeout: time.Minute, expires: time.Second, hasEnd: true},
		{ipRange: ipRange{a("255.255.255.255"), a("255.255.255.255")}},
	}
	if diff := cmp.Diff(want, got, cmpAddrs); diff != "" {
		t.Errorf("decode (-want +got):\n%s", diff)
	}
	if p, ok := got[1].prefix(); !ok || p.String() != "192.0.2.0/24" {
		t.Errorf("prefix = %v, %v", p, ok)
	}
	if _, ok := (ipRange{a("10.0.0.1"), a("10.0.0.3")}).prefix(); ok {
		t.Error("10.0.0.1-10.0.0.3 reported as a CIDR")
	}
	hash := decode(set4, kindHost, []nftables.SetElement{{Key: k("192.0.2.9")}, {Key: k("192.0.2.1"), Timeout: time.Second}})
	if len(hash) != 2 || hash[0].first != a("192.0.2.1") || hash[0].last != a("192.0.2.1") {
		t.Errorf("hash decode = %+v", hash)
	}
}

func TestPlan(t *testing.T) {
	pp := func(ss ...string) []Dest {
		var out []Dest
		for _, s := range ss {
			d, err := parseDest(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, d)
		}
		return out
	}
	rs := Ruleset{
		Allow: pp("192.0.2.1/32", "10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32", "::ffff:192.0.2.5/128", "192.0.2.9/32",
			"192.0.2.1:443/tcp", "10.0.0.0/8:53/udp", "10.1.0.0/16:53/udp", "10.1.0.0/16:53/tcp", "[2001:db8::1]:443/tcp"),
		Deny: pp("192.0.2.1/32", "203.0.113.0/24", "192.0.2.7/32"),
	}
	preserved := map[string][]entry{
		"deny4":  {{d: PrefixDest(netip.MustParsePrefix("192.0.2.9/32")), ttl: time.Minute}},
		"allow4": {{d: PrefixDest(netip.MustParsePrefix("192.0.2.7/32"))}},
	}
	got, err := plan(Builtin, rs, preserved)
	if err != nil {
		t.Fatal(err)
	}
	str := map[string][]string{}
	for name, es := range got {
		for _, e := range es {
			str[name] = append(str[name], e.d.String()+" "+e.ttl.String())
		}
	}
	want := map[string][]string{
		// 192.0.2.1 is in both initial lists: kept in both, deny wins in the ruleset.
		"allow4":         {"192.0.2.1 0s", "192.0.2.5 0s", "192.0.2.7 0s"},
		"allow4_net":     {"10.0.0.0/8 0s"},
		"allow4_port":    {"192.0.2.1:443/tcp 0s"},
		"allow4_netport": {"10.0.0.0/8:53/udp 0s", "10.1.0.0/16:53/tcp 0s"},
		"allow6_net":     {"2001:db8::/32 0s"},
		"allow6_port":    {"[2001:db8::1]:443/tcp 0s"},
		"deny4":          {"192.0.2.1 0s", "192.0.2.9 1m0s"},
		"deny4_net":      {"203.0.113.0/24 0s"},
	}
	if diff := cmp.Diff(want, str); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
	if _, err := plan(Builtin, Ruleset{Allow: []Dest{{}}}, nil); err == nil {
		t.Error("plan with an invalid prefix = nil error")
	}
}

func TestRulesetDefaults(t *testing.T) {
	rs, err := Ruleset{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if rs.Group != 100 || rs.BlockPrefix != "CLEARANCE_BLOCKED: " || rs.DNSMark != DefaultDNSMark {
		t.Errorf("defaults = %+v", rs)
	}
	if _, err := (Ruleset{BlockPrefix: string(make([]byte, 128))}).withDefaults(); err == nil {
		t.Error("128-byte prefix accepted")
	}
}

func TestExplain(t *testing.T) {
	a := netip.MustParseAddr
	el := func(first, last string, timeout time.Duration) stored {
		return stored{ipRange: ipRange{a(first), a(last)}, timeout: timeout, expires: timeout}
	}
	snap := &snapshot{engaged: true, sets: map[string]*setState{
		"resolver4":  {set: &nftables.Set{Name: "resolver4"}, elems: []stored{el("192.0.2.53", "192.0.2.53", 0)}},
		"allow4":     {set: set4, elems: []stored{el("192.0.2.1", "192.0.2.1", time.Second), el("203.0.113.7", "203.0.113.7", 0)}},
		"allow4_net": {set: set4net, elems: []stored{el("198.51.100.0", "198.51.100.255", 0)}},
		"deny4_net":  {set: set4net, elems: []stored{el("203.0.113.0", "203.0.113.255", 0)}},
		"allow6":     {set: set6, elems: []stored{el("2001:db8::1", "2001:db8::1", 0)}},
		"allow4_port": {set: set4port, kind: kindHostPort, elems: []stored{
			{ipRange: ipRange{a("192.0.2.80"), a("192.0.2.80")}, proto: 6, port: 443}}},
		"dns4_port": {set: set4port, kind: kindHostPort, elems: []stored{
			{ipRange: ipRange{a("192.0.2.81"), a("192.0.2.81")}, proto: 6, port: 443},
			{ipRange: ipRange{a("203.0.113.8"), a("203.0.113.8")}, proto: 6, port: 443}}},
	}}
	withPort := &snapshot{engaged: true, dnsPort: 5353, sets: snap.sets}
	tests := []struct {
		name     string
		snap     *snapshot
		dst      string
		port     uint16
		proto    uint8
		reason   Reason
		verdict  string
		set      string
		prompt   bool
		shadowed int
	}{
		{name: "not engaged", snap: &snapshot{}, dst: "192.0.2.1", reason: ReasonNotEngaged, verdict: VerdictAccept},
		{name: "loopback", dst: "127.0.0.53", port: 53, reason: ReasonLoopback, verdict: VerdictAccept},
		{name: "v6 loopback", dst: "::1", reason: ReasonLoopback, verdict: VerdictAccept},
		{name: "dns without a forwarder", dst: "192.0.2.53", port: 53, reason: ReasonDNS, verdict: VerdictReject},
		{name: "dns with a forwarder", snap: withPort, dst: "198.51.100.9", port: 53, proto: 17, reason: ReasonDNS, verdict: VerdictRedirect},
		{name: "resolver other port", dst: "192.0.2.53", port: 443, reason: ReasonBlocked, verdict: VerdictReject, prompt: true},
		{name: "port element, its port", dst: "192.0.2.80", port: 443, proto: 6, reason: ReasonAllowed, verdict: VerdictAccept, set: "allow4_port"},
		{name: "port element, unknown proto", dst: "192.0.2.80", port: 443, reason: ReasonAllowed, verdict: VerdictAccept, set: "allow4_port"},
		{name: "port element, other proto", dst: "192.0.2.80", port: 443, proto: 17, reason: ReasonBlocked, verdict: VerdictReject, prompt: true},
		{name: "port element, other port", dst: "192.0.2.80", port: 80, proto: 6, reason: ReasonBlocked, verdict: VerdictReject, prompt: true},
		{name: "learned", dst: "192.0.2.81", port: 443, proto: 6, reason: ReasonLearned, verdict: VerdictAccept, set: "dns4_port"},
		{name: "deny before learned", dst: "203.0.113.8", port: 443, proto: 6, reason: ReasonDenied, verdict: VerdictDrop, set: "deny4_net", shadowed: 1},
		{name: "allowed once", dst: "192.0.2.1", port: 443, reason: ReasonAllowed, verdict: VerdictAccept, set: "allow4"},
		{name: "mapped address", dst: "::ffff:192.0.2.1", port: 443, reason: ReasonAllowed, verdict: VerdictAccept, set: "allow4"},
		{name: "allowed by cidr", dst: "198.51.100.200", port: 80, reason: ReasonAllowed, verdict: VerdictAccept, set: "allow4_net"},
		{name: "deny cidr beats allowed address", dst: "203.0.113.7", port: 80, reason: ReasonDenied, verdict: VerdictDrop, set: "deny4_net", shadowed: 1},
		{name: "v6 allowed", dst: "2001:db8::1", port: 80, reason: ReasonAllowed, verdict: VerdictAccept, set: "allow6"},
		{name: "blocked", dst: "192.0.2.2", port: 80, reason: ReasonBlocked, verdict: VerdictReject, prompt: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.snap
			if s == nil {
				s = snap
			}
			x := explain(Builtin, s, a(tt.dst), tt.proto, tt.port)
			gotSet := ""
			if x.Match != nil {
				gotSet = x.Match.Set
			}
			got := []any{x.Reason, x.Verdict, gotSet, x.Prompt, len(x.Shadowed)}
			want := []any{tt.reason, tt.verdict, tt.set, tt.prompt, tt.shadowed}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("explain (-want +got):\n%s", diff)
			}
		})
	}
}

// TestApplyNotEngagedFake checks, against a fake netlink peer, that Apply
// on a namespace without the table fails with ErrNotEngaged and sends no
// batch.
func TestApplyNotEngagedFake(t *testing.T) {
	var batches int
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		for _, m := range req {
			if m.Header.Type == netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN) {
				batches++
			}
		}
		// An empty dump: no tables.
		return []netlink.Message{{Header: netlink.Header{
			Type: netlink.Done, Flags: netlink.Multi, Sequence: req[0].Header.Sequence, PID: req[0].Header.PID,
		}}}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	fw := New(c, Builtin)
	err = fw.Apply("allow", HostDest(netip.MustParseAddr("192.0.2.1")), 0, "")
	if err == nil || !errorsIs(err, ErrNotEngaged) {
		t.Fatalf("Apply = %v, want ErrNotEngaged", err)
	}
	if batches != 0 {
		t.Errorf("%d batches sent", batches)
	}
	x, err := fw.Explain(netip.MustParseAddr("192.0.2.1"), 6, 80)
	if err != nil || x.Reason != ReasonNotEngaged {
		t.Errorf("Explain = %+v, %v", x, err)
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// parseDest parses the [Dest.String] form ("192.0.2.1", "10.0.0.0/8",
// "192.0.2.1:443/tcp", "[2001:db8::1]:53/udp").
func parseDest(s string) (Dest, error) {
	var d Dest
	if i := strings.LastIndex(s, "/"); i > 0 {
		if proto, err := ParseProto(s[i+1:]); err == nil {
			host, port, err := net.SplitHostPort(s[:i])
			if err != nil {
				return d, err
			}
			n, err := strconv.ParseUint(port, 10, 16)
			if err != nil {
				return d, err
			}
			d.Proto, d.Port, s = proto, uint16(n), host
		}
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return d, err
		}
		d.Prefix = Host(a)
		return d, nil
	}
	p, err := netip.ParsePrefix(s)
	d.Prefix = p
	return d, err
}

func TestDestString(t *testing.T) {
	for _, s := range []string{"192.0.2.1", "10.0.0.0/8", "192.0.2.1:443/tcp", "10.0.0.0/8:53/udp",
		"[2001:db8::1]:53/udp", "2001:db8::/32", "[2001:db8::/32]:443/sctp"} {
		d, err := parseDest(s)
		if err != nil {
			t.Fatalf("parse %q: %v", s, err)
		}
		if got := d.String(); got != s {
			t.Errorf("String(parse(%q)) = %q", s, got)
		}
	}
	for _, d := range []Dest{
		{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Port: 443},
		{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Proto: 6},
		{},
	} {
		if _, err := normalizeDest(d); err == nil {
			t.Errorf("normalizeDest(%+v) = nil error", d)
		}
	}
}

func TestEncodeConcat(t *testing.T) {
	a := netip.MustParseAddr
	set4netport := &nftables.Set{Name: "allow4_netport", KeyType: keyType(kindNetPort, true), Interval: true, Concatenation: true}
	set6port := &nftables.Set{Name: "allow6_port", KeyType: keyType(kindHostPort, false), HasTimeout: true, Concatenation: true}
	tests := []struct {
		name    string
		set     *nftables.Set
		k       setKind
		d       string
		ttl     time.Duration
		want    []nftables.SetElement
		wantErr bool
	}{
		{name: "v4 host port: address, proto and port in 4-byte registers", set: set4port, k: kindHostPort,
			d: "192.0.2.1:443/tcp", ttl: time.Minute,
			want: []nftables.SetElement{{Key: []byte{192, 0, 2, 1, 6, 0, 0, 0, 1, 187, 0, 0}, Timeout: time.Minute}}},
		{name: "v6 host port", set: set6port, k: kindHostPort, d: "[2001:db8::1]:53/udp",
			want: []nftables.SetElement{{Key: append(a("2001:db8::1").AsSlice(), 17, 0, 0, 0, 0, 53, 0, 0)}}},
		{name: "net port: one element with an inclusive end", set: set4netport, k: kindNetPort, d: "10.0.0.0/8:53/udp",
			want: []nftables.SetElement{{Key: []byte{10, 0, 0, 0, 17, 0, 0, 0, 0, 53, 0, 0},
				KeyEnd: []byte{10, 255, 255, 255, 17, 0, 0, 0, 0, 53, 0, 0}}}},
		{name: "whole host into a port set", set: set4port, k: kindHostPort, d: "192.0.2.1", wantErr: true},
		{name: "port into a host set", set: set4, k: kindHost, d: "192.0.2.1:443/tcp", wantErr: true},
		{name: "wrong family", set: set4port, k: kindHostPort, d: "[2001:db8::1]:53/udp", wantErr: true},
		{name: "timeout on the netport set", set: set4netport, k: kindNetPort, d: "10.0.0.0/8:53/udp", ttl: time.Second, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := parseDest(tt.d)
			if err != nil {
				t.Fatal(err)
			}
			got, err := encode(tt.set, tt.k, d, tt.ttl, "")
			if (err != nil) != tt.wantErr {
				t.Fatalf("encode error = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("encode (-want +got):\n%s", diff)
			}
			if err != nil {
				return
			}
			back := decode(tt.set, tt.k, got)
			if len(back) != 1 {
				t.Fatalf("decode(encode) = %+v", back)
			}
			if bd, ok := back[0].dest(); !ok || bd != d {
				t.Errorf("decode(encode(%v)) = %v", d, bd)
			}
		})
	}
}

// TestListNamesAreTheWireActions: an element's list is the action a
// verdict names on the wire.
func TestListNamesAreTheWireActions(t *testing.T) {
	if actionAllow != event.ActionAllow || actionDeny != event.ActionDeny {
		t.Errorf("lists %q/%q, wire actions %q/%q", actionAllow, actionDeny, event.ActionAllow, event.ActionDeny)
	}
}
