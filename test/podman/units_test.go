// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podman

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
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

// TestUserUnitsSandbox (issue 9, item 12) runs the [Service] sections of
// the user units, unchanged but for ExecStart (a shell reporting its own
// credentials), under the throwaway user's unprivileged systemd --user,
// and checks that every hardening line the units carry is one such a
// manager really applies: the unit starts, runs with no_new_privs and a
// seccomp filter, and the notifier in a user namespace of its own with an
// empty capability bounding set. (Options a user manager cannot apply
// either fail the unit or are silently ignored; the units leave them out
// and say why.)
func TestUserUnitsSandbox(t *testing.T) {
	e := newEnvFor(t, true)
	unitDir := e.Path("home", ".config", "systemd", "user")
	for _, tc := range []struct {
		unit string
		want []string
	}{
		{"clearance-hub@.service", []string{"NoNewPrivs:\t1", "Seccomp:\t2"}},
		{"clearance-notifier.service", []string{"NoNewPrivs:\t1", "Seccomp:\t2", "CapBnd:\t0000000000000000",
			"uid_map " + strconv.Itoa(e.UID()) + " " + strconv.Itoa(e.UID()) + " 1"}},
		{"clearance-relay.service", []string{"NoNewPrivs:\t1", "Seccomp:\t2", "CapBnd:\t0000000000000000",
			"uid_map " + strconv.Itoa(e.UID()) + " " + strconv.Itoa(e.UID()) + " 1"}},
	} {
		t.Run(tc.unit, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("..", "..", "units", "user", tc.unit))
			if err != nil {
				t.Fatal(err)
			}
			out := e.Path("logs", "probe-"+tc.unit+".out")
			name := "probe-" + strings.TrimSuffix(strings.ReplaceAll(tc.unit, "@", ""), ".service") + ".service"
			var lines []string
			inService := false
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "[") {
					inService = l == "[Service]"
					if !inService {
						continue
					}
				}
				if !inService {
					continue
				}
				switch {
				case strings.HasPrefix(l, "ExecStart="):
					l = `ExecStart=/bin/sh -c 'grep -E "^(CapBnd|NoNewPrivs|Seccomp):" /proc/self/status; echo uid_map $(head -1 /proc/self/uid_map)'`
				case strings.HasPrefix(l, "Type="):
					l = "Type=oneshot"
				case strings.HasPrefix(l, "Sockets="), strings.HasPrefix(l, "Restart"), strings.HasPrefix(l, "Watchdog"),
					strings.HasPrefix(l, "NotifyAccess="), strings.HasPrefix(l, "StandardOutput="):
					continue
				}
				lines = append(lines, l)
			}
			lines = append(lines, "StandardOutput=truncate:"+out)
			if err := os.WriteFile(filepath.Join(unitDir, name), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := e.Owner().ChownTree(unitDir); err != nil {
				t.Fatal(err)
			}
			e.OwnerCmd(nil, "systemctl", "--user", "daemon-reload").Run()
			if b, err := e.OwnerCmd(nil, "systemctl", "--user", "start", name).CombinedOutput(); err != nil {
				t.Fatalf("the hardened [Service] section does not start under the user's manager: %v\n%s\nresult: %s", err, b,
					e.Systemctl("show", "-p", "Result", "-p", "ExecMainStatus", name))
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			norm := strings.Join(strings.Fields(strings.ReplaceAll(string(got), "\t", " \t")), " ")
			for _, w := range tc.want {
				if !strings.Contains(string(got), w) && !strings.Contains(norm, strings.Join(strings.Fields(w), " ")) {
					t.Errorf("%s: the sandbox lacks %q:\n%s", tc.unit, w, got)
				}
			}
		})
	}
}
