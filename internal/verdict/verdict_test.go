// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/dnsfwd"
	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/record"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
)

func TestAuthorize(t *testing.T) {
	tests := []struct {
		name        string
		peer, owner uint32
		ok          bool
	}{
		{"owner", 1000, 1000, true},
		{"root for anyone", 0, 1000, true},
		{"root for root", 0, 0, true},
		{"other user", 1001, 1000, false},
		{"user for root's namespace", 1000, 0, false},
		{"overflow uid is nobody's", 1000, 65534, false},
		{"overflow uid is not nobody's either", 65534, 65534, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := authorize(tt.peer, tt.owner)
			var pe *permissionError
			if tt.ok != (err == nil) || (err != nil && !errors.As(err, &pe)) {
				t.Errorf("authorize(%d, %d) = %v, want ok=%v", tt.peer, tt.owner, err, tt.ok)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	long := strings.Repeat("é", 400) // 800 bytes
	got := truncate(long)
	if len(got) > maxStderr || !utf8.ValidString(got) {
		t.Errorf("truncate: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if got := truncate("  short\n"); got != "short" {
		t.Errorf("truncate(short) = %q", got)
	}
}

func TestWireElement(t *testing.T) {
	now := time.UnixMicro(1_700_000_000_000_000)
	tests := []struct {
		name string
		in   nft.Element
		want fw1.Element
	}{
		{"single address with timeout",
			nft.Element{Set: "allow4", List: "allow", Dest: nft.PrefixDest(netip.MustParsePrefix("192.0.2.1/32")), Timeout: 1500 * time.Millisecond, Expires: time.Second},
			fw1.Element{List: "allow", Set: "allow4", Dest: "192.0.2.1", Timeout_sec: 2, Expires_usec: now.Add(time.Second).UnixMicro()}},
		{"permanent prefix",
			nft.Element{Set: "deny6_net", List: "deny", Dest: nft.PrefixDest(netip.MustParsePrefix("2001:db8::/32")), Comment: "c"},
			fw1.Element{List: "deny", Set: "deny6_net", Dest: "2001:db8::/32", Comment: "c"}},
		{"non-CIDR range",
			nft.Element{Set: "allow_v4", List: "allow", First: netip.MustParseAddr("10.0.0.1"), Last: netip.MustParseAddr("10.0.0.5")},
			fw1.Element{List: "allow", Set: "allow_v4", Dest: "10.0.0.1-10.0.0.5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, wireElement(tt.in, now)); diff != "" {
				t.Errorf("wireElement (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUserPolicyDir(t *testing.T) {
	if got := UserPolicyDir("/etc/clearance/policy.d", 0); got != "/etc/clearance/policy.d" {
		t.Errorf("root: %q", got)
	}
	if got := UserPolicyDir("/etc/clearance/policy.d", 1000); got != "/etc/clearance/policy.d/uid-1000" {
		t.Errorf("user: %q", got)
	}
}

// TestRulesetFromPolicies checks what Engage installs from a container's
// policies: the administrator's file over the shipped profile, includes
// expanded, the user's layer on top; address entries become ruleset
// elements (a port without a protocol: tcp and udp), names become the
// forwarder's name rules.
func TestRulesetFromPolicies(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("shipped/mirror.yaml", "allow: [192.0.2.99, mirror.example:443/tcp]\n")
	write("shipped/proj.yaml", "allow: [192.0.2.98]\n") // shadowed by etc/proj.yaml
	write("etc/mirror.yaml", "allow: [192.0.2.1, mirror.example:443/tcp]\nresolvers: [192.0.2.53]\n")
	write("etc/proj.yaml", "include: [mirror]\nallow:\n  - 198.51.100.0/24\n  - 198.51.100.7:22/tcp\n  - github.com\ndeny: [203.0.113.0/24, 203.0.113.9:25/tcp, '*.example.net']\n")
	write("etc/uid-1000/proj.yaml", "allow: [192.0.2.2, 192.0.2.1]\n")

	s, err := New(Config{PolicyDir: filepath.Join(dir, "etc"), PolicyPath: []string{filepath.Join(dir, "shipped")}, Resolvers: []netip.Addr{netip.MustParseAddr("192.0.2.54")}})
	if err != nil {
		t.Fatal(err)
	}
	write("etc/uid-1000/ports.yaml", "allow: [192.0.2.3:53, 'api.example.org:8443']\n")
	names := []string{"allow mirror.example 443/tcp", "allow github.com 0/", "deny *.example.net 0/"}
	tests := []struct {
		name   string
		owner  uint32
		policy string
		allow  []string
		deny   []string
		names  []string
	}{
		{name: "root's container", owner: 0, policy: "proj", allow: []string{"192.0.2.1", "198.51.100.0/24", "198.51.100.7:22/tcp"},
			deny: []string{"203.0.113.0/24", "203.0.113.9:25/tcp"}, names: names},
		{name: "a user's container", owner: 1000, policy: "proj", allow: []string{"192.0.2.1", "198.51.100.0/24", "198.51.100.7:22/tcp", "192.0.2.2"},
			deny: []string{"203.0.113.0/24", "203.0.113.9:25/tcp"}, names: names},
		{name: "a port without a protocol", owner: 1000, policy: "ports", allow: []string{"192.0.2.3:53/tcp", "192.0.2.3:53/udp"},
			names: []string{"allow api.example.org 8443/tcp", "allow api.example.org 8443/udp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, nrs, err := s.policy(&target{owner: tt.owner, rec: &record.Record{Policy: tt.policy}})
			if err != nil {
				t.Fatal(err)
			}
			strs := func(ds []nft.Dest) []string {
				var out []string
				for _, d := range ds {
					out = append(out, d.String())
				}
				return out
			}
			type got struct{ Allow, Deny, Names, Resolvers []string }
			want := got{tt.allow, tt.deny, tt.names, []string{"192.0.2.54"}}
			if tt.policy == "proj" {
				want.Resolvers = append(want.Resolvers, "192.0.2.53")
			}
			var res, ns []string
			for _, r := range rs.Resolvers {
				res = append(res, r.String())
			}
			for _, n := range nrs {
				ns = append(ns, n.Action+" "+n.Pattern+" "+strconv.Itoa(int(n.Port))+"/"+n.Proto)
			}
			if diff := cmp.Diff(want, got{strs(rs.Allow), strs(rs.Deny), ns, res}); diff != "" {
				t.Errorf("ruleset (-want +got):\n%s", diff)
			}
		})
	}
	write("etc/broken.yaml", "include: [nonesuch]\n")
	_, err = s.ruleset(&target{rec: &record.Record{Policy: "broken"}})
	if want := `load policy "broken": ` + filepath.Join(dir, "etc", "broken.yaml") + `:1: include "nonesuch": no policy "nonesuch" in ` +
		filepath.Join(dir, "etc") + ", " + filepath.Join(dir, "shipped"); err == nil || err.Error() != want {
		t.Errorf("ruleset with an unknown include = %v, want %s", err, want)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"unknown mode", Config{Mode: "iptables"}},
		{"unknown shield apply", Config{Mode: ModeShield, ShieldApply: "magic"}},
		{"exec without runner", Config{Mode: ModeShield, ShieldApply: ShieldApplyExec}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil {
				t.Error("New succeeded")
			}
		})
	}
}

// fakeFW counts closes.
type fakeFW struct {
	Firewall
	closed *int
	mu     *sync.Mutex
}

func (f fakeFW) Close() error { f.mu.Lock(); *f.closed++; f.mu.Unlock(); return nil }

func TestFWCache(t *testing.T) {
	var mu sync.Mutex
	closed, opened := 0, 0
	open := func() (Firewall, error) { opened++; return fakeFW{closed: &closed, mu: &mu}, nil }
	var c fwCache
	a, b := netns.ID{Dev: 4, Ino: 1}, netns.ID{Dev: 4, Ino: 2}

	_, rel1, _ := c.get(a, open)
	_, rel2, _ := c.get(a, open)
	_, rel3, _ := c.get(b, open)
	if opened != 2 {
		t.Errorf("opened %d, want 2 (one per namespace)", opened)
	}
	c.invalidate(a) // still in use twice: not closed yet
	rel1()
	c.wg.Wait()
	mu.Lock()
	if closed != 0 {
		t.Errorf("closed %d while in use", closed)
	}
	mu.Unlock()
	rel2()
	c.wg.Wait()
	mu.Lock()
	if closed != 1 {
		t.Errorf("closed %d after the last user of the invalidated firewall, want 1", closed)
	}
	mu.Unlock()
	_, rel4, _ := c.get(a, open) // reopened
	if opened != 3 {
		t.Errorf("opened %d after invalidate, want 3", opened)
	}
	rel3()
	rel4()
	c.closeAll()
	if closed != 3 {
		t.Errorf("closed %d after closeAll, want 3", closed)
	}
}

// TestAttackFWCacheBounded: a user calling for thousands of namespaces of
// its own must not make the shared service keep thousands of netlink
// sockets (and namespaces) open: beyond maxCached, a firewall is closed
// after its call.
func TestAttackFWCacheBounded(t *testing.T) {
	var mu sync.Mutex
	closed := 0
	open := func() (Firewall, error) { return fakeFW{closed: &closed, mu: &mu}, nil }
	var c fwCache
	for i := 0; i < maxCached+50; i++ {
		_, rel, _ := c.get(netns.ID{Dev: 4, Ino: uint64(i)}, open)
		rel()
	}
	c.wg.Wait()
	mu.Lock()
	got := closed
	mu.Unlock()
	if got != 50 || len(c.m) != maxCached {
		t.Errorf("after %d namespaces: %d cached, %d closed at once; want %d and 50", maxCached+50, len(c.m), got, maxCached)
	}
	c.closeAll()
}

// TestAttackCallSlots: one user's calls (its subordinate uids included)
// run MaxCallsPerOwner at a time; another user's never wait for them.
func TestAttackCallSlots(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subuid")
	os.WriteFile(path, []byte("1000:100000:65536\n"), 0o644)
	owners := &subUIDs{path: path}
	c := callSlots{max: 2}
	r1 := c.acquire(1000, owners)
	r2 := c.acquire(100001, owners)
	third := make(chan func())
	go func() { third <- c.acquire(100002, owners) }()
	other := c.acquire(2000, owners) // does not wait
	select {
	case <-third:
		t.Fatal("a third call of the same user ran")
	case <-time.After(50 * time.Millisecond):
	}
	r1()
	r3 := <-third
	r2()
	r3()
	other()
	c.acquire(0, owners)() // root never waits
	if len(c.m) != 0 {
		t.Errorf("%d owners left in the map", len(c.m))
	}
}

// The ruleset guard reads what clearance itself writes: the forwarder's
// full learned table and a policy as large again fit under its bound.
func TestGuardBoundFitsWhatClearanceWrites(t *testing.T) {
	if GuardMaxElements < 2*dnsfwd.DefaultMaxLearned {
		t.Errorf("GuardMaxElements %d < 2 × the forwarder's %d learned addresses", GuardMaxElements, dnsfwd.DefaultMaxLearned)
	}
}
