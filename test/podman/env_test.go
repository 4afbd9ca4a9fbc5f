// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package podman holds clearance's end-to-end tests with real containers:
// podman with runc, the project's OCI hook from its hooks.d file, a real
// `systemd --user` manager that socket-activates the hub from the
// project's units, and the verdict service, all inside one private mount
// namespace (tmpfs /run and /tmp) so nothing touches the machine's own
// /run; internal/testenv/podmanlab builds that world (`make demo` uses it too). TestRootful runs podman and the manager as root; TestRootless
// runs them as a throwaway user (subordinate ids, its manager in a
// delegated cgroup) with the verdict service as root. The container
// reaches only a test host on a veth the test wires. See
// docs/test-machine.md §M6–§M10 for the recipe and its traps.
//
// The tests need root and podman, runc, conmon, busybox-static, nft,
// unshare/nsenter and systemd, and for the rootless test useradd/userdel
// (passwd) and newuidmap/newgidmap (uidmap); with CI=true a missing one
// fails.
package podman

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/terok-ai/clearance/internal/testenv/podmanlab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// binDir holds the binaries built by TestMain. It lives under /var/tmp:
// inside the private mount namespace /tmp is a fresh tmpfs.
var binDir string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			return testutil.Main(m) // every test skips (or fails under CI) itself
		}
		dir, err := os.MkdirTemp("/var/tmp", "clearance-podman-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		defer testutil.RemoveCommands()
		// Copied to /var/tmp: the throwaway user of the rootless tests
		// runs them, and the checkout may not be reachable for it.
		names := []string{"clearance-hub", "clearance-verdict", "clearance-oci-hook", "clearance-notifier", "clearancectl"}
		built, err := testutil.Commands(names...)
		if err == nil {
			err = testutil.CopyCommands(built, dir, names...)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		os.Chmod(dir, 0o755)
		binDir = dir
		return testutil.Main(m)
	}()
	os.Exit(code)
}

// The test host's and the container's ends of the veth, the test host's
// port, the image and the hook's gate (see podmanlab).
var (
	hostAddr = podmanlab.HostAddr
)

const (
	echoPort = podmanlab.EchoPort
	image    = podmanlab.Image
	gateAnn  = podmanlab.GateAnnotation
)

// env is one private world (podmanlab.Env) bound to the test that uses
// it: failures are fatal, and it is closed by t.Cleanup.
type env struct {
	*podmanlab.Env
	t testing.TB
	// owner is the throwaway user running rootless podman and its own
	// systemd --user; nil: root runs everything.
	owner *podmanlab.User
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
	testutil.RequireTool(t, podmanlab.Tools...)
	if rootless {
		testutil.RequireTool(t, podmanlab.RootlessTools...)
	}
	if _, err := os.Stat("/usr/lib/systemd/systemd"); err != nil {
		testutil.Unavailable(t, "systemd (for systemd --user): %v", err)
	}
	if binDir == "" {
		t.Fatal("binaries not built")
	}
	pe, err := podmanlab.New(testutil.Context(t), podmanlab.Options{
		Bin: binDir, Source: filepath.Join("..", ".."), Rootless: rootless, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{Env: pe, t: t, owner: pe.Owner()}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"systemd", "verdict", "hub", "holder"} {
				t.Logf("%s log:\n%s", n, e.Tail(n))
			}
		}
		if err := e.Close(); err != nil {
			t.Error(err)
		}
	})
	return e
}

// path joins p to the work dir.
func (e *env) path(p ...string) string { return e.Path(p...) }

// uid is the host uid owning the containers.
func (e *env) uid() int { return e.UID() }

// nsCmd runs argv inside the private mount namespace as root.
func (e *env) nsCmd(extra []string, argv ...string) *exec.Cmd { return e.NSCmd(extra, argv...) }

func (e *env) mustPodman(args ...string) string {
	e.t.Helper()
	out, err := e.Podman(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// systemctl runs systemctl --user in the owner's session in the namespace.
func (e *env) systemctl(args ...string) string { return e.Systemctl(args...) }

// recordPath is where the hook writes the owner's record for id12.
func (e *env) recordPath(id12 string) string { return e.RecordPath(id12) }

// hubSock is the hub's socket for id12 in the owner's session.
func (e *env) hubSock(id12 string) string { return e.HubSock(id12) }
