// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestCatalogCompiles builds a catalog database from the file in a
// temporary root, as "journalctl --update-catalog" does on install, and
// lists it back.
func TestCatalogCompiles(t *testing.T) {
	testutil.RequireTool(t, "journalctl")
	root := t.TempDir()
	dir := filepath.Join(root, "usr", "lib", "systemd", "catalog")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(repoRoot, "packaging", "clearance.catalog"), filepath.Join(dir, "clearance.catalog"), 0o644)
	if out, err := exec.Command("journalctl", "--root="+root, "--update-catalog").CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("journalctl --update-catalog: %v\n%s", err, out)
	}
	out, err := exec.Command("journalctl", "--root="+root, "--list-catalog").CombinedOutput()
	if err != nil {
		t.Fatalf("journalctl --list-catalog: %v\n%s", err, out)
	}
	for _, k := range audit.Kinds {
		if !strings.Contains(string(out), k.ID+" clearance: ") {
			t.Errorf("compiled catalog lacks %s (%s):\n%s", k.ID, k.Name, out)
		}
	}
}
