// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsname

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// label63 is the longest label; name253 the longest name (4 labels of 63
// bytes minus 3 = 252 bytes plus "a." and less).
var (
	label63 = strings.Repeat("a", 63)
	name253 = strings.Repeat("a", 61) + "." + label63 + "." + label63 + "." + label63 // 61+1+63*3+2 = 253
)

func TestNormalize(t *testing.T) {
	if len(name253) != 253 {
		t.Fatalf("name253 is %d bytes", len(name253))
	}
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "already canonical", in: "example.com", want: "example.com"},
		{name: "upper case", in: "Example.COM", want: "example.com"},
		{name: "one trailing dot", in: "example.com.", want: "example.com"},
		{name: "single label", in: "localhost", want: "localhost"},
		{name: "unicode to A-labels", in: "Bücher.example", want: "xn--bcher-kva.example"},
		{name: "A-label kept", in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{name: "A-label upper case", in: "XN--BCHER-KVA.example", want: "xn--bcher-kva.example"},
		{name: "full-width letters", in: "ＥＸＡＭＰＬＥ.com", want: "example.com"},
		{name: "ideographic full stop", in: "example。com", want: "example.com"},
		{name: "emoji", in: "💩.la", want: "xn--ls8h.la"},
		{name: "underscore service label", in: "_acme-challenge.Example.com", want: "_acme-challenge.example.com"},
		{name: "srv labels", in: "_sip._tcp.example.com", want: "_sip._tcp.example.com"},
		{name: "hyphens inside", in: "r3---sn-abc.googlevideo.com", want: "r3---sn-abc.googlevideo.com"},
		{name: "digits inside", in: "1.2.3.example", want: "1.2.3.example"},
		{name: "digits in the last label", in: "example.b2b", want: "example.b2b"},
		{name: "longest label", in: label63 + ".com", want: label63 + ".com"},
		{name: "longest name", in: name253, want: name253},
		{name: "longest name with its dot", in: name253 + ".", want: name253},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Normalize(tt.in)
			if err != nil {
				t.Fatalf("Normalize(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Normalize(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestNormalizeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "empty", in: "", want: `empty name`},
		{name: "root", in: ".", want: `invalid name ".": empty name`},
		{name: "two trailing dots", in: "example.com..", want: `invalid name "example.com..": empty label`},
		{name: "leading dot", in: ".example.com", want: `invalid name ".example.com": empty label`},
		{name: "empty label", in: "a..com", want: `invalid name "a..com": empty label`},
		{name: "overlong label", in: label63 + "a.com", want: `invalid name "` + label63 + `a.com": label "` + label63 + `a" is 64 bytes long, more than 63`},
		{name: "overlong name", in: "a" + name253, want: `invalid name "a` + name253 + `": 254 bytes long, more than 253`},
		{name: "leading hyphen", in: "-a.com", want: `invalid name "-a.com": label "-a" starts with a hyphen`},
		{name: "trailing hyphen", in: "a-.com", want: `invalid name "a-.com": label "a-" ends with a hyphen`},
		{name: "space", in: "a b.com", want: `invalid name "a b.com": label "a b" has ' ' (allowed: letters, digits, hyphen, underscore)`},
		{name: "star", in: "*.com", want: `invalid name "*.com": label "*" has '*' (allowed: letters, digits, hyphen, underscore)`},
		{name: "slash", in: "a/b.com", want: `invalid name "a/b.com": label "a/b" has '/' (allowed: letters, digits, hyphen, underscore)`},
		{name: "NUL", in: "a\x00.com", want: `invalid name "a\x00.com": label "a\x00" has '\x00' (allowed: letters, digits, hyphen, underscore)`},
		{name: "an IPv4 address", in: "192.0.2.1", want: `invalid name "192.0.2.1": last label "1" is all digits (an address, not a name)`},
		{name: "all digits", in: "443", want: `invalid name "443": last label "443" is all digits (an address, not a name)`},
		{name: "bad punycode", in: "xn--zzzz.example", want: `invalid name "xn--zzzz.example": idna: invalid label "zzzz"`},
		{name: "not UTF-8", in: "0\xbc.com", want: `invalid name "0\xbc.com": not UTF-8`},
		{name: "zero width joiner", in: "\u200d.com", want: `invalid name "\u200d.com": idna: invalid label "\u200d"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Normalize(tt.in)
			if err == nil {
				t.Fatalf("Normalize(%q) = %q, want an error", tt.in, got)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCanonical(t *testing.T) {
	tests := []struct {
		name string
		wire string
		want string
		ok   bool
	}{
		{name: "wire form", wire: "Example.COM.", want: "example.com", ok: true},
		{name: "without dot", wire: "api.github.com", want: "api.github.com", ok: true},
		{name: "underscore", wire: "_dmarc.example.com.", want: "_dmarc.example.com", ok: true},
		{name: "A-label", wire: "xn--bcher-kva.example.", want: "xn--bcher-kva.example", ok: true},
		{name: "longest", wire: name253 + ".", want: name253, ok: true},
		{name: "root", wire: ".", ok: false},
		{name: "empty", wire: "", ok: false},
		{name: "space in a label", wire: "a b.example.com.", ok: false},
		{name: "escape", wire: `a\032b.example.com.`, ok: false},
		{name: "NUL", wire: "a\x00.example.com.", ok: false},
		{name: "raw UTF-8", wire: "bücher.example.", ok: false},
		{name: "empty label", wire: "a..example.com.", ok: false},
		{name: "overlong label", wire: label63 + "a.com.", ok: false},
		{name: "overlong name", wire: "a" + name253 + ".", ok: false},
		{name: "leading hyphen", wire: "-a.example.com.", ok: false},
		{name: "numeric last label", wire: "1.2.0.192.", ok: false},
		{name: "reverse lookup name", wire: "1.2.0.192.in-addr.arpa.", want: "1.2.0.192.in-addr.arpa", ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Canonical(tt.wire)
			if ok != tt.ok || got != tt.want {
				t.Errorf("Canonical(%q) = %q, %v; want %q, %v", tt.wire, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		match   []string
		noMatch []string
	}{
		{
			name:    "exact name",
			pattern: "github.com",
			match:   []string{"github.com"},
			noMatch: []string{"api.github.com", "evilgithub.com", "github.com.evil.com", "github.co", "ithub.com", "", "GitHub.com", "github.com."},
		},
		{
			name:    "wildcard: one or more labels below, never the apex",
			pattern: "*.github.com",
			match:   []string{"api.github.com", "a.b.github.com", "x.y.z.github.com", "_acme-challenge.github.com", "1.github.com"},
			noMatch: []string{"github.com", "evilgithub.com", "api.evilgithub.com", ".github.com", "github.com.evil.com", "api.github.com.", "api.GITHUB.com", "com", ""},
		},
		{
			name:    "wildcard below a deeper name",
			pattern: "*.githubusercontent.com",
			match:   []string{"objects.githubusercontent.com", "raw.githubusercontent.com"},
			noMatch: []string{"githubusercontent.com", "githubusercontent.com.evil", "xgithubusercontent.com"},
		},
		{
			name:    "pattern written in upper case with a trailing dot",
			pattern: "*.Example.COM.",
			match:   []string{"www.example.com"},
			noMatch: []string{"example.com"},
		},
		{
			name:    "unicode pattern matches the A-label form",
			pattern: "*.Bücher.example",
			match:   []string{"www.xn--bcher-kva.example"},
			noMatch: []string{"www.bücher.example", "xn--bcher-kva.example"},
		},
		{
			name:    "exact service name",
			pattern: "_acme-challenge.example.com",
			match:   []string{"_acme-challenge.example.com"},
			noMatch: []string{"acme-challenge.example.com", "example.com"},
		},
		{
			name:    "single-label exact name",
			pattern: "localhost",
			match:   []string{"localhost"},
			noMatch: []string{"a.localhost", "localhost.localdomain"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range tt.match {
				if !p.Match(n) {
					t.Errorf("%v.Match(%q) = false, want true", p, n)
				}
			}
			for _, n := range tt.noMatch {
				if p.Match(n) {
					t.Errorf("%v.Match(%q) = true, want false", p, n)
				}
			}
		})
	}
	if (Pattern{}).Match("") || (Pattern{}).Match("a.com") {
		t.Error("the zero Pattern matches")
	}
}

func TestParsePattern(t *testing.T) {
	tests := []struct {
		in       string
		want     string
		wildcard bool
		base     string
	}{
		{in: "github.com", want: "github.com", base: "github.com"},
		{in: "*.githubusercontent.com", want: "*.githubusercontent.com", wildcard: true, base: "githubusercontent.com"},
		{in: "*.Bücher.example.", want: "*.xn--bcher-kva.example", wildcard: true, base: "xn--bcher-kva.example"},
		{in: "*._tcp.example.com", want: "*._tcp.example.com", wildcard: true, base: "_tcp.example.com"},
		{in: "*.co.uk", want: "*.co.uk", wildcard: true, base: "co.uk"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParsePattern(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			got := struct {
				S    string
				Wild bool
				Base string
			}{p.String(), p.IsWildcard(), p.Base()}
			want := struct {
				S    string
				Wild bool
				Base string
			}{tt.want, tt.wildcard, tt.base}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ParsePattern(%q) (-want +got):\n%s", tt.in, diff)
			}
			if p.IsZero() {
				t.Error("IsZero() = true")
			}
		})
	}
}

func TestParsePatternErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "lone star", in: "*", want: `invalid pattern "*": "*" is allowed only as the whole leftmost label, as in "*.example.com"`},
		{name: "top-level domain", in: "*.com", want: `invalid pattern "*.com": a wildcard below the single label "com" would cover a whole top-level domain`},
		{name: "top-level domain with dot", in: "*.com.", want: `invalid pattern "*.com.": a wildcard below the single label "com" would cover a whole top-level domain`},
		{name: "double star", in: "**.example.com", want: `invalid pattern "**.example.com": "*" is allowed only as the whole leftmost label, as in "*.example.com"`},
		{name: "star inside a label", in: "*a.example.com", want: `invalid pattern "*a.example.com": "*" is allowed only as the whole leftmost label, as in "*.example.com"`},
		{name: "star not leftmost", in: "a.*.example.com", want: `invalid pattern "a.*.example.com": "*" is allowed only as the whole leftmost label, as in "*.example.com"`},
		{name: "two stars", in: "*.*.example.com", want: `invalid pattern "*.*.example.com": "*" is allowed only as the whole leftmost label, as in "*.example.com"`},
		{name: "star at the end", in: "example.*", want: `invalid pattern "example.*": "*" is allowed only as the whole leftmost label, as in "*.example.com"`},
		{name: "nothing after the star", in: "*.", want: `invalid pattern "*.": no name after "*."`},
		{name: "bad base", in: "*.a..com", want: `invalid name "a..com": empty label`},
		{name: "empty", in: "", want: `empty name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePattern(tt.in)
			if err == nil {
				t.Fatalf("ParsePattern(%q) = %v, want an error", tt.in, p)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// matchSink and canonicalSink hold the allocation tests' results, so the
// calls measured are not dead code.
var (
	matchSink     bool
	canonicalSink string
)

func TestMatchAllocs(t *testing.T) {
	p, err := ParsePattern("*.githubusercontent.com")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"objects.githubusercontent.com", "githubusercontent.com", "evil.com"}
	if n := testing.AllocsPerRun(100, func() {
		for _, name := range names {
			matchSink = p.Match(name)
		}
	}); n != 0 {
		t.Errorf("Match allocates %v times per run", n)
	}
	if n := testing.AllocsPerRun(100, func() { canonicalSink, _ = Canonical("objects.githubusercontent.com.") }); n != 0 {
		t.Errorf("Canonical of a lower-case name allocates %v times", n)
	}
}

// refMatch is the reference for Pattern.Match: label by label.
func refMatch(pattern, name string) bool {
	base, wild := strings.CutPrefix(pattern, "*.")
	nl, bl := strings.Split(name, "."), strings.Split(base, ".")
	if !wild {
		return slices.Equal(nl, bl)
	}
	if len(nl) <= len(bl) {
		return false
	}
	for _, l := range nl[:len(nl)-len(bl)] {
		if l == "" {
			return false
		}
	}
	return slices.Equal(nl[len(nl)-len(bl):], bl)
}

// FuzzNormalize checks that Normalize's output is a valid canonical name
// that normalises to itself, in any case and with a trailing dot, and that
// Canonical accepts exactly it.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"example.com", "Example.COM.", "Bücher.example", "xn--bcher-kva.example", "_acme-challenge.example.com",
		"a..b", "-a.com", "*.com", "192.0.2.1", "ＥＸＡＭＰＬＥ。com", "faß.de", "\u200d.com", name253, "a" + name253,
		"xn--a.com", "a\u00adb.com", "XN--BCHER-KVA.EXAMPLE.",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := Normalize(s)
		if err != nil {
			if out != "" {
				t.Fatalf("Normalize(%q) = %q with error %v", s, out, err)
			}
			// An ASCII name Canonical accepts, without A-labels, is
			// also a name Normalize accepts.
			if c, ok := Canonical(s); ok && !strings.Contains(c, "xn--") {
				t.Fatalf("Canonical(%q) = %q, ok but Normalize: %v", s, c, err)
			}
			return
		}
		for i := 0; i < len(out); i++ {
			if c := out[i]; c >= 0x80 || ('A' <= c && c <= 'Z') {
				t.Fatalf("Normalize(%q) = %q: byte %#x at %d is not lower-case ASCII", s, out, c, i)
			}
		}
		if c, ok := Canonical(out); !ok || c != out {
			t.Fatalf("Normalize(%q) = %q, but Canonical of it = %q, %v", s, out, c, ok)
		}
		for _, again := range []string{out, out + ".", strings.ToUpper(out)} {
			if got, err := Normalize(again); err != nil || got != out {
				t.Fatalf("Normalize(%q) = %q; Normalize(%q) = %q, %v", s, out, again, got, err)
			}
		}
		if c, ok := Canonical(s); ok && c != out {
			t.Fatalf("Canonical(%q) = %q, Normalize = %q", s, c, out)
		}
	})
}

// FuzzPattern checks that ParsePattern's patterns print as they parse and
// that Match agrees with a label-by-label reference on canonical names,
// and never matches a name outside the pattern's part of the tree.
func FuzzPattern(f *testing.F) {
	for _, s := range [][2]string{
		{"*.github.com", "api"}, {"*.github.com", "evil"}, {"github.com", ""}, {"*.githubusercontent.com", "a.b."},
		{"*.com", "x"}, {"*", "a"}, {"a.*.b", "c"}, {"*.Bücher.example", "www."}, {"*.a.b", ".."}, {"*.a.b", "."},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, prefix string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			if !p.IsZero() {
				t.Fatalf("ParsePattern(%q) = %v with error %v", pattern, p, err)
			}
			return
		}
		if q, err := ParsePattern(p.String()); err != nil || q != p {
			t.Fatalf("ParsePattern(%q) = %v; re-parsed: %v, %v", pattern, p, q, err)
		}
		if c, ok := Canonical(p.Base()); !ok || c != p.Base() {
			t.Fatalf("base %q of %q is not canonical", p.Base(), pattern)
		}
		for _, name := range []string{prefix, prefix + p.Base(), prefix + "." + p.Base(), p.Base()} {
			got := p.Match(name)
			if got && name != p.Base() && !strings.HasSuffix(name, "."+p.Base()) {
				t.Fatalf("%v.Match(%q) = true outside its tree", p, name)
			}
			if got && name == p.Base() && p.IsWildcard() {
				t.Fatalf("wildcard %v matches its apex", p)
			}
			if c, ok := Canonical(name); ok && c == name {
				if want := refMatch(p.String(), name); got != want {
					t.Fatalf("%v.Match(%q) = %v, reference says %v", p, name, got, want)
				}
			}
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	p, err := ParsePattern("*.githubusercontent.com")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p.Match("objects.githubusercontent.com")
		p.Match("www.example.org")
	}
}

func BenchmarkCanonical(b *testing.B) {
	for b.Loop() {
		Canonical("objects.githubusercontent.com.")
	}
}
