// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package sockets

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"golang.org/x/sys/unix"
)

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

// roundTrip proves ln accepts: dial path, exchange a byte each way.
// Connections that close without sending (BindHardened's liveness probes
// of a live socket) are skipped.
func roundTrip(t *testing.T, ln net.Listener, path string) {
	t.Helper()
	accepted := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				accepted <- err
				return
			}
			b := make([]byte, 1)
			if _, err := c.Read(b); err != nil {
				c.Close() // a probe
				continue
			}
			_, err = c.Write([]byte("x"))
			c.Close()
			accepted <- err
			return
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("y")); err != nil {
		t.Fatalf("write to %s: %v", path, err)
	}
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil {
		t.Fatalf("read from %s: %v", path, err)
	}
	if err := <-accepted; err != nil {
		t.Fatalf("accept: %v", err)
	}
}

func TestBindHardenedModes(t *testing.T) {
	base := privateDir(t)
	path := filepath.Join(base, "clearance", "c1", HubSocketName)
	ln, err := BindHardened(path, "hub")
	if err != nil {
		t.Fatalf("BindHardened: %v", err)
	}
	defer ln.Close()
	if got := mode(t, path); got.Type() != os.ModeSocket || got.Perm() != 0o600 {
		t.Errorf("socket mode = %v, want socket 0600", got)
	}
	for _, d := range []string{filepath.Join(base, "clearance"), filepath.Join(base, "clearance", "c1")} {
		if got := mode(t, d); !got.IsDir() || got.Perm() != 0o700 {
			t.Errorf("%s mode = %v, want dir 0700", d, got)
		}
	}
	if _, ok := ln.(*net.UnixListener); !ok {
		t.Errorf("listener is %T, want *net.UnixListener", ln)
	}
	roundTrip(t, ln, path)
}

func TestBindHardenedRestoresUmask(t *testing.T) {
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	ln, err := BindHardened(filepath.Join(privateDir(t), "s.sock"), "hub")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if got := unix.Umask(0o022); got != 0o022 {
		t.Fatalf("umask after BindHardened = %#o, want 022", got)
	}
}

func TestBindHardenedRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, base string) (path string)
		want  string // "DIR" is replaced by the socket's parent dir
	}{
		{
			name: "symlinked parent dir",
			setup: func(t *testing.T, base string) string {
				real := filepath.Join(base, "real")
				mustMkdir(t, real, 0o700)
				if err := os.Symlink(real, filepath.Join(base, "link")); err != nil {
					t.Fatal(err)
				}
				return filepath.Join(base, "link", "hub.sock")
			},
			want: "hub parent dir is a symlink: DIR",
		},
		{
			name: "world-accessible parent dir",
			setup: func(t *testing.T, base string) string {
				d := filepath.Join(base, "open")
				mustMkdir(t, d, 0o777)
				return filepath.Join(d, "hub.sock")
			},
			want: "hub parent dir is group/world accessible: DIR (mode=0o777)",
		},
		{
			name: "group-readable parent dir",
			setup: func(t *testing.T, base string) string {
				d := filepath.Join(base, "grp")
				mustMkdir(t, d, 0o750)
				return filepath.Join(d, "hub.sock")
			},
			want: "hub parent dir is group/world accessible: DIR (mode=0o750)",
		},
		{
			name: "parent is a file",
			setup: func(t *testing.T, base string) string {
				f := filepath.Join(base, "file")
				mustWrite(t, f)
				return filepath.Join(f, "hub.sock")
			},
			want: "create hub socket dir",
		},
		{
			name: "regular file at the socket path",
			setup: func(t *testing.T, base string) string {
				p := filepath.Join(base, "hub.sock")
				mustWrite(t, p)
				return p
			},
			want: "hub path exists and is not a socket: DIR/hub.sock",
		},
		{
			name: "directory at the socket path",
			setup: func(t *testing.T, base string) string {
				p := filepath.Join(base, "hub.sock")
				mustMkdir(t, p, 0o700)
				return p
			},
			want: "hub path exists and is not a socket",
		},
		{
			name: "symlink at the socket path",
			setup: func(t *testing.T, base string) string {
				p := filepath.Join(base, "hub.sock")
				if err := os.Symlink("/dev/null", p); err != nil {
					t.Fatal(err)
				}
				return p
			},
			want: "hub path exists and is not a socket",
		},
		{
			name: "path too long for sun_path",
			setup: func(t *testing.T, base string) string {
				return filepath.Join(base, strings.Repeat("x", 120)+".sock")
			},
			want: "hub socket path too long",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := privateDir(t)
			path := tt.setup(t, base)
			before, _ := os.Lstat(path)
			ln, err := BindHardened(path, "hub")
			if err == nil {
				ln.Close()
				t.Fatal("BindHardened succeeded, want an error")
			}
			want := strings.ReplaceAll(tt.want, "DIR", filepath.Dir(path))
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not contain %q", err, want)
			}
			// Whatever was at the path is untouched.
			if after, _ := os.Lstat(path); before != nil && (after == nil || !os.SameFile(before, after)) {
				t.Fatalf("%s was replaced or removed", path)
			}
		})
	}
}

