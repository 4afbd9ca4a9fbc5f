// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package vt

import (
	"strings"
	"testing"
)

func TestScreen(t *testing.T) {
	s := New(10, 3)
	// Text, a cursor move, erase to end of line, a sequence and a rune
	// split across writes, and a line wrap.
	for _, w := range []string{"hello\r\nworld", "\x1b[1;3H", "\x1b", "[K", "\xc3", "\xa9\x1b[2;1Habcdefghijkl"} {
		s.Write([]byte(w))
	}
	want := "heé\nabcdefghij\nkl"
	if got := s.Text(); got != want {
		t.Errorf("screen:\n%s\nwant:\n%s", got, want)
	}
	// A line feed on the last line scrolls.
	s.Write([]byte("\r\nmore"))
	if got := strings.Split(s.Text(), "\n"); len(got) != 3 || got[0] != "abcdefghij" || got[2] != "more" {
		t.Errorf("after scrolling: %q", got)
	}
	s.Write([]byte("\x1b[H\x1b[J\x1b[?1049h\x1b[31mred\x1b[0m"))
	if got := s.Text(); got != "red\n\n" {
		t.Errorf("after erase and SGR: %q", got)
	}
	if u := s.Unknown(); len(u) != 0 {
		t.Errorf("unknown: %q", u)
	}
	s.Write([]byte("\x1b]0;title\x07\x1b[?1000h"))
	if u := s.Unknown(); len(u) < 2 {
		t.Errorf("an OSC and mouse mode went unnoticed: %q", u)
	}
}
