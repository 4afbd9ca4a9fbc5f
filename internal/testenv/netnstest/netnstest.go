// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package netnstest creates throwaway network namespaces for tests.
//
// The namespaces are anonymous: nothing appears under /run/netns, and a
// namespace disappears when its last reference (the returned file, sockets
// opened inside it) is closed. Creating one needs CAP_SYS_ADMIN; tests call
// [github.com/terok-ai/clearance/internal/testutil.RequireRoot] first.
package netnstest

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/netns"
)

// NewNetNS creates an anonymous network namespace with its loopback
// interface up and returns a file referring to it. The file is closed in
// tb.Cleanup. It is created on a locked goroutine whose thread is discarded,
// so the calling goroutine's namespace never changes.
func NewNetNS(tb testing.TB) *os.File {
	tb.Helper()
	type result struct {
		f   *os.File
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			c <- result{err: fmt.Errorf("unshare netns: %w", err)}
			return
		}
		f, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			c <- result{err: err}
			return
		}
		if err := loUp(); err != nil {
			f.Close()
			c <- result{err: err}
			return
		}
		c <- result{f: f}
	}()
	r := <-c
	if r.err != nil {
		tb.Fatalf("create netns: %v", r.err)
	}
	tb.Cleanup(func() { r.f.Close() })
	return r.f
}

// loUp sets the loopback interface up in the calling thread's netns.
func loUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open ioctl socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// Exec runs fn inside ns (see [netns.Do]) and fails tb if it returns an
// error. It must be called from the test's goroutine.
func Exec(tb testing.TB, ns *os.File, fn func() error) {
	tb.Helper()
	if err := netns.Do(int(ns.Fd()), fn); err != nil {
		tb.Fatalf("in netns: %v", err)
	}
}

// Path returns a path through which other processes (nsenter --net=PATH,
// ip link set … netns PATH) can open ns while the test process holds it.
func Path(ns *os.File) string {
	return "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(int(ns.Fd()))
}
