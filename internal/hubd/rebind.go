// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"context"
	"log/slog"
	"net"
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
// same path (directory 0700, socket 0600, as [sockets.BindHardened]) when
// the path no longer names the socket it serves.
type rebinder struct {
	log   *slog.Logger
	serve func(net.Listener) // starts serving a new listener (until the hub stops)

	mu    sync.Mutex
	paths map[string]fileID // path → the socket file it should be
}

type fileID struct{ dev, ino uint64 }

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
		r.paths = map[string]fileID{}
	}
	for _, ln := range lns {
		if p := socketPath(ln); p != "" {
			if id, ok := statID(p); ok {
				r.paths[p] = id
			}
		}
	}
}

// check rebinds every watched path that no longer is its socket.
func (r *rebinder) check() {
	r.mu.Lock()
	var gone []string
	for p, id := range r.paths {
		if cur, ok := statID(p); !ok || cur != id {
			gone = append(gone, p)
		}
	}
	r.mu.Unlock()
	for _, p := range gone {
		ln, err := sockets.BindHardened(p, filepath.Base(p))
		if err != nil {
			r.log.Warn("socket path gone; cannot bind it again", "path", p, "err", err)
			continue
		}
		r.log.Warn("socket path was deleted; bound a new socket there", "path", p)
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
