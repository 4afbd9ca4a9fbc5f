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
	"slices"
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

// TestDiscover: sockets the patterns match, once each and sorted; not a
// regular file, not a name being set up (a leading dot), not a socket
// the caller may not connect to.
func TestDiscover(t *testing.T) {
	dir := t.TempDir()
	mk := func(rel string, mode os.FileMode) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	b := mk("b/hub.sock", 0o600)
	a := mk("a/hub.sock", 0o600)
	mk(".c/hub.sock", 0o600)
	os.MkdirAll(filepath.Join(dir, "d"), 0o755)
	os.WriteFile(filepath.Join(dir, "d", "hub.sock"), nil, 0o600)
	glob := filepath.Join(dir, "*", "hub.sock")
	got, err := Discover([]string{glob, glob})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{a, b}; !slices.Equal(got, want) {
		t.Errorf("Discover = %v, want %v", got, want)
	}
	if _, err := Discover([]string{"["}); err == nil {
		t.Error("a bad pattern is no error")
	}
	if os.Geteuid() != 0 {
		os.Chmod(b, 0o400) // no write: connect(2) would be refused
		if got, _ := Discover([]string{glob}); !slices.Equal(got, []string{a}) {
			t.Errorf("Discover with a socket we may not connect to = %v", got)
		}
	}
}

// TestFollowBacksOffPokesAndStops: Follow tries again after the backoff,
// at once when poked, waits for a poke when told to, and stops when told.
func TestFollowBacksOffPokesAndStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-hub.sock")
	poke := make(chan struct{}, 1)
	waiting := make(chan struct{}, 1)
	var waits []time.Duration
	calls := Caller{Path: path}
	attempts := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		Follow(context.Background(), path, &calls, FollowOptions{
			BackoffMin: time.Millisecond, BackoffMax: 4 * time.Millisecond, Poke: poke,
			Handler: func(bool) Handler { return nil }, // never used: there is no hub
			Ended: func(connected bool, err error, wait time.Duration) Next {
				attempts++
				if connected || err == nil {
					t.Errorf("attempt %d: connected %v, err %v", attempts, connected, err)
				}
				waits = append(waits, wait)
				switch attempts {
				case 5:
					poke <- struct{}{} // the wait is cut short, the backoff reset
				case 6:
					waiting <- struct{}{}
					return WaitForPoke
				case 7:
					return Stop
				}
				return Retry
			},
		})
	}()
	select {
	case <-waiting:
	case <-time.After(10 * time.Second):
		t.Fatal("Follow never waited for a poke")
	}
	poke <- struct{}{}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not stop")
	}
	want := []time.Duration{1, 2, 4, 4, 4, 1, 1}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(waits, want) {
		t.Errorf("waits %v, want %v", waits, want)
	}
}