func TestBindHardenedForeignDir(t *testing.T) {
	testutil.RequireRoot(t)
	base := privateDir(t)
	d := filepath.Join(base, "foreign")
	mustMkdir(t, d, 0o700)
	if err := os.Chown(d, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := BindHardened(filepath.Join(d, "hub.sock"), "hub")
	want := fmt.Sprintf("hub parent dir not owned by current uid: %s (owner uid=65534)", d)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("BindHardened = %v, want an error containing %q", err, want)
	}
}

func TestBindHardenedStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(privateDir(t), "hub.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close() // leaves a socket file nobody listens on, as after a crash
	if mode(t, path).Type() != os.ModeSocket {
		t.Fatal("stale socket file missing")
	}
	ln, err := BindHardened(path, "hub")
	if err != nil {
		t.Fatalf("BindHardened over a stale socket: %v", err)
	}
	defer ln.Close()
	roundTrip(t, ln, path)
}

func TestBindHardenedLiveSocketNotStolen(t *testing.T) {
	path := filepath.Join(privateDir(t), "hub.sock")
	first, err := BindHardened(path, "hub")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	before, _ := os.Lstat(path)

	second, err := BindHardened(path, "hub")
	if err == nil {
		second.Close()
		t.Fatal("second BindHardened succeeded, want ErrInUse")
	}
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("second BindHardened = %v, want ErrInUse", err)
	}
	if after, _ := os.Lstat(path); after == nil || !os.SameFile(before, after) {
		t.Fatal("live socket file was replaced")
	}
	roundTrip(t, first, path) // the first owner still serves
}

func TestBindHardenedConcurrent(t *testing.T) {
	path := filepath.Join(privateDir(t), "hub.sock")
	const n = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		won  []net.Listener
		errs []error
	)
	for range n {
		wg.Go(func() {
			ln, err := BindHardened(path, "hub")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			won = append(won, ln)
		})
	}
	wg.Wait()
	for _, ln := range won {
		defer ln.Close()
	}
	if len(won) != 1 {
		t.Fatalf("%d binds succeeded, want exactly 1 (errors: %v)", len(won), errs)
	}
	for _, err := range errs {
		if !errors.Is(err, ErrInUse) {
			t.Errorf("losing bind: %v, want ErrInUse", err)
		}
	}
	roundTrip(t, won[0], path)
}

