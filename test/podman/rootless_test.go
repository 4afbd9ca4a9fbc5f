package podman

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/testutil"
)

// TestRootless is TestRootful's flow with rootless podman: a throwaway
// user runs podman (runc, --network none) and its own systemd --user in a
// delegated cgroup; the verdict service runs as root. The hook runs as
// uid 0 of podman's rootless user namespace: it must derive the user's
// host uid from its uid_map, write the record under /run/user/<uid>, get
// the ruleset engaged by a verdict service that sees the host uid
// (SO_PEERCRED) and checks that it owns the container's netns, and start
// the hub in the user's manager (reference/test-machine.md §10).
func TestRootless(t *testing.T) {
	e := newEnvFor(t, true)
	t.Logf("owner %s uid %d, subuids %d+%d", e.owner.name, e.owner.uid, e.owner.subuid.start, e.owner.subuid.count)

	t.Run("allow", func(t *testing.T) {
		e.t = t
		allowFlow(t, e, "clr-rl-allow", func(c *container) { c.assertRootlessHook() })
	})
	t.Run("deny", func(t *testing.T) {
		e.t = t
		denyFlow(t, e, "clr-rl-deny")
	})
}

// assertRootlessHook checks what only the rootless path shows: the hook
// (uid 0 in podman's user namespace) wrote the record as the user's host
// uid, the verdict service saw that uid as the peer of Engage (not 0, so
// it authorized by netns ownership), and the hub runs as the user.
func (c *container) assertRootlessHook() {
	t := c.e.t
	fi, err := os.Stat(c.e.recordPath(c.id12))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != c.e.uid() {
		t.Errorf("record owned by uid %d, want the user's host uid %d", st.Uid, c.e.uid())
	}
	// The hook's Engage is the one that created the table.
	vl, _ := os.ReadFile(c.e.path("logs", "verdict.log"))
	engaged := false
	for _, l := range strings.Split(string(vl), "\n") {
		if strings.Contains(l, "engaged clearance for "+c.id12) && strings.Contains(l, "engaged_now=true") {
			engaged = strings.Contains(l, fmt.Sprintf("CLEARANCE_OPERATOR_UID=%d ", c.e.uid()))
			if !engaged {
				t.Errorf("the hook's Engage came from another uid than the user's %d: %s", c.e.uid(), l)
			}
		}
	}
	if !engaged {
		t.Errorf("verdict log has no Engage of %s by uid %d:\n%s", c.id12, c.e.uid(), vl)
	}
	pid, err := strconv.Atoi(c.e.systemctl("show", "-p", "MainPID", "--value", "clearance-hub@"+c.id12+".service"))
	if err != nil || pid <= 0 {
		t.Fatalf("hub MainPID: %v %d", err, pid)
	}
	ids, _, err := procUIDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if id != c.e.uid() {
			t.Fatalf("hub (pid %d) runs as uids %v, want %d", pid, ids, c.e.uid())
		}
	}
}

// sysUser is a throwaway login-less user with subordinate id ranges,
// removed (with its home and its subuid/subgid lines) by a t.Cleanup.
type sysUser struct {
	name           string
	uid, gid       int
	subuid, subgid idRange
	backups        []savedFile // the shadow tools' backup files before useradd
}

// shadowBackups are the backup copies useradd, usermod and userdel
// write; after the user is gone they would still name it, so they are
// restored.
var shadowBackups = []string{"/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-", "/etc/subuid-", "/etc/subgid-"}

// savedFile is a file's content, mode and owner, or its absence.
type savedFile struct {
	path     string
	exists   bool
	data     []byte
	mode     fs.FileMode
	uid, gid int
}

func snapshot(paths []string) []savedFile {
	var out []savedFile
	for _, p := range paths {
		f := savedFile{path: p}
		if fi, err := os.Stat(p); err == nil {
			if b, err := os.ReadFile(p); err == nil {
				st := fi.Sys().(*syscall.Stat_t)
				f = savedFile{path: p, exists: true, data: b, mode: fi.Mode().Perm(), uid: int(st.Uid), gid: int(st.Gid)}
			}
		}
		out = append(out, f)
	}
	return out
}

