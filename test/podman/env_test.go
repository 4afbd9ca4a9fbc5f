// Package podman holds clearance's end-to-end tests with real containers:
// podman with runc, the project's OCI hook from its hooks.d file, a real
// `systemd --user` manager that socket-activates the hub from the
// project's units, and the verdict service, all inside one private mount
// namespace (tmpfs /run and /tmp) so nothing touches the machine's own
// /run. TestRootful runs podman and the manager as root; TestRootless
// runs them as a throwaway user (subordinate ids, its manager in a
// delegated cgroup) with the verdict service as root. The container
// reaches only a test host on a veth the test wires. See
// reference/test-machine.md §6–§10 for the recipe and its traps.
//
// The tests need root and podman, runc, conmon, busybox-static, nft,
// unshare/nsenter and systemd, and for the rootless test useradd/userdel
// (passwd) and newuidmap/newgidmap (uidmap); with CI=true a missing one
// fails.
package podman

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/lab"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testutil"
)

// binDir holds the binaries built by TestMain. It lives under /var/tmp:
// inside the private mount namespace /tmp is a fresh tmpfs.
var binDir string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			return m.Run() // every test skips (or fails under CI) itself
		}
		dir, err := os.MkdirTemp("/var/tmp", "clearance-podman-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755)
		for _, c := range []string{"clearance-hub", "clearance-verdict", "clearance-oci-hook"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, c), "../../cmd/"+c)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", c, err, out)
				return 1
			}
		}
		binDir = dir
		return m.Run()
	}()
	os.Exit(code)
}

// The test host's and the container's ends of the veth.
var (
	hostAddr = netip.MustParseAddr("10.254.77.1")
	ctrAddr  = netip.MustParseAddr("10.254.77.2")
)

const (
	echoPort = 8080
	image    = "localhost/clearance-e2e-busybox:latest"
	gateAnn  = "io.clearance.enable=true"
)

// env is one private world: a holder process keeps a private mount
// namespace (tmpfs /run and /tmp) in which the owner's systemd --user and
// podman (root's, or a throwaway user's for rootless), and the verdict
// service (always root) run. Everything is removed by t.Cleanup, by pid
// and by name.
type env struct {
	t       testing.TB
	dir     string // work dir on /var/tmp, same path inside and outside
	holder  int    // pid of the process holding the mount namespace
	logs    string
	lab     *lab.Lab
	cgroups []string // cgroup dirs that existed before (never removed)
	// owner is the throwaway user running rootless podman and its own
	// systemd --user (rootless_test.go); nil: root runs everything.
	owner *sysUser
}

// newEnv builds the world for rootful podman. Failures are fatal.
func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvFor(t, false)
}

