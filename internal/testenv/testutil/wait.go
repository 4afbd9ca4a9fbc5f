// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package testutil

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// WaitTimeout is how long [Eventually] waits when given no duration:
// generous, for a loaded 2-vCPU CI machine.
const WaitTimeout = 20 * time.Second

// pollEvery returns the pause before the next poll: 1 ms at first,
// doubling up to 20 ms, so a condition that holds soon is seen soon and
// an expensive one (a journalctl run) is not run in a tight loop.
func pollEvery(last time.Duration) time.Duration {
	if last == 0 {
		return time.Millisecond
	}
	return min(2*last, 20*time.Millisecond)
}

// Eventually polls cond until it holds and fails tb if it does not
// within d (WaitTimeout when d is 0), naming what was awaited. Use it
// where no event exists to wait on.
func Eventually(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	if d == 0 {
		d = WaitTimeout
	}
	if !Within(d, cond) {
		tb.Fatalf("%s: not within %v", what, d)
	}
}

// Within polls cond until it holds or d has passed, and reports whether
// it held.
func Within(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for pause := time.Duration(0); ; {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return cond()
		}
		pause = pollEvery(pause)
		time.Sleep(pause)
	}
}

// Poll polls cond until it holds, ctx ends or d has passed; the error
// names what was awaited and the last detail cond gave.
func Poll(ctx context.Context, d time.Duration, what string, cond func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for pause := time.Duration(0); ; {
		ok, last := cond()
		if ok {
			return nil
		}
		pause = pollEvery(pause)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %s)", what, ctx.Err(), last)
		case <-time.After(pause):
		}
	}
}

// Accepts reports whether the Unix socket at each path accepts a
// connection now (closed at once). A socket file exists from bind(2), a
// moment before listen(2), and refuses connections in between, so a
// file's existence does not say a server is up.
func Accepts(paths ...string) bool {
	for _, p := range paths {
		c, err := net.Dial("unix", p)
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

// AcceptsTCP reports whether addr (host:port) accepts a TCP connection
// now (closed at once).
func AcceptsTCP(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
