// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package testutil

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestLeakedReportsGoroutinesAndFDs(t *testing.T) {
	warmRuntime()
	before := takeSnapshot()
	if r := waitForLeaks(before, 100*time.Millisecond); r != "" {
		t.Fatalf("nothing was started, yet:\n%s", r)
	}

	stop := make(chan struct{})
	go func() { <-stop }()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	r := waitForLeaks(before, 50*time.Millisecond)
	if !strings.Contains(r, "goroutine ") || !strings.Contains(r, "TestLeakedReportsGoroutinesAndFDs") ||
		!strings.Contains(r, "-> /dev/null") {
		t.Errorf("report lacks the goroutine or the fd:\n%s", r)
	}

	close(stop)
	f.Close()
	if r := waitForLeaks(before, leakWait); r != "" {
		t.Errorf("after they ended, still:\n%s", r)
	}
}

func TestPermanent(t *testing.T) {
	if !permanent("goroutine 7 [syscall]:\nos/signal.signal_recv()\n") {
		t.Error("signal.Notify's loop counted as a leak")
	}
	if permanent("goroutine 9 [chan receive]:\nmain.worker()\n") {
		t.Error("an ordinary goroutine counted as permanent")
	}
}

func TestMain(m *testing.M) { os.Exit(Main(m)) }
