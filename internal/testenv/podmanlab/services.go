// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podmanlab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// startJournald runs systemd-journald in the namespace, on its tmpfs /run
// (and a tmpfs over /var/log/journal, mounted by the holder), so the
// services' audit records can be queried with [Env.Journal] and nothing
// reaches the machine's own journal.
func (e *Env) startJournald(ctx context.Context) error {
	cmd := e.NSCmd(nil, "/lib/systemd/systemd-journald")
	f, err := e.logFile("journald")
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start systemd-journald: %w", err)
	}
	e.mu.Lock()
	e.journal = cmd
	e.mu.Unlock()
	e.defer_(func() error { StopProcess(cmd, 5*time.Second); return nil })
	return testutil.Poll(ctx, 20*time.Second, "journald socket", func() (bool, string) {
		_, err := os.Stat(e.InNS("/run/systemd/journal/socket"))
		return err == nil, fmt.Sprint(err)
	})
}

// StopJournald stops the namespace's systemd-journald (SIGTERM, as
// "systemctl stop systemd-journald" does): every service's stream to it
// breaks. [Env.StartJournald] starts a new one.
func (e *Env) StopJournald() {
	e.mu.Lock()
	cmd := e.journal
	e.journal = nil
	e.mu.Unlock()
	if cmd != nil {
		StopProcess(cmd, 5*time.Second)
	}
	os.Remove(e.InNS("/run/systemd/journal/socket"))
}

// StartJournald starts systemd-journald again after [Env.StopJournald].
func (e *Env) StartJournald(ctx context.Context) error { return e.startJournald(ctx) }

func (e *Env) Journal(args ...string) (string, error) {
	out, err := e.NSCmd(nil, append([]string{"journalctl", "--no-pager", "-o", "json"}, args...)...).Output()
	return string(out), err
}

func (e *Env) startUserManager(ctx context.Context) error {
	// The manager gets cgroups of its own in the named (systemd) and
	// unified hierarchies, as a delegated subtree: it never touches the
	// machine's root cgroup or another manager. A non-root manager needs
	// the subtree delegated to it (docs/test-machine.md §M10.6): the directories and
	// their cgroup.procs (and, in the unified hierarchy,
	// cgroup.subtree_control and cgroup.threads) owned by it.
	name := "clearance-e2e-" + filepath.Base(e.dir)
	var procs []string
	for _, h := range []string{"systemd", "unified"} {
		d := filepath.Join("/sys/fs/cgroup", h, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("cgroup for the user manager: %w", err)
		}
		e.defer_(func() error { RemoveCgroupTree(d); return nil }) // after the manager stopped
		if e.owner != nil {
			delegated := []string{d, filepath.Join(d, "cgroup.procs")}
			if h == "unified" {
				delegated = append(delegated, filepath.Join(d, "cgroup.subtree_control"), filepath.Join(d, "cgroup.threads"))
			}
			for _, p := range delegated {
				if err := os.Chown(p, e.owner.UID, e.owner.GID); err != nil {
					return fmt.Errorf("delegate cgroup: %w", err)
				}
			}
		}
		procs = append(procs, filepath.Join(d, "cgroup.procs"))
	}
	if e.owner != nil {
		// Whatever the manager left (its services, if it died first) is
		// the owner's: killed by pid before the cgroups are removed.
		e.defer_(e.owner.KillProcesses)
	}
	inner := e.OwnerCmd(nil, systemdBinary, "--user")
	cmd := exec.Command("sh", append([]string{"-c", `echo $$ > "$1"; echo $$ > "$2"; shift 2; exec "$@"`, "sh"},
		append(procs, inner.Args...)...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	f, err := e.logFile("systemd")
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start systemd --user: %w", err)
	}
	// sh execs nsenter, which execs env, which execs systemd (nsenter
	// -S/-G switch ids without forking): the pid is the manager's.
	e.manager = cmd.Process.Pid
	e.defer_(func() error { StopProcess(cmd, 15*time.Second); return nil })
	err = testutil.Poll(ctx, 30*time.Second, "systemd --user running", func() (bool, string) {
		out, _ := e.OwnerCmd(nil, "systemctl", "--user", "is-system-running").Output()
		s := strings.TrimSpace(string(out))
		return s == "running" || s == "degraded", s
	})
	if err != nil {
		return fmt.Errorf("%w (log: %s)", err, e.Tail("systemd"))
	}
	// The project's units must pass verify as installed (with the drop-in).
	if out, err := e.OwnerCmd(nil, "systemd-analyze", "--user", "verify",
		"clearance-hub@0123456789ab.socket", "clearance-hub-ingest@0123456789ab.socket",
		"clearance-hub@0123456789ab.service").CombinedOutput(); err != nil || len(out) > 0 {
		return fmt.Errorf("systemd-analyze --user verify: %v: %s", err, out)
	}
	return nil
}

func (e *Env) startVerdict(ctx context.Context) error {
	// Its records go to the namespace's journal, as under systemd: the
	// tests read the kernel side of every verdict there.
	cmd := e.NSCmd([]string{"CLEARANCE_LOG=journal"}, filepath.Join(e.bin, "clearance-verdict"), "-config", e.Path("clearance.yaml"),
		"-socket", "/run/clearance/verdict.sock", "-runtime-root", "/run", "-policy-dir", e.Path("policy"))
	f, err := e.logFile("verdict")
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start clearance-verdict: %w", err)
	}
	e.defer_(func() error { StopProcess(cmd, 5*time.Second); return nil })
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := lab.WaitSocket(ctx, e.InNS("/run/clearance/verdict.sock")); err != nil {
		return fmt.Errorf("verdict service: %w (log: %s)", err, e.Tail("verdict"))
	}
	return nil
}

