// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ConnectFile connects file, an unconnected TCP socket (for example one of
// the pool of marked sockets the privileged side makes in the container's
// namespace), to server and returns it as a [net.Conn]: the shape
// [Upstream.DialTCP] wants. A socket of either family reaches an IPv4
// server (an IPv6 one through a mapped address). ctx bounds the
// connection setup only.
//
// ConnectFile takes file over and closes it, whether it succeeds or not;
// the caller closes the returned conn.
func ConnectFile(ctx context.Context, file *os.File, server netip.AddrPort) (net.Conn, error) {
	defer file.Close()
	rc, err := file.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("connect socket to %s: %w", server, err)
	}
	var (
		cerr       error
		inProgress bool
	)
	err = rc.Control(func(fd uintptr) {
		dom, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			cerr = fmt.Errorf("get socket domain: %w", err)
			return
		}
		var sa unix.Sockaddr
		switch a := server.Addr().Unmap(); {
		case dom == unix.AF_INET6:
			sa = &unix.SockaddrInet6{Port: int(server.Port()), Addr: a.As16()}
		case dom == unix.AF_INET && a.Is4():
			sa = &unix.SockaddrInet4{Port: int(server.Port()), Addr: a.As4()}
		default:
			cerr = fmt.Errorf("socket of domain %d for %s: %w", dom, server, unix.EAFNOSUPPORT)
			return
		}
		if err := unix.SetNonblock(int(fd), true); err != nil {
			cerr = fmt.Errorf("set non-blocking: %w", err)
			return
		}
		err = unix.Connect(int(fd), sa)
		if errors.Is(err, unix.EINPROGRESS) {
			inProgress, err = true, nil
		}
		cerr = err
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("connect socket to %s: %w", server, err)
	}
	c, err := net.FileConn(file) // a dup: file's own fd closes with the defer
	if err != nil {
		return nil, fmt.Errorf("connect socket to %s: %w", server, err)
	}
	if !inProgress {
		return c, nil
	}
	if err := waitConnected(ctx, c); err != nil {
		c.Close()
		return nil, fmt.Errorf("connect socket to %s: %w", server, err)
	}
	return c, nil
}

// waitConnected waits for the connection c is making to complete.
func waitConnected(ctx context.Context, c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetWriteDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetWriteDeadline(time.Now()) })
	defer stop()
	defer c.SetWriteDeadline(time.Time{})
	var serr error
	// The status is checked before the first wait too: the connection may
	// have completed before the poller was armed, and an edge missed then
	// never comes again.
	err = rc.Write(func(fd uintptr) bool {
		soerr, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			serr = err
			return true
		}
		switch e := unix.Errno(soerr); e {
		case 0:
			if _, err := unix.Getpeername(int(fd)); err != nil {
				return false // still connecting: wait until writable
			}
			return true
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false
		default:
			serr = e
			return true
		}
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return serr
}
