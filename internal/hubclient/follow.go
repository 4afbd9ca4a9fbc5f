// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubclient

import (
	"context"
	"time"
)

// Next says what Follow does after an attempt ended.
type Next int

const (
	// Retry: wait the backoff (cut short by a poke), then subscribe again.
	Retry Next = iota
	// WaitForPoke: wait until poked (nothing will change before).
	WaitForPoke
	// Stop: stop following.
	Stop
)

// FollowOptions configure [Follow].
type FollowOptions struct {
	// BackoffMin and BackoffMax bound the wait between attempts: it
	// starts at BackoffMin, doubles up to BackoffMax, and is reset by
	// every subscription that stood and by a poke.
	BackoffMin, BackoffMax time.Duration
	// Poke, when it receives, cuts a wait short and resets the backoff.
	// Nil: never.
	Poke <-chan struct{}
	// Handler returns the handler of the next attempt; reconnect is true
	// once a subscription has stood before.
	Handler func(reconnect bool) Handler
	// Ended is told how each attempt ended (connected: the subscription
	// stood) and the wait before the next one, and says what to do. Nil
	// means Retry.
	Ended func(connected bool, err error, wait time.Duration) Next
}

// Follow follows the hub at path until ctx ends or Ended says Stop:
// Subscribe, then again after a backoff when the stream ends or the hub
// is not there.
func Follow(ctx context.Context, path string, calls *Caller, o FollowOptions) {
	backoff := o.BackoffMin
	everConnected := false
	for {
		connected, err := Subscribe(ctx, path, calls, o.Handler(everConnected))
		if ctx.Err() != nil {
			return
		}
		if connected {
			everConnected = true
			backoff = o.BackoffMin
		}
		next := Retry
		if o.Ended != nil {
			next = o.Ended(connected, err, backoff)
		}
		switch next {
		case Stop:
			return
		case WaitForPoke:
			select {
			case <-ctx.Done():
				return
			case <-o.Poke:
				backoff = o.BackoffMin
				continue
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-o.Poke:
			t.Stop()
			backoff = o.BackoffMin
		case <-t.C:
			backoff = min(2*backoff, o.BackoffMax)
		}
	}
}