// restore puts f back as it was.
func (f savedFile) restore() error {
	if !f.exists {
		if err := os.Remove(f.path); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	}
	if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
		return err
	}
	if err := os.Chmod(f.path, f.mode); err != nil {
		return err
	}
	return os.Chown(f.path, f.uid, f.gid)
}

type idRange struct{ start, count int }

func (r idRange) has(id int) bool { return id >= r.start && id < r.start+r.count }

// newSysUser creates the user clrci-<random> with home (not created:
// the caller owns it) and subordinate ids (useradd adds them here;
// usermod --add-subuids otherwise).
func newSysUser(t testing.TB, home string) *sysUser {
	t.Helper()
	testutil.RequireTool(t, "useradd", "userdel", "usermod", "newuidmap", "newgidmap")
	var r [4]byte
	rand.Read(r[:])
	u := &sysUser{name: "clrci-" + hex.EncodeToString(r[:]), backups: snapshot(shadowBackups)}
	out, err := exec.Command("useradd", "--no-create-home", "--home-dir", home, "--shell", "/usr/sbin/nologin",
		"--user-group", "--comment", "clearance rootless e2e test", u.name).CombinedOutput()
	if err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() { u.remove(t) })
	pw, err := user.Lookup(u.name)
	if err != nil {
		t.Fatal(err)
	}
	u.uid, _ = strconv.Atoi(pw.Uid)
	u.gid, _ = strconv.Atoi(pw.Gid)
	u.subuid, u.subgid = subIDs("/etc/subuid", u.name), subIDs("/etc/subgid", u.name)
	if u.subuid.count == 0 || u.subgid.count == 0 {
		start := max(100000, subIDEnd("/etc/subuid"), subIDEnd("/etc/subgid"))
		span := fmt.Sprintf("%d-%d", start, start+65535)
		if out, err := exec.Command("usermod", "--add-subuids", span, "--add-subgids", span, u.name).CombinedOutput(); err != nil {
			t.Fatalf("usermod --add-subuids: %v: %s", err, out)
		}
		u.subuid, u.subgid = subIDs("/etc/subuid", u.name), subIDs("/etc/subgid", u.name)
	}
	if u.subuid.count < 65536 || u.subgid.count < 65536 {
		t.Fatalf("subordinate ids for %s: %+v %+v", u.name, u.subuid, u.subgid)
	}
	return u
}

// remove kills what is left of the user's processes, deletes the user
// and its home, and drops its subordinate id lines.
func (u *sysUser) remove(t testing.TB) {
	u.killProcesses(t)
	if out, err := exec.Command("userdel", "-r", u.name).CombinedOutput(); err != nil {
		t.Errorf("userdel -r %s: %v: %s", u.name, err, out)
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		if err := dropLines(f, u.name+":"); err != nil {
			t.Error(err)
		}
	}
	for _, f := range u.backups {
		if err := f.restore(); err != nil {
			t.Errorf("restore %s: %v", f.path, err)
		}
	}
}

// chownTree gives the user everything under roots.
func (u *sysUser) chownTree(t testing.TB, roots ...string) {
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, u.uid, u.gid)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// owns reports whether a process with uids ids belongs to the user: its
// own uid or one of its subordinate ids (a container's other users).
func (u *sysUser) owns(ids []int) bool {
	for _, id := range ids {
		if id == u.uid || u.subuid.has(id) {
			return true
		}
	}
	return false
}

