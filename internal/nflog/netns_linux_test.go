// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nflog

import (
	"bytes"
	"fmt"
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// testNetNS is an anonymous network namespace owned by one locked OS thread.
// The namespace lives as long as the thread; the thread is never unlocked,
// so it exits (and the namespace goes away) when the test ends.
type testNetNS struct {
	reqs   chan func()
	exited chan struct{}
}

// newTestNetNS creates an anonymous netns with lo up, and removes it when tb
// ends.
func newTestNetNS(tb testing.TB) *testNetNS {
	tb.Helper()
	testutil.RequireRoot(tb)
	ns := &testNetNS{reqs: make(chan func()), exited: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		defer close(ns.exited)
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		errc <- nil
		for fn := range ns.reqs {
			fn()
		}
	}()
	if err := <-errc; err != nil {
		testutil.Unavailable(tb, "%v", err)
	}
	tb.Cleanup(func() {
		close(ns.reqs)
		<-ns.exited
	})
	if err := ns.Do(func() error { return linkUp("lo") }); err != nil {
		tb.Fatal(err)
	}
	return ns
}

// Do runs fn on the namespace's thread and returns its error. Sockets fn
// creates belong to the namespace; processes it starts run in it.
func (ns *testNetNS) Do(fn func() error) error {
	errc := make(chan error, 1)
	ns.reqs <- func() { errc <- fn() }
	return <-errc
}

// nft loads an nftables script into the namespace with the nft CLI.
func (ns *testNetNS) nft(tb testing.TB, script string) {
	tb.Helper()
	nft := testutil.RequireTool(tb, "nft")
	err := ns.Do(func() error {
		cmd := exec.Command(nft, "-f", "-")
		cmd.Stdin = bytes.NewBufferString(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nft -f: %w: %s", err, out)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("link up %s: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("link up %s: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("link up %s: get flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("link up %s: set flags: %w", name, err)
	}
	return nil
}
