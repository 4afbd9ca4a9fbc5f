// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package vt is a small terminal emulator for tests of full-screen
// terminal programs: what they write goes in, the screen a terminal would
// show comes out as text.
package vt

import (
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Screen keeps a w×h grid of what a terminal would show after the bytes
// written to it, for the sequences a full-screen program of ours may send
// (cursor position, erase in line and display, the alternate screen,
// SGR, cursor moves). Anything else it records as unknown (see
// [Screen.Unknown]), so a test notices a sequence a real terminal might
// render differently. Its methods are safe for concurrent use.
type Screen struct {
	mu      sync.Mutex
	w, h    int
	cells   [][]rune
	x, y    int
	pend    []byte // an incomplete sequence or rune from the last write
	unknown []string
	changed chan struct{}
}

// New returns a blank w×h screen.
func New(w, h int) *Screen {
	s := &Screen{w: w, h: h, changed: make(chan struct{}, 1)}
	s.clear()
	return s
}

func (s *Screen) clear() {
	s.cells = make([][]rune, s.h)
	for i := range s.cells {
		s.cells[i] = []rune(strings.Repeat(" ", s.w))
	}
}

// Write feeds the terminal output p to the screen; a sequence or rune
// split across writes is completed by the next one. It never fails.
func (s *Screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	b := append(s.pend, p...)
	s.pend = nil
	for len(b) > 0 {
		n := s.step(b)
		if n == 0 {
			s.pend = append([]byte(nil), b...)
			break
		}
		b = b[n:]
	}
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return len(p), nil
}

// step consumes one character or sequence from b and returns its length,
// 0 when b holds only part of it.
func (s *Screen) step(b []byte) int {
	switch c := b[0]; {
	case c == 0x1b:
		if len(b) < 2 {
			return 0
		}
		if b[1] != '[' {
			s.unknown = append(s.unknown, strconv.Quote(string(b[:2])))
			return 2
		}
		j := 2
		for j < len(b) && (b[j] < 0x40 || b[j] > 0x7e) {
			j++
		}
		if j == len(b) {
			return 0
		}
		s.csi(string(b[2:j]), b[j])
		return j + 1
	case c == '\r':
		s.x = 0
	case c == '\n':
		s.lineFeed()
	case c == '\b':
		s.x = max(0, s.x-1)
	case c < 0x20 || c == 0x7f:
		s.unknown = append(s.unknown, strconv.Quote(string(c)))
	default:
		if !utf8.FullRune(b) {
			return 0
		}
		r, size := utf8.DecodeRune(b)
		if s.x >= s.w {
			s.x = 0
			s.lineFeed()
		}
		s.cells[s.y][s.x] = r
		s.x++
		return size
	}
	return 1
}

func (s *Screen) lineFeed() {
	if s.y < s.h-1 {
		s.y++
		return
	}
	copy(s.cells, s.cells[1:])
	s.cells[s.h-1] = []rune(strings.Repeat(" ", s.w))
}

func (s *Screen) csi(params string, final byte) {
	num := func(i, def int) int {
		parts := strings.Split(strings.TrimPrefix(params, "?"), ";")
		if i < len(parts) {
			if n, err := strconv.Atoi(parts[i]); err == nil && n > 0 {
				return n
			}
		}
		return def
	}
	blank := func(y, from, to int) {
		for x := from; x < to && x < s.w; x++ {
			s.cells[y][x] = ' '
		}
	}
	switch final {
	case 'H', 'f':
		s.y, s.x = min(num(0, 1), s.h)-1, min(num(1, 1), s.w)-1
	case 'A':
		s.y = max(0, s.y-num(0, 1))
	case 'B':
		s.y = min(s.h-1, s.y+num(0, 1))
	case 'C':
		s.x = min(s.w-1, s.x+num(0, 1))
	case 'D':
		s.x = max(0, s.x-num(0, 1))
	case 'K':
		switch num(0, 0) {
		case 0:
			blank(s.y, s.x, s.w)
		case 1:
			blank(s.y, 0, s.x+1)
		case 2:
			blank(s.y, 0, s.w)
		}
	case 'J':
		switch num(0, 0) {
		case 0:
			blank(s.y, s.x, s.w)
			for y := s.y + 1; y < s.h; y++ {
				blank(y, 0, s.w)
			}
		case 2, 3:
			s.clear()
		default:
			s.unknown = append(s.unknown, "CSI "+params+string(final))
		}
	case 'm':
		// Colours and attributes: not kept.
	case 'h', 'l':
		switch params {
		case "?1049":
			s.clear()
			s.x, s.y = 0, 0
		case "?25":
		default:
			s.unknown = append(s.unknown, "CSI "+params+string(final))
		}
	default:
		s.unknown = append(s.unknown, "CSI "+params+string(final))
	}
}

// Text returns the screen, one line per row, trailing blanks cut.
func (s *Screen) Text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := make([]string, s.h)
	for i, row := range s.cells {
		lines[i] = strings.TrimRight(string(row), " ")
	}
	return strings.Join(lines, "\n")
}

// Unknown returns the sequences the emulator did not understand.
func (s *Screen) Unknown() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.unknown...)
}

// Changed returns a channel that receives a value after a write.
func (s *Screen) Changed() <-chan struct{} { return s.changed }
