// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// DefaultSocket is where the service listens without socket activation.
const DefaultSocket = verdictclient.DefaultSocket

// Socket is what the service serves: exactly one of Conn (one connected
// socket from an Accept=yes socket unit) and Listener.
type Socket struct {
	Conn     net.Conn
	Listener net.Listener
}

// Close closes whichever is set.
func (s Socket) Close() error {
	if s.Conn != nil {
		return s.Conn.Close()
	}
	if s.Listener != nil {
		return s.Listener.Close()
	}
	return nil
}

// Activated returns the socket passed by systemd (LISTEN_FDS), and false
// when none was passed. A connected stream socket (Accept=yes) comes back
// as Conn, a listening one (Accept=no) as Listener. It unsets the LISTEN_*
// variables. More than one passed fd is an error.
func Activated() (Socket, bool, error) {
	files := activation.Files(true)
	if len(files) == 0 {
		return Socket{}, false, nil
	}
	if len(files) > 1 {
		for _, f := range files {
			f.Close()
		}
		return Socket{}, true, fmt.Errorf("socket activation: %d fds passed, want one", len(files))
	}
	f := files[0]
	defer f.Close() // net.FileConn/FileListener duplicate it
	typ, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return Socket{}, true, fmt.Errorf("socket activation: fd %q is not a socket: %w", f.Name(), err)
	}
	if typ != unix.SOCK_STREAM {
		return Socket{}, true, fmt.Errorf("socket activation: fd %q is not a stream socket", f.Name())
	}
	acc, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return Socket{}, true, fmt.Errorf("socket activation: %w", err)
	}
	if acc == 1 {
		ln, err := net.FileListener(f)
		if err != nil {
			return Socket{}, true, fmt.Errorf("socket activation: %w", err)
		}
		return Socket{Listener: ln}, true, nil
	}
	c, err := net.FileConn(f)
	if err != nil {
		return Socket{}, true, fmt.Errorf("socket activation: %w", err)
	}
	return Socket{Conn: c}, true, nil
}

// Listen binds the service's socket at path without a service manager:
// the directory is created 0755 (and must be owned by the current uid,
// not a symlink, and not writable by group or others), the socket is
// made 0666 so any local user can connect (every call is authorized on
// its own by the caller's kernel-verified uid, so connecting grants
// nothing). A live socket at path is an error; a stale one is replaced.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return nil, fmt.Errorf("listen %s: %s is not a directory", path, dir)
	case st.Uid != uint32(os.Geteuid()):
		return nil, fmt.Errorf("listen %s: %s owned by uid %d, not %d", path, dir, st.Uid, os.Geteuid())
	case st.Mode&0o022 != 0:
		return nil, fmt.Errorf("listen %s: %s is writable by group or others (mode %#o)", path, dir, st.Mode&0o777)
	}
	if err := unix.Lstat(path, &st); err == nil {
		if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			return nil, fmt.Errorf("listen %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: already in use", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen %s: remove stale socket: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return ln, nil
}

// DefaultIdleTimeout is [RunOptions.IdleTimeout]'s default: how long a
// connection may go without a complete request.
const DefaultIdleTimeout = 5 * time.Second

// acceptors is how many goroutines accept on a listening socket: a
// connect flood from several threads must not outpace the accepting side
// and keep the listen backlog full for everyone else.
const acceptors = 4

// RunOptions configures [Run].
type RunOptions struct {
	// Idle makes a listening (Accept=no) instance exit after this long
	// without connections; 0 serves until ctx ends.
	Idle time.Duration
	// IdleTimeout closes a connection on which no complete request
	// arrived for this long (counted from the connection's start and from
	// each reply; a call being handled does not count), so idle
	// connections cannot pile up. 0 means [DefaultIdleTimeout]; negative
	// never closes.
	IdleTimeout time.Duration
	// SlotDir, for a connected socket (one instance per connection), is a
	// directory private to root shared by every instance, where they
	// count each user's connections (the unit's RuntimeDirectory=). Empty
	// means no per-user limit across instances; the socket unit's
	// MaxConnections= still bounds the total. A listening socket counts
	// in memory and ignores it.
	SlotDir string
	// MaxConns bounds the connections a listening socket serves at once
	// (varlinkapi default when 0).
	MaxConns int
	// MaxMessage bounds one request (varlinkapi default when 0).
	MaxMessage int
	// Log receives connection-level warnings.
	Log *slog.Logger
}

// Run serves s on sock until ctx ends: a connected socket until the peer
// hangs up (per-connection instance), a listener until ctx ends or the
// idle timeout passes. It closes sock.
//
// A user (with its subordinate uids) gets at most s's MaxConnsPerOwner
// connections at once; a connection beyond that is answered
// PermissionDenied before anything is read from it and closed.
func Run(ctx context.Context, s *Service, sock Socket, opt RunOptions) error {
	defer s.Close()
	svc, err := s.Varlink()
	if err != nil {
		sock.Close()
		return fmt.Errorf("build varlink service: %w", err)
	}
	log := opt.Log
	if log == nil {
		log = s.log
	}
	timeout := opt.IdleTimeout
	switch {
	case timeout == 0:
		timeout = DefaultIdleTimeout
	case timeout < 0:
		timeout = 0
	}
	srv := &varlinkapi.Server{Service: svc, Log: opt.Log, MaxMessage: opt.MaxMessage, MaxConns: opt.MaxConns,
		Idle: opt.Idle, RequestTimeout: timeout, Acceptors: acceptors}
	adm := &admission{owners: s.owners, max: s.cfg.MaxConnsPerOwner, log: log}
	switch {
	case sock.Conn != nil:
		adm.limiter = &lockLimiter{dir: opt.SlotDir, max: s.cfg.MaxConnsPerOwner}
		if opt.SlotDir == "" {
			adm.limiter = unlimited{}
		}
		release, refusal, ok := adm.admit(sock.Conn)
		if !ok {
			varlinkapi.Refuse(sock.Conn, refusal)
			return nil
		}
		defer release()
		srv.ServeConn(ctx, sock.Conn)
		return nil
	case sock.Listener != nil:
		adm.limiter = newMemLimiter(s.cfg.MaxConnsPerOwner)
		srv.Admit = adm.admit
		return srv.Serve(ctx, sock.Listener)
	}
	return errors.New("run: no socket")
}

// unlimited is the limiter of an instance without a slot directory.
type unlimited struct{}

func (unlimited) acquire(uint32) (func(), bool) { return func() {}, true }
func (unlimited) shouldLog(uint32) bool         { return false }
