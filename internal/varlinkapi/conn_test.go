// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package varlinkapi

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFraming(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		max    int
		want   []string // "!" stands for errTooLarge
	}{
		{"one message", []string{"a\x00"}, 10, []string{"a"}},
		{"split across writes", []string{"ab", "c\x00d", "\x00"}, 10, []string{"abc", "d"}},
		{"many in one write", []string{"a\x00b\x00c\x00"}, 10, []string{"a", "b", "c"}},
		{"empty message", []string{"\x00x\x00"}, 10, []string{"", "x"}},
		{"at the limit", []string{"0123456789\x00"}, 10, []string{"0123456789"}},
		{"over the limit in one write", []string{"0123456789a\x00ok\x00"}, 10, []string{"!", "ok"}},
		{"over the limit across writes", []string{"012345", "6789ab", "cdef", "\x00ok\x00"}, 10, []string{"!", "ok"}},
		{"two oversized in a row", []string{strings.Repeat("x", 30) + "\x00" + strings.Repeat("y", 30) + "\x00z\x00"}, 10, []string{"!", "!", "z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			go func() {
				for _, w := range tt.writes {
					b.Write([]byte(w))
				}
				b.Close()
			}()
			c := newConn(a, tt.max)
			var got []string
			for {
				msg, _, err := c.next(context.Background(), time.Time{})
				if errors.Is(err, errTooLarge) {
					got = append(got, "!")
					continue
				}
				if err != nil {
					break
				}
				got = append(got, string(msg))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("frames (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzFraming: whatever bytes arrive, split however, the connection yields
// exactly the NUL-separated messages up to the limit, errTooLarge for each
// longer one, and nothing else.
func FuzzFraming(f *testing.F) {
	f.Add([]byte("a\x00bc\x00"), uint8(3), uint8(2))
	f.Add([]byte(strings.Repeat("x", 40)+"\x00ok\x00"), uint8(7), uint8(10))
	f.Add([]byte("\x00\x00\x00"), uint8(1), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8, max uint8) {
		if chunk == 0 {
			chunk = 1
		}
		limit := int(max%64) + 1
		// Reference: split complete messages; a trailing partial one is
		// never returned.
		var want []string
		rest := data
		for {
			i := bytes.IndexByte(rest, 0)
			if i < 0 {
				break
			}
			if i > limit {
				want = append(want, "!")
			} else {
				want = append(want, string(rest[:i]))
			}
			rest = rest[i+1:]
		}
		a, b := net.Pipe()
		defer a.Close()
		go func() {
			for p := data; len(p) > 0; {
				n := min(int(chunk), len(p))
				b.Write(p[:n])
				p = p[n:]
			}
			b.Close()
		}()
		c := newConn(a, limit)
		var got []string
		for {
			msg, _, err := c.next(context.Background(), time.Time{})
			if errors.Is(err, errTooLarge) {
				got = append(got, "!")
				continue
			}
			if err != nil {
				break
			}
			got = append(got, string(msg))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("frames (-want +got):\n%s", diff)
		}
	})
}
