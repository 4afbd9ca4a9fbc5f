// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podman

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/testenv/podmanlab"
)

// TestRootless is TestRootful's flow with rootless podman: a throwaway
// user runs podman (runc, --network none) and its own systemd --user in a
// delegated cgroup; the verdict service runs as root. The hook runs as
// uid 0 of podman's rootless user namespace: it must derive the user's
// host uid from its uid_map, write the record under /run/user/<uid>, get
// the ruleset engaged by a verdict service that sees the host uid
// (SO_PEERCRED) and checks that it owns the container's netns, and start
// the hub in the user's manager (docs/test-machine.md §M10).
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
	t.Run("no user manager", func(t *testing.T) {
		e.t = t
		noUserManager(t, e)
	})
}

// noUserManager runs the project's hook as podman runs it, but told that
// the owner's runtime directory is one where no systemd --user runs (as
// for su, sudo -u or cron without linger): podman must refuse the
// container with the hook's message, and the refusal must be journaled
// (issue 10, item 10).
func noUserManager(t *testing.T, e *env) {
	hook, err := os.ReadFile(filepath.Join("..", "..", "packaging", "oci", "clearance.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(hook, &spec); err != nil {
		t.Fatal(err)
	}
	empty := e.path("no-user-manager")
	h := spec["hook"].(map[string]any)
	h["path"] = filepath.Join(binDir, "clearance-oci-hook")
	h["args"] = []string{"clearance-oci-hook", "-user-runtime-base", empty}
	dir := e.path("hooks-no-user-manager")
	for _, d := range []string{dir, empty} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(dir, "clearance.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	const name = "clr-rl-nomgr"
	if out, err := e.Podman("--hooks-dir", dir, "create", "--name", name, "--network", "none",
		"--annotation", podmanlab.GateAnnotation, podmanlab.Image, "true"); err != nil {
		t.Fatalf("podman create: %v\n%s", err, out)
	}
	defer e.Podman("rm", "-f", name)
	out, err := e.Podman("--hooks-dir", dir, "init", name)
	if err == nil {
		t.Fatalf("podman init started a container nobody could be asked for:\n%s", out)
	}
	want := "no systemd --user for uid " + strconv.Itoa(e.uid())
	if !strings.Contains(out, want) || !strings.Contains(out, "loginctl enable-linger") {
		t.Errorf("podman's output does not say %q and how to fix it:\n%s", want, out)
	}
	jout, err := e.Journal("MESSAGE_ID="+audit.MsgRefused, "SYSLOG_IDENTIFIER=clearance-oci-hook")
	if err != nil || !strings.Contains(jout, want) {
		t.Errorf("the refusal is not in the journal: %v\n%s", err, jout)
	}
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
	// The hook's Engage is the one that created the table: the one
	// "engaged" record, by the user's uid.
	out, err := c.e.Journal("MESSAGE_ID="+audit.MsgEngaged, audit.FieldContainer+"="+c.id12)
	var rec map[string]any
	if err != nil || json.Unmarshal([]byte(strings.TrimSpace(out)), &rec) != nil {
		t.Errorf("no engaged record of %s in the journal: %v\n%s", c.id12, err, out)
	} else if rec[audit.FieldOperatorUID] != strconv.Itoa(c.e.uid()) {
		t.Errorf("the hook's Engage came from uid %v, not the user's %d: %v", rec[audit.FieldOperatorUID], c.e.uid(), rec)
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
