// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package hubclient is what clearance's clients share to talk to a hub:
// calls on one connection that are bounded, interruptible and redialled
// after a transport failure, and the one reading of a failed call's
// outcome (did the hub get it?). The notifier and clearancectl use it.
package hubclient

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/varlinkapi"
)

// DefaultTimeout bounds one call when Caller.Timeout is 0. A verdict
// may wait for the verdict service and its netlink commit.
const DefaultTimeout = 15 * time.Second

// Caller makes calls to one hub on one connection, dialled on first use
// and again after a transport failure. Every call is bounded by Timeout
// and ends when its context does: the connection is interrupted
// (varlinkapi.DialInterruptible), since varlink/go's blocking read does
// not watch a context. Calls are serialised. The zero value with Path
// set is ready to use.
type Caller struct {
	// Path is the hub's varlink socket.
	Path string
	// Timeout bounds one call; 0 means DefaultTimeout.
	Timeout time.Duration

	mu        sync.Mutex
	conn      *varlink.Connection
	interrupt func()
}

// Call runs f on the connection. A transport failure or a timeout closes
// the connection, so the next call dials again; a varlink error reply
// leaves it open. A failed dial is a *NotSentError.
func (c *Caller) Call(ctx context.Context, f func(context.Context, *varlink.Connection) error) error {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		conn, interrupt, err := varlinkapi.DialInterruptible(ctx, c.Path)
		if err != nil {
			return &NotSentError{Err: err}
		}
		c.conn, c.interrupt = conn, interrupt
	}
	conn := c.conn
	stop := context.AfterFunc(ctx, c.interrupt)
	err := f(ctx, conn)
	interrupted := !stop()
	if interrupted || (err != nil && varlinkapi.ErrorName(err) == "") {
		conn.Close() // transport failure or timeout: its framing is unknown now
		c.conn, c.interrupt = nil, nil
	}
	if interrupted && (err == nil || varlinkapi.ErrorName(err) == "") {
		// The call ended because its time was up or its context ended:
		// what the interrupted read or write said (EOF, a reset, or
		// nothing when the reply had just arrived) is a consequence.
		err = ctx.Err()
	}
	return err
}

// Close closes the connection, if one is open. The Caller may be used
// again: the next call dials.
func (c *Caller) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.interrupt = nil, nil
	}
}

// NotSentError is a call that never reached the hub (it could not be
// dialled): unlike a connection lost before the reply, its outcome is
// known.
type NotSentError struct{ Err error }

func (e *NotSentError) Error() string { return e.Err.Error() }
func (e *NotSentError) Unwrap() error { return e.Err }

// OutcomeUnknown reports whether err leaves open whether the hub got the
// call: a transport failure after the request may have reached it. A
// varlink error is the hub's answer; a failed dial, a write the kernel
// refused (EPIPE) and a reset (the peer closed with the request unread)
// never reached it.
func OutcomeUnknown(err error) bool {
	switch {
	case err == nil,
		varlinkapi.ErrorName(err) != "",
		errors.As(err, new(*NotSentError)),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNRESET):
		return false
	}
	return true
}
