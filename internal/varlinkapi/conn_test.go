package varlinkapi

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

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
				msg, _, err := c.next(context.Background())
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
