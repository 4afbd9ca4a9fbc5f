package podman

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/terok-ai/clearance/internal/testutil"
)

// TestUserUnitsVerify runs systemd-analyze verify on the user units, as
// templates and as an instance, with a drop-in pointing ExecStart at a
// binary that exists (verify checks it; /usr/bin/clearance-hub is only
// there once installed). Needs no root and no running manager.
func TestUserUnitsVerify(t *testing.T) {
	testutil.RequireTool(t, "systemd-analyze")
	dir := t.TempDir()
	units := []string{"clearance-hub@.socket", "clearance-hub-ingest@.socket", "clearance-hub@.service"}
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("..", "..", "units", "user", u))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, u), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "clearance-hub@.service.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "clearance-hub@.service.d", "exec.conf"),
		[]byte("[Service]\nExecStart=\nExecStart="+self+" %I\n"), 0o644)

	for _, args := range [][]string{
		{filepath.Join(dir, units[0]), filepath.Join(dir, units[1]), filepath.Join(dir, units[2])},
		{"clearance-hub@0123456789ab.socket", "clearance-hub-ingest@0123456789ab.socket", "clearance-hub@0123456789ab.service"},
	} {
		cmd := testutil.SystemdAnalyze(append([]string{"--user", "verify"}, args...)...)
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+dir, "SYSTEMD_UNIT_PATH="+dir+":")
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze --user verify %v: %v\n%s", args, err, out)
		}
	}
}
