// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"

	"github.com/varlink/go/varlink"
)

// TestOutcomeUnknown: only a transport failure after the request may have
// reached the hub leaves the verdict's outcome open.
func TestOutcomeUnknown(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"connection closed before the reply", io.EOF, true},
		{"wrapped EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"timeout", errors.New("context deadline exceeded"), true},
		{"dial failed", &notSentError{syscall.ENOENT}, false},
		{"write refused", fmt.Errorf("write unix: %w", syscall.EPIPE), false},
		{"reset with the request unread", fmt.Errorf("read: %w", syscall.ECONNRESET), false},
		{"the hub's answer", &varlink.Error{Name: "org.terok.Clearance1.UnknownRequest"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := outcomeUnknown(tt.err); got != tt.want {
				t.Errorf("outcomeUnknown(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
