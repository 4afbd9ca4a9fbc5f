// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podmanlab

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// cgroupDirs lists the top-level directories of the cgroup hierarchies
// that systemd --user or podman might create.
func cgroupDirs() []string {
	var out []string
	for _, h := range []string{"systemd", "unified"} {
		entries, _ := os.ReadDir(filepath.Join("/sys/fs/cgroup", h))
		for _, en := range entries {
			if en.IsDir() {
				out = append(out, filepath.Join("/sys/fs/cgroup", h, en.Name()))
			}
		}
	}
	return out
}

// RemoveCgroupTree removes the empty cgroup directories under root (root
// included), depth first; a cgroup still in use stays.
func RemoveCgroupTree(root string) {
	var dirs []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		syscall.Rmdir(dirs[i])
	}
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }

// labLock is the file every lab of the machine holds a shared lock on
// while it lives, in any test process.
const labLock = "/var/tmp/clearance-podmanlab.lock"

// holdLabLock takes a shared lock on labLock; nil if it cannot.
func holdLabLock() *os.File { return holdShared(labLock) }

// holdShared takes a shared lock on the file at path, created when
// missing; nil if it cannot.
func holdShared(path string) *os.File {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		f.Close()
		return nil
	}
	return f
}

// lastLab reports whether no other lab holds labLock: its shared lock
// is converted to an exclusive one, without waiting. Without a lock
// (nil) it reports true, as before there was one.
func lastLab(f *os.File) bool {
	if f == nil {
		return true
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}
