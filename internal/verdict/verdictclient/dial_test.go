// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdictclient

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestAttackDialRetriesFullBacklog: a connection flood keeps the
// service's listen backlog full, and a non-blocking connect then fails
// with EAGAIN at once; Dial retries it, so a hook's Engage waits for its
// turn instead of failing the container (issue 9, item 2).
func TestAttackDialRetriesFullBacklog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	// Fill the backlog.
	var fillers []net.Conn
	defer func() {
		for _, c := range fillers {
			c.Close()
		}
	}()
	for {
		c, err := net.Dial("unix", path)
		if errors.Is(err, syscall.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		fillers = append(fillers, c)
		if len(fillers) > 8 {
			t.Fatal("the backlog never filled")
		}
	}
	// Room appears once the dialer has been refused: it must try again.
	refused := make(chan struct{})
	var refusedOnce sync.Once
	done := make(chan struct{})
	defer close(done)
	go func() {
		<-refused
		for i := 0; i < len(fillers)+1; i++ {
			nfd, _, err := unix.Accept(fd)
			if err != nil {
				break
			}
			defer unix.Close(nfd)
		}
		<-done // the accepted connections stay open until the test ends
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := retryDialer(func(ctx context.Context, path string) (net.Conn, error) {
		c, err := net.Dial("unix", path)
		if err != nil {
			refusedOnce.Do(func() { close(refused) })
		}
		return c, err
	}).DialContext(ctx, "unix", path)
	if err != nil {
		t.Fatalf("dial with a full backlog: %v", err)
	}
	c.Close()

	// A socket nobody listens on fails at once.
	if _, err := Dial(ctx, filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("Dial of a missing socket succeeded")
	}
}

// TestAttackRetryClosedBeforeReply: a new connection the service closes
// before its first reply (no room for the caller, or the caller was
// slower than the idle timeout) is dialled again and the call repeated,
// so a hook's Engage survives it; a connection that already answered is
// not.
func TestAttackRetryClosedBeforeReply(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan int, 4)
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- i
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadBytes(0); err != nil {
						return
					}
					if i == 0 {
						return // the first connection is closed unanswered
					}
					c.Write([]byte(`{"parameters":{"table":"clearance","engaged_now":true}}` + "\x00"))
				}
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	table, now, err := c.Engage(ctx, "ctr000000001", nil)
	if err != nil || table != "clearance" || !now {
		t.Fatalf("Engage over a connection closed before its reply = %q, %v, %v", table, now, err)
	}
	if n := len(accepted); n != 2 {
		t.Errorf("%d connections, want 2 (one redial)", n)
	}
}
