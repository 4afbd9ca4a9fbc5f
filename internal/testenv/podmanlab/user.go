// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podmanlab

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
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
	"time"

	"golang.org/x/sys/unix"
)

// User is a throwaway login-less user with subordinate id ranges, for
// rootless podman. [User.Remove] deletes it with its home and its
// subuid/subgid lines, and restores the shadow tools' backup files.
// Its fields are read-only after [NewUser].
type User struct {
	Name           string
	UID, GID       int
	SubUID, SubGID IDRange
	backups        []savedFile // the shadow tools' backup files before useradd
}

// IDRange is a subordinate id range.
type IDRange struct{ Start, Count int }

// Has reports whether id lies in r.
func (r IDRange) Has(id int) bool { return id >= r.Start && id < r.Start+r.Count }

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

// NewUser creates the user clrci-<random> with home (not created: the
// caller owns it) and subordinate ids (useradd adds them here; usermod
// --add-subuids otherwise). On error nothing is left.
func NewUser(home string) (u *User, err error) {
	var r [4]byte
	rand.Read(r[:])
	u = &User{Name: "clrci-" + hex.EncodeToString(r[:]), backups: snapshot(shadowBackups)}
	out, err := exec.Command("useradd", "--no-create-home", "--home-dir", home, "--shell", "/usr/sbin/nologin",
		"--user-group", "--comment", "clearance rootless e2e test", u.Name).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("useradd: %w: %s", err, out)
	}
	defer func() {
		if err != nil {
			u.Remove()
		}
	}()
	pw, err := user.Lookup(u.Name)
	if err != nil {
		return nil, err
	}
	u.UID, _ = strconv.Atoi(pw.Uid)
	u.GID, _ = strconv.Atoi(pw.Gid)
	u.SubUID, u.SubGID = subIDs("/etc/subuid", u.Name), subIDs("/etc/subgid", u.Name)
	if u.SubUID.Count == 0 || u.SubGID.Count == 0 {
		start := max(100000, subIDEnd("/etc/subuid"), subIDEnd("/etc/subgid"))
		span := fmt.Sprintf("%d-%d", start, start+65535)
		if out, err := exec.Command("usermod", "--add-subuids", span, "--add-subgids", span, u.Name).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("usermod --add-subuids: %w: %s", err, out)
		}
		u.SubUID, u.SubGID = subIDs("/etc/subuid", u.Name), subIDs("/etc/subgid", u.Name)
	}
	if u.SubUID.Count < 65536 || u.SubGID.Count < 65536 {
		return nil, fmt.Errorf("subordinate ids for %s: %+v %+v", u.Name, u.SubUID, u.SubGID)
	}
	return u, nil
}

// Remove kills what is left of the user's processes, deletes the user
// and its home, drops its subordinate id lines and restores the shadow
// tools' backups.
func (u *User) Remove() error {
	errs := []error{u.KillProcesses()}
	if out, err := exec.Command("userdel", "-r", u.Name).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("userdel -r %s: %w: %s", u.Name, err, out))
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		errs = append(errs, dropLines(f, u.Name+":"))
	}
	for _, f := range u.backups {
		if err := f.restore(); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", f.path, err))
		}
	}
	return errors.Join(errs...)
}

// ChownTree gives the user everything under roots.
func (u *User) ChownTree(roots ...string) error {
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, u.UID, u.GID)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Owns reports whether a process with uids ids belongs to the user: its
// own uid or one of its subordinate ids (a container's other users).
func (u *User) Owns(ids []int) bool {
	for _, id := range ids {
		if id == u.UID || u.SubUID.Has(id) {
			return true
		}
	}
	return false
}

// KillProcesses SIGKILLs, by pid, every process of the user (podman's
// pause process, conmon, a container, the user manager and its services)
// and waits until they are gone, zombies reaped too (else userdel finds
// the user still in use).
func (u *User) KillProcesses() error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		live, zombies := u.processes()
		if len(live)+len(zombies) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of %s still there: %v, zombies %v", u.Name, live, zombies)
		}
		for _, pid := range live {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processes lists the user's processes, live and zombie.
func (u *User) processes() (live, zombies []int) {
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil || pid == os.Getpid() {
			// Never this process: a thread of it may be running as the
			// user in do (and /proc/<pid>/status shows the main thread's).
			continue
		}
		ids, zombie, err := ProcUIDs(pid)
		switch {
		case err != nil || !u.Owns(ids):
		case zombie:
			zombies = append(zombies, pid)
		default:
			live = append(live, pid)
		}
	}
	return live, zombies
}

// ProcUIDs returns the real, effective, saved and fs uids of a process
// and whether it is a zombie.
func ProcUIDs(pid int) (ids []int, zombie bool, err error) {
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
func subIDs(file, name string) IDRange {
	b, _ := os.ReadFile(file)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) == 3 && f[0] == name {
			start, _ := strconv.Atoi(f[1])
			count, _ := strconv.Atoi(f[2])
			return IDRange{start, count}
		}
	}
	return IDRange{}
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

// DialAs connects to the unix socket name in dir with the user's uid and
// gid as its SO_PEERCRED (the hub's ingest accepts only its own user).
// The directory is opened as root: it lies under the namespace holder's
// /proc/<pid>/root, out of the user's reach.
func (u *User) DialAs(dir, name string) (net.Conn, error) {
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
func (u *User) do(f func() error) error {
	const keep = ^uintptr(0) // -1: leave that id as it is
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(u.GID), keep); e != 0 {
			ch <- fmt.Errorf("setresgid: %w", e)
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(u.UID), keep); e != 0 {
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
