// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package netnstest

import (
	"net"
	"os"
	"testing"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestNewNetNS: a namespace of its own with loopback up, and the test's
// own goroutine left in its namespace.
func TestNewNetNS(t *testing.T) {
	testutil.RequireRoot(t)
	self, _ := os.Readlink("/proc/thread-self/ns/net")
	ns := NewNetNS(t)
	if target, _ := os.Readlink(Path(ns)); target == self || target == "" {
		t.Fatalf("namespace %q is the test's own (%q)", target, self)
	}
	if now, _ := os.Readlink("/proc/thread-self/ns/net"); now != self {
		t.Fatalf("the test's thread moved to %q", now)
	}
	Exec(t, ns, func() error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err // loopback is down
		}
		return c.Close()
	})
}