// killProcesses SIGKILLs, by pid, every process of the user (podman's
// pause process, conmon, a container, the user manager and its services)
// and waits until they are gone, zombies reaped too (else userdel finds
// the user still in use).
func (u *sysUser) killProcesses(t testing.TB) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		live, zombies := u.processes()
		if len(live)+len(zombies) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes of %s still there: %v, zombies %v", u.name, live, zombies)
			return
		}
		for _, pid := range live {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processes lists the user's processes, live and zombie.
func (u *sysUser) processes() (live, zombies []int) {
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil || pid == os.Getpid() {
			// Never this process: a thread of it may be running as the
			// user in do (and /proc/<pid>/status shows the main thread's).
			continue
		}
		ids, zombie, err := procUIDs(pid)
		switch {
		case err != nil || !u.owns(ids):
		case zombie:
			zombies = append(zombies, pid)
		default:
			live = append(live, pid)
		}
	}
	return live, zombies
}

// procUIDs returns the real, effective, saved and fs uids of a process
// and whether it is a zombie.
func procUIDs(pid int) (ids []int, zombie bool, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		switch k {
		case "State":
			zombie = strings.HasPrefix(strings.TrimSpace(v), "Z")
		case "Uid":
			for _, s := range strings.Fields(v) {
				id, _ := strconv.Atoi(s)
				ids = append(ids, id)
			}
		}
	}
	if len(ids) == 0 {
		return nil, false, fmt.Errorf("process %d: no Uid line", pid)
	}
	return ids, zombie, nil
}

// subIDs returns name's range in a subuid/subgid file (zero if none).
func subIDs(file, name string) idRange {
	b, _ := os.ReadFile(file)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) == 3 && f[0] == name {
			start, _ := strconv.Atoi(f[1])
			count, _ := strconv.Atoi(f[2])
			return idRange{start, count}
		}
	}
	return idRange{}
}

// subIDEnd is the first id after every range in file.
func subIDEnd(file string) int {
	b, _ := os.ReadFile(file)
	end := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Split(line, ":"); len(f) == 3 {
			start, _ := strconv.Atoi(f[1])
			count, _ := strconv.Atoi(f[2])
			end = max(end, start+count)
		}
	}
	return end
}

// dropLines removes the lines starting with prefix from file, if any.
func dropLines(file, prefix string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var keep []string
	lines := strings.SplitAfter(string(b), "\n")
	for _, l := range lines {
		if !strings.HasPrefix(l, prefix) {
			keep = append(keep, l)
		}
	}
	if len(keep) == len(lines) {
		return nil
	}
	fi, err := os.Stat(file)
	if err != nil {
		return err
	}
	if err := os.WriteFile(file, []byte(strings.Join(keep, "")), fi.Mode().Perm()); err != nil {
		return fmt.Errorf("drop %s lines from %s: %w", prefix, file, err)
	}
	return nil
}

// dialAs connects to the unix socket name in dir with the user's uid and
// gid as its SO_PEERCRED (the hub's ingest accepts only its own user).
// The directory is opened as root: it lies under the namespace holder's
// /proc/<pid>/root, out of the user's reach.
func (u *sysUser) dialAs(dir, name string) (net.Conn, error) {
	d, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	var c net.Conn
	err = u.do(func() error {
		var err error
		c, err = net.Dial("unix", fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), name))
		return err
	})
	return c, err
}

// do runs f on a locked thread that switched its effective (and fs) gid
// and uid to the user's, and switches them back to root before the
// thread is handed back (the real and saved ids stay 0, so that is
// allowed). Raw syscalls change this thread only: syscall.Setresuid would
// change every thread of the process. If switching back fails, the
// thread stays locked and is discarded with its goroutine.
func (u *sysUser) do(f func() error) error {
	const keep = ^uintptr(0) // -1: leave that id as it is
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(u.gid), keep); e != 0 {
			ch <- fmt.Errorf("setresgid: %w", e)
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(u.uid), keep); e != 0 {
			ch <- fmt.Errorf("setresuid: %w", e)
			return
		}
		err := f()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, 0, keep); e != 0 {
			ch <- fmt.Errorf("switch back to uid 0: %w", e)
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, keep, 0, keep); e != 0 {
			ch <- fmt.Errorf("switch back to gid 0: %w", e)
			return
		}
		runtime.UnlockOSThread()
		ch <- err
	}()
	return <-ch
}
