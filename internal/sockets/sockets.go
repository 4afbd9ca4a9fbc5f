// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package sockets obtains the Unix sockets clearance's daemons listen on:
// from systemd socket activation ([Activated]) or, without a service
// manager, by binding them itself with the seed's hardening, improved
// ([BindHardened]). It also knows the runtime paths ([RuntimeDir],
// [HubDir]) and reads the peer's credentials ([PeerCred]).
//
// # Hardened bind
//
// A socket is only as private as the directory that holds it. BindHardened
// therefore creates the socket 0600 in a directory that is 0700, owned by
// the current uid and not a symlink, and checks that after the fact. It
// never removes a socket somebody is still serving (the seed did, so a
// second instance silently stole the first one's clients), and it never
// removes anything that is not a socket: a regular file, fifo or directory
// at the socket path is an error for the operator to look at, since
// clearance did not create it and cannot know what it is for.
//
// # Paths
//
// One hub serves one container, in its own directory:
//
//	$XDG_RUNTIME_DIR/clearance/<id>/hub.sock      varlink (org.terok.Clearance1 …)
//	$XDG_RUNTIME_DIR/clearance/<id>/ingest.sock   newline-delimited JSON producers
//
// Container ids come from outside (the runtime, a command line, a unit
// instance name); [ValidContainerID] rejects any id that could name another
// path.
package sockets

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// Socket file names inside a hub directory ([HubDir]), and the names
// systemd passes them under (FileDescriptorName= in the socket unit).
const (
	HubSocketName    = "hub.sock"
	IngestSocketName = "ingest.sock"

	VarlinkFDName = "varlink"
	IngestFDName  = "ingest"
)

// maxSocketPath is the longest path that fits sun_path with its NUL.
const maxSocketPath = len(unix.RawSockaddrUnix{}.Path) - 1

// ErrInUse reports that a live socket already exists at the path: another
// instance is serving it. Test with errors.Is.
var ErrInUse = errors.New("already in use")

// umaskMu serialises the process-wide umask change around bind(2).
var umaskMu sync.Mutex

// Activated returns the listening sockets passed by systemd (LISTEN_FDS),
// keyed by their FileDescriptorName= (names default to "LISTEN_FD_<n>").
// It unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, so children do not
// inherit them, and returns an empty map when nothing was passed.
//
// The caller owns the returned listeners. Passed descriptors that are not
// listening sockets (a datagram socket, a FIFO) are closed, left out of the
// map and reported in the error; the listeners that did work are returned
// with it. A service that also gets descriptors back from its file
// descriptor store uses [ActivatedFiles] and [Listeners] instead.
func Activated() (map[string][]net.Listener, error) {
	files := ActivatedFiles()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	return Listeners(files, names...)
}

// ActivatedFiles returns every descriptor passed by systemd (LISTEN_FDS:
// activated sockets, and descriptors from the service's file descriptor
// store), keyed by name, in the order passed. It unsets LISTEN_PID,
// LISTEN_FDS and LISTEN_FDNAMES. The caller owns the files.
func ActivatedFiles() map[string][]*os.File {
	out := map[string][]*os.File{}
	for _, f := range activation.Files(true) {
		out[f.Name()] = append(out[f.Name()], f)
	}
	return out
}

// Listeners turns the files of files[name] for each name into listeners
// and removes them from files (the rest stays the caller's). Files that
// are not listening stream sockets are closed and reported in the error;
// the listeners that did work are returned with it.
func Listeners(files map[string][]*os.File, names ...string) (map[string][]net.Listener, error) {
	lns := map[string][]net.Listener{}
	var errs []error
	for _, name := range names {
		for _, f := range files[name] {
			ln, err := fileListener(f)
			f.Close() // fileListener duplicated it
			if err != nil {
				errs = append(errs, fmt.Errorf("use activated fd %q: %w", f.Name(), err))
				continue
			}
			lns[name] = append(lns[name], ln)
		}
		delete(files, name)
	}
	return lns, errors.Join(errs...)
}

