// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podman

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/terok-ai/clearance/internal/podmanlab"
)

// TestRootless is TestRootful's flow with rootless podman: a throwaway
// user runs podman (runc, --network none) and its own systemd --user in a
// delegated cgroup; the verdict service runs as root. The hook runs as
// uid 0 of podman's rootless user namespace: it must derive the user's
// host uid from its uid_map, write the record under /run/user/<uid>, get
// the ruleset engaged by a verdict service that sees the host uid
// (SO_PEERCRED) and checks that it owns the container's netns, and start
// the hub in the user's manager (reference/test-machine.md §10).
func TestRootless(t *testing.T) {
	e := newEnvFor(t, true)
	t.Logf("owner %s uid %d, subuids %d+%d", e.owner.Name, e.owner.UID, e.owner.SubUID.Start, e.owner.SubUID.Count)

	t.Run("allow", func(t *testing.T) {
		e.t = t
		allowFlow(t, e, "clr-rl-allow", func(c *container) { c.assertRootlessHook() })
	})
	t.Run("deny", func(t *testing.T) {
		e.t = t
		denyFlow(t, e, "clr-rl-deny")
	})
}

// assertRootlessHook checks what only the rootless path shows: the hook
// (uid 0 in podman's user namespace) wrote the record as the user's host
// uid, the verdict service saw that uid as the peer of Engage (not 0, so
// it authorized by netns ownership), and the hub runs as the user.
func (c *container) assertRootlessHook() {
	t := c.e.t
	fi, err := os.Stat(c.e.recordPath(c.id12))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != c.e.uid() {
		t.Errorf("record owned by uid %d, want the user's host uid %d", st.Uid, c.e.uid())
	}
	// The hook's Engage is the one that created the table.
	vl, _ := os.ReadFile(c.e.path("logs", "verdict.log"))
	engaged := false
	for _, l := range strings.Split(string(vl), "\n") {
		if strings.Contains(l, "engaged clearance for "+c.id12) && strings.Contains(l, "engaged_now=true") {
			engaged = strings.Contains(l, fmt.Sprintf("CLEARANCE_OPERATOR_UID=%d ", c.e.uid()))
			if !engaged {
				t.Errorf("the hook's Engage came from another uid than the user's %d: %s", c.e.uid(), l)
			}
		}
	}
	if !engaged {
		t.Errorf("verdict log has no Engage of %s by uid %d:\n%s", c.id12, c.e.uid(), vl)
	}
	pid, err := strconv.Atoi(c.e.systemctl("show", "-p", "MainPID", "--value", "clearance-hub@"+c.id12+".service"))
	if err != nil || pid <= 0 {
		t.Fatalf("hub MainPID: %v %d", err, pid)
	}
	ids, _, err := podmanlab.ProcUIDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if id != c.e.uid() {
			t.Fatalf("hub (pid %d) runs as uids %v, want %d", pid, ids, c.e.uid())
		}
	}
}
