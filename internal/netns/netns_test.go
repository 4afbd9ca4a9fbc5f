// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package netns_test

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/testenv/netnstest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

func selfNetNS(t *testing.T) *os.File {
	t.Helper()
	f, err := netns.OpenPID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestIdentify(t *testing.T) {
	a := selfNetNS(t)
	b := selfNetNS(t)
	ida, err := netns.Identify(a)
	if err != nil {
		t.Fatal(err)
	}
	idb, err := netns.Identify(b)
	if err != nil {
		t.Fatal(err)
	}
	if ida != idb {
		t.Fatalf("same netns, different IDs: %v %v", ida, idb)
	}
	ino, err := netns.Inode(a)
	if err != nil || ino != ida.Ino {
		t.Fatalf("Inode = %d, %v; want %d", ino, err, ida.Ino)
	}
	if err := netns.Check(a); err != nil {
		t.Fatalf("Check(own netns): %v", err)
	}
}

func TestCheckRejectsOtherNamespaceTypes(t *testing.T) {
	f, err := os.Open("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := netns.Check(f); !errors.Is(err, netns.ErrNotNetNS) {
		t.Fatalf("Check(mnt ns) = %v, want ErrNotNetNS", err)
	}
	reg, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if err := netns.Check(reg); err == nil {
		t.Fatal("Check(regular file) = nil, want error")
	}
}

func TestOpenPIDInvalid(t *testing.T) {
	if _, err := netns.OpenPID(0); err == nil {
		t.Fatal("OpenPID(0) = nil error")
	}
}

func TestOwnerUID(t *testing.T) {
	uid, err := netns.OwnerUID(selfNetNS(t))
	if err != nil {
		t.Fatal(err)
	}
	// The initial user namespace is owned by uid 0.
	if want := uint32(0); uid != want {
		t.Fatalf("OwnerUID(initial netns) = %d, want %d", uid, want)
	}
}

func TestIntegrationDo(t *testing.T) {
	testutil.RequireRoot(t)
	// Not /proc/<pid>/ns/net: that is the main thread's, and an earlier Do
	// that ran on the main thread leaves it wedged in a foreign netns.
	hostID := threadNetNS(t)
	ns := netnstest.NewNetNS(t)
	nsID, err := netns.Identify(ns)
	if err != nil {
		t.Fatal(err)
	}
	if nsID == hostID {
		t.Fatal("NewNetNS returned the host netns")
	}

	var inside netns.ID
	netnstest.Exec(t, ns, func() error {
		f, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		defer f.Close()
		inside, err = netns.Identify(f)
		return err
	})
	if inside != nsID {
		t.Fatalf("Do ran in %v, want %v", inside, nsID)
	}

	// The calling thread, and any thread the runtime hands us, is still in
	// the host netns.
	for range 20 {
		if id := threadNetNS(t); id != hostID {
			t.Fatalf("thread leaked into %v", id)
		}
	}

	wantErr := errors.New("boom")
	if err := netns.Do(int(ns.Fd()), func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Fatalf("Do error = %v, want %v", err, wantErr)
	}
	if err := netns.Do(-1, func() error { return nil }); !errors.Is(err, unix.EBADF) {
		t.Fatalf("Do(-1) = %v, want EBADF", err)
	}
}

// threadNetNS identifies the netns of the thread running the caller.
func threadNetNS(t *testing.T) netns.ID {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	id, err := netns.Identify(f)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestNoGoroutineRunsOnTheMainThread: /proc/<pid>/ns/net shows the main
// thread's namespace, and other processes read it to tell who uses a
// container's namespace; a Do goroutine that ran there would park the
// main thread in a foreign namespace for good. The package's init keeps
// every goroutine but main off it.
func TestNoGoroutineRunsOnTheMainThread(t *testing.T) {
	pid := os.Getpid()
	var wg sync.WaitGroup
	var onMain atomic.Int32
	for range 2000 {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if unix.Gettid() == pid {
				onMain.Add(1)
			}
			runtime.Gosched()
		})
	}
	wg.Wait()
	if n := onMain.Load(); n > 0 {
		t.Fatalf("%d goroutines ran on the main thread", n)
	}
}
