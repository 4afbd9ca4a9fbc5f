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
