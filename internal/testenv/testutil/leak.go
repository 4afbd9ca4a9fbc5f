// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package testutil

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// Main runs m's tests and then checks that they left no goroutine and no
// file descriptor behind (the code passes descriptors both ways: a leak
// here is a leak in a daemon). It returns the exit status for os.Exit:
// m.Run's, or 1 when something leaked, with what leaked on stderr. Every
// package's TestMain calls it:
//
//	func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }
func Main(m *testing.M) int {
	warmRuntime()
	before := takeSnapshot()
	code := m.Run()
	if code != 0 {
		return code // the failures say more than a leak would
	}
	if report := waitForLeaks(before, leakWait); report != "" {
		fmt.Fprintf(os.Stderr, "leak check after the package's tests:\n%s", report)
		return 1
	}
	return code
}

// LeakCheck fails tb if, once tb's other cleanups have run, a goroutine
// or a file descriptor opened since the call is still there. Call it
// first in a test, so its cleanup runs last. Tests that run in parallel
// with others cannot use it (their goroutines would count).
func LeakCheck(tb testing.TB) {
	tb.Helper()
	warmRuntime()
	before := takeSnapshot()
	tb.Cleanup(func() {
		if report := waitForLeaks(before, leakWait); report != "" {
			tb.Errorf("leaked:\n%s", report)
		}
	})
}

// leakWait is how long goroutines get to end and descriptors to close:
// both happen asynchronously after the last thing a test can observe.
const leakWait = 5 * time.Second

// warmRuntime opens what is opened once per process on first use and
// kept (the network poller's epoll and event descriptors; go-systemd's
// journal socket, which journal.Enabled opens), so the test that is first
// to use them is not blamed for them.
func warmRuntime() {
	if c, err := net.ListenPacket("udp4", "127.0.0.1:0"); err == nil {
		c.Close()
	}
	journal.Enabled()
}

// snapshot is what a process holds at one moment.
type snapshot struct {
	goroutines map[int]string // id → its stack
	fds        map[int]string // fd → what it refers to
}

func takeSnapshot() snapshot {
	return snapshot{goroutines: goroutines(), fds: fds()}
}

// waitForLeaks polls until the process holds nothing more than before,
// or d passes; it returns a report of what is left ("" for nothing).
func waitForLeaks(before snapshot, d time.Duration) string {
	var report string
	Within(d, func() bool {
		report = leaked(before, takeSnapshot())
		return report == ""
	})
	return report
}

// leaked describes what now holds that before did not.
func leaked(before, now snapshot) string {
	var b strings.Builder
	var ids []int
	for id, stack := range now.goroutines {
		if _, old := before.goroutines[id]; !old && !permanent(stack) {
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "goroutine %d:\n%s\n", id, now.goroutines[id])
	}
	var fdNums []int
	for fd, target := range now.fds {
		if before.fds[fd] != target {
			fdNums = append(fdNums, fd)
		}
	}
	sort.Ints(fdNums)
	for _, fd := range fdNums {
		fmt.Fprintf(&b, "fd %d -> %s\n", fd, now.fds[fd])
	}
	return b.String()
}

// permanentFuncs are goroutines that, once started, live as long as the
// process by design: the runtime's and the standard library's.
var permanentFuncs = []string{
	"os/signal.signal_recv", // signal.Notify's loop
	"os/signal.loop",
	"runtime.ensureSigM",
	"testing.(*M).startAlarm",
	"testing.runFuzzing",
}

// permanent reports whether stack is a goroutine that lives as long as
// the process by design, or one running the check itself.
func permanent(stack string) bool {
	for _, f := range permanentFuncs {
		if strings.Contains(stack, f) {
			return true
		}
	}
	return strings.Contains(stack, "testutil.takeSnapshot") || strings.Contains(stack, "testing.(*M).Run")
}

// goroutines returns every goroutine's id and stack.
func goroutines() map[int]string {
	var buf bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&buf, 2)
	out := map[int]string{}
	for _, g := range strings.Split(buf.String(), "\n\n") {
		head, _, _ := strings.Cut(g, "\n")
		rest, ok := strings.CutPrefix(head, "goroutine ")
		if !ok {
			continue
		}
		idText, _, _ := strings.Cut(rest, " ")
		id, err := strconv.Atoi(idText)
		if err != nil {
			continue
		}
		out[id] = g
	}
	return out
}

// fds returns the process's open descriptors and what they refer to.
// The descriptor of the directory being read is left out.
func fds() map[int]string {
	out := map[int]string{}
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return out
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	self := int(d.Fd())
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd == self {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + n)
		if err != nil {
			continue // closed meanwhile
		}
		out[fd] = target
	}
	return out
}
