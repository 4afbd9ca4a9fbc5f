// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package podmanlab builds a private world in which real podman
// containers run with clearance's OCI hook, for the end-to-end tests
// (test/podman) and for `make demo`: a holder process keeps a private
// mount namespace (tmpfs /run and /tmp) in which a real `systemd --user`
// (in a delegated cgroup of its own) socket-activates the hub from the
// project's user units, the verdict service runs as root, and podman
// (runc, a private store and containers.conf, the project's hooks.d file)
// runs as root or, with [Options.Rootless], as a throwaway user. The image
// is busybox from Debian's busybox-static (no registry). A container
// reaches only a test host on a veth wired by [Container.Wire].
//
// Everything an [Env] creates is removed by [Env.Close], by pid and by
// name: containers and the image, the services, every process left in
// the namespace, the namespace itself, cgroup directories, the throwaway
// user, the podman state podman leaves outside the namespace, and the work
// directory. See docs/test-machine.md §M6–§M10 for the recipe.
//
// Needs root and podman, runc, conmon, busybox (busybox-static),
// unshare/nsenter, ip, nft and systemd; rootless also useradd, userdel,
// usermod (passwd) and newuidmap/newgidmap (uidmap).
package podmanlab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/terok-ai/clearance/internal/lab"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testutil"
)

// The test host's and the container's ends of the veth [Container.Wire]
// creates (a private /30, no default route).
var (
	HostAddr      = netip.MustParseAddr("10.254.77.1")
	ContainerAddr = netip.MustParseAddr("10.254.77.2")
)

const (
	// EchoPort is the test host's TCP port; it answers "hello".
	EchoPort = 8080
	// Image is the busybox image [New] imports.
	Image = "localhost/clearance-e2e-busybox:latest"
	// ObserveProject is the one dossier.project the Env's configuration
	// lets run in observe mode.
	ObserveProject = "observe-e2e"
	// GateAnnotation enables the project's hook for a container.
	GateAnnotation = "io.clearance.enable=true"
)

// Tools lists the programs [New] needs on PATH (rootless adds
// RootlessTools).
var (
	Tools         = []string{"podman", "runc", "conmon", "unshare", "nsenter", "ip", "nft", "systemctl", "busybox"}
	RootlessTools = []string{"useradd", "userdel", "usermod", "newuidmap", "newgidmap"}
)

// systemdBinary is the user manager started in the namespace.
const systemdBinary = "/usr/lib/systemd/systemd"

// Options configures [New]. Only Bin is required.
type Options struct {
	// Bin is the directory holding clearance-hub, clearance-verdict and
	// clearance-oci-hook (and clearance-notifier for
	// [Env.StartNotifier]). It must lie outside /run and /tmp (private in
	// the namespace); for Rootless the throwaway user must be able to
	// execute the binaries.
	Bin string
	// Source is the project's source tree, whose units/user and
	// packaging/oci are installed verbatim (but for the binaries' paths).
	// Default: the current directory.
	Source string
	// Rootless makes a throwaway user run podman and its own
	// systemd --user; the verdict service still runs as root.
	Rootless bool
	// Logger receives what cleanup could not do and other diagnostics.
	// nil discards them.
	Logger *slog.Logger
	// Progress, if set, is called after each phase of [New] with what was
	// done and how long it took (the demo prints these).
	Progress func(took time.Duration, what string)
}

// Env is one private world. Its methods may be called from several
// goroutines; Close must be called exactly when no other method runs.
type Env struct {
	dir     string // work dir on /var/tmp, same path inside and outside
	bin     string
	source  string
	holder  int // pid of the process holding the mount namespace
	mntNS   string
	lab     *lab.Lab
	owner   *User // nil: root runs everything
	log     *slog.Logger
	manager int // pid of systemd --user
	journal *exec.Cmd

	mu       sync.Mutex
	inits    []procID // containers' init processes, killed by Close if podman left them
	cleanups []func() error
	closed   bool
}

