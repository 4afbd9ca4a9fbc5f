// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/sockets"
)

// socketPath returns the file system path of a Unix listener, "" for
// anything else (an abstract socket, TCP).
func socketPath(ln net.Listener) string {
	a, ok := ln.Addr().(*net.UnixAddr)
	if !ok || a.Name == "" || strings.HasPrefix(a.Name, "@") || !filepath.IsAbs(a.Name) {
		return ""
	}
	return a.Name
}

// rebinder brings a hub's sockets back when their directory or socket
// files are deleted under it (a cleanup script, a user's rm -r): the
// listening socket still exists, but no client can reach it any more, and
// nothing prompts. It checks every interval and binds a new socket at the
// same path when the path no longer names the socket it serves, with the
// modes and group the socket and its directory had when it was watched:
// a user's hub gets 0600 in 0700 again ([sockets.BindHardened]), a
// system hub 0660 root:clearance in 0750 root:clearance
// ([sockets.BindShared]; the hub runs with Group=clearance).
type rebinder struct {
	log   *slog.Logger
	serve func(net.Listener) // starts serving a new listener (until the hub stops)

	mu    sync.Mutex
	paths map[string]watched // path → the socket file it should be
}

type fileID struct{ dev, ino uint64 }

// watched is a socket file as it was when it was watched.
type watched struct {
	id     fileID
	access sockets.Access
}

// accessOf reads the modes and group of the socket at path and of its
// directory. The directory's group stands for both: a socket the group
// may not reach (0600) keeps whatever group it gets.
func accessOf(path string) (sockets.Access, bool) {
	var sst, dst unix.Stat_t
	if unix.Lstat(path, &sst) != nil || unix.Stat(filepath.Dir(path), &dst) != nil {
		return sockets.Access{}, false
	}
	gid := int(dst.Gid)
	if sst.Mode&0o070 != 0 {
		gid = int(sst.Gid)
	}
	return sockets.Access{SocketMode: os.FileMode(sst.Mode & 0o777), DirMode: os.FileMode(dst.Mode & 0o777), GID: gid}, true
}

func statID(path string) (fileID, bool) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fileID{}, false
	}
	return fileID{uint64(st.Dev), st.Ino}, true
}

// watch registers the listeners' paths as they are now.
func (r *rebinder) watch(lns ...net.Listener) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.paths == nil {
		r.paths = map[string]watched{}
	}
	for _, ln := range lns {
		if p := socketPath(ln); p != "" {
			id, ok := statID(p)
			a, aok := accessOf(p)
			if ok && aok {
				r.paths[p] = watched{id, a}
			}
		}
	}
}

// check rebinds every watched path that no longer is its socket.
func (r *rebinder) check() {
	r.mu.Lock()
	gone := map[string]sockets.Access{}
	for p, w := range r.paths {
		if cur, ok := statID(p); !ok || cur != w.id {
			gone[p] = w.access
		}
	}
	r.mu.Unlock()
	for p, a := range gone {
		ln, err := sockets.BindShared(p, filepath.Base(p), a)
		if err != nil {
			r.log.Warn("socket path gone; cannot bind it again", "path", p, "err", err)
			continue
		}
		r.log.Warn("socket path was deleted; bound a new socket there", "path", p,
			"mode", fmt.Sprintf("%04o", a.SocketMode), "dir_mode", fmt.Sprintf("%04o", a.DirMode), "gid", a.GID)
		r.watch(ln)
		r.serve(ln)
	}
}

// run checks every interval until ctx ends.
func (r *rebinder) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.check()
		}
	}
}
