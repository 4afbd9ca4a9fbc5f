// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ingest

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

// tooLong marks a discarded line in readAll's output.
const tooLong = "<too long>"

// readAll drains lr, rendering each discarded line as tooLong.
func readAll(t testing.TB, lr *lineReader) []string {
	t.Helper()
	var got []string
	for {
		line, err := lr.next()
		switch {
		case errors.Is(err, errLineTooLong):
			got = append(got, tooLong)
		case errors.Is(err, io.EOF):
			return got
		case err != nil:
			t.Fatalf("next: %v", err)
		default:
			got = append(got, string(line))
		}
	}
}

// referenceLines is what readAll must return for input and max.
func referenceLines(input []byte, max int) []string {
	var want []string
	parts := bytes.Split(input, []byte("\n"))
	if len(parts[len(parts)-1]) == 0 {
		parts = parts[:len(parts)-1] // input ends with '\n', or is empty
	}
	for _, p := range parts {
		if len(p) > max {
			want = append(want, tooLong)
		} else {
			want = append(want, string(p))
		}
	}
	return want
}

// boundedReader fails the test if it is ever asked to fill more than limit
// bytes at once, which would mean the line buffer grew past max+1.
type boundedReader struct {
	t       testing.TB
	r       io.Reader
	limit   int
	largest int
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if len(p) > b.limit {
		b.t.Errorf("Read with a %d-byte buffer, over the %d-byte bound", len(p), b.limit)
	}
	b.largest = max(b.largest, len(p))
	return b.r.Read(p)
}

func TestLineReader(t *testing.T) {
	tests := []struct {
		name  string
		input string
		max   int
		want  []string
	}{
		{name: "empty stream", input: "", max: 8, want: nil},
		{name: "one line", input: "abc\n", max: 8, want: []string{"abc"}},
		{name: "unterminated last line delivered at eof", input: "abc\ndef", max: 8, want: []string{"abc", "def"}},
		{name: "empty lines kept for the caller", input: "\n\na\n", max: 8, want: []string{"", "", "a"}},
		{name: "line exactly at max", input: "12345678\nx\n", max: 8, want: []string{"12345678", "x"}},
		{name: "line one over max discarded", input: "123456789\nx\n", max: 8, want: []string{tooLong, "x"}},
		{name: "very long line then short", input: strings.Repeat("y", 100_000) + "\nok\n", max: 64, want: []string{tooLong, "ok"}},
		{name: "two long lines in a row", input: strings.Repeat("a", 100) + "\n" + strings.Repeat("b", 100) + "\nok\n", max: 16, want: []string{tooLong, tooLong, "ok"}},
		{name: "long unterminated line at eof", input: "ok\n" + strings.Repeat("z", 100), max: 16, want: []string{"ok", tooLong}},
		{name: "crlf left to the caller", input: "a\r\nb\r\n", max: 8, want: []string{"a\r", "b\r"}},
		{name: "many short lines", input: strings.Repeat("line\n", 1000), max: 8, want: strings.Split(strings.Repeat("line\n", 1000), "\n")[:1000]},
	}
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one byte at a time", iotest.OneByteReader},
		{"half reads", iotest.HalfReader},
		{"data with eof", iotest.DataErrReader},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				br := &boundedReader{t: t, r: rd.wrap(strings.NewReader(tt.input)), limit: tt.max + 1}
				got := readAll(t, newLineReader(br, tt.max))
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("lines (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(referenceLines([]byte(tt.input), tt.max), got); diff != "" {
					t.Errorf("lines differ from the reference splitter (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestLineReaderReturnsReadError(t *testing.T) {
	boom := errors.New("boom")
	lr := newLineReader(io.MultiReader(strings.NewReader("a\nb"), iotest.ErrReader(boom)), 8)
	var got []string
	for {
		line, err := lr.next()
		if err != nil {
			if !errors.Is(err, boom) {
				t.Fatalf("next error = %v, want %v", err, boom)
			}
			break
		}
		got = append(got, string(line))
	}
	// The unterminated "b" is still handed over before the error.
	if diff := cmp.Diff([]string{"a", "b"}, got); diff != "" {
		t.Errorf("lines before the error (-want +got):\n%s", diff)
	}
}

func TestLineReaderShrinksAfterLongLine(t *testing.T) {
	input := strings.Repeat("x", 60_000) + "\nshort\n"
	lr := newLineReader(strings.NewReader(input), DefaultMaxLine)
	if got := readAll(t, lr); len(got) != 2 || got[1] != "short" {
		t.Fatalf("lines = %q", got)
	}
	if cap(lr.buf) > initialLineBuf {
		t.Errorf("buffer capacity %d after the long line was consumed, want <= %d", cap(lr.buf), initialLineBuf)
	}
}
