// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package sanitize

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// printableASCII is every character the sanitiser keeps (docs/seed-compat.md §S10.8).
func printableASCII() string {
	var b strings.Builder
	for c := 0x20; c <= 0x7E; c++ {
		b.WriteByte(byte(c))
	}
	return b.String()
}

func TestString(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want string
	}{
		// §S10.8.
		{name: "empty stays empty", in: "", max: DefaultMax, want: ""},
		{name: "plain ascii unchanged", in: "registry.example.net", max: DefaultMax, want: "registry.example.net"},
		{name: "every printable ascii character kept", in: printableASCII(), max: DefaultMax, want: printableASCII()},
		// §S10.9.
		{name: "cafe accent becomes one space", in: "café", max: DefaultMax, want: "caf "},
		{name: "munchen umlaut becomes one space", in: "münchen", max: DefaultMax, want: "m nchen"},
		{name: "naive diaeresis becomes one space", in: "naïve", max: DefaultMax, want: "na ve"},
		// §S10.10.
		{name: "newline", in: "line1\nline2", max: DefaultMax, want: "line1 line2"},
		{name: "tab", in: "a\tb", max: DefaultMax, want: "a b"},
		{name: "carriage return", in: "a\rb", max: DefaultMax, want: "a b"},
		{name: "nul", in: "a\x00b", max: DefaultMax, want: "a b"},
		{name: "escape", in: "a\x1bb", max: DefaultMax, want: "a b"},
		{name: "delete", in: "a\x7fb", max: DefaultMax, want: "a b"},
		{name: "terminal escape sequence", in: "evil\x1b[31mfake\x00.example.com", max: DefaultMax, want: "evil [31mfake .example.com"},
		// §S10.11.
		{name: "markup kept", in: "<script>alert(1)</script>", max: DefaultMax, want: "<script>alert(1)</script>"},
		{name: "ampersand kept", in: "a & b", max: DefaultMax, want: "a & b"},
		{name: "quotes and backslash kept", in: `"it's" \ok`, max: DefaultMax, want: `"it's" \ok`},
		// §S10.12.
		{name: "right-to-left override", in: "evil\u202e.com", max: DefaultMax, want: "evil .com"},
		{name: "no-break space", in: "a\u00a0b", max: DefaultMax, want: "a b"},
		{name: "astral code point is one space", in: "a\U0001F600b", max: DefaultMax, want: "a b"},
		// §S10.13.
		{name: "long string capped with dots", in: strings.Repeat("x", 1000), max: 10, want: "xxxxxxx..."},
		{name: "exactly at cap unchanged", in: strings.Repeat("x", 10), max: 10, want: strings.Repeat("x", 10)},
		{name: "one over cap truncated", in: strings.Repeat("x", 11), max: 10, want: "xxxxxxx..."},
		{name: "cap counts code points not bytes", in: "ééééé", max: 5, want: "     "},
		{name: "default cap truncates", in: strings.Repeat("y", 300), max: DefaultMax, want: strings.Repeat("y", 253) + "..."},
		// §S10.14.
		{name: "realistic name under default cap intact", in: "terok-project-task-0123456789abcdef", max: DefaultMax, want: "terok-project-task-0123456789abcdef"},
		// §S10.16.
		{name: "cap two", in: "hello", max: 2, want: ".."},
		{name: "cap one", in: "hello", max: 1, want: "."},
		{name: "cap zero", in: "hello", max: 0, want: ""},
		{name: "cap three", in: "hello", max: 3, want: "..."},
		{name: "cap four", in: "hello", max: 4, want: "h..."},
		{name: "tiny cap with dirty input", in: "h\x00llo", max: 2, want: ".."},
		{name: "short input under tiny cap unchanged", in: "a", max: 2, want: "a"},
		{name: "negative cap treated as zero", in: "hello", max: -1, want: ""},
		// Invalid UTF-8: one space per bad byte.
		{name: "lone continuation byte", in: "a\x80b", max: DefaultMax, want: "a b"},
		{name: "two invalid bytes", in: "a\xff\xfeb", max: DefaultMax, want: "a  b"},
		{name: "truncated multibyte sequence", in: "a\xe2\x82", max: DefaultMax, want: "a  "},
		{name: "replacement character itself", in: "a\ufffdb", max: DefaultMax, want: "a b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := String(tt.in, tt.max)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("String(%q, %d) (-want +got):\n%s", tt.in, tt.max, diff)
			}
		})
	}
}

