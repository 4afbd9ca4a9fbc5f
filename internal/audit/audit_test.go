// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package audit

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

type catalogEntry struct {
	headers map[string]string
	body    string
}

// parseCatalog splits a journal catalog file into its entries by
// MESSAGE_ID (the format journalctl --update-catalog reads).
func parseCatalog(t *testing.T, text string) map[string]catalogEntry {
	t.Helper()
	out := map[string]catalogEntry{}
	var id string
	var e catalogEntry
	inBody := false
	flush := func() {
		if id != "" {
			out[id] = e
		}
	}
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "-- ") {
			flush()
			id, e, inBody = strings.TrimPrefix(l, "-- "), catalogEntry{headers: map[string]string{}}, false
			continue
		}
		if id == "" || (!inBody && strings.HasPrefix(l, "#")) {
			continue
		}
		if !inBody {
			if l == "" {
				inBody = true
				continue
			}
			k, v, ok := strings.Cut(l, ": ")
			if !ok {
				t.Fatalf("entry %s: malformed header %q", id, l)
			}
			e.headers[k] = v
			continue
		}
		e.body += l + "\n"
	}
	flush()
	return out
}

var substRe = regexp.MustCompile(`@([A-Z0-9_]+)@`)

func read(t *testing.T, parts ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{"..", ".."}, parts...)...))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCatalog: packaging/clearance.catalog has one complete entry per
// kind, no entry for anything else, and substitutes only fields records
// carry.
func TestCatalog(t *testing.T) {
	entries := parseCatalog(t, read(t, "packaging", "clearance.catalog"))
	if len(entries) != len(Kinds) {
		t.Errorf("catalog has %d entries, want %d", len(entries), len(Kinds))
	}
	for _, k := range Kinds {
		t.Run(k.Name, func(t *testing.T) {
			e, ok := entries[k.ID]
			if !ok {
				t.Fatalf("no catalog entry for %s", k.ID)
			}
			doc := "man:clearancectl(1)"
			switch k.ID {
			case MsgRefused:
				doc = "man:clearance-oci-hook(1)"
			case MsgMirrored, MsgAdopted:
				doc = "man:clearance-relay(1)"
			}
			for h, want := range map[string]string{
				"Defined-By":    "clearance",
				"Support":       "https://github.com/terok-ai/clearance/issues",
				"Documentation": doc,
			} {
				if e.headers[h] != want {
					t.Errorf("%s: %q, want %q", h, e.headers[h], want)
				}
			}
			if e.headers["Subject"] == "" || strings.TrimSpace(e.body) == "" {
				t.Errorf("empty Subject or text: %+v", e)
			}
			for _, m := range substRe.FindAllStringSubmatch(e.headers["Subject"]+e.body, -1) {
				if !slices.Contains(Fields, m[1]) {
					t.Errorf("substitutes @%s@, which no record carries", m[1])
				}
			}
		})
	}
}

// TestDocumented: docs/audit.md names every kind's MESSAGE_ID and every
// field.
func TestDocumented(t *testing.T) {
	doc := read(t, "docs", "audit.md")
	for _, k := range Kinds {
		if !strings.Contains(doc, "`"+k.ID+"`") {
			t.Errorf("docs/audit.md lacks the MESSAGE_ID of %s (%s)", k.Name, k.ID)
		}
	}
	for _, f := range Fields {
		if !strings.Contains(doc, "`"+f+"`") {
			t.Errorf("docs/audit.md lacks the field %s", f)
		}
	}
}

func TestKindName(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Kinds {
		if len(k.ID) != 32 || strings.Trim(k.ID, "0123456789abcdef") != "" {
			t.Errorf("%s: MESSAGE_ID %q is not 128 bits of lower-case hex", k.Name, k.ID)
		}
		if seen[k.ID] || seen[k.Name] {
			t.Errorf("%s (%s) listed twice", k.Name, k.ID)
		}
		seen[k.ID], seen[k.Name] = true, true
		if got := KindName(k.ID); got != k.Name {
			t.Errorf("KindName(%s) = %q, want %q", k.ID, got, k.Name)
		}
	}
	if got := KindName("0123"); got != "other" {
		t.Errorf("KindName of a stranger = %q", got)
	}
}
