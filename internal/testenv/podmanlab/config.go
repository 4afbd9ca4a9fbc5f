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

// defaultCapabilities is the capability set of the distribution's
// containers.conf (Debian 12's /usr/share/containers/containers.conf).
// The private configuration replaces that file, and podman's compiled-in
// set adds CAP_NET_RAW (and CAP_MKNOD, CAP_AUDIT_WRITE), which the OCI
// hook refuses: a process holding it can send below the firewall.
const defaultCapabilities = `default_capabilities = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
  "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]`

func (e *Env) writeConfig() error {
	hn, err := exec.Command("sh", "-c", "ulimit -Hn").Output()
	if err != nil {
		return fmt.Errorf("read nofile limit: %w", err)
	}
	nofile := strings.TrimSpace(string(hn))
	files := map[string]string{
		"containers.conf": fmt.Sprintf(`[containers]
default_ulimits = ["nofile=%[2]s:%[2]s", "nproc=32768:32768"]
%[3]s
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "%[1]s/store/events.log"
tmp_dir = "%[1]s/store/tmp"
hooks_dir = ["%[1]s/hooks.d"]
[network]
network_config_dir = "%[1]s/store/net"
`, e.dir, nofile, defaultCapabilities),
		// No ruleset.resolvers: the container's forwarder asks the
		// nameservers of the resolv.conf podman wrote for it (--dns), as
		// the hook captured them, as on a default installation.
		// observe.projects: containers annotated with this project (and
		// io.clearance.mode=observe) may run in observe mode; no other.
		"clearance.yaml": fmt.Sprintf(`ruleset:
  policy_dir: %s
observe:
  projects: [%s]
`, e.Path("policy"), ObserveProject),
		// The project's units, verbatim, plus a drop-in that runs the
		// built hub with the Env's configuration. Its output goes to the
		// namespace's journald, as in production: the audit trail is
		// read back with journalctl ([Env.Journal], [Env.Tail]("hub")).
		"home/.config/systemd/user/clearance-hub@.service.d/e2e.conf": fmt.Sprintf(`[Service]
ExecStart=
ExecStart=%s -config %s %%I
`, filepath.Join(e.bin, "clearance-hub"), e.Path("clearance.yaml")),
	}
	for _, u := range []string{"clearance-hub@.socket", "clearance-hub-ingest@.socket", "clearance-hub@.service"} {
		b, err := os.ReadFile(filepath.Join(e.source, "units", "user", u))
		if err != nil {
			return err
		}
		files["home/.config/systemd/user/"+u] = string(b)
	}
	// The project's hooks.d file, verbatim but for the binary's path.
	hook, err := os.ReadFile(filepath.Join(e.source, "packaging", "oci", "clearance.json"))
	if err != nil {
		return err
	}
	files["hooks.d/clearance.json"] = strings.Replace(string(hook), "/usr/bin/clearance-oci-hook",
		filepath.Join(e.bin, "clearance-oci-hook"), 1)
	if e.owner != nil {
		// Rootless podman reads its configuration from the owner's home;
		// it must exist before the first podman call (docs/test-machine.md §M10.2).
		files["home/.config/containers/containers.conf"] = fmt.Sprintf(`[containers]
%s
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
hooks_dir = ["%s"]
`, defaultCapabilities, e.Path("hooks.d"))
		files["home/.config/containers/storage.conf"] = fmt.Sprintf(`[storage]
driver = "overlay"
graphroot = "%s"
runroot = "%s/containers"
`, e.Path("home", ".local", "share", "containers", "storage"), e.RuntimeDir())
	}
	for name, content := range files {
		if err := os.WriteFile(e.Path(name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return e.buildRootfs()
}

func (e *Env) buildRootfs() error {
	r := e.Path("rootfs")
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "run", "root"} {
		os.MkdirAll(filepath.Join(r, d), 0o755)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return err
	}
	if out, err := exec.Command("cp", bb, filepath.Join(r, "bin", "busybox")).CombinedOutput(); err != nil {
		return fmt.Errorf("copy busybox: %w: %s", err, out)
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("list busybox applets: %w", err)
	}
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" {
			os.Symlink("/bin/busybox", filepath.Join(r, "bin", a))
		}
	}
	os.WriteFile(filepath.Join(r, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(r, "etc", "group"), []byte("root:x:0:\n"), 0o644)
	if out, err := exec.Command("tar", "-C", r, "-cf", e.Path("rootfs.tar"), ".").CombinedOutput(); err != nil {
		return fmt.Errorf("tar rootfs: %w: %s", err, out)
	}
	return nil
}
