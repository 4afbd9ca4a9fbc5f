// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package packaging

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/config"
)

// TestDefaultConfig checks packaging/clearance.yaml, installed as
// /etc/clearance/clearance.yaml: as shipped (every key commented out) it
// decodes to the defaults, and with every key uncommented it still does,
// so the values it shows are the real defaults and every key exists.
func TestDefaultConfig(t *testing.T) {
	path := filepath.Join(repoRoot, "packaging", "clearance.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	head, body, ok := strings.Cut(string(b), "\n#hub:\n")
	if !ok {
		t.Fatal(`no "#hub:" section line`)
	}
	for _, l := range strings.Split(head+"\n#hub:\n"+body, "\n") {
		if s := strings.TrimSpace(l); s != "" && !strings.HasPrefix(s, "#") {
			t.Errorf("line %q is not commented out", l)
		}
	}
	var unc []string
	for _, l := range strings.Split("#hub:\n"+body, "\n") {
		unc = append(unc, strings.TrimPrefix(l, "#"))
	}
	uncommented := filepath.Join(t.TempDir(), "clearance.yaml")
	if err := os.WriteFile(uncommented, []byte(strings.Join(unc, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]string{"as shipped": path, "uncommented": uncommented} {
		t.Run(name, func(t *testing.T) {
			got, err := config.Load(p)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(config.Default(), got); d != "" {
				t.Errorf("%s decodes to other values than the defaults (-want +got):\n%s", name, d)
			}
		})
	}
}
