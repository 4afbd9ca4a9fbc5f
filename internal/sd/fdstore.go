// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package sd

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoStore is returned by the file descriptor store functions when the
// process does not run under systemd ($NOTIFY_SOCKET unset): there is
// nowhere to keep descriptors across a restart.
var ErrNoStore = errors.New("no systemd file descriptor store ($NOTIFY_SOCKET unset)")

// ValidFDName reports whether name may name descriptors in the store:
// 1..255 printable ASCII characters without ':' (LISTEN_FDNAMES is
// colon-separated).
func ValidFDName(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}

// StoreFDs hands files to the service manager's file descriptor store
// under name (FDSTORE=1, FDNAME=name, the descriptors as SCM_RIGHTS on
// $NOTIFY_SOCKET). systemd keeps them while the unit is active, also
// across a restart of the service, and passes them back to the next
// process like socket-activated ones, named name in $LISTEN_FDNAMES
// (see sockets.ActivatedFiles). The unit needs FileDescriptorStoreMax=.
// The caller keeps its own copies of files. It returns [ErrNoStore]
// outside systemd.
func StoreFDs(name string, files ...*os.File) error {
	if !ValidFDName(name) {
		return fmt.Errorf("store fds: invalid name %q", name)
	}
	fds := make([]int, 0, len(files))
	for _, f := range files {
		fds = append(fds, int(f.Fd()))
	}
	return sendNotify("FDSTORE=1\nFDNAME="+name, fds)
}

// RemoveFDs drops every descriptor stored under name (FDSTOREREMOVE=1).
func RemoveFDs(name string) error {
	if !ValidFDName(name) {
		return fmt.Errorf("remove fds: invalid name %q", name)
	}
	return sendNotify("FDSTOREREMOVE=1\nFDNAME="+name, nil)
}

// sendNotify sends one notification datagram with fds attached.
func sendNotify(state string, fds []int) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return ErrNoStore
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:] // abstract namespace
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("notification socket: %w", err)
	}
	defer unix.Close(fd)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, []byte(state), oob, &unix.SockaddrUnix{Name: path}, 0); err != nil {
		return fmt.Errorf("send %q: %w", firstLine(state), err)
	}
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
