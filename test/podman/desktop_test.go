// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podman

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/desktoplab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// TestRootfulDesktop is the whole flow with the operator's real desktop:
// podman run with the hook → the hub under systemd --user → the
// container's connection refused → clearance-notifier (the project's
// unit) shows a dunst popup under Xvfb (screenshot saved) → the Allow
// action is invoked through dunst → the retry connects → the journal has
// the verdict → podman rm stops the hub's units.
func TestRootfulDesktop(t *testing.T) {
	testutil.RequireTool(t, desktoplab.Tools...)
	e := newEnv(t)
	ctx := testutil.Context(t)
	if err := os.Mkdir(e.path("desktop"), 0o755); err != nil {
		t.Fatal(err)
	}
	desk, err := desktoplab.Start(ctx, desktoplab.Options{Dir: e.path("desktop"), Pick: "allow",
		Command: func(env []string, argv ...string) *exec.Cmd { return e.nsCmd(env, argv...) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(desk.Close)
	if err := e.StartNotifier("DBUS_SESSION_BUS_ADDRESS="+desk.BusAddr, "DISPLAY="+desk.Display); err != nil {
		t.Fatal(err)
	}

	c := e.createInit("clr-desktop")
	c.assertHookRan()
	c.wire()
	// The notifier subscribes to the new hub on its own (inotify); the
	// test subscribes too, to follow what happens.
	sub := subscribe(t, e.hubSock(c.id12))
	err = testutil.Poll(ctx, 20*time.Second, "notifier subscribed", func() (bool, string) {
		st, err := orgterokclearancehub1.Stats().Call(ctx, sub.rpc)
		return err == nil && st.Subscribers >= 2, e.Tail("notifier")
	})
	if err != nil {
		t.Fatal(err)
	}
	e.mustPodman("start", c.name)
	c.touch("ready")
	ev := sub.next("connection_blocked")

	if err := desk.WaitDisplayed(ctx, 1, 20*time.Second); err != nil {
		t.Fatalf("%v (notifier log: %s)", err, e.Tail("notifier"))
	}
	// The artifact directory must be visible inside the namespace too
	// (its /tmp and /run are private): $CLEARANCE_ARTIFACTS, else the work
	// dir.
	dir := os.Getenv("CLEARANCE_ARTIFACTS")
	if dir == "" || strings.HasPrefix(dir, "/tmp") || strings.HasPrefix(dir, "/run") {
		dir = e.path("desktop")
	}
	shot := filepath.Join(dir, "podman-desktop-prompt.png")
	if err := desk.Screenshot(ctx, shot); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(shot); err != nil || st.Size() == 0 {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	t.Logf("screenshot of the prompt: %s", shot)

	if err := desk.Context(ctx); err != nil {
		t.Fatal(err)
	}
	if applied := sub.next("verdict_applied"); !applied.Ok || applied.Request_id != ev.Request_id || applied.Action != "allow" {
		t.Fatalf("verdict_applied = %+v", applied)
	}
	if offered := desk.PickerInput(); !strings.Contains(offered, "#Allow (Blocked: "+hostAddr.String()) {
		t.Fatalf("dunst offered no Allow for the blocked destination:\n%s", offered)
	}
	assertAudited(t, e, c.id12, ev.Request_id)
	c.touch("go2")
	if logs := c.waitLog("attempt2 rc="); !strings.Contains(logs, "hello") || !strings.Contains(logs, "attempt2 rc=0") {
		t.Fatalf("retry after Allow in dunst did not connect:\n%s", logs)
	}
	c.touch("done")
	e.mustPodman("wait", c.name)
	e.mustPodman("rm", c.name)
	c.assertPoststopRan()
}
