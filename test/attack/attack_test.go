// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package attack holds the attacks of issue 9 against clearance, each
// reproduced against the real kernel, real sockets and real uids, so they
// stay fixed: `go test ./test/attack/` (part of `make test`, and of
// `make test-attack` with the focused tests of the other packages, which
// are all named TestAttack…). docs/threat-model.md maps every boundary to
// the test that holds it.
//
// Everything needs root (the tests act as other uids, make namespaces and
// a systemd manager in a private mount namespace); with CI=true a missing
// prerequisite fails instead of skipping. Other users are plain uids
// (61234 the attacker, with subordinate uids 200000-265535, and 61235 the
// victim); connections are made as them from a thread that switched its
// own credentials (dialAs), and their "containers" are network namespaces
// in user namespaces they own, made by processes running as them.
package attack

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/verdict"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// The uids of the attacks: none needs a passwd entry.
const (
	attackerUID = 61234
	victimUID   = 61235
	subUIDStart = 200000 // the attacker's subordinate uids
	subUIDCount = 65536
)

// subUIDLine is the attacker's /etc/subuid line.
var subUIDLine = fmt.Sprintf("%d:%d:%d\n", attackerUID, subUIDStart, subUIDCount)

// initialNetns is the test process's network namespace at start, read
// before any test ran code in another one (a namespace goroutine that
// happens to run on the main thread leaves /proc/self/ns/net pointing at
// the namespace it entered).
var initialNetns string

func TestMain(m *testing.M) {
	if sock := os.Getenv(envFlood); sock != "" {
		os.Exit(floodMain(sock))
	}
	initialNetns, _ = os.Readlink("/proc/self/ns/net")
	code := testutil.Main(m)
	testutil.RemoveCommands()
	os.Exit(code)
}

// envFlood makes the test binary a flooder (see floodMain): the socket
// to flood; CLEARANCE_ATTACK_HOLD=1 holds connections, and
// CLEARANCE_ATTACK_FOR is how long.
const envFlood = "CLEARANCE_ATTACK_FLOOD"

// floodMain connects to sock as fast as it can for $CLEARANCE_ATTACK_FOR,
// as the uid it was started with: it closes each connection at once, or
// with CLEARANCE_ATTACK_HOLD=1 holds up to 64 of them open without a
// word (closing the oldest). It prints how many connections it made.
// Being its own process, it competes with the victim the way another
// user's program would.
func floodMain(sock string) int {
	d, err := time.ParseDuration(os.Getenv("CLEARANCE_ATTACK_FOR"))
	if err != nil {
		fmt.Println("flood:", err)
		return 2
	}
	hold := os.Getenv("CLEARANCE_ATTACK_HOLD") == "1"
	var held []net.Conn
	n := 0
	for end := time.Now().Add(d); time.Now().Before(end); {
		c, err := net.Dial("unix", sock)
		if err != nil {
			continue // a full backlog: try again at once
		}
		n++
		if !hold {
			c.Close()
			continue
		}
		held = append(held, c)
		if len(held) > 64 {
			held[0].Close()
			held = held[1:]
		}
	}
	fmt.Println(n)
	return 0
}

// sharedDir is a directory every uid can traverse (t.TempDir is 0700),
// removed at cleanup.
func sharedDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "clearance-attack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// dialAs connects to the Unix socket at path as uid (gid = uid, no
// supplementary groups), as a process of that user would: the connecting
// thread switches its own credentials (the raw system calls act on one
// thread only) and is never given back to the scheduler, so the Go runtime
// ends it. The socket keeps the credentials of its connect (SO_PEERCRED).
func dialAs(uid int, path string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETGROUPS, 0, 0, 0); e != 0 {
			ch <- result{err: fmt.Errorf("setgroups: %w", e)}
			return
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			ch <- result{err: fmt.Errorf("setresgid: %w", e)}
			return
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			ch <- result{err: fmt.Errorf("setresuid: %w", e)}
			return
		}
		c, err := net.DialTimeout("unix", path, 10*time.Second)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// clientAs is a verdict client connected as uid, the way every clearance
// client dials (verdictclient.DialFunc); closed at cleanup.
func clientAs(t testing.TB, uid int, sock string) (*verdictclient.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vc, err := verdictclient.DialFunc(ctx, sock, func(ctx context.Context, path string) (net.Conn, error) {
		return dialAs(uid, path)
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { vc.Close() })
	return vc, nil
}

// userContainer is a "container" of a user: a network namespace owned by
// a user namespace the user made, held by a process running as the user.
type userContainer struct {
	pid int
	ns  *os.File
	id  netns.ID
}

// newUserContainer starts it for uid.
func newUserContainer(t testing.TB, uid int) *userContainer {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "unshare", "sleep")
	cmd := exec.Command("unshare", "--user", "--map-root-user", "--net", "sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true,
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a container of uid %d: %v", uid, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	self := initialNetns
	path := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
	// unshare(1) switches namespaces, then execs sleep: nothing to wait
	// on but the link.
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("uid %d's container in a network namespace of its own", uid), func() bool {
		l, err := os.Readlink(path)
		return err == nil && l != self
	})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	id, err := netns.Identify(f)
	if err != nil {
		t.Fatal(err)
	}
	return &userContainer{pid: cmd.Process.Pid, ns: f, id: id}
}

// service is a verdict service served in this process on a socket any
// uid can reach, as clearance-verdict serves without a service manager.
type service struct {
	dir, sock, root, policyDir string
	svc                        *verdict.Service
}

// startService starts it; edit may change its configuration, opt its
// serving options.
func startService(t testing.TB, edit func(*verdict.Config), opt verdict.RunOptions) *service {
	t.Helper()
	testutil.RequireRoot(t)
	d := sharedDir(t)
	s := &service{dir: d, sock: filepath.Join(d, "verdict.sock"), root: filepath.Join(d, "run"), policyDir: filepath.Join(d, "policy")}
	subuid := filepath.Join(d, "subuid")
	if err := os.WriteFile(subuid, []byte(subUIDLine), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := verdict.Config{RuntimeRoot: s.root, PolicyDir: s.policyDir, PolicyPath: []string{}, SubUIDFile: subuid,
		Log: testutil.Logger(t)}
	if edit != nil {
		edit(&cfg)
	}
	var err error
	if s.svc, err = verdict.New(cfg); err != nil {
		t.Fatal(err)
	}
	ln, err := verdict.Listen(s.sock)
	if err != nil {
		t.Fatal(err)
	}
	if opt.Log == nil {
		opt.Log = testutil.Logger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := verdict.Run(ctx, s.svc, verdict.Socket{Listener: ln}, opt); err != nil {
			t.Errorf("verdict.Run: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return s
}

// repoRoot is the repository's top directory.
var repoRoot = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}()

// build returns the directory of the named commands (cmd/<name>), built
// once per test binary (or make build's), where every uid can run them.
func build(t testing.TB, names ...string) string {
	t.Helper()
	testutil.RequireTool(t, "go")
	dir, err := testutil.Commands(names...)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
