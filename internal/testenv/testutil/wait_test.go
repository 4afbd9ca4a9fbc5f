// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package testutil

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWithin(t *testing.T) {
	var n atomic.Int32
	if !Within(5*time.Second, func() bool { return n.Add(1) >= 3 }) {
		t.Fatal("a condition that holds on the third poll was not seen")
	}
	if Within(30*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition that never holds was reported held")
	}
}

func TestPoll(t *testing.T) {
	var n atomic.Int32
	if err := Poll(context.Background(), 5*time.Second, "third", func() (bool, string) {
		return n.Add(1) >= 3, "not yet"
	}); err != nil {
		t.Fatal(err)
	}
	err := Poll(context.Background(), 30*time.Millisecond, "never", func() (bool, string) { return false, "still no" })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "never") || !strings.Contains(err.Error(), "still no") {
		t.Fatalf("Poll = %v, want a deadline error naming what and the last detail", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Poll(ctx, time.Minute, "cancelled", func() (bool, string) { return false, "" }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Poll on a cancelled context = %v", err)
	}
}

func TestPollEveryBacksOff(t *testing.T) {
	var p time.Duration
	for range 10 {
		p = pollEvery(p)
	}
	if p != 20*time.Millisecond {
		t.Fatalf("pause after 10 polls = %v, want the 20ms cap", p)
	}
}