// TestStringCombined ports docs/seed-compat.md §S10.15.
func TestStringCombined(t *testing.T) {
	got := String("<bad>\nnäme\t"+strings.Repeat("x", 1000), 20)
	if strings.ContainsAny(got, "\n\tä") {
		t.Errorf("got %q, want no newline, tab or umlaut", got)
	}
	if len(got) != 20 {
		t.Errorf("len(%q) = %d, want 20", got, len(got))
	}
	if !strings.HasSuffix(got, "...") {
		t.Errorf("got %q, want suffix ...", got)
	}
	if !strings.Contains(got, "n me") {
		t.Errorf("got %q, want it to contain %q", got, "n me")
	}
}

// TestMap ports docs/seed-compat.md §S10.17.
func TestMap(t *testing.T) {
	tests := []struct {
		name string
		in   map[string]string
		max  int
		want map[string]string
	}{
		{
			name: "values sanitised",
			in:   map[string]string{"task": "<a>", "name": "b\nc"},
			max:  DefaultMax,
			want: map[string]string{"task": "<a>", "name": "b c"},
		},
		{
			name: "keys unchanged",
			in:   map[string]string{"<weird>": "v", "k\ney": "v\x00"},
			max:  DefaultMax,
			want: map[string]string{"<weird>": "v", "k\ney": "v "},
		},
		{name: "empty map", in: map[string]string{}, max: DefaultMax, want: map[string]string{}},
		{name: "nil map gives empty map", in: nil, max: DefaultMax, want: map[string]string{}},
		{
			name: "cap threads through",
			in:   map[string]string{"x": strings.Repeat("x", 1000)},
			max:  5,
			want: map[string]string{"x": "xx..."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Map(tt.in, tt.max)
			if got == nil {
				t.Fatal("Map returned nil")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Map (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMapDoesNotModifyInput(t *testing.T) {
	in := map[string]string{"k": "a\nb"}
	_ = Map(in, DefaultMax)
	if diff := cmp.Diff(map[string]string{"k": "a\nb"}, in); diff != "" {
		t.Errorf("input modified (-want +got):\n%s", diff)
	}
}

func TestStringCleanInputDoesNotAllocate(t *testing.T) {
	s := "registry.example.net"
	if n := testing.AllocsPerRun(100, func() { _ = String(s, DefaultMax) }); n != 0 {
		t.Errorf("String on clean input allocated %v times, want 0", n)
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"", "café", "evil\u202e.com", "a\x80\xffb", strings.Repeat("x", 300), "\x1b[31m"} {
		for _, n := range []int{0, 1, 2, 3, 4, 10, DefaultMax} {
			f.Add(s, n)
		}
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n > 1<<16 || n < -1<<16 {
			n %= 1 << 16
		}
		got := String(s, n)
		for i := 0; i < len(got); i++ {
			if c := got[i]; c < 0x20 || c > 0x7E {
				t.Fatalf("String(%q, %d) = %q: byte %#x at %d is not printable ASCII", s, n, got, c, i)
			}
		}
		if limit := max(n, 0); len(got) > limit {
			t.Fatalf("String(%q, %d) = %q: len %d over cap", s, n, got, len(got))
		}
		if again := String(got, n); again != got {
			t.Fatalf("not idempotent: String(%q) = %q, then %q", s, got, again)
		}
		if runes := utf8.RuneCountInString(s); runes <= n && len(got) != runes {
			t.Fatalf("String(%q, %d) = %q: len %d, want one character per code point (%d)", s, n, got, len(got), runes)
		}
	})
}

func BenchmarkString(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"clean", "registry.example.net"},
		{"dirty", "evil\x1b[31mfake\x00.example.com café"},
		{"long", strings.Repeat("é", 1000)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				_ = String(bc.in, DefaultMax)
			}
		})
	}
}
