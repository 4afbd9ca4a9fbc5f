// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package varlinkapi

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/varlink/go/varlink"
)

// streamServer accepts one connection on a socket in a temporary
// directory, reads the call and answers it with n "continues" replies and
// a last one, then waits for the client to hang up. Each reply is written
// only when next gives a token (nil: all at once), so a client taking one
// after each message it received reads them one at a time, as a live
// event stream arrives.
func streamServer(t *testing.T, n int, next <-chan struct{}) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	reply := []byte(`{"parameters":{"type":"connection_blocked","request_id":"abcdef012345-1"},"continues":true}` + "\x00")
	last := []byte(`{"parameters":{"type":"verdict_applied","request_id":"abcdef012345-1"}}` + "\x00")
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		if _, err := c.Read(buf); err != nil { // the call
			return
		}
		for range n {
			if next != nil {
				if _, ok := <-next; !ok {
					return
				}
			}
			if _, err := c.Write(reply); err != nil {
				return
			}
		}
		c.Write(last)
		c.Read(buf) // until the client hangs up
	}()
	return path
}

type streamEvent struct {
	Type      string `json:"type"`
	RequestID string `json:"request_id"`
}

// TestDialInterruptibleReusesItsReadBuffer: a long stream costs a small,
// bounded allocation per message (the message itself), not the 9 KiB of
// fresh read buffers varlink/go allocates per read on a connection that
// can carry file descriptors. Measured in bytes allocated, not time.
func TestDialInterruptibleReusesItsReadBuffer(t *testing.T) {
	const n = 2000
	next := make(chan struct{})
	defer close(next)
	path := streamServer(t, n, next)
	ctx := context.Background()
	c, _, err := DialInterruptible(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	recv, err := c.Send(ctx, "org.example.Stream", nil, varlink.More)
	if err != nil {
		t.Fatal(err)
	}
	var ev streamEvent
	next <- struct{}{}
	if _, err := recv(ctx, &ev); err != nil { // warm up: the buffer grows once
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 1; i < n; i++ {
		next <- struct{}{} // one message in flight: one read each
		flags, err := recv(ctx, &ev)
		if err != nil || flags&varlink.Continues == 0 || ev.Type != "connection_blocked" {
			t.Fatalf("message %d: %+v flags %d err %v", i, ev, flags, err)
		}
	}
	runtime.ReadMemStats(&after)
	perMessage := (after.TotalAlloc - before.TotalAlloc) / (n - 1)
	t.Logf("%d bytes allocated per message", perMessage)
	if perMessage > 2048 {
		t.Errorf("%d bytes allocated per streamed message, want at most 2048 (no per-read buffers)", perMessage)
	}
	if _, err := recv(ctx, &ev); err != nil || ev.Type != "verdict_applied" {
		t.Fatalf("last message: %+v %v", ev, err)
	}
}

// TestDialInterruptibleInterrupt: interrupt ends a receive blocked on a
// stream with no more messages.
func TestDialInterruptibleInterrupt(t *testing.T) {
	path := streamServer(t, 1, nil)
	ctx := context.Background()
	c, interrupt, err := DialInterruptible(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	recv, err := c.Send(ctx, "org.example.Stream", nil, varlink.More)
	if err != nil {
		t.Fatal(err)
	}
	var ev streamEvent
	for range 2 {
		if _, err := recv(ctx, &ev); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan error, 1)
	go func() {
		_, err := recv(ctx, &ev)
		got <- err
	}()
	interrupt()
	if err := <-got; err == nil || !(errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "EOF")) {
		t.Fatalf("receive after interrupt: %v, want EOF", err)
	}
}
