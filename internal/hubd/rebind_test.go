// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/sockets"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestRebindKeepsAccess: sockets whose directory is deleted come back
// with the modes and group they had, private for a user's hub and shared
// with the operator group for a system hub. (test/e2e and test/packaging
// do the same to the real hub under its units.)
func TestRebindKeepsAccess(t *testing.T) {
	gid := -1
	if os.Getuid() == 0 {
		gid = 61236 // root may give files to a group no account uses
	} else if gs, _ := os.Getgroups(); len(gs) > 1 {
		for _, g := range gs {
			if g != os.Getgid() {
				gid = g
			}
		}
	}
	tests := []struct {
		name   string
		hub    sockets.Access
		ingest sockets.Access
		shared bool
	}{
		{name: "user hub", hub: sockets.Access{SocketMode: 0o600, DirMode: 0o700}, ingest: sockets.Access{SocketMode: 0o600, DirMode: 0o700}},
		{name: "system hub with an operator group", shared: true,
			hub:    sockets.Access{SocketMode: 0o660, DirMode: 0o750, GID: gid},
			ingest: sockets.Access{SocketMode: 0o600, DirMode: 0o750, GID: gid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.shared && gid < 0 {
				testutil.RequireRoot(t)
			}
			base, err := os.MkdirTemp("", "rb")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(base) })
			dir := filepath.Join(base, "0123456789ab")
			hubPath, ingestPath := filepath.Join(dir, "hub.sock"), filepath.Join(dir, "ingest.sock")
			var lns []net.Listener
			for p, a := range map[string]sockets.Access{hubPath: tt.hub, ingestPath: tt.ingest} {
				ln, err := sockets.BindShared(p, filepath.Base(p), a)
				if err != nil {
					t.Fatal(err)
				}
				lns = append(lns, ln)
			}
			served := make(chan net.Listener, 4)
			r := &rebinder{log: testutil.Logger(t), serve: func(ln net.Listener) { served <- ln }}
			r.watch(lns...)
			t.Cleanup(func() {
				for _, ln := range lns {
					ln.Close()
				}
			})

			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			r.check()
			for range 2 {
				select {
				case ln := <-served:
					lns = append(lns, ln)
					go func() {
						if c, err := ln.Accept(); err == nil {
							c.Close()
						}
					}()
				case <-time.After(5 * time.Second):
					t.Fatal("a socket was not bound again")
				}
			}
			for p, a := range map[string]sockets.Access{hubPath: tt.hub, ingestPath: tt.ingest} {
				var st, dst unix.Stat_t
				if err := unix.Lstat(p, &st); err != nil {
					t.Fatal(err)
				}
				if err := unix.Stat(dir, &dst); err != nil {
					t.Fatal(err)
				}
				if st.Mode&unix.S_IFMT != unix.S_IFSOCK || os.FileMode(st.Mode&0o777) != a.SocketMode {
					t.Errorf("%s: mode %O, want socket %O", p, st.Mode&0o777, a.SocketMode)
				}
				if os.FileMode(dst.Mode&0o777) != a.DirMode {
					t.Errorf("dir mode %O, want %O", dst.Mode&0o777, a.DirMode)
				}
				if tt.shared && (int(dst.Gid) != gid || (a.SocketMode&0o070 != 0 && int(st.Gid) != gid)) {
					t.Errorf("%s: group %d, dir group %d, want %d", p, st.Gid, dst.Gid, gid)
				}
			}
			c, err := net.Dial("unix", hubPath)
			if err != nil {
				t.Fatalf("dial the rebound hub socket: %v", err)
			}
			c.Close()
		})
	}
}
