// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"sync"
	"time"
)

// bucket is a token bucket on the monotonic clock. Safe for concurrent
// use.
type bucket struct {
	mu     sync.Mutex
	rate   float64 // tokens per second; negative: unlimited
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(rate float64, burst int) *bucket {
	return &bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// allow takes a token if there is one.
func (b *bucket) allow() bool {
	if b.rate < 0 {
		return true
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// logInterval is the least time between two warnings of one kind.
const logInterval = 5 * time.Second

// logLimiter lets one warning of a kind through per logInterval and counts
// the ones it held back. The zero value is ready. Safe for concurrent use.
type logLimiter struct {
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// warn logs msg at warning level unless another went out less than
// logInterval ago.
func (l *logLimiter) warn(f *Forwarder, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	if now.Before(l.next) {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.next = now.Add(logInterval)
	n := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	f.log.Warn(msg, args...)
}