// fileListener makes a listener of f after checking that it is a
// listening stream socket: net.FileListener alone happily wraps a datagram
// socket, whose Accept then fails forever.
func fileListener(f *os.File) (net.Listener, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var typ, acc int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE); serr != nil {
			return
		}
		acc, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("not a socket: %w", serr)
	}
	if typ != unix.SOCK_STREAM || acc != 1 {
		return nil, errors.New("not a listening stream socket")
	}
	return net.FileListener(f)
}

// RuntimeDir returns $XDG_RUNTIME_DIR, or /run/user/<uid> when it is unset
// or empty.
func RuntimeDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return d
	}
	return "/run/user/" + strconv.Itoa(os.Getuid())
}

// HubDir returns the directory of container id's hub sockets,
// <runtimeDir>/clearance/<id>. Check id with [ValidContainerID] first.
func HubDir(runtimeDir, id string) string {
	return filepath.Join(runtimeDir, "clearance", id)
}

// ValidContainerID accepts 1..64 characters of [A-Za-z0-9_.-] starting with
// a letter or digit: enough for podman's 64-hex ids, short ids and names,
// and never "." or "..", a "/" or a NUL, so an id cannot name another path.
func ValidContainerID(id string) error {
	if len(id) == 0 || len(id) > 64 {
		return fmt.Errorf("invalid container id %q: must be 1..64 characters", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		if i == 0 && !alnum {
			return fmt.Errorf("invalid container id %q: must start with a letter or digit", id)
		}
		if !alnum && c != '_' && c != '.' && c != '-' {
			return fmt.Errorf("invalid container id %q: character %q not allowed", id, c)
		}
	}
	return nil
}

// BindHardened listens on a Unix stream socket at path, created with mode
// 0600 in a private directory. label names the socket in errors ("hub",
// "ingest").
//
// The parent directory is created (with any missing intermediates) with
// mode 0700. It must then not be a symlink, must be owned by the current
// uid and must grant no group or world access; otherwise BindHardened
// fails, for example
//
//	hub parent dir not owned by current uid: /run/user/1000/clearance/x (owner uid=0)
//	hub parent dir is group/world accessible: /tmp/d (mode=0o777)
//
// An existing socket at path is probed by connecting to it: if something
// answers (or its backlog is full), the error wraps [ErrInUse] and nothing
// is touched; if the connection is refused, the socket is stale and is
// replaced. Anything else at path (a regular file, a directory, a symlink)
// is refused. Concurrent BindHardened calls on the same directory, in this
// or another process, are serialised with flock(2) on the directory, so two
// instances cannot both decide a socket is stale and replace each other.
//
// The socket is created 0600 atomically: the umask is narrowed to 0177 for
// the bind(2) only, under a package mutex (the umask is process-wide, so a
// file created concurrently by another goroutine in that instant gets at
// most 0600 too). After binding, path must be a socket.
//
// The returned listener is a *net.UnixListener; the caller owns it, and
// closing it removes the socket file. Wrap it with [RemoveDirOnClose] to
// also remove the directory once it is empty.
func BindHardened(path, label string) (net.Listener, error) {
	return bind(path, label, nil)
}

// Access says which group, besides the owner, may reach a socket bound
// by [BindShared], and how: the socket's and its directory's permission
// bits and their group. The world never gets any bit.
type Access struct {
	// SocketMode is the socket's permission bits, e.g. 0660 (the group
	// may connect) or 0600.
	SocketMode os.FileMode
	// DirMode is the directory's permission bits, e.g. 0750 (the group
	// may find and watch the socket).
	DirMode os.FileMode
	// GID is the group of the directory, and of the socket when
	// SocketMode grants the group anything.
	GID int
}

// private reports whether a grants nobody but the owner anything.
func (a Access) private() bool { return (a.SocketMode|a.DirMode)&0o077 == 0 }

// BindShared is [BindHardened] for a socket an operator group shares
// (the system instances of the hub: 0660 root:clearance in a directory
// 0750 root:clearance). The directory, created when missing, and the
// socket get a's modes and group; a process that is a member of a.GID
// (as the hub running with Group=) needs no capability for that. Every
// other check of BindHardened holds, except that the group bits a names
// are allowed; world access never is. A result that does not match a
// (the group could not be set) is closed and reported: a socket is never
// served to a group it was not meant for.
func BindShared(path, label string, a Access) (net.Listener, error) {
	if a.private() {
		return bind(path, label, nil)
	}
	if (a.SocketMode|a.DirMode)&^0o770 != 0 {
		return nil, fmt.Errorf("%s socket access %O/%O grants the world", label, a.SocketMode, a.DirMode)
	}
	return bind(path, label, &a)
}

// bind is BindHardened (a nil) or BindShared.
func bind(path, label string, a *Access) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("%s socket path too long (%d bytes, max %d): %s", label, len(path), maxSocketPath, path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s socket dir: %w", label, err)
	}
	if a != nil {
		if err := shareDir(dir, label, *a); err != nil {
			return nil, err
		}
	}
	dirFD, err := openPrivateDir(dir, label, a)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dirFD)
	if err := flock(dirFD); err != nil {
		return nil, fmt.Errorf("lock %s socket dir %s: %w", label, dir, err)
	}
	// Closing dirFD releases the lock.

	if err := clearStale(path, label); err != nil {
		return nil, err
	}

	mode := os.FileMode(0o600)
	if a != nil {
		mode = a.SocketMode
	}
	umaskMu.Lock()
	old := unix.Umask(int(0o777 &^ mode))
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("bind %s socket: %w", label, err)
	}
	ln.SetUnlinkOnClose(true)

	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		ln.Close()
		return nil, fmt.Errorf("check %s socket: %w", label, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		ln.SetUnlinkOnClose(false) // not ours to remove
		ln.Close()
		return nil, fmt.Errorf("%s path is not a socket after bind: %s", label, path)
	}
	if a != nil && mode&0o070 != 0 && int(st.Gid) != a.GID {
		// Not a member of the group: only chown(2) with CAP_CHOWN helps.
		if err := unix.Lchown(path, -1, a.GID); err != nil {
			ln.Close()
			return nil, fmt.Errorf("give %s socket %s to group %d: %w", label, path, a.GID, err)
		}
	}
	if st.Mode&0o777 != uint32(mode) {
		ln.Close()
		return nil, fmt.Errorf("%s socket has mode %O after bind, want %O: %s", label, st.Mode&0o777, mode, path)
	}
	return ln, nil
}

