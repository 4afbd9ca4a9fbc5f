// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package render

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxField is the rune cap [Field] applies: the hub's 256-character cap.
const MaxField = 256

// MaxTerminal is the rune cap [Terminal] applies.
const MaxTerminal = 256

// Ellipsis is appended to capped strings (three ASCII dots, as the hub does).
const Ellipsis = "..."

// HostPort joins a host and a port for display: "api.example.com:443",
// "192.0.2.7:443", and an IPv6 address in brackets, "[2001:db8::1]:443",
// so the port cannot be mistaken for the address's last group. host is
// shown as given (make it inert first).
func HostPort(host string, port int64) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.FormatInt(port, 10)
}

// Field makes one untrusted value inert for a popup: see [Inert]; capped at
// [MaxField] runes.
func Field(s string) string { return Inert(s, MaxField) }

// Terminal makes any string inert on a terminal: see [Inert]; capped at
// [MaxTerminal] runes. Use it on every untrusted value clearancectl prints.
func Terminal(s string) string { return Inert(s, MaxTerminal) }

// Inert returns s with every rune that could change how surrounding text is
// displayed replaced by a space, capped at max runes (when longer, it keeps
// max-3 runes and appends "..."; max <= 3 keeps a prefix of "..."; max < 0
// means no cap):
//
//   - C0 controls U+0000-U+001F (including ESC, so ANSI/OSC sequences lose
//     their introducer; tab, newline and carriage return too: a value is
//     one line), DEL U+007F and C1 controls U+0080-U+009F (including the
//     8-bit CSI U+009B);
//   - every invisible character, which could make two different names
//     look the same ("github.com" and "git\u200bhub.com") or hide text:
//     format characters (Unicode category Cf: the bidirectional overrides,
//     embeddings, isolates and marks U+202A-U+202E, U+2066-U+2069,
//     U+200E, U+200F, U+061C, the zero-width space, joiners and word
//     joiner U+200B-U+200D, U+2060-U+2064, U+FEFF, the soft hyphen, tag
//     characters, …), the other default-ignorable code points (Hangul
//     fillers, U+034F, U+180B-U+180F, …) and variation selectors. They
//     are shown as a space, never dropped, so the difference stays
//     visible;
//   - line and paragraph separators U+2028, U+2029;
//   - bytes that are not valid UTF-8.
//
// Everything else, including printable non-ASCII, is kept. Inert is safe
// for concurrent use.
func Inert(s string, max int) string {
	clean := s
	if needsCleaning(s) {
		var b strings.Builder
		b.Grow(len(s))
		for i := 0; i < len(s); {
			r, size := utf8.DecodeRuneInString(s[i:])
			if (r == utf8.RuneError && size <= 1) || dangerous(r) {
				b.WriteByte(' ')
			} else {
				b.WriteString(s[i : i+size])
			}
			i += size
		}
		clean = b.String()
	}
	if max < 0 {
		return clean
	}
	if len(clean) <= max { // byte length bounds rune count
		return clean
	}
	n := utf8.RuneCountInString(clean)
	if n <= max {
		return clean
	}
	if max <= len(Ellipsis) {
		return Ellipsis[:max]
	}
	keep := max - len(Ellipsis)
	i := 0
	for range keep {
		_, size := utf8.DecodeRuneInString(clean[i:])
		i += size
	}
	return clean[:i] + Ellipsis
}

// needsCleaning is the fast path: printable ASCII needs nothing.
func needsCleaning(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return true
		}
	}
	return false
}

func dangerous(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x2028, r == 0x2029:
		return true
	case r < 0xa0:
		return false
	}
	return unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) ||
		unicode.Is(unicode.Variation_Selector, r)
}
