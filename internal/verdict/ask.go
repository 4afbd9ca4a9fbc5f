// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/netns"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
)

// Names of the ask endpoint's sockets in an Ask reply, in the order they
// are passed.
const (
	SockAsk4 = "tcp4"
	SockAsk6 = "tcp6"
)

// askListenBacklog is the listen backlog of the ask endpoint's sockets:
// connections wait in it while the hub restarts.
const askListenBacklog = 64

// openAskSockets creates the ask endpoint's listening sockets in the
// calling thread's network namespace (run it inside netns.Do): TCP on
// 127.0.0.1:port and, when the namespace has IPv6, [::1]:port.
func openAskSockets(port uint16) (names []string, files []*os.File, err error) {
	fail := func(err error) ([]string, []*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, nil, err
	}
	fd, err := askListener(unix.AF_INET, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port))
	if err != nil {
		return fail(err)
	}
	names, files = append(names, SockAsk4), append(files, os.NewFile(uintptr(fd), "clearance-ask-tcp4"))
	fd, err = askListener(unix.AF_INET6, netip.AddrPortFrom(netip.IPv6Loopback(), port))
	switch {
	case errors.Is(err, unix.EAFNOSUPPORT), errors.Is(err, unix.EADDRNOTAVAIL):
		// No IPv6 (or no ::1) in the namespace: IPv4 only.
	case err != nil:
		return fail(err)
	default:
		names, files = append(names, SockAsk6), append(files, os.NewFile(uintptr(fd), "clearance-ask-tcp6"))
	}
	return names, files, nil
}

func askListener(family int, ap netip.AddrPort) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("set IPV6_V6ONLY: %w", err)
		}
	}
	// SO_REUSEADDR: a hub restarted by hand (without its fd store) binds
	// again while connections of the old socket linger in TIME_WAIT.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("set SO_REUSEADDR: %w", err)
	}
	if err := bindAddr(fd, ap); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind tcp %v: %w", ap, err)
	}
	if err := unix.Listen(fd, askListenBacklog); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen tcp %v: %w", ap, err)
	}
	return fd, nil
}

// ask creates t's ask endpoint sockets in its namespace. The caller owns
// them.
func (s *Service) ask(t *target) ([]string, []*os.File, error) {
	if s.cfg.AskPort == 0 {
		return nil, nil, &firewallError{op: "ask", err: errors.New("the ask endpoint is turned off (ask.port: 0)")}
	}
	var names []string
	var files []*os.File
	err := netns.Do(int(t.ns.Fd()), func() error {
		var err error
		names, files, err = openAskSockets(s.cfg.AskPort)
		return err
	})
	if err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			err = fmt.Errorf("port %d is taken in the container's network namespace (by the container, or by the hub of "+
				"another container sharing it): %w", s.cfg.AskPort, err)
		}
		return nil, nil, &firewallError{op: "ask", err: err}
	}
	return names, files, nil
}

func (h *firewall1) Ask(ctx context.Context, c fw1.VarlinkCall, container string) error {
	t, err := h.s.resolve(&c.Call, container)
	if err != nil {
		return h.s.replyError(ctx, &c, "ask", container, err)
	}
	defer t.Close()
	names, files, err := h.s.ask(t)
	if err != nil {
		return h.s.replyError(ctx, &c, "ask", container, err)
	}
	defer func() { // the caller has its own copies once the reply is sent
		for _, f := range files {
			f.Close()
		}
	}()
	if c.IsOneway() {
		return nil
	}
	h.s.log.Info("ask endpoint sockets for "+container, "container", container, "port", h.s.cfg.AskPort,
		"sockets", strings.Join(names, ","))
	type reply struct {
		Port    int64    `json:"port"`
		Sockets []string `json:"sockets"`
	}
	return c.ReplyWithFDs(ctx, reply{Port: int64(h.s.cfg.AskPort), Sockets: names}, files)
}
