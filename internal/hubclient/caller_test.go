// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// TestOutcomeUnknown: only a transport failure after the request may have
// reached the hub leaves the verdict's outcome open.
func TestOutcomeUnknown(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"no error", nil, false},
		{"connection closed before the reply", io.EOF, true},
		{"wrapped EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"timeout", errors.New("context deadline exceeded"), true},
		{"dial failed", &NotSentError{Err: syscall.ENOENT}, false},
		{"write refused", fmt.Errorf("write unix: %w", syscall.EPIPE), false},
		{"reset with the request unread", fmt.Errorf("read: %w", syscall.ECONNRESET), false},
		{"the hub's answer", &varlink.Error{Name: "org.terok.Clearance1.UnknownRequest"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OutcomeUnknown(tt.err); got != tt.want {
				t.Errorf("OutcomeUnknown(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestCallerInterruptsAHubThatNeverAnswers: varlink/go's read does not
// watch a context; the Caller interrupts the connection when the call's
// time is up, returns the deadline, and dials afresh for the next call.
func TestCallerInterruptsAHubThatNeverAnswers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hub.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	c := &Caller{Path: path, Timeout: 200 * time.Millisecond}
	defer c.Close()
	call := func() error {
		return c.Call(context.Background(), func(ctx context.Context, conn *varlink.Connection) error {
			_, err := orgterokclearancehub1.Pending().Call(ctx, conn)
			return err
		})
	}
	for i := range 2 {
		err := call()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call %d = %v, want the deadline", i, err)
		}
		if OutcomeUnknown(err) != true {
			t.Errorf("a call that timed out after it was sent has a known outcome: %v", err)
		}
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("%d connections, want a fresh one per interrupted call", n)
	}

	ln.Close()
	os.Remove(path)
	var notSent *NotSentError
	if err := call(); !errors.As(err, &notSent) || OutcomeUnknown(err) {
		t.Errorf("call to a gone hub = %v, want a NotSentError", err)
	}
}
