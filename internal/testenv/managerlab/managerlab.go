// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package managerlab runs a real systemd manager, and journald, for a
// test without touching the machine: inside a private mount namespace
// with tmpfs on /run (and on /var/log/journal), the test binary runs
// `systemd --user` as root, which applies the same execution sandbox as
// the system manager (mount namespace, capability bounding set, seccomp,
// no_new_privs) and serves socket units the same way; only the cgroup
// BPF part (IPAddressDeny=, DevicePolicy=) is skipped. A system-wide
// systemd is never booted (docs/test-machine.md §M9.1).
//
// # Inner tests
//
// A test that needs the manager calls [RunInner] with the name of a
// second test function, which the test binary then runs again under
// "unshare -m --propagation private" with $CLEARANCE_MANAGERLAB_INNER set.
// That inner test starts with `if !managerlab.Inner(t.Name()) { return }`
// and calls [New]. Everything it starts is killed by pid in t.Cleanup, and
// the mount namespace goes with the process.
package managerlab

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// EnvInner names the inner test a re-executed test binary runs.
const EnvInner = "CLEARANCE_MANAGERLAB_INNER"

// JournalDir is where the namespace's journald keeps its (volatile) files.
const JournalDir = "/run/log/journal"

// RunInner runs the test named name in this test binary again, inside a
// new private mount namespace, with env added to the environment, and
// fails t if it fails. Its output is logged. Needs root.
func RunInner(t *testing.T, name string, env ...string) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "unshare")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-m", "--propagation", "private", exe, "-test.run", "^" + name + "$", "-test.v", "-test.count=1"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout", time.Until(d).Round(time.Second).String())
	}
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(append(os.Environ(), EnvInner+"="+name), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("inner %s:\n%s", name, strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("inner %s: %v", name, err)
	}
	if !strings.Contains(out.String(), "--- PASS: "+name) {
		t.Fatalf("inner %s did not pass", name)
	}
}

// Inner reports whether this process is the re-executed inner run of the
// test name. Outside it the inner test returns at once: it only ever
// runs through [RunInner].
func Inner(name string) bool { return os.Getenv(EnvInner) == name }

// Run is the inside of the private mount namespace.
type Run struct{}

// New mounts the namespace's file systems: tmpfs on /run, and on
// /var/log/journal when it exists, so journald keeps its files in memory
// and nothing reaches the machine's real journal. It must only be called
// in a process started by [RunInner].
func New(t *testing.T) *Run {
	t.Helper()
	if os.Getenv(EnvInner) == "" {
		t.Fatal("managerlab.New outside a private mount namespace")
	}
	Mount(t, "tmpfs", "/run", "tmpfs", "mode=0755")
	if st, err := os.Stat("/var/log/journal"); err == nil && st.IsDir() {
		Mount(t, "tmpfs", "/var/log/journal", "tmpfs", "mode=0755")
	}
	return &Run{}
}

// Mount mounts or fails t.
func Mount(t *testing.T, src, dst, fstype, data string) {
	t.Helper()
	if err := unix.Mount(src, dst, fstype, 0, data); err != nil {
		t.Fatalf("mount %s on %s: %v", fstype, dst, err)
	}
}

// Overlay makes dir writable for this namespace only: an overlay with
// dir as its lower layer and a tmpfs upper one.
func (r *Run) Overlay(t *testing.T, dir string) {
	t.Helper()
	base := filepath.Join("/run", "overlay"+strings.ReplaceAll(dir, "/", "-"))
	up, work := filepath.Join(base, "up"), filepath.Join(base, "work")
	for _, d := range []string{up, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	Mount(t, "overlay", dir, "overlay", "lowerdir="+dir+",upperdir="+up+",workdir="+work)
}

// Start runs cmd in a process group of its own, logging to log (nil
// keeps cmd's own streams); cleanup stops it by pid (SIGTERM, then
// SIGKILL to its group after 10 s).
func Start(t *testing.T, cmd *exec.Cmd, log io.Writer) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if log != nil {
		cmd.Stdout, cmd.Stderr = log, log
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
}

// StartJournald starts systemd-journald on the namespace's /run.
func (r *Run) StartJournald(t *testing.T) {
	t.Helper()
	Start(t, exec.Command("/lib/systemd/systemd-journald"), nil)
	testutil.Eventually(t, 20*time.Second, "journald socket", func() bool {
		_, err := os.Stat("/run/systemd/journal/socket")
		return err == nil
	})
}

// Journal runs journalctl on the namespace's journal files.
func (r *Run) Journal(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("journalctl", append([]string{"-D", JournalDir, "--no-pager"}, args...)...).CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("No entries")) {
		t.Logf("journalctl %v: %v", args, err)
	}
	return string(out)
}

// Manager is a `systemd --user` run as root in the namespace.
type Manager struct {
	env []string
	// Pid is the manager's process.
	Pid int
}

// StartUserManager starts systemd --user (docs/test-machine.md §M9.2) and
// waits until it is running. Its units are read from
// /run/systemd/user, among others.
func (r *Run) StartUserManager(t *testing.T) *Manager {
	t.Helper()
	home := "/run/managerlab-home"
	for _, d := range []string{"/run/systemd/system", "/run/user/0", home} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod("/run/systemd/system", 0o755)
	m := &Manager{env: append(os.Environ(), "XDG_RUNTIME_DIR=/run/user/0", "HOME="+home)}
	cmd := exec.Command("/usr/lib/systemd/systemd", "--user", "--log-target=console", "--log-level=debug")
	cmd.Env = m.env
	log, err := os.Create("/run/managerlab-manager.log")
	if err != nil {
		t.Fatal(err)
	}
	Start(t, cmd, log)
	m.Pid = cmd.Process.Pid
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile("/run/managerlab-manager.log")
			var lines []string
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "clearance") && !strings.Contains(l, "bus") {
					lines = append(lines, l)
				}
			}
			if len(lines) > 80 {
				lines = lines[len(lines)-80:]
			}
			t.Logf("systemd --user log (clearance lines):\n%s", strings.Join(lines, "\n"))
		}
	})
	testutil.Eventually(t, 30*time.Second, "systemd --user running", func() bool {
		out, _ := m.Command("is-system-running").Output()
		s := strings.TrimSpace(string(out))
		return s == "running" || s == "degraded"
	})
	return m
}

// Command returns a systemctl --user command for the manager.
func (m *Manager) Command(args ...string) *exec.Cmd {
	cmd := exec.Command("systemctl", append([]string{"--user", "--no-pager"}, args...)...)
	cmd.Env = m.env
	return cmd
}

// Systemctl runs systemctl --user and fails t when it fails.
func (m *Manager) Systemctl(t *testing.T, args ...string) {
	t.Helper()
	if out, err := m.Command(args...).CombinedOutput(); err != nil {
		st, _ := m.Command("status", "--all").CombinedOutput()
		t.Fatalf("systemctl --user %s: %v\n%s\n%s", strings.Join(args, " "), err, out, st)
	}
}

// Show returns one property of a unit.
func (m *Manager) Show(t *testing.T, unit, prop string) string {
	t.Helper()
	out, err := m.Command("show", "-p", prop, "--value", unit).Output()
	if err != nil {
		t.Fatalf("systemctl show %s: %v", unit, err)
	}
	return strings.TrimSpace(string(out))
}

// CopyFile copies from to to with mode, or fails t.
func CopyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(to, mode)
}
