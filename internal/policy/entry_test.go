// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package policy

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEntryString(t *testing.T) {
	tests := []struct {
		in   string // as written
		want string // Entry.String of what it parses to
	}{
		{"github.com", "github.com"},
		{"GitHub.COM.", "github.com"},
		{"*.githubusercontent.com", "*.githubusercontent.com"},
		{"*.Bücher.example:443/tcp", "*.xn--bcher-kva.example:443/tcp"},
		{"example.org:8443", "example.org:8443"},
		{"example.org:08443/UDP", "example.org:8443/udp"},
		{"192.0.2.10", "192.0.2.10"},
		{"192.0.2.10/32", "192.0.2.10"},
		{"::ffff:192.0.2.10", "192.0.2.10"},
		{"198.51.100.0/24:53/udp", "198.51.100.0/24:53/udp"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"2001:DB8::1", "2001:db8::1"},
		{"[2001:db8::1]", "2001:db8::1"},
		{"[2001:db8::1]:443/tcp", "[2001:db8::1]:443/tcp"},
		{"[2001:db8::/32]:443", "[2001:db8::/32]:443"},
		{"[::ffff:192.0.2.1]:443", "192.0.2.1:443"},
		{" example.com:1 ", "example.com:1"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			e, err := ParseEntry(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, e.String()); diff != "" {
				t.Errorf("String (-want +got):\n%s", diff)
			}
			again, err := ParseEntry(e.String())
			if err != nil {
				t.Fatalf("re-parse %q: %v", e.String(), err)
			}
			if !again.Same(e) {
				t.Errorf("re-parse of %q = %+v, want %+v", e.String(), again, e)
			}
		})
	}
	if s := (Entry{}).String(); s != "" {
		t.Errorf("zero Entry String = %q", s)
	}
}

func TestParseSources(t *testing.T) {
	const doc = `# sources
include:
  - github
allow:
  - github.com
  - dest: pypi.org:443/tcp
    comment: index
deny: [203.0.113.0/24]
`
	p, err := Parse("/etc/clearance/policy.d/proj.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range p.Include {
		got = append(got, "include "+i.Name+" at "+i.Source.String())
	}
	for _, e := range append(append(List{}, p.Allow...), p.Deny...) {
		got = append(got, e.String()+" at "+e.Source.String())
	}
	want := []string{
		"include github at /etc/clearance/policy.d/proj.yaml:3",
		"github.com at /etc/clearance/policy.d/proj.yaml:5",
		"pypi.org:443/tcp at /etc/clearance/policy.d/proj.yaml:6",
		"203.0.113.0/24 at /etc/clearance/policy.d/proj.yaml:8",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sources (-want +got):\n%s", diff)
	}
	if s := (Source{File: "x"}).String(); s != "x" {
		t.Errorf("Source without line = %q", s)
	}
}

func TestListSplits(t *testing.T) {
	p, err := Parse("p.yaml", []byte(`allow:
  - 192.0.2.1
  - 192.0.2.1/32
  - 198.51.100.0/24
  - 192.0.2.2:443/tcp
  - "[2001:db8::1]:53"
  - github.com
  - "*.githubusercontent.com:443/tcp"
deny:
  - 203.0.113.0/24
  - 203.0.113.9:25/tcp
`))
	if err != nil {
		t.Fatal(err)
	}
	strs := func(l List) []string {
		var out []string
		for _, e := range l {
			out = append(out, e.String())
		}
		return out
	}
	got := map[string]any{
		"allow prefixes": p.AllowPrefixes(),
		"allow ported":   strs(p.Allow.Ported()),
		"allow names":    strs(p.Allow.Names()),
		"deny prefixes":  p.DenyPrefixes(),
		"deny ported":    strs(p.Deny.Ported()),
		"deny names":     strs(p.Deny.Names()),
	}
	want := map[string]any{
		"allow prefixes": []netip.Prefix{pfx("192.0.2.1"), pfx("198.51.100.0/24")},
		"allow ported":   []string{"192.0.2.2:443/tcp", "[2001:db8::1]:53"},
		"allow names":    []string{"github.com", "*.githubusercontent.com:443/tcp"},
		"deny prefixes":  []netip.Prefix{pfx("203.0.113.0/24")},
		"deny ported":    []string{"203.0.113.9:25/tcp"},
		"deny names":     []string(nil),
	}
	if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
		t.Errorf("splits (-want +got):\n%s", diff)
	}
}

func TestProtoString(t *testing.T) {
	for p, want := range map[Proto]string{ProtoAny: "", ProtoTCP: "tcp", ProtoUDP: "udp", 132: "proto(132)"} {
		if got := p.String(); got != want {
			t.Errorf("Proto(%d).String() = %q, want %q", p, got, want)
		}
	}
}
