// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/netns"
)

// Names of the forwarder's sockets in a Forwarder reply, in the order
// they are passed.
const (
	SockUDP4 = "udp4"
	SockTCP4 = "tcp4"
	SockUDP6 = "udp6"
	SockTCP6 = "tcp6"
	SockUp4  = "up4"
	SockUp6  = "up6"
)

// forwarderListenBacklog is the listen backlog of the TCP listeners.
const forwarderListenBacklog = 64

// maxUpstreamTCP bounds the sockets of one UpstreamTCP call.
const maxUpstreamTCP = 16

// forwarderSockets is the socket set of one DNS forwarder.
type forwarderSockets struct {
	port  uint16
	names []string
	files []*os.File
}

func (fs *forwarderSockets) close() {
	for _, f := range fs.files {
		f.Close()
	}
	fs.files, fs.names = nil, nil
}

func (fs *forwarderSockets) add(name string, fd int) {
	fs.names = append(fs.names, name)
	fs.files = append(fs.files, os.NewFile(uintptr(fd), "clearance-dns-"+name))
}

// openForwarderSockets creates the forwarder's sockets in the calling
// thread's network namespace (run it inside netns.Do): UDP and listening
// TCP on 127.0.0.1 and, when the namespace has IPv6, ::1, all at one port
// the kernel picks, and one unconnected upstream UDP socket per family.
// Every socket carries mark. It retries a few times when the port the
// kernel picked for UDP is taken for TCP or on ::1.
func openForwarderSockets(mark uint32) (*forwarderSockets, error) {
	var last error
	for range 8 {
		fs, err := tryForwarderSockets(mark)
		if err == nil {
			return fs, nil
		}
		last = err
		if !errors.Is(err, unix.EADDRINUSE) {
			break
		}
	}
	return nil, last
}

func tryForwarderSockets(mark uint32) (*forwarderSockets, error) {
	fs := &forwarderSockets{}
	fail := func(err error) (*forwarderSockets, error) { fs.close(); return nil, err }
	lo4 := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0)
	fd, err := markedSocket(unix.AF_INET, unix.SOCK_DGRAM, mark)
	if err != nil {
		return fail(err)
	}
	fs.add(SockUDP4, fd)
	if err := bindAddr(fd, lo4); err != nil {
		return fail(fmt.Errorf("bind udp 127.0.0.1: %w", err))
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail(fmt.Errorf("getsockname: %w", err))
	}
	fs.port = uint16(sa.(*unix.SockaddrInet4).Port)
	if fd, err = listenTCP(unix.AF_INET, netip.AddrPortFrom(lo4.Addr(), fs.port), mark); err != nil {
		return fail(err)
	}
	fs.add(SockTCP4, fd)

	lo6 := netip.AddrPortFrom(netip.IPv6Loopback(), fs.port)
	v6 := true
	fd, err = markedSocket(unix.AF_INET6, unix.SOCK_DGRAM, mark)
	switch {
	case errors.Is(err, unix.EAFNOSUPPORT):
		v6 = false
	case err != nil:
		return fail(err)
	default:
		err = bindAddr(fd, lo6)
		switch {
		case errors.Is(err, unix.EADDRNOTAVAIL):
			// No ::1 (IPv6 disabled in the namespace): IPv4 only.
			unix.Close(fd)
			v6 = false
		case err != nil:
			unix.Close(fd)
			return fail(fmt.Errorf("bind udp [::1]:%d: %w", fs.port, err))
		default:
			fs.add(SockUDP6, fd)
		}
	}
	if v6 {
		if fd, err = listenTCP(unix.AF_INET6, lo6, mark); err != nil {
			return fail(err)
		}
		fs.add(SockTCP6, fd)
	}

	if fd, err = markedSocket(unix.AF_INET, unix.SOCK_DGRAM, mark); err != nil {
		return fail(err)
	}
	fs.add(SockUp4, fd)
	if err := bindAddr(fd, netip.AddrPortFrom(netip.IPv4Unspecified(), 0)); err != nil {
		return fail(fmt.Errorf("bind upstream udp: %w", err))
	}
	if v6 {
		if fd, err = markedSocket(unix.AF_INET6, unix.SOCK_DGRAM, mark); err != nil {
			return fail(err)
		}
		fs.add(SockUp6, fd)
		if err := bindAddr(fd, netip.AddrPortFrom(netip.IPv6Unspecified(), 0)); err != nil {
			return fail(fmt.Errorf("bind upstream udp6: %w", err))
		}
	}
	return fs, nil
}

// openUpstreamTCP creates n unconnected, marked TCP sockets of family
// (unix.AF_INET or AF_INET6) in the calling thread's namespace.
func openUpstreamTCP(family, n int, mark uint32) ([]*os.File, error) {
	var out []*os.File
	for range n {
		fd, err := markedSocket(family, unix.SOCK_STREAM, mark)
		if err != nil {
			for _, f := range out {
				f.Close()
			}
			return nil, err
		}
		out = append(out, os.NewFile(uintptr(fd), "clearance-dns-tcp"))
	}
	return out, nil
}

// markedSocket creates a non-blocking, close-on-exec socket with SO_MARK.
func markedSocket(family, typ int, mark uint32) (int, error) {
	fd, err := unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("set SO_MARK: %w", err)
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("set IPV6_V6ONLY: %w", err)
		}
	}
	return fd, nil
}

func listenTCP(family int, ap netip.AddrPort, mark uint32) (int, error) {
	fd, err := markedSocket(family, unix.SOCK_STREAM, mark)
	if err != nil {
		return -1, err
	}
	if err := bindAddr(fd, ap); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind tcp %v: %w", ap, err)
	}
	if err := unix.Listen(fd, forwarderListenBacklog); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen tcp %v: %w", ap, err)
	}
	return fd, nil
}

func bindAddr(fd int, ap netip.AddrPort) error {
	if ap.Addr().Is4() {
		return unix.Bind(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())})
	}
	return unix.Bind(fd, &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())})
}

// forwarder creates t's forwarder sockets in its namespace and points the
// ruleset's DNS redirect at their port. The caller owns the sockets.
func (s *Service) forwarder(t *target) (*forwarderSockets, error) {
	if s.cfg.Mode != ModeBuiltin {
		return nil, &firewallError{op: "forwarder", err: errors.New("the DNS forwarder needs the built-in ruleset")}
	}
	var fs *forwarderSockets
	err := netns.Do(int(t.ns.Fd()), func() error {
		var err error
		fs, err = openForwarderSockets(s.cfg.dnsMark())
		return err
	})
	if err != nil {
		return nil, &firewallError{op: "forwarder", err: err}
	}
	fw, release, err := s.openFirewall(t)
	if err != nil {
		fs.close()
		return nil, err
	}
	defer release()
	if err := fw.SetDNSPort(fs.port, s.cfg.dnsMark()); err != nil {
		fs.close()
		return nil, s.failed(t, &firewallError{op: "forwarder", err: err})
	}
	return fs, nil
}

// upstreamTCP creates n marked TCP sockets of family in t's namespace.
func (s *Service) upstreamTCP(t *target, family, n int) ([]*os.File, error) {
	if s.cfg.Mode != ModeBuiltin {
		return nil, &firewallError{op: "upstream-tcp", err: errors.New("the DNS forwarder needs the built-in ruleset")}
	}
	var out []*os.File
	err := netns.Do(int(t.ns.Fd()), func() error {
		var err error
		out, err = openUpstreamTCP(family, n, s.cfg.dnsMark())
		return err
	})
	if err != nil {
		return nil, &firewallError{op: "upstream-tcp", err: err}
	}
	return out, nil
}
