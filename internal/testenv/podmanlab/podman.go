// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podmanlab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Podman runs podman in the namespace with the private configuration
// and store and returns its combined output.
func (e *Env) Podman(args ...string) (string, error) {
	out, err := e.PodmanCmd(args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// PodmanCmd returns the command Podman runs.
func (e *Env) PodmanCmd(args ...string) *exec.Cmd {
	if e.owner != nil {
		// Rootless: the owner's ~/.config/containers decides everything.
		return e.OwnerCmd(nil, append([]string{"podman"}, args...)...)
	}
	argv := append([]string{"podman", "--root", e.Path("store", "root"), "--runroot", e.Path("store", "run")}, args...)
	return e.NSCmd([]string{"CONTAINERS_CONF=" + e.Path("containers.conf")}, argv...)
}

// teardownContainers removes every container and the image while the
// namespace, the user manager and the verdict service still exist (it is
// registered after them, so it runs before their cleanups).
func (e *Env) teardownContainers() {
	e.defer_(func() error {
		e.Podman("rm", "-af", "-t", "0")
		e.Podman("rmi", "-af")
		if e.owner != nil {
			// The owner's storage (overlay layers owned by its subordinate
			// ids) and the pause process holding podman's user namespace.
			// Both go; the sweep after the user manager stopped kills
			// what is left of the owner's processes by pid.
			if out, err := e.Podman("system", "reset", "-f"); err != nil {
				e.log.Warn("podman system reset", "err", err, "out", out)
			}
		}
		return nil
	})
}

// finalCleanup registers what runs last: the lab's test hosts, cgroup
// directories podman and the manager left, podman's state outside the
// namespace that was not there before, and the work directory.
func (e *Env) finalCleanup() {
	cgroups := cgroupDirs()
	_, statErr := os.Stat("/var/lib/containers")
	hadContainers := statErr == nil
	alive := holdLabLock()
	e.defer_(func() error {
		e.lab.Close()
		// The sweeps remove empty cgroups nobody named: only when no other
		// lab on the machine is alive, since a lab's cgroups are empty for
		// a moment after they are made (another suite's manager lost its
		// cgroup to this sweep before the manager could enter it).
		if lastLab(alive) {
			for _, d := range cgroupDirs() {
				if !contains(cgroups, d) {
					RemoveCgroupTree(d)
				}
			}
			matches, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", "libpod_parent"))
			for _, m := range matches {
				RemoveCgroupTree(m)
			}
		}
		if alive != nil {
			alive.Close()
		}
		if !hadContainers {
			// podman import writes its blob-info cache there even with a
			// private store.
			os.RemoveAll("/var/lib/containers")
		}
		if err := os.RemoveAll(e.dir); err != nil {
			return fmt.Errorf("remove work dir: %w", err)
		}
		return nil
	})
}