func TestCloseRemovesSocketAndDir(t *testing.T) {
	base := privateDir(t)
	dir := HubDir(base, "c1")
	hubPath := filepath.Join(dir, HubSocketName)
	ingestPath := filepath.Join(dir, IngestSocketName)
	hub, err := BindHardened(hubPath, "hub")
	if err != nil {
		t.Fatal(err)
	}
	ingest, err := BindHardened(ingestPath, "ingest")
	if err != nil {
		t.Fatal(err)
	}
	hubL := RemoveDirOnClose(hub, dir)
	ingestL := RemoveDirOnClose(ingest, dir)

	if err := hubL.Close(); err != nil {
		t.Fatalf("close hub: %v", err)
	}
	if _, err := os.Lstat(hubPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("hub.sock after Close: %v, want it removed", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("dir removed while ingest.sock is still open: %v", err)
	}
	if err := ingestL.Close(); err != nil {
		t.Fatalf("close ingest: %v", err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir after last Close: %v, want it removed", err)
	}
	if _, err := os.Stat(filepath.Join(base, "clearance")); err != nil {
		t.Fatalf("shared clearance dir removed: %v", err)
	}
	ingestL.Close() // idempotent
}

func TestRemoveDirIfEmpty(t *testing.T) {
	base := privateDir(t)
	full := filepath.Join(base, "full")
	mustMkdir(t, full, 0o700)
	mustWrite(t, filepath.Join(full, "keep"))
	for _, d := range []string{full, filepath.Join(base, "missing")} {
		if err := RemoveDirIfEmpty(d); err != nil {
			t.Errorf("RemoveDirIfEmpty(%s) = %v, want nil", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(full, "keep")); err != nil {
		t.Fatalf("non-empty dir was emptied: %v", err)
	}
}

func TestPeerCred(t *testing.T) {
	path := filepath.Join(privateDir(t), "s.sock")
	ln, err := BindHardened(path, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for name, conn := range map[string]net.Conn{"server side": srv, "client side": c} {
		cred, err := PeerCred(conn)
		if err != nil {
			t.Fatalf("%s: PeerCred: %v", name, err)
		}
		got := [3]int{int(cred.Pid), int(cred.Uid), int(cred.Gid)}
		want := [3]int{os.Getpid(), os.Getuid(), os.Getgid()}
		if got != want {
			t.Fatalf("%s: PeerCred (pid, uid, gid) = %v, want %v", name, got, want)
		}
	}

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	tc, err := net.Dial("tcp", tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if _, err := PeerCred(tc); err == nil {
		t.Fatal("PeerCred on TCP succeeded, want an error")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := PeerCred(a); err == nil {
		t.Fatal("PeerCred on net.Pipe succeeded, want an error")
	}
}

func TestPeerCredOtherUID(t *testing.T) {
	testutil.RequireRoot(t)
	// An abstract socket needs no filesystem permission for the other uid.
	name := "@clearance-sockets-test-" + strconv.Itoa(os.Getpid())
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	// Connect from a thread of ours that has switched to uid 65534. The
	// raw setres*id calls change only that thread's credentials; the
	// thread stays locked and dies with its goroutine.
	release := make(chan struct{})
	dialErr := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, 65534, 65534, 65534); e != 0 {
			dialErr <- fmt.Errorf("setresgid: %w", e)
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 65534, 65534, 65534); e != 0 {
			dialErr <- fmt.Errorf("setresuid: %w", e)
			return
		}
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			dialErr <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: name}); err != nil {
			dialErr <- fmt.Errorf("connect: %w", err)
			return
		}
		dialErr <- nil
		<-release
	}()
	defer close(release)
	if err := <-dialErr; err != nil {
		t.Fatalf("dial as uid 65534: %v", err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cred, err := PeerCred(c)
	if err != nil {
		t.Fatal(err)
	}
	if cred.Uid != 65534 || cred.Gid != 65534 || int(cred.Pid) != os.Getpid() {
		t.Fatalf("PeerCred = %+v, want uid/gid 65534 and pid %d", cred, os.Getpid())
	}
}

func TestRuntimeDirAndHubDir(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/4242")
	if got := RuntimeDir(); got != "/run/user/4242" {
		t.Errorf("RuntimeDir = %q", got)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	if got, want := RuntimeDir(), "/run/user/"+strconv.Itoa(os.Getuid()); got != want {
		t.Errorf("RuntimeDir with empty XDG_RUNTIME_DIR = %q, want %q", got, want)
	}
	if got := HubDir("/run/user/1000", "abc123"); got != "/run/user/1000/clearance/abc123" {
		t.Errorf("HubDir = %q", got)
	}
}

func TestValidContainerID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"short hex id", "0123456789ab", true},
		{"full podman id", strings.Repeat("a1", 32), true},
		{"name with dash dot underscore", "web-1.prod_x", true},
		{"single character", "a", true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", 65), false},
		{"dot", ".", false},
		{"dot dot", "..", false},
		{"hidden", ".x", false},
		{"leading dash", "-x", false},
		{"leading underscore", "_x", false},
		{"slash", "a/b", false},
		{"traversal", "../../etc", false},
		{"NUL", "a\x00b", false},
		{"space", "a b", false},
		{"newline", "a\n", false},
		{"non-ASCII", "café", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidContainerID(tt.id)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidContainerID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
			}
		})
	}
}

// helperEnv selects a child-process role for the test binary.
const helperEnv = "SOCKETS_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "activated":
		activatedChild()
		os.Exit(0)
	}
	os.Exit(testutil.Main(m))
}

type activatedReport struct {
	Names    map[string]int
	Err      string
	EnvLeft  []string
	Accepted string
}

// activatedChild runs in a child with fds 3.. passed as by systemd.
func activatedChild() {
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	lns, err := Activated()
	rep := activatedReport{Names: map[string]int{}}
	for name, l := range lns {
		rep.Names[name] = len(l)
	}
	if err != nil {
		rep.Err = err.Error()
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(k); ok {
			rep.EnvLeft = append(rep.EnvLeft, k)
		}
	}
	if l := lns[VarlinkFDName]; len(l) == 1 {
		if c, err := l[0].Accept(); err == nil {
			rep.Accepted = "varlink"
			c.Close()
		}
	}
	json.NewEncoder(os.Stdout).Encode(rep)
}