// New builds the world: work directory, configuration, the throwaway
// user (Rootless), the namespace holder, the user manager (whose units
// must pass systemd-analyze verify), the verdict service and the image.
// On error everything created so far is removed. ctx bounds the waits.
func New(ctx context.Context, o Options) (e *Env, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("podmanlab: needs root")
	}
	tools := Tools
	if o.Rootless {
		tools = append(append([]string{}, tools...), RootlessTools...)
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return nil, fmt.Errorf("find %s: %w", t, err)
		}
	}
	if _, err := os.Stat(systemdBinary); err != nil {
		return nil, fmt.Errorf("find systemd (for systemd --user): %w", err)
	}
	if o.Source == "" {
		o.Source = "."
	}
	bin, err := filepath.Abs(o.Bin)
	if err != nil {
		return nil, err
	}
	source, err := filepath.Abs(o.Source)
	if err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	progress := o.Progress
	if progress == nil {
		progress = func(time.Duration, string) {}
	}
	dir, err := os.MkdirTemp("/var/tmp", "clearance-podman-")
	if err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755)
	e = &Env{dir: dir, bin: bin, source: source, lab: lab.New(), log: log}
	defer func() {
		if err != nil {
			e.Close()
			e = nil
		}
	}()
	e.finalCleanup()
	for _, d := range []string{"logs", "store/root", "store/run", "store/tmp", "store/net", "hooks.d", "policy",
		"home/.config/systemd/user/clearance-hub@.service.d", "home/.config/containers"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return e, err
		}
	}
	t := time.Now()
	if o.Rootless {
		u, err := NewUser(e.Path("home"))
		if err != nil {
			return e, err
		}
		e.owner = u
		e.defer_(u.Remove)
	}
	if err := e.writeConfig(); err != nil {
		return e, err
	}
	if e.owner != nil {
		if err := e.owner.ChownTree(e.Path("home"), e.Path("logs")); err != nil {
			return e, err
		}
	}
	if err := e.startHolder(); err != nil {
		return e, err
	}
	progress(time.Since(t), fmt.Sprintf("private mount namespace (holder pid %d): tmpfs /run and /tmp, work dir %s", e.holder, dir))
	t = time.Now()
	if err := e.startJournald(ctx); err != nil {
		return e, err
	}
	progress(time.Since(t), "systemd-journald in it (journal on the namespace's tmpfs; the user manager's services log to it)")
	t = time.Now()
	if err := e.startUserManager(ctx); err != nil {
		return e, err
	}
	progress(time.Since(t), fmt.Sprintf("systemd --user running in it (pid %d, own delegated cgroup) with the project's units "+
		"clearance-hub@.socket, clearance-hub-ingest@.socket, clearance-hub@.service (systemd-analyze verify: clean)", e.manager))
	t = time.Now()
	if err := e.startVerdict(ctx); err != nil {
		return e, err
	}
	progress(time.Since(t), "clearance-verdict (root) listening on /run/clearance/verdict.sock")
	e.teardownContainers()
	t = time.Now()
	if out, err := e.Podman("import", "-q", e.Path("rootfs.tar"), Image); err != nil {
		return e, fmt.Errorf("import image: %w: %s", err, out)
	}
	progress(time.Since(t), fmt.Sprintf("podman (runc, private store, hooks_dir with the project's hooks.d/clearance.json): imported %s from busybox-static", Image))
	return e, nil
}

