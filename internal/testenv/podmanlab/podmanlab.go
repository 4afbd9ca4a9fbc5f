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
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testenv/lab"
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