func TestActivated(t *testing.T) {
	dir := privateDir(t)
	var files []*os.File
	listen := func(name string) {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, name), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false) // the child keeps serving it
		defer ln.Close()
		f, err := ln.File()
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	listen("hub.sock")
	listen("ingest.sock")
	dg, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "dg.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	dgf, err := dg.File()
	dg.Close()
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, dgf)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=activated", "GORACE=atexit_sleep_ms=0",
		"LISTEN_FDS=3", "LISTEN_FDNAMES=varlink:ingest:dgram")
	cmd.ExtraFiles = files // fds 3, 4, 5
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	// The first connection is accepted by the child's "varlink" listener.
	c, err := net.Dial("unix", filepath.Join(dir, "hub.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rep activatedReport
	if err := json.NewDecoder(out).Decode(&rep); err != nil {
		t.Fatalf("read child report: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	if diff := cmp.Diff(map[string]int{"varlink": 1, "ingest": 1}, rep.Names); diff != "" {
		t.Errorf("unexpected listeners (-want +got):\n%s", diff)
	}
	if !strings.Contains(rep.Err, `"dgram"`) {
		t.Errorf("error %q does not report the datagram fd", rep.Err)
	}
	sort.Strings(rep.EnvLeft)
	if len(rep.EnvLeft) != 0 {
		t.Errorf("LISTEN_* left in the environment: %v", rep.EnvLeft)
	}
	if rep.Accepted != "varlink" {
		t.Errorf("activated varlink listener did not accept")
	}
}

func TestActivatedNothingPassed(t *testing.T) {
	t.Setenv("LISTEN_PID", "")
	t.Setenv("LISTEN_FDS", "")
	lns, err := Activated()
	if err != nil || len(lns) != 0 {
		t.Fatalf("Activated = %v, %v; want empty, nil", lns, err)
	}
}

// privateDir returns a new 0700 directory (t.TempDir's is 0755).
func privateDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func mustMkdir(t *testing.T, d string, perm os.FileMode) {
	t.Helper()
	if err := os.Mkdir(d, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, perm); err != nil { // umask-proof
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, p string) {
	t.Helper()
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sharedGID is a group other than ours that the test may give files to:
// root may give any (a group no account uses), others one of their
// supplementary groups.
func sharedGID(t *testing.T) int {
	t.Helper()
	if os.Getuid() == 0 {
		return 61235
	}
	groups, _ := os.Getgroups()
	for _, g := range groups {
		if g != os.Getgid() {
			return g
		}
	}
	testutil.RequireRoot(t) // fails in CI, skips elsewhere
	return -1
}

// TestBindShared: the system hub's socket, 0660 in a 0750 directory of
// the operator group, and a connection through it.
func TestBindShared(t *testing.T) {
	gid := sharedGID(t)
	base := privateDir(t)
	dir := filepath.Join(base, "0123456789ab")
	path := filepath.Join(dir, HubSocketName)
	ln, err := BindShared(path, "hub", Access{SocketMode: 0o660, DirMode: 0o750, GID: gid})
	if err != nil {
		t.Fatalf("BindShared: %v", err)
	}
	defer ln.Close()
	for p, want := range map[string]os.FileMode{path: os.ModeSocket | 0o660, dir: os.ModeDir | 0o750} {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if got := mode(t, p); got != want || int(st.Gid) != gid {
			t.Errorf("%s: %v group %d, want %v group %d", p, got, st.Gid, want, gid)
		}
	}
	roundTrip(t, ln, path)

	// A second socket in the same directory (the ingest socket, root's
	// alone) keeps the directory as it is.
	in, err := BindShared(filepath.Join(dir, IngestSocketName), "ingest", Access{SocketMode: 0o600, DirMode: 0o750, GID: gid})
	if err != nil {
		t.Fatalf("BindShared ingest: %v", err)
	}
	defer in.Close()
	if got := mode(t, filepath.Join(dir, IngestSocketName)); got != os.ModeSocket|0o600 {
		t.Errorf("ingest socket %v, want 0600", got)
	}
}

// TestBindSharedRefuses: the world never gets a bit, and a private
// Access is BindHardened.
func TestBindSharedRefuses(t *testing.T) {
	base := privateDir(t)
	for _, a := range []Access{{SocketMode: 0o666, DirMode: 0o750}, {SocketMode: 0o660, DirMode: 0o755}} {
		_, err := BindShared(filepath.Join(base, "w", HubSocketName), "hub", a)
		if err == nil || !strings.Contains(err.Error(), "grants the world") {
			t.Errorf("BindShared(%O/%O) = %v, want a refusal", a.SocketMode, a.DirMode, err)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "w")); err == nil {
		t.Error("a refused BindShared created its directory")
	}
	ln, err := BindShared(filepath.Join(base, "p", HubSocketName), "hub", Access{SocketMode: 0o600, DirMode: 0o700, GID: 12345})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := mode(t, filepath.Join(base, "p")); got.Perm() != 0o700 {
		t.Errorf("private dir %v", got)
	}
}