// Close removes everything the Env created, newest first, and returns
// what could not be removed. It is idempotent.
func (e *Env) Close() error {
	e.mu.Lock()
	cs := e.cleanups
	e.cleanups, e.closed = nil, true
	e.mu.Unlock()
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		if err := cs[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// defer_ registers a cleanup for Close.
func (e *Env) defer_(f func() error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cleanups = append(e.cleanups, f)
}

// Dir is the work directory (on /var/tmp: the same path inside the
// namespace and out).
func (e *Env) Dir() string { return e.dir }

// Path joins p to the work directory.
func (e *Env) Path(p ...string) string { return filepath.Join(append([]string{e.dir}, p...)...) }

// Holder is the pid of the process holding the mount namespace.
func (e *Env) Holder() int { return e.holder }

// Owner is the throwaway user of a rootless Env, nil otherwise.
func (e *Env) Owner() *User { return e.owner }

// Lab is the lab the Env's test hosts live in (closed by Close).
func (e *Env) Lab() *lab.Lab { return e.lab }

// UID is the host uid owning the containers: root's, or the throwaway
// user's.
func (e *Env) UID() int {
	if e.owner != nil {
		return e.owner.UID
	}
	return 0
}

// GID is the owner's primary gid.
func (e *Env) GID() int {
	if e.owner != nil {
		return e.owner.GID
	}
	return 0
}

// RuntimeDir is the owner's XDG_RUNTIME_DIR in the namespace.
func (e *Env) RuntimeDir() string { return "/run/user/" + strconv.Itoa(e.UID()) }

// InNS returns the path p of the private mount namespace, as reachable
// from outside it.
func (e *Env) InNS(p string) string {
	return filepath.Join("/proc", strconv.Itoa(e.holder), "root", p)
}

// RecordPath is where the hook writes the owner's record for id12, as
// reachable from outside the namespace.
func (e *Env) RecordPath(id12 string) string {
	return e.InNS(record.Locate("/run", e.UID(), id12))
}

// HubSock is the hub's socket for id12 in the owner's session, as
// reachable from outside the namespace.
func (e *Env) HubSock(id12 string) string {
	return e.InNS(filepath.Join(e.RuntimeDir(), "clearance", id12, "hub.sock"))
}

// DialIngest connects to the hub's ingest socket as the owner (the ingest
// accepts only the hub's own uid).
func (e *Env) DialIngest(id12 string) (net.Conn, error) {
	dir := filepath.Dir(e.HubSock(id12))
	if e.owner != nil {
		return e.owner.DialAs(dir, "ingest.sock")
	}
	return net.Dial("unix", filepath.Join(dir, "ingest.sock"))
}

// Tail returns the end of a log in the work dir's logs: "systemd",
// "verdict", "hub", "notifier" or "holder".
func (e *Env) Tail(name string) string {
	if name == "hub" {
		s := e.Log(name)
		if len(s) > 2000 {
			s = s[len(s)-2000:]
		}
		return strings.TrimSpace(s)
	}
	return Tail(e.Path("logs", name+".log"))
}

// Log returns the whole log name (see Tail). The hubs log to the
// namespace's journal: "hub" is their journal, one line per entry with its
// clearance fields.
func (e *Env) Log(name string) string {
	if name == "hub" {
		return e.hubJournal()
	}
	b, _ := os.ReadFile(e.Path("logs", name+".log"))
	return string(b)
}

// hubJournal renders the hubs' journal entries as "MESSAGE K=V …" lines.
func (e *Env) hubJournal() string {
	out, err := e.Journal("SYSLOG_IDENTIFIER=clearance-hub")
	if err != nil {
		return fmt.Sprintf("(journalctl: %v)", err)
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) != nil {
			continue
		}
		msg, _ := r["MESSAGE"].(string)
		b.WriteString(msg)
		keys := make([]string, 0, len(r))
		for k := range r {
			if k == "MESSAGE_ID" || strings.HasPrefix(k, "CLEARANCE_") {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%v", k, r[k])
		}
		b.WriteString("\n")
	}
	return b.String()
}

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

// startHolder starts the process that holds the private mount namespace.
func (e *Env) startHolder() error {
	// Rootless podman wants / shared (else it warns on every call); the
	// namespace is private, so the new peer groups have no peers outside.
	shared := ""
	if e.owner != nil {
		shared = "mount --make-rshared /"
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "--", "sh", "-c",
		`set -e; mount -n -t tmpfs -o mode=0755 tmpfs /run; mount -n -t tmpfs -o mode=1777 tmpfs /tmp
if [ -d /var/log/journal ]; then mount -n -t tmpfs -o mode=0755 tmpfs /var/log/journal; fi
mkdir -p /run/systemd/system "$1"; chown "$2:$3" "$1"; chmod 700 "$1"
`+shared+`
echo ready; exec sleep infinity`, "sh", e.RuntimeDir(), strconv.Itoa(e.UID()), strconv.Itoa(e.GID()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	f, err := e.logFile("holder")
	if err != nil {
		return err
	}
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start mount namespace holder: %w", err)
	}
	e.holder = cmd.Process.Pid
	e.defer_(func() error {
		// Whatever still runs in the namespace (the desktop, a conmon
		// whose container podman could not remove) goes first, by pid,
		// and so does such a container's init (in namespaces of its own).
		e.mu.Lock()
		inits := e.inits
		e.mu.Unlock()
		for _, p := range inits {
			p.kill()
		}
		err := e.sweepNamespace()
		cmd.Process.Kill()
		cmd.Wait()
		return err
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		return fmt.Errorf("mount namespace holder: %q %v (log: %s)", line, err, e.Tail("holder"))
	}
	e.mntNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", e.holder))
	return err
}

// sweepNamespace kills, by pid, every process but the holder that is in
// the private mount namespace, and waits until they are gone.
func (e *Env) sweepNamespace() error {
	if e.mntNS == "" {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []int
		entries, _ := os.ReadDir("/proc")
		for _, en := range entries {
			pid, err := strconv.Atoi(en.Name())
			if err != nil || pid == e.holder || pid == os.Getpid() {
				continue
			}
			if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && ns == e.mntNS {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes left in the mount namespace: %v", left)
		}
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// NSCmd returns a command running argv inside the private mount
// namespace as root, with a clean environment (PATH, HOME) plus extra. It
// runs in a process group of its own (a Ctrl-C at the terminal reaches
// only the caller, which then cleans up).
func (e *Env) NSCmd(extra []string, argv ...string) *exec.Cmd {
	args := append([]string{"-m", "-t", strconv.Itoa(e.holder), "--", "env", "-i",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + e.Path("home")}, extra...)
	cmd := exec.Command("nsenter", append(args, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// OwnerCmd returns a command running argv inside the private mount
// namespace as the owner (root, or the throwaway user with its groups
// dropped), in the owner's session: a clean environment with HOME and
// XDG_RUNTIME_DIR, plus extra.
func (e *Env) OwnerCmd(extra []string, argv ...string) *exec.Cmd {
	env := append([]string{"XDG_RUNTIME_DIR=" + e.RuntimeDir()}, extra...)
	if e.owner == nil {
		return e.NSCmd(env, argv...)
	}
	args := append([]string{"-m", "-t", strconv.Itoa(e.holder),
		"-S", strconv.Itoa(e.owner.UID), "-G", strconv.Itoa(e.owner.GID), "--", "env", "-i",
		"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + e.Path("home"),
		"USER=" + e.owner.Name, "LOGNAME=" + e.owner.Name}, env...)
	cmd := exec.Command("nsenter", append(args, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// startJournald runs systemd-journald in the namespace, on its tmpfs /run
// (and a tmpfs over /var/log/journal, mounted by the holder), so the
// services' audit records can be queried with [Env.Journal] and nothing
// reaches the machine's own journal.
func (e *Env) startJournald(ctx context.Context) error {
	cmd := e.NSCmd(nil, "/lib/systemd/systemd-journald")
	f, err := e.logFile("journald")
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start systemd-journald: %w", err)
	}
	e.mu.Lock()
	e.journal = cmd
	e.mu.Unlock()
	e.defer_(func() error { StopProcess(cmd, 5*time.Second); return nil })
	return testutil.Poll(ctx, 20*time.Second, "journald socket", func() (bool, string) {
		_, err := os.Stat(e.InNS("/run/systemd/journal/socket"))
		return err == nil, fmt.Sprint(err)
	})
}

// StopJournald stops the namespace's systemd-journald (SIGTERM, as
// "systemctl stop systemd-journald" does): every service's stream to it
// breaks. [Env.StartJournald] starts a new one.
func (e *Env) StopJournald() {
	e.mu.Lock()
	cmd := e.journal
	e.journal = nil
	e.mu.Unlock()
	if cmd != nil {
		StopProcess(cmd, 5*time.Second)
	}
	os.Remove(e.InNS("/run/systemd/journal/socket"))
}

// StartJournald starts systemd-journald again after [Env.StopJournald].
func (e *Env) StartJournald(ctx context.Context) error { return e.startJournald(ctx) }

func (e *Env) Journal(args ...string) (string, error) {
	out, err := e.NSCmd(nil, append([]string{"journalctl", "--no-pager", "-o", "json"}, args...)...).Output()
	return string(out), err
}

func (e *Env) startUserManager(ctx context.Context) error {
	// The manager gets cgroups of its own in the named (systemd) and
	// unified hierarchies, as a delegated subtree: it never touches the
	// machine's root cgroup or another manager. A non-root manager needs
	// the subtree delegated to it (docs/test-machine.md §M10.6): the directories and
	// their cgroup.procs (and, in the unified hierarchy,
	// cgroup.subtree_control and cgroup.threads) owned by it.
	name := "clearance-e2e-" + filepath.Base(e.dir)
	var procs []string
	for _, h := range []string{"systemd", "unified"} {
		d := filepath.Join("/sys/fs/cgroup", h, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("cgroup for the user manager: %w", err)
		}
		e.defer_(func() error { RemoveCgroupTree(d); return nil }) // after the manager stopped
		if e.owner != nil {
			delegated := []string{d, filepath.Join(d, "cgroup.procs")}
			if h == "unified" {
				delegated = append(delegated, filepath.Join(d, "cgroup.subtree_control"), filepath.Join(d, "cgroup.threads"))
			}
			for _, p := range delegated {
				if err := os.Chown(p, e.owner.UID, e.owner.GID); err != nil {
					return fmt.Errorf("delegate cgroup: %w", err)
				}
			}
		}
		procs = append(procs, filepath.Join(d, "cgroup.procs"))
	}
	if e.owner != nil {
		// Whatever the manager left (its services, if it died first) is
		// the owner's: killed by pid before the cgroups are removed.
		e.defer_(e.owner.KillProcesses)
	}
	inner := e.OwnerCmd(nil, systemdBinary, "--user")
	cmd := exec.Command("sh", append([]string{"-c", `echo $$ > "$1"; echo $$ > "$2"; shift 2; exec "$@"`, "sh"},
		append(procs, inner.Args...)...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	f, err := e.logFile("systemd")
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start systemd --user: %w", err)
	}
	// sh execs nsenter, which execs env, which execs systemd (nsenter
	// -S/-G switch ids without forking): the pid is the manager's.
	e.manager = cmd.Process.Pid
	e.defer_(func() error { StopProcess(cmd, 15*time.Second); return nil })
	err = testutil.Poll(ctx, 30*time.Second, "systemd --user running", func() (bool, string) {
		out, _ := e.OwnerCmd(nil, "systemctl", "--user", "is-system-running").Output()
		s := strings.TrimSpace(string(out))
		return s == "running" || s == "degraded", s
	})
	if err != nil {
		return fmt.Errorf("%w (log: %s)", err, e.Tail("systemd"))
	}
	// The project's units must pass verify as installed (with the drop-in).
	if out, err := e.OwnerCmd(nil, "systemd-analyze", "--user", "verify",
		"clearance-hub@0123456789ab.socket", "clearance-hub-ingest@0123456789ab.socket",
		"clearance-hub@0123456789ab.service").CombinedOutput(); err != nil || len(out) > 0 {
		return fmt.Errorf("systemd-analyze --user verify: %v: %s", err, out)
	}
	return nil
}

func (e *Env) startVerdict(ctx context.Context) error {
	// Its records go to the namespace's journal, as under systemd: the
	// tests read the kernel side of every verdict there.
	cmd := e.NSCmd([]string{"CLEARANCE_LOG=journal"}, filepath.Join(e.bin, "clearance-verdict"), "-config", e.Path("clearance.yaml"),
		"-socket", "/run/clearance/verdict.sock", "-runtime-root", "/run", "-policy-dir", e.Path("policy"))
	f, err := e.logFile("verdict")
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start clearance-verdict: %w", err)
	}
	e.defer_(func() error { StopProcess(cmd, 5*time.Second); return nil })
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := lab.WaitSocket(ctx, e.InNS("/run/clearance/verdict.sock")); err != nil {
		return fmt.Errorf("verdict service: %w (log: %s)", err, e.Tail("verdict"))
	}
	return nil
}

// StartNotifier installs the project's clearance-notifier.service (with a
// drop-in running the built binary on the Env's configuration, its output
// in the "notifier" log) in the owner's user manager, passes env (such
// as DBUS_SESSION_BUS_ADDRESS and DISPLAY) to the manager's environment,
// as a graphical session does, and starts it. The unit is Type=notify:
// it returns once the notifier is up.
func (e *Env) StartNotifier(env ...string) error {
	b, err := os.ReadFile(filepath.Join(e.source, "units", "user", "clearance-notifier.service"))
	if err != nil {
		return err
	}
	unitDir := e.Path("home", ".config", "systemd", "user")
	dropIn := fmt.Sprintf(`[Service]
ExecStart=
ExecStart=%s run -config %s
StandardOutput=append:%s
StandardError=inherit
`, filepath.Join(e.bin, "clearance-notifier"), e.Path("clearance.yaml"), e.Path("logs", "notifier.log"))
	if err := os.WriteFile(filepath.Join(unitDir, "clearance-notifier.service"), b, 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(unitDir, "clearance-notifier.service.d"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(unitDir, "clearance-notifier.service.d", "e2e.conf"), []byte(dropIn), 0o644); err != nil {
		return err
	}
	if e.owner != nil {
		if err := e.owner.ChownTree(unitDir); err != nil {
			return err
		}
	}
	steps := [][]string{{"daemon-reload"}}
	if len(env) > 0 {
		steps = append(steps, append([]string{"set-environment"}, env...))
	}
	steps = append(steps, []string{"start", "clearance-notifier.service"})
	for _, s := range steps {
		if out, err := e.OwnerCmd(nil, append([]string{"systemctl", "--user"}, s...)...).CombinedOutput(); err != nil {
			status, _ := e.OwnerCmd(nil, "systemctl", "--user", "status", "--no-pager", "clearance-notifier.service").CombinedOutput()
			return fmt.Errorf("systemctl --user %s: %w: %s\n%s(log: %s)", strings.Join(s, " "), err, out, status, e.Tail("notifier"))
		}
	}
	return nil
}

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

// Systemctl runs systemctl --user in the owner's session in the namespace
// and returns its trimmed standard output (errors read as output: a
// unit's "inactive" comes with a non-zero status).
func (e *Env) Systemctl(args ...string) string {
	out, _ := e.OwnerCmd(nil, append([]string{"systemctl", "--user"}, args...)...).Output()
	return strings.TrimSpace(string(out))
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
	e.defer_(func() error {
		e.lab.Close()
		for _, d := range cgroupDirs() {
			if !contains(cgroups, d) {
				RemoveCgroupTree(d)
			}
		}
		matches, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", "libpod_parent"))
		for _, m := range matches {
			RemoveCgroupTree(m)
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

// logFile opens the log name in the work dir's logs, closed by Close.
func (e *Env) logFile(name string) (*os.File, error) {
	f, err := os.OpenFile(e.Path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	e.defer_(func() error { f.Close(); return nil })
	return f, nil
}

// Tail returns the last 3000 bytes of the file at path, trimmed.
func Tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 3000 {
		f.Seek(fi.Size()-3000, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

// StopProcess sends SIGTERM to cmd and SIGKILL after grace, and waits.
func StopProcess(cmd *exec.Cmd, grace time.Duration) {
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