// newEnvFor builds the world; rootless adds a throwaway user who runs
// podman and owns the user manager.
func newEnvFor(t testing.TB, rootless bool) *env {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "podman", "runc", "conmon", "unshare", "nsenter", "ip", "nft", "systemctl", "busybox")
	if _, err := os.Stat("/usr/lib/systemd/systemd"); err != nil {
		testutil.Unavailable(t, "systemd (for systemd --user): %v", err)
	}
	if binDir == "" {
		t.Fatal("binaries not built")
	}
	dir, err := os.MkdirTemp("/var/tmp", "clearance-podman-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	e := &env{t: t, dir: dir, logs: filepath.Join(dir, "logs"), lab: lab.New(), cgroups: cgroupDirs()}
	t.Cleanup(func() { e.close(t) })
	for _, d := range []string{"logs", "store/root", "store/run", "store/tmp", "store/net", "hooks.d", "policy",
		"home/.config/systemd/user/clearance-hub@.service.d", "home/.config/containers"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if rootless {
		e.owner = newSysUser(t, e.path("home"))
	}
	e.writeConfig()
	if e.owner != nil {
		e.owner.chownTree(t, e.path("home"), e.path("logs"))
	}
	e.startHolder()
	e.startUserManager()
	e.startVerdict()
	e.teardownContainers()
	e.importImage()
	return e
}

func (e *env) path(p ...string) string { return filepath.Join(append([]string{e.dir}, p...)...) }

// uid is the host uid owning the containers: root's, or the throwaway
// user's for rootless podman.
func (e *env) uid() int {
	if e.owner != nil {
		return e.owner.uid
	}
	return 0
}

// runtimeDir is the owner's XDG_RUNTIME_DIR in the namespace.
func (e *env) runtimeDir() string { return "/run/user/" + strconv.Itoa(e.uid()) }

// inNS returns the path p of the private mount namespace, as reachable
// from the test process.
func (e *env) inNS(p string) string {
	return filepath.Join("/proc", strconv.Itoa(e.holder), "root", p)
}

func (e *env) writeConfig() {
	t := e.t
	hn, err := exec.Command("sh", "-c", "ulimit -Hn").Output()
	if err != nil {
		t.Fatal(err)
	}
	nofile := strings.TrimSpace(string(hn))
	files := map[string]string{
		"containers.conf": fmt.Sprintf(`[containers]
default_ulimits = ["nofile=%[2]s:%[2]s", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "%[1]s/store/events.log"
tmp_dir = "%[1]s/store/tmp"
hooks_dir = ["%[1]s/hooks.d"]
[network]
network_config_dir = "%[1]s/store/net"
`, e.dir, nofile),
		"clearance.yaml": fmt.Sprintf(`ruleset:
  resolvers: [%q]
  policy_dir: %s
`, hostAddr.String(), e.path("policy")),
		// The project's units, verbatim, plus a drop-in that runs the
		// built hub with the test's configuration.
		"home/.config/systemd/user/clearance-hub@.service.d/e2e.conf": fmt.Sprintf(`[Service]
ExecStart=
ExecStart=%s -config %s %%I
StandardOutput=append:%s
StandardError=inherit
`, filepath.Join(binDir, "clearance-hub"), e.path("clearance.yaml"), e.path("logs", "hub.log")),
	}
	for _, u := range []string{"clearance-hub@.socket", "clearance-hub-ingest@.socket", "clearance-hub@.service"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "units", "user", u))
		if err != nil {
			t.Fatal(err)
		}
		files["home/.config/systemd/user/"+u] = string(b)
	}
	// The project's hooks.d file, verbatim but for the binary's path.
	hook, err := os.ReadFile(filepath.Join("..", "..", "packaging", "oci", "clearance.json"))
	if err != nil {
		t.Fatal(err)
	}
	files["hooks.d/clearance.json"] = strings.Replace(string(hook), "/usr/bin/clearance-oci-hook",
		filepath.Join(binDir, "clearance-oci-hook"), 1)
	if e.owner != nil {
		// Rootless podman reads its configuration from the owner's home;
		// it must exist before the first podman call (test-machine §10).
		files["home/.config/containers/containers.conf"] = fmt.Sprintf(`[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
hooks_dir = ["%s"]
`, e.path("hooks.d"))
		files["home/.config/containers/storage.conf"] = fmt.Sprintf(`[storage]
driver = "overlay"
graphroot = "%s"
runroot = "%s/containers"
`, e.path("home", ".local", "share", "containers", "storage"), e.runtimeDir())
	}
	for name, content := range files {
		if err := os.WriteFile(e.path(name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.buildRootfs()
}

func (e *env) buildRootfs() {
	t := e.t
	r := e.path("rootfs")
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "run", "root"} {
		os.MkdirAll(filepath.Join(r, d), 0o755)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", bb, filepath.Join(r, "bin", "busybox")).CombinedOutput(); err != nil {
		t.Fatalf("copy busybox: %v: %s", err, out)
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" {
			os.Symlink("/bin/busybox", filepath.Join(r, "bin", a))
		}
	}
	os.WriteFile(filepath.Join(r, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(r, "etc", "group"), []byte("root:x:0:\n"), 0o644)
	if out, err := exec.Command("tar", "-C", r, "-cf", e.path("rootfs.tar"), ".").CombinedOutput(); err != nil {
		t.Fatalf("tar rootfs: %v: %s", err, out)
	}
}

// startHolder starts the process that holds the private mount namespace.
func (e *env) startHolder() {
	t := e.t
	// Rootless podman wants / shared (else it warns on every call); the
	// namespace is private, so the new peer groups have no peers outside.
	shared := ""
	if e.owner != nil {
		shared = "mount --make-rshared /"
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "--", "sh", "-c",
		`set -e; mount -n -t tmpfs -o mode=0755 tmpfs /run; mount -n -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /run/systemd/system "$1"; chown "$2:$3" "$1"; chmod 700 "$1"
`+shared+`
echo ready; exec sleep infinity`, "sh", e.runtimeDir(), strconv.Itoa(e.uid()), strconv.Itoa(e.gid()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logFile(t, e.path("logs", "holder.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.holder = cmd.Process.Pid
	e.onClose(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("mount namespace holder: %q %v (log: %s)", line, err, tail(e.path("logs", "holder.log")))
	}
}

// nsCmd runs argv inside the private mount namespace with a clean
// environment plus extra.
func (e *env) nsCmd(extra []string, argv ...string) *exec.Cmd {
	args := append([]string{"-m", "-t", strconv.Itoa(e.holder), "--", "env", "-i",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + e.path("home")}, extra...)
	return exec.Command("nsenter", append(args, argv...)...)
}

// gid is the owner's primary gid.
func (e *env) gid() int {
	if e.owner != nil {
		return e.owner.gid
	}
	return 0
}

// ownerCmd runs argv inside the private mount namespace as the owner
// (root, or the throwaway user with its groups dropped), in the owner's
// session: a clean environment with HOME and XDG_RUNTIME_DIR, plus extra.
func (e *env) ownerCmd(extra []string, argv ...string) *exec.Cmd {
	env := append([]string{"XDG_RUNTIME_DIR=" + e.runtimeDir()}, extra...)
	if e.owner == nil {
		return e.nsCmd(env, argv...)
	}
	args := append([]string{"-m", "-t", strconv.Itoa(e.holder),
		"-S", strconv.Itoa(e.owner.uid), "-G", strconv.Itoa(e.owner.gid), "--", "env", "-i",
		"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + e.path("home"),
		"USER=" + e.owner.name, "LOGNAME=" + e.owner.name}, env...)
	return exec.Command("nsenter", append(args, argv...)...)
}

func (e *env) startUserManager() {
	t := e.t
	// The manager gets cgroups of its own in the named (systemd) and
	// unified hierarchies, as a delegated subtree: it never touches the
	// machine's root cgroup or another test's manager. A non-root manager needs the subtree delegated to it (test-machine
	// §10): the directories and their cgroup.procs (and, in the unified
	// hierarchy, cgroup.subtree_control and cgroup.threads) owned by it.
	name := "clearance-e2e-" + filepath.Base(e.dir)
	var procs []string
	for _, h := range []string{"systemd", "unified"} {
		d := filepath.Join("/sys/fs/cgroup", h, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("cgroup for the user manager: %v", err)
		}
		e.onClose(func() { removeCgroupTree(d) }) // after the manager stopped
		if e.owner != nil {
			delegated := []string{d, filepath.Join(d, "cgroup.procs")}
			if h == "unified" {
				delegated = append(delegated, filepath.Join(d, "cgroup.subtree_control"), filepath.Join(d, "cgroup.threads"))
			}
			for _, p := range delegated {
				if err := os.Chown(p, e.owner.uid, e.owner.gid); err != nil {
					t.Fatalf("delegate cgroup: %v", err)
				}
			}
		}
		procs = append(procs, filepath.Join(d, "cgroup.procs"))
	}
	if e.owner != nil {
		// Whatever the manager left (its services, if it died first) is
		// the owner's: killed by pid before the cgroups are removed.
		e.onClose(func() { e.owner.killProcesses(e.t) })
	}
	inner := e.ownerCmd(nil, "/usr/lib/systemd/systemd", "--user")
	cmd := exec.Command("sh", append([]string{"-c", `echo $$ > "$1"; echo $$ > "$2"; shift 2; exec "$@"`, "sh"},
		append(procs, inner.Args...)...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	f := logFile(t, e.path("logs", "systemd.log"))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// sh execs nsenter, which execs env, which execs systemd (nsenter
	// -S/-G switch ids without forking): the pid is the manager's.
	e.onClose(func() { stopProcess(cmd, 15*time.Second) })
	ctx, cancel := context.WithTimeout(testutil.Context(t), 30*time.Second)
	defer cancel()
	for {
		out, _ := e.ownerCmd(nil, "systemctl", "--user", "is-system-running").Output()
		s := strings.TrimSpace(string(out))
		if s == "running" || s == "degraded" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("systemd --user not running (%q; log: %s)", s, tail(e.path("logs", "systemd.log")))
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The project's units must pass verify as installed (with the drop-in).
	if out, err := e.ownerCmd(nil, "systemd-analyze", "--user", "verify",
		"clearance-hub@0123456789ab.socket", "clearance-hub-ingest@0123456789ab.socket",
		"clearance-hub@0123456789ab.service").CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze --user verify: %v: %s", err, out)
	}
}

func (e *env) startVerdict() {
	t := e.t
	cmd := e.nsCmd(nil, filepath.Join(binDir, "clearance-verdict"), "-config", e.path("clearance.yaml"),
		"-socket", "/run/clearance/verdict.sock", "-runtime-root", "/run", "-policy-dir", e.path("policy"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	f := logFile(t, e.path("logs", "verdict.log"))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.onClose(func() { stopProcess(cmd, 5*time.Second) })
	ctx, cancel := context.WithTimeout(testutil.Context(t), 15*time.Second)
	defer cancel()
	if err := lab.WaitSocket(ctx, e.inNS("/run/clearance/verdict.sock")); err != nil {
		t.Fatalf("verdict service: %v (log: %s)", err, tail(e.path("logs", "verdict.log")))
	}
}

// podman runs podman in the namespace with the private configuration
// and store.
func (e *env) podman(args ...string) (string, error) {
	cmd := e.podmanCmd(args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (e *env) podmanCmd(args ...string) *exec.Cmd {
	if e.owner != nil {
		// Rootless: the owner's ~/.config/containers decides everything.
		return e.ownerCmd(nil, append([]string{"podman"}, args...)...)
	}
	argv := append([]string{"podman", "--root", e.path("store", "root"), "--runroot", e.path("store", "run")}, args...)
	return e.nsCmd([]string{"CONTAINERS_CONF=" + e.path("containers.conf")}, argv...)
}

func (e *env) mustPodman(args ...string) string {
	e.t.Helper()
	out, err := e.podman(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func (e *env) importImage() {
	e.mustPodman("import", "-q", e.path("rootfs.tar"), image)
}

// systemctl runs systemctl --user in the owner's session in the namespace.
func (e *env) systemctl(args ...string) string {
	out, _ := e.ownerCmd(nil, append([]string{"systemctl", "--user"}, args...)...).Output()
	return strings.TrimSpace(string(out))
}

// recordPath is where the hook writes the owner's record for id12.
func (e *env) recordPath(id12 string) string {
	return e.inNS(record.Locate("/run", e.uid(), id12))
}

// hubSock is the hub's socket for id12 in the owner's session.
func (e *env) hubSock(id12 string) string {
	return e.inNS(filepath.Join(e.runtimeDir(), "clearance", id12, "hub.sock"))
}

func (e *env) onClose(f func()) { e.t.Cleanup(f) }

// close removes what the processes stopped by their own cleanups leave
// behind: containers, the image, stores, cgroup directories, the work dir.
// (t.Cleanup runs newest first: this runs after the processes are gone.)
func (e *env) close(t testing.TB) {
	if t.Failed() {
		for _, n := range []string{"systemd", "verdict", "hub", "holder"} {
			t.Logf("%s log:\n%s", n, tail(e.path("logs", n+".log")))
		}
	}
	e.lab.Close()
	// podman state lives under the work dir and the namespace's tmpfs
	// /run, which went away with the holder.
	for _, d := range cgroupDirs() {
		if !contains(e.cgroups, d) {
			removeCgroupTree(d)
		}
	}
	for _, h := range []string{"/sys/fs/cgroup"} {
		matches, _ := filepath.Glob(filepath.Join(h, "*", "libpod_parent"))
		for _, m := range matches {
			removeCgroupTree(m)
		}
	}
	if err := os.RemoveAll(e.dir); err != nil {
		t.Logf("remove work dir: %v", err)
	}
}

// teardownContainers removes every container and the image while the
// namespace, the user manager and the verdict service still exist (it is
// registered after them, so it runs before their cleanups).
func (e *env) teardownContainers() {
	e.t.Cleanup(func() {
		e.podman("rm", "-af", "-t", "0")
		e.podman("rmi", "-af")
		if e.owner != nil {
			// The owner's storage (overlay layers owned by its subordinate
			// ids) and the pause process holding podman's user namespace.
			// Both go; the sweep after the user manager stopped kills
			// what is left of the owner's processes by pid.
			if out, err := e.podman("system", "reset", "-f"); err != nil {
				e.t.Logf("podman system reset: %v: %s", err, out)
			}
		}
	})
}

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

// removeCgroupTree removes empty cgroup directories depth first.
func removeCgroupTree(root string) {
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

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// stopProcess sends SIGTERM to cmd and SIGKILL after grace.
func stopProcess(cmd *exec.Cmd, grace time.Duration) {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
}

func logFile(t testing.TB, path string) *os.File {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return strings.TrimSpace(string(b))
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		ok, s := cond()
		if ok {
			return nil
		}
		last = s
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %s)", what, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var errNotYet = errors.New("not yet")
