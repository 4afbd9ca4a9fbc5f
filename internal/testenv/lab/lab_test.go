// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package lab

import (
	"bufio"
	"context"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestLabLinksTwoNamespaces: the lab's promise to the tests built on it —
// a "container" and a test host in namespaces of their own, reachable over
// their veth only, and everything gone after Close.
func TestLabLinksTwoNamespaces(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "unshare", "nsenter", "ip")
	l := New()
	t.Cleanup(l.Close) // also when the test fails early (Close is idempotent)
	ctr, err := l.Namespace("ctr")
	if err != nil {
		t.Fatal(err)
	}
	host, err := l.Namespace("host")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Link(ctr, host, netip.MustParsePrefix("10.254.76.2/30"), netip.MustParsePrefix("10.254.76.1/30")); err != nil {
		t.Fatal(err)
	}
	if err := l.Echo(host, "10.254.76.1:7007"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(testutil.Context(t), 10*time.Second)
	defer cancel()
	c, err := ctr.Dial(ctx, "tcp", "10.254.76.1:7007")
	if err != nil {
		t.Fatalf("the container cannot reach the test host: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || line != "hello\n" {
		t.Fatalf("echo = %q, %v", line, err)
	}
	a, _ := os.Readlink("/proc/" + strconv.Itoa(ctr.Pid) + "/ns/net")
	b, _ := os.Readlink("/proc/" + strconv.Itoa(host.Pid) + "/ns/net")
	if a == "" || a == b {
		t.Fatalf("the container's namespace %q is not one of its own (the host's is %q)", a, b)
	}
	l.Close()
	if _, err := os.Stat("/proc/" + strconv.Itoa(ctr.Pid)); err == nil {
		t.Errorf("the namespace holder %d outlived Close", ctr.Pid)
	}
}
