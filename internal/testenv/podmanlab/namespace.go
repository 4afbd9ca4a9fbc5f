// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podmanlab

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// startHolder starts the process that holds the private mount namespace.
func (e *Env) startHolder() error {
	// Rootless podman wants / shared (else it warns on every call); the
	// namespace is private, so the new peer groups have no peers outside.
	shared := ""
	if e.owner != nil {
		shared = "mount --make-rshared /"
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "--", "sh", "-c",
		`set -e; mount -n -t tmpfs -o mode=0755 tmpfs /run; mount -n -t tmpfs -o mode=1777 tmpfs /tmp
if [ -d /var/log/journal ]; then mount -n -t tmpfs -o mode=0755 tmpfs /var/log/journal; fi
mkdir -p /run/systemd/system "$1"; chown "$2:$3" "$1"; chmod 700 "$1"
`+shared+`
echo ready; exec sleep infinity`, "sh", e.RuntimeDir(), strconv.Itoa(e.UID()), strconv.Itoa(e.GID()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	f, err := e.logFile("holder")
	if err != nil {
		return err
	}
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start mount namespace holder: %w", err)
	}
	e.holder = cmd.Process.Pid
	e.defer_(func() error {
		// Whatever still runs in the namespace (the desktop, a conmon
		// whose container podman could not remove) goes first, by pid,
		// and so does such a container's init (in namespaces of its own).
		e.mu.Lock()
		inits := e.inits
		e.mu.Unlock()
		for _, p := range inits {
			p.kill()
		}
		err := e.sweepNamespace()
		cmd.Process.Kill()
		cmd.Wait()
		return err
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		return fmt.Errorf("mount namespace holder: %q %v (log: %s)", line, err, e.Tail("holder"))
	}
	e.mntNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", e.holder))
	return err
}

// sweepNamespace kills, by pid, every process but the holder that is in
// the private mount namespace, and waits until they are gone.
func (e *Env) sweepNamespace() error {
	if e.mntNS == "" {
		return nil
	}
	var left []int
	if testutil.Within(10*time.Second, func() bool {
		left = left[:0]
		entries, _ := os.ReadDir("/proc")
		for _, en := range entries {
			pid, err := strconv.Atoi(en.Name())
			if err != nil || pid == e.holder || pid == os.Getpid() {
				continue
			}
			if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && ns == e.mntNS {
				left = append(left, pid)
			}
		}
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		return len(left) == 0
	}) {
		return nil
	}
	return fmt.Errorf("processes left in the mount namespace: %v", left)
}

// NSCmd returns a command running argv inside the private mount
// namespace as root, with a clean environment (PATH, HOME) plus extra. It
// runs in a process group of its own (a Ctrl-C at the terminal reaches
// only the caller, which then cleans up).
func (e *Env) NSCmd(extra []string, argv ...string) *exec.Cmd {
	args := append([]string{"-m", "-t", strconv.Itoa(e.holder), "--", "env", "-i",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + e.Path("home")}, extra...)
	cmd := exec.Command("nsenter", append(args, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// OwnerCmd returns a command running argv inside the private mount
// namespace as the owner (root, or the throwaway user with its groups
// dropped), in the owner's session: a clean environment with HOME and
// XDG_RUNTIME_DIR, plus extra.
func (e *Env) OwnerCmd(extra []string, argv ...string) *exec.Cmd {
	env := append([]string{"XDG_RUNTIME_DIR=" + e.RuntimeDir()}, extra...)
	if e.owner == nil {
		return e.NSCmd(env, argv...)
	}
	args := append([]string{"-m", "-t", strconv.Itoa(e.holder),
		"-S", strconv.Itoa(e.owner.UID), "-G", strconv.Itoa(e.owner.GID), "--", "env", "-i",
		"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + e.Path("home"),
		"USER=" + e.owner.Name, "LOGNAME=" + e.owner.Name}, env...)
	cmd := exec.Command("nsenter", append(args, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}
