// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/dnsfwd"
	"github.com/terok-ai/clearance/internal/hub"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
)

func TestNameRulesDecide(t *testing.T) {
	var rs nameRules
	rs.setPolicy([]fw1.NameRule{
		{Pattern: "github.com", Action: "allow", Source: "p.yaml:1"},
		{Pattern: "*.githubusercontent.com", Action: "allow", Proto: "tcp", Port: 443, Source: "p.yaml:2"},
		{Pattern: "*.ads.example", Action: "deny", Source: "p.yaml:3"},
		{Pattern: "mail.example", Action: "deny", Proto: "tcp", Port: 25, Source: "p.yaml:4"},
		{Pattern: "mail.example", Action: "allow", Source: "p.yaml:5"},
		{Pattern: "*", Action: "allow", Source: "bad"}, // refused by ParsePattern, skipped
	}, slog.New(slog.DiscardHandler))
	future := time.Now().Add(time.Hour)
	if _, err := rs.addVerdict(hub.ApplyRequest{Dest: "api.example", IP: "192.0.2.1", Action: "allow", Proto: 6, Port: 8443}, future); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.addVerdict(hub.ApplyRequest{Dest: "old.example", IP: "192.0.2.2", Action: "allow", AnyPort: true}, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		chain []string
		want  dnsfwd.Decision
	}{
		{"exact name", []string{"github.com"}, dnsfwd.Decision{Allow: []dnsfwd.Grant{{Rule: "github.com (p.yaml:1)"}}}},
		{"exact name is not a suffix", []string{"api.github.com"}, dnsfwd.Decision{}},
		{"look-alike", []string{"evilgithub.com"}, dnsfwd.Decision{}},
		{"wildcard below", []string{"raw.githubusercontent.com"}, dnsfwd.Decision{Allow: []dnsfwd.Grant{
			{Rule: "*.githubusercontent.com:443/tcp (p.yaml:2)", Proto: 6, Port: 443}}}},
		{"wildcard apex", []string{"githubusercontent.com"}, dnsfwd.Decision{}},
		{"a CNAME target allowed", []string{"www.example", "github.com"}, dnsfwd.Decision{Allow: []dnsfwd.Grant{{Rule: "github.com (p.yaml:1)"}}}},
		{"deny anywhere in the chain wins", []string{"github.com", "x.ads.example"}, dnsfwd.Decision{Deny: true, DenyBy: "*.ads.example (p.yaml:3)"}},
		{"a deny narrowed to a port does not deny the name", []string{"mail.example"}, dnsfwd.Decision{Allow: []dnsfwd.Grant{{Rule: "mail.example (p.yaml:5)"}}}},
		{"a verdict on a name", []string{"api.example"}, dnsfwd.Decision{Allow: []dnsfwd.Grant{
			{Rule: "api.example:8443/tcp (verdict)", Proto: 6, Port: 8443, Until: future}}}},
		{"an expired verdict", []string{"old.example"}, dnsfwd.Decision{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, rs.Decide(tt.chain)); diff != "" {
				t.Errorf("Decide(%v) (-want +got):\n%s", tt.chain, diff)
			}
		})
	}
	if r, ok := rs.denies("mail.example", 6, 25); !ok || r.port != 25 {
		t.Errorf("denies(mail.example, tcp 25) = %+v, %v", r, ok)
	}
	if _, ok := rs.denies("mail.example", 6, 587); ok {
		t.Error("denies(mail.example, tcp 587) = true")
	}
	if _, ok := rs.denies("x.ads.example", 17, 53); !ok {
		t.Error("denies(x.ads.example, udp 53) = false: a deny without a port covers every port")
	}
	rs.removeVerdict(hub.ApplyRequest{Dest: "api.example", IP: "192.0.2.1", Action: "allow", Proto: 6, Port: 8443})
	if d := rs.Decide([]string{"api.example"}); len(d.Allow) != 0 {
		t.Errorf("after removeVerdict: %+v", d)
	}
}

// dns.cache_size 0 turns the forwarder's cache off; dnsfwd reads 0 as its
// default size, so the hub must pass a negative value.
func TestCacheEntries(t *testing.T) {
	for _, tt := range []struct{ size, want int }{{0, -1}, {1, 1}, {1024, 1024}} {
		if got := cacheEntries(tt.size); got != tt.want {
			t.Errorf("cacheEntries(%d) = %d, want %d", tt.size, got, tt.want)
		}
	}
}
