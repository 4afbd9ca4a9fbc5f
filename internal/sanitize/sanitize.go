// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package sanitize cleans untrusted strings exactly as the seed's
// wire/sanitize.py does, before they reach any renderer.
//
// Every Unicode code point outside printable ASCII (0x20..0x7E) becomes one
// space, so the position of what was removed stays visible ("café" → "caf ").
// A byte that is not valid UTF-8 counts as one code point and also becomes one
// space. A result longer than the cap is cut and ends in ASCII "...".
//
// The output is always printable ASCII, so its length in bytes equals its
// length in code points. Markup characters (& < > quotes backslash) are
// printable and kept: escaping for a sink (Pango, terminal) is the renderer's
// job. Every function here is pure and safe for concurrent use.
package sanitize

import "unicode/utf8"

// DefaultMax is the seed's cap, in characters, for every string that came
// from a container or a producer.
const DefaultMax = 256

// ellipsis ends a truncated string: three ASCII dots, never U+2026.
const ellipsis = "..."

// String returns s with every code point outside 0x20..0x7E (and every
// invalid UTF-8 byte) replaced by one space, capped at maxLen characters.
//
// If the cleaned string is longer than the cap, it is cut to maxLen-3 characters
// followed by "..."; a cap of 3 or less yields the first maxLen characters of
// "..." ("..", ".", ""). A negative maxLen is treated as 0. The result is never
// longer than the cap.
func String(s string, maxLen int) string {
	if maxLen < 0 {
		maxLen = 0
	}
	if s == "" {
		return ""
	}
	if clean(s) {
		if len(s) <= maxLen {
			return s // fast path: no allocation
		}
		return truncate(s, maxLen)
	}
	// Each code point, valid or not, contributes exactly one output byte;
	// build only as much as the cap can use.
	limit := maxLen + 1 // one more than the cap tells us truncation is needed
	b := make([]byte, 0, min(len(s), limit))
	for i := 0; i < len(s) && len(b) < limit; {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c <= 0x7E {
				b = append(b, c)
			} else {
				b = append(b, ' ')
			}
			i++
			continue
		}
		_, size := utf8.DecodeRuneInString(s[i:]) // size 1 for an invalid byte
		b = append(b, ' ')
		i += size
	}
	if len(b) <= maxLen {
		return string(b)
	}
	return truncate(string(b), maxLen)
}

// truncate caps an already clean string that is longer than the cap.
func truncate(s string, maxLen int) string {
	if maxLen <= len(ellipsis) {
		return ellipsis[:maxLen]
	}
	return s[:maxLen-len(ellipsis)] + ellipsis
}

// clean reports whether s is entirely printable ASCII.
func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7E {
			return false
		}
	}
	return true
}

// Map returns a new map with every value of m passed through [String] with
// the given cap. Keys are copied unchanged, as the seed's sanitize_mapping
// does. The result is never nil: a nil or empty m yields an empty map. m is
// not modified.
func Map(m map[string]string, maxLen int) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = String(v, maxLen)
	}
	return out
}
