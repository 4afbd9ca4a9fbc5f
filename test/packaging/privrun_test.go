package packaging

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
)

// journalDir is where the namespace's journald keeps its (volatile) files.
const journalDir = "/run/log/journal"

// privateRun is the inside of a private mount namespace: tmpfs on /run,
// and on /var/log/journal when it exists, so journald keeps its files in
// memory and nothing reaches the machine's real journal.
type privateRun struct{}

// newPrivateRun mounts the namespace's file systems. It must only be
// called in a process started by runInner.
func newPrivateRun(t *testing.T) *privateRun {
	t.Helper()
	if os.Getenv(envInner) == "" {
		t.Fatal("newPrivateRun outside a private mount namespace")
	}
	mustMount(t, "tmpfs", "/run", "tmpfs", "mode=0755")
	if st, err := os.Stat("/var/log/journal"); err == nil && st.IsDir() {
		mustMount(t, "tmpfs", "/var/log/journal", "tmpfs", "mode=0755")
	}
	return &privateRun{}
}

func mustMount(t *testing.T, src, dst, fstype, data string) {
	t.Helper()
	if err := unix.Mount(src, dst, fstype, 0, data); err != nil {
		t.Fatalf("mount %s on %s: %v", fstype, dst, err)
	}
}

// overlay makes dir writable for this namespace only: an overlay with
// dir as its lower layer and a tmpfs upper one.
func (p *privateRun) overlay(t *testing.T, dir string) {
	t.Helper()
	base := filepath.Join("/run", "overlay"+strings.ReplaceAll(dir, "/", "-"))
	up, work := filepath.Join(base, "up"), filepath.Join(base, "work")
	for _, d := range []string{up, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustMount(t, "overlay", dir, "overlay", "lowerdir="+dir+",upperdir="+up+",workdir="+work)
}

// start runs cmd in a process group of its own; cleanup kills it by pid.
func start(t *testing.T, cmd *exec.Cmd, log io.Writer) {
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

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startJournald starts systemd-journald on the namespace's /run.
func (p *privateRun) startJournald(t *testing.T) {
	t.Helper()
	start(t, exec.Command("/lib/systemd/systemd-journald"), nil)
	waitFor(t, "journald socket", 20*time.Second, func() bool {
		_, err := os.Stat("/run/systemd/journal/socket")
		return err == nil
	})
}

// journal runs journalctl on the namespace's journal files.
func (p *privateRun) journal(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("journalctl", append([]string{"-D", journalDir, "--no-pager"}, args...)...).CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("No entries")) {
		t.Logf("journalctl %v: %v", args, err)
	}
	return string(out)
}

// userManager is a `systemd --user` run as root in the namespace.
type userManager struct {
	env []string
}

// startUserManager starts systemd --user (test-machine.md §9.2) and waits
// until it is running.
func (p *privateRun) startUserManager(t *testing.T) *userManager {
	t.Helper()
	home := "/run/pkgtest-home"
	for _, d := range []string{"/run/systemd/system", "/run/user/0", home} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod("/run/systemd/system", 0o755)
	m := &userManager{env: append(os.Environ(), "XDG_RUNTIME_DIR=/run/user/0", "HOME="+home)}
	cmd := exec.Command("/usr/lib/systemd/systemd", "--user", "--log-target=console", "--log-level=debug")
	cmd.Env = m.env
	log, err := os.Create("/run/pkgtest-manager.log")
	if err != nil {
		t.Fatal(err)
	}
	start(t, cmd, log)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile("/run/pkgtest-manager.log")
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
	waitFor(t, "systemd --user running", 30*time.Second, func() bool {
		out, _ := m.command("is-system-running").Output()
		s := strings.TrimSpace(string(out))
		return s == "running" || s == "degraded"
	})
	return m
}

func (m *userManager) command(args ...string) *exec.Cmd {
	cmd := exec.Command("systemctl", append([]string{"--user", "--no-pager"}, args...)...)
	cmd.Env = m.env
	return cmd
}

// systemctl runs systemctl --user and fails t when it fails.
func (m *userManager) systemctl(t *testing.T, args ...string) {
	t.Helper()
	if out, err := m.command(args...).CombinedOutput(); err != nil {
		st, _ := m.command("status", "--all").CombinedOutput()
		t.Fatalf("systemctl --user %s: %v\n%s\n%s", strings.Join(args, " "), err, out, st)
	}
}

// show returns one property of a unit.
func (m *userManager) show(t *testing.T, unit, prop string) string {
	t.Helper()
	out, err := m.command("show", "-p", prop, "--value", unit).Output()
	if err != nil {
		t.Fatalf("systemctl show %s: %v", unit, err)
	}
	return strings.TrimSpace(string(out))
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
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