// shareDir gives dir, owned by us, a's mode and group.
func shareDir(dir, label string, a Access) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return fmt.Errorf("%s parent dir is a symlink: %s", label, dir)
		}
		return fmt.Errorf("open %s parent dir %s: %w", label, dir, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("check %s parent dir: %w", label, err)
	}
	if int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%s parent dir not owned by current uid: %s (owner uid=%d)", label, dir, st.Uid)
	}
	if a.DirMode&0o070 != 0 && int(st.Gid) != a.GID {
		if err := unix.Fchown(fd, -1, a.GID); err != nil {
			return fmt.Errorf("give %s parent dir %s to group %d: %w", label, dir, a.GID, err)
		}
	}
	if st.Mode&0o777 != uint32(a.DirMode) {
		if err := unix.Fchmod(fd, uint32(a.DirMode)); err != nil {
			return fmt.Errorf("set mode of %s parent dir %s: %w", label, dir, err)
		}
	}
	return nil
}

// openPrivateDir opens dir without following a symlink and checks that it
// is a directory owned by us with no group/world access (with a, no world
// access and exactly a's mode and group). It returns the open
// descriptor, which the caller closes.
func openPrivateDir(dir, label string, a *Access) (int, error) {
	var lst unix.Stat_t
	if err := unix.Lstat(dir, &lst); err != nil {
		return -1, fmt.Errorf("check %s parent dir: %w", label, err)
	}
	if lst.Mode&unix.S_IFMT == unix.S_IFLNK {
		return -1, fmt.Errorf("%s parent dir is a symlink: %s", label, dir)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return -1, fmt.Errorf("%s parent dir is a symlink: %s", label, dir)
		}
		return -1, fmt.Errorf("open %s parent dir %s: %w", label, dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("check %s parent dir: %w", label, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		err = fmt.Errorf("%s parent dir is not a directory: %s", label, dir)
	case int(st.Uid) != os.Getuid():
		err = fmt.Errorf("%s parent dir not owned by current uid: %s (owner uid=%d)", label, dir, st.Uid)
	case a == nil && st.Mode&0o077 != 0:
		err = fmt.Errorf("%s parent dir is group/world accessible: %s (mode=%O)", label, dir, st.Mode&0o777)
	case a != nil && (st.Mode&0o777 != uint32(a.DirMode) || (a.DirMode&0o070 != 0 && int(st.Gid) != a.GID)):
		err = fmt.Errorf("%s parent dir is not %O group %d: %s (mode=%O group=%d)", label, a.DirMode, a.GID, dir, st.Mode&0o777, st.Gid)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func flock(fd int) error {
	for {
		err := unix.Flock(fd, unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// clearStale makes path free for bind: nothing there, or a socket nobody
// answers on (removed). A live socket or a non-socket is an error.
func clearStale(path, label string) error {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check %s socket path: %w", label, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s path exists and is not a socket: %s (mode=%O); remove it by hand", label, path, st.Mode)
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s socket %s: %w", label, path, ErrInUse)
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		// Stale: nobody listens. Safe to replace while we hold the lock.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale %s socket: %w", label, err)
		}
		return nil
	case errors.Is(err, syscall.EAGAIN):
		// A listener with a full backlog is alive.
		return fmt.Errorf("%s socket %s: %w (backlog full)", label, path, ErrInUse)
	}
	return fmt.Errorf("probe existing %s socket %s: %w", label, path, err)
}

// RemoveDirOnClose wraps ln so that Close, after closing ln (which, for a
// listener from [BindHardened], removes its socket file), also removes dir
// if it is then empty. Give every listener in a per-container directory
// this wrapper: whichever closes last removes the directory. A non-empty
// directory is left in place.
func RemoveDirOnClose(ln net.Listener, dir string) *DirListener {
	return &DirListener{Listener: ln, dir: dir}
}

// DirListener is a [net.Listener] whose Close also removes its directory
// when empty; see [RemoveDirOnClose]. It is safe for concurrent use as far
// as the wrapped listener is, and Close may be called more than once.
type DirListener struct {
	net.Listener
	dir  string
	once sync.Once
}

// Close closes the wrapped listener, then removes the directory if it is
// empty. It returns the listener's close error.
func (l *DirListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { _ = RemoveDirIfEmpty(l.dir) })
	return err
}

// Unwrap returns the wrapped listener (a *net.UnixListener for one from
// [BindHardened]).
func (l *DirListener) Unwrap() net.Listener { return l.Listener }

// RemoveDirIfEmpty removes dir when it is an empty directory; a missing or
// non-empty dir is not an error.
func RemoveDirIfEmpty(dir string) error {
	err := unix.Rmdir(dir)
	if err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		return nil
	}
	return fmt.Errorf("remove dir %s: %w", dir, err)
}

// PeerCred returns the credentials (pid, uid, gid) of the process at the
// other end of conn, which must be a *net.UnixConn, as recorded by the
// kernel when the connection was made (SO_PEERCRED). The descriptor is
// read in place, not duplicated.
func PeerCred(conn net.Conn) (*unix.Ucred, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("read peer credentials: %T is not a Unix socket connection", conn)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("read peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("read peer credentials: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("read peer credentials: getsockopt SO_PEERCRED: %w", serr)
	}
	return cred, nil
}
