// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nflog

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nfnetlink_log constants (linux/netfilter/nfnetlink_log.h).
const (
	nfnlSubsysULOG = 4

	nfulnlMsgPacket = 0
	nfulnlMsgConfig = 1

	nfulaCfgCmd     = 1
	nfulaCfgMode    = 2
	nfulaCfgQThresh = 5
	nfulaCfgFlags   = 6

	nfulnlCfgCmdBind = 1

	nfulnlCopyPacket = 2

	nfulaPacketHdr = 1
	nfulaTimestamp = 3
	nfulaPayload   = 9
	nfulaPrefix    = 10
)

// DefaultCopyRange is the copy range [Bind] uses when given 0: enough for
// IPv4 or IPv6 with extension headers plus the transport ports, and for
// small DNS replies.
const DefaultCopyRange = 256

// bindTimeout bounds the wait for the kernel's acknowledgements in [Bind].
const bindTimeout = 5 * time.Second

// Bind creates a netfilter netlink socket in the calling thread's network
// namespace, binds it to NFLOG group, and configures the group: copy mode
// NFULNL_COPY_PACKET with copyRange bytes of each packet (0 means
// [DefaultCopyRange]), queue threshold 1 (every record is sent at once) and
// no flags. Every command is acknowledged by the kernel, or Bind fails.
//
// The caller must run Bind on a goroutine locked to an OS thread that has
// entered the target namespace. The returned socket keeps receiving that
// namespace's records wherever it is used afterwards, so it may be read on
// any goroutine or passed to another process (SCM_RIGHTS). The caller owns
// the file and must close it; closing the last reference unbinds the group.
// The file is close-on-exec and in non-blocking mode.
//
// Records that the kernel sends before the last acknowledgement arrives (a
// busy namespace while the group is being bound) are discarded. Bind fails
// with an error wrapping [unix.EPERM] both when the caller lacks
// CAP_NET_ADMIN over the namespace and when another socket, still open, has
// bound the group in this namespace (the kernel does not tell them apart).
func Bind(group uint16, copyRange uint16) (*os.File, error) {
	if copyRange == 0 {
		copyRange = DefaultCopyRange
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("bind nflog group %d: dial netlink: %w", group, err)
	}
	defer c.Close()
	if err := c.SetReadDeadline(time.Now().Add(bindTimeout)); err != nil {
		return nil, fmt.Errorf("bind nflog group %d: set deadline: %w", group, err)
	}

	mode := make([]byte, 6) // struct nfulnl_msg_config_mode
	binary.BigEndian.PutUint32(mode[0:4], uint32(copyRange))
	mode[4] = nfulnlCopyPacket
	qthresh := binary.BigEndian.AppendUint32(nil, 1)
	flags := binary.BigEndian.AppendUint16(nil, 0)

	steps := []struct {
		what  string
		attrs []netlink.Attribute
	}{
		{"bind", []netlink.Attribute{{Type: nfulaCfgCmd, Data: []byte{nfulnlCfgCmdBind}}}},
		{"configure", []netlink.Attribute{
			{Type: nfulaCfgMode, Data: mode},
			{Type: nfulaCfgQThresh, Data: qthresh},
			{Type: nfulaCfgFlags, Data: flags},
		}},
	}
	for _, s := range steps {
		if err := configure(c, group, s.attrs); err != nil {
			return nil, fmt.Errorf("bind nflog group %d: %s: %w", group, s.what, err)
		}
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("bind nflog group %d: clear deadline: %w", group, err)
	}

	f, err := dupFile(c, fmt.Sprintf("nflog:%d", group))
	if err != nil {
		return nil, fmt.Errorf("bind nflog group %d: %w", group, err)
	}
	return f, nil
}

// configure sends one NFULNL_MSG_CONFIG message for group and waits for its
// acknowledgement, skipping any packet records that arrive first.
func configure(c *netlink.Conn, group uint16, attrs []netlink.Attribute) error {
	body, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return fmt.Errorf("encode attributes: %w", err)
	}
	req, err := c.Send(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(nfnlSubsysULOG<<8 | nfulnlMsgConfig),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: append(nfgenmsg(unix.AF_UNSPEC, group), body...),
	})
	if err != nil {
		return err
	}
	for {
		// Receive turns an error acknowledgement into an *netlink.OpError
		// whose Err is the errno; an error for this request is the only
		// kind the kernel can send on this fresh socket.
		msgs, err := c.Receive()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == netlink.Error && m.Header.Sequence == req.Header.Sequence {
				return nil
			}
		}
	}
}

// nfgenmsg encodes struct nfgenmsg: family, version, resource id (the group).
func nfgenmsg(family uint8, group uint16) []byte {
	return binary.BigEndian.AppendUint16([]byte{family, unix.NFNETLINK_V0}, group)
}

// dupFile returns a close-on-exec duplicate of c's socket as an *os.File.
func dupFile(c *netlink.Conn, name string) (*os.File, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("raw conn: %w", err)
	}
	var (
		nfd  int
		derr error
	)
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, fmt.Errorf("raw conn: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("dup socket: %w", os.NewSyscallError("fcntl", derr))
	}
	// The duplicate shares the open file description, which the netlink
	// package has put into non-blocking mode; os.NewFile then registers the
	// file with the runtime poller.
	return os.NewFile(uintptr(nfd), name), nil
}
