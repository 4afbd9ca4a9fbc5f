// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifytest

import (
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestServerRecordsNotify: a private bus and the recording server answer
// a Notify as a notification daemon would, and record it.
func TestServerRecordsNotify(t *testing.T) {
	testutil.RequireTool(t, "dbus-daemon")
	bus := NewBus(t)
	srv := NewServer(t, bus.Addr, []string{"actions", "body"})
	conn, err := dbus.Connect(bus.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	obj := conn.Object("org.freedesktop.Notifications", "/org/freedesktop/Notifications")
	var id uint32
	err = obj.Call("org.freedesktop.Notifications.Notify", 0, "test", uint32(0), "", "Blocked: x", "body",
		[]string{"allow", "Allow"}, map[string]dbus.Variant{}, int32(-1)).Store(&id)
	if err != nil || id == 0 {
		t.Fatalf("Notify = %d, %v", id, err)
	}
	calls := srv.Calls()
	if len(calls) != 1 || !strings.Contains(Describe(calls), "Blocked: x") {
		t.Fatalf("recorded:%s", Describe(calls))
	}
}
