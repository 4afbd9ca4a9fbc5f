// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podmanlab

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// A lab sweeps cgroups only when it is the last one alive.
func TestLastLab(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	a, b := holdShared(path), holdShared(path)
	if a == nil || b == nil {
		t.Fatal("no shared lock")
	}
	if lastLab(a) {
		t.Error("a lab saw itself last while another was alive")
	}
	b.Close()
	if !lastLab(a) {
		t.Error("the last lab alive did not see itself last")
	}
	a.Close()
	if !lastLab(nil) {
		t.Error("without a lock, sweep as before")
	}
}

// RemoveCgroupTree removes empty directories depth first and leaves the
// rest (here: a directory with a file, standing in for a cgroup in use).
func TestRemoveCgroupTree(t *testing.T) {
	root := filepath.Join(t.TempDir(), "cg")
	for _, d := range []string{"a/b", "c"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "c", "busy"), nil, 0o600)
	RemoveCgroupTree(root)
	if _, err := os.Stat(filepath.Join(root, "a")); !os.IsNotExist(err) {
		t.Errorf("empty subtree left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "c", "busy")); err != nil {
		t.Errorf("a directory in use was removed: %v", err)
	}
}
