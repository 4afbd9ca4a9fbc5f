// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

var escapeCases = []struct {
	name, in, want string
}{
	{"podman short id", "0123456789ab", "0123456789ab"},
	{"dash is escaped", "a-b", `a\x2db`},
	{"slash becomes dash", "a/b", "a-b"},
	{"leading dot", ".hidden", `\x2ehidden`},
	{"inner dots kept", "a.b.c", "a.b.c"},
	{"dot dot", "..", `\x2e.`},
	{"colon and underscore kept", "a:b_c", "a:b_c"},
	{"at sign cannot start another instance", "x@y.service", `x\x40y.service`},
	{"backslash", `a\b`, `a\x5cb`},
	{"space and newline", "a b\nc", `a\x20b\x0ac`},
	{"utf-8 bytes", "café", `caf\xc3\xa9`},
	{"nul", "a\x00b", `a\x00b`},
	{"path traversal", "../../etc/passwd", `\x2e.-..-etc-passwd`},
	{"empty", "", ""},
}

func TestEscapeUnitInstance(t *testing.T) {
	for _, tt := range escapeCases {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, EscapeUnitInstance(tt.in)); diff != "" {
				t.Errorf("EscapeUnitInstance(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// TestEscapeMatchesSystemdEscape compares with the real systemd-escape.
func TestEscapeMatchesSystemdEscape(t *testing.T) {
	bin := testutil.RequireTool(t, "systemd-escape")
	for _, tt := range escapeCases {
		if tt.in == "" || strings.ContainsRune(tt.in, 0) {
			continue // not passable as an argument
		}
		t.Run(tt.name, func(t *testing.T) {
			out, err := exec.Command(bin, "--", tt.in).Output()
			if err != nil {
				t.Fatalf("systemd-escape %q: %v", tt.in, err)
			}
			if diff := cmp.Diff(strings.TrimSuffix(string(out), "\n"), EscapeUnitInstance(tt.in)); diff != "" {
				t.Errorf("EscapeUnitInstance(%q) differs from systemd-escape (-systemd +ours):\n%s", tt.in, diff)
			}
		})
	}
}

func TestHubUnits(t *testing.T) {
	tests := []struct {
		name string
		id12 string
		want Units
	}{
		{"hex id", "0123456789ab", Units{
			Socket: "clearance-hub@0123456789ab.socket", Ingest: "clearance-hub-ingest@0123456789ab.socket",
			Service: "clearance-hub@0123456789ab.service"}},
		{"name with dash", "my-ctr", Units{
			Socket: `clearance-hub@my\x2dctr.socket`, Ingest: `clearance-hub-ingest@my\x2dctr.socket`,
			Service: `clearance-hub@my\x2dctr.service`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, HubUnits(tt.id12)); diff != "" {
				t.Errorf("HubUnits(%q) (-want +got):\n%s", tt.id12, diff)
			}
		})
	}
}

func FuzzEscapeUnitInstance(f *testing.F) {
	for _, tt := range escapeCases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := EscapeUnitInstance(s)
		for i := 0; i < len(e); i++ {
			c := e[i]
			if !unitChar(c) && c != '\\' && c != '-' {
				t.Fatalf("escaped %q contains %q", s, c)
			}
		}
		if strings.HasPrefix(e, ".") {
			t.Fatalf("escaped %q starts with a dot", s)
		}
		if strings.ContainsAny(e, "@/") {
			t.Fatalf("escaped %q contains @ or /", s)
		}
	})
}