// StartNotifier installs the project's clearance-notifier.service (with a
// drop-in running the built binary on the Env's configuration, its output
// in the "notifier" log) in the owner's user manager, passes env (such
// as DBUS_SESSION_BUS_ADDRESS and DISPLAY) to the manager's environment,
// as a graphical session does, and starts it. The unit is Type=notify:
// it returns once the notifier is up.
func (e *Env) StartNotifier(env ...string) error {
	b, err := os.ReadFile(filepath.Join(e.source, "units", "user", "clearance-notifier.service"))
	if err != nil {
		return err
	}
	unitDir := e.Path("home", ".config", "systemd", "user")
	dropIn := fmt.Sprintf(`[Service]
ExecStart=
ExecStart=%s run -config %s
StandardOutput=append:%s
StandardError=inherit
`, filepath.Join(e.bin, "clearance-notifier"), e.Path("clearance.yaml"), e.Path("logs", "notifier.log"))
	if err := os.WriteFile(filepath.Join(unitDir, "clearance-notifier.service"), b, 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(unitDir, "clearance-notifier.service.d"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(unitDir, "clearance-notifier.service.d", "e2e.conf"), []byte(dropIn), 0o644); err != nil {
		return err
	}
	if e.owner != nil {
		if err := e.owner.ChownTree(unitDir); err != nil {
			return err
		}
	}
	steps := [][]string{{"daemon-reload"}}
	if len(env) > 0 {
		steps = append(steps, append([]string{"set-environment"}, env...))
	}
	steps = append(steps, []string{"start", "clearance-notifier.service"})
	for _, s := range steps {
		if out, err := e.OwnerCmd(nil, append([]string{"systemctl", "--user"}, s...)...).CombinedOutput(); err != nil {
			status, _ := e.OwnerCmd(nil, "systemctl", "--user", "status", "--no-pager", "clearance-notifier.service").CombinedOutput()
			return fmt.Errorf("systemctl --user %s: %w: %s\n%s(log: %s)", strings.Join(s, " "), err, out, status, e.Tail("notifier"))
		}
	}
	return nil
}

// Systemctl runs systemctl --user in the owner's session in the namespace
// and returns its trimmed standard output (errors read as output: a
// unit's "inactive" comes with a non-zero status).
func (e *Env) Systemctl(args ...string) string {
	out, _ := e.OwnerCmd(nil, append([]string{"systemctl", "--user"}, args...)...).Output()
	return strings.TrimSpace(string(out))
}

// StopProcess sends SIGTERM to cmd and SIGKILL after grace, and waits.
func StopProcess(cmd *exec.Cmd, grace time.Duration) {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
}
