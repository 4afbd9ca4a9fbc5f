// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestValidNames(t *testing.T) {
	for _, c := range []struct {
		s           string
		token, oper bool
	}{
		{"alpha", true, true},
		{"build-1_x", true, true},
		{"Alpha", true, false},
		{"", false, false},
		{"a.b", false, false},
		{"a*", false, false},
		{"a>", false, false},
		{"a b", false, false},
		{strings.Repeat("a", 27), true, true},
		{strings.Repeat("a", 28), true, false},
		{strings.Repeat("a", 65), false, false},
	} {
		if got := ValidToken(c.s); got != c.token {
			t.Errorf("ValidToken(%q) = %v", c.s, got)
		}
		if got := ValidOperator(c.s); got != c.oper {
			t.Errorf("ValidOperator(%q) = %v", c.s, got)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, c := range []Config{
		{Host: "", URL: "nats://x"},
		{Host: "a.b", URL: "nats://x"},
		{Host: "fleet", URL: "nats://x"},
		{Host: "alpha"},
		{Host: "alpha", URL: "nats://x", Prefix: "a..b"},
		{Host: "alpha", URL: "nats://x", Bucket: "a.b"},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func TestAlwaysKeyAndValidate(t *testing.T) {
	allow := Always{Policy: "web", Action: "allow", IP: "192.0.2.1", Proto: "tcp", Port: 443}
	deny := allow
	deny.Action = "deny"
	if allow.Key() != deny.Key() {
		t.Error("allow and deny of one destination must meet on one key")
	}
	other := allow
	other.Port = 80
	if allow.Key() == other.Key() {
		t.Error("another port must be another key")
	}
	named := allow
	named.Name = "example.org"
	if named.Key() == allow.Key() || !strings.HasPrefix(named.Key(), "web.") {
		t.Errorf("named key %q", named.Key())
	}
	for _, bad := range []Always{
		{Action: "allow", IP: "192.0.2.1"},
		{Policy: "p", Action: "permit", IP: "192.0.2.1"},
		{Policy: "p", Action: "allow", IP: "nope"},
		{Policy: "p", Action: "allow", IP: "192.0.2.1", Proto: "sctp", Port: 1},
		{Policy: "p", Action: "allow", IP: "192.0.2.1", Proto: "tcp"},
		{Policy: "p", Action: "allow", IP: "192.0.2.1", Port: 443},
		{Policy: "p", Action: "allow", IP: "192.0.2.1", Proto: "tcp", Port: 70000},
	} {
		if bad.Validate() == nil {
			t.Errorf("Validate(%+v) accepted", bad)
		}
	}
	if err := named.Validate(); err != nil {
		t.Error(err)
	}
}

func TestAlwaysOf(t *testing.T) {
	b := Blocked{Dest: "192.0.2.7", Domain: "api.example.org", Port: 443, Proto: 6}
	a, ok := alwaysOf(b, "web", DecideRequest{Action: "allow"}, "nats.alice", "alpha", time.Unix(1, 0))
	if !ok || a.Name != "api.example.org" || a.Proto != "tcp" || a.Port != 443 || a.By != "nats.alice" || a.Host != "alpha" {
		t.Errorf("%+v", a)
	}
	a, ok = alwaysOf(b, "web", DecideRequest{Action: "allow", AnyPort: true}, "", "alpha", time.Unix(1, 0))
	if !ok || a.Proto != "" || a.Port != 0 {
		t.Errorf("any port: %+v", a)
	}
	// An SCTP port is not widened to every port: not mirrored at all.
	b.Proto = 132
	if a, ok = alwaysOf(b, "web", DecideRequest{Action: "allow"}, "", "alpha", time.Unix(1, 0)); ok {
		t.Errorf("sctp: %+v", a)
	}
}

// decide refuses bad input before it reaches any hub.
func TestDecideRefusesBadInput(t *testing.T) {
	r, err := New(Config{Host: "alpha", URL: "nats://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct {
		name, operator, data, code string
	}{
		{"not JSON", "alice", "{", ErrInvalid},
		{"operator with capitals", "Alice", `{"request_id":"x","action":"allow"}`, ErrInvalid},
		{"bad action", "alice", `{"request_id":"x","action":"permit"}`, ErrInvalid},
		{"bad scope", "alice", `{"request_id":"x","action":"allow","scope":"forever"}`, ErrInvalid},
		{"no request id", "alice", `{"action":"allow"}`, ErrInvalid},
		{"negative ttl", "alice", `{"request_id":"x","action":"allow","ttl_sec":-1}`, ErrInvalid},
		{"too large", "alice", `{"request_id":"` + strings.Repeat("x", 5000) + `","action":"allow"}`, ErrInvalid},
		{"no such container", "alice", `{"request_id":"x","action":"allow"}`, ErrNoContainer},
	} {
		rep := r.decide(ctx, "ctr1", c.operator, []byte(c.data))
		if rep.OK || rep.Error != c.code || rep.Message == "" || rep.Host != "alpha" {
			t.Errorf("%s: %+v", c.name, rep)
		}
	}
}

func TestSubjects(t *testing.T) {
	s := Subjects{Prefix: "clearance"}
	if got := s.Decide("alpha", "c1", "alice"); got != "clearance.alpha.c1.decide.alice" {
		t.Error(got)
	}
	for _, v := range s.View() {
		if strings.Contains(v, "decide") || strings.HasSuffix(v, ">") {
			t.Errorf("view subject %q would receive verdict requests", v)
		}
	}
}
