// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nflog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Record is one NFLOG record.
type Record struct {
	// Prefix is the log rule's prefix (NFULA_PREFIX), without the trailing
	// NUL. Empty when the rule set none.
	Prefix string
	// Payload is the packet from its L3 header on, cut to the copy range.
	// It is the record's own copy; the receiver may keep it.
	Payload []byte
	// Time is the kernel's packet timestamp when the record carries one
	// (input and forward hooks), otherwise the time the record was read.
	Time time.Time
	// HwProtocol is the packet's link-layer protocol in host byte order
	// (0x0800 IPv4, 0x86dd IPv6); 0 if the record carried no packet header.
	HwProtocol uint16
	// Hook is the netfilter hook that logged the packet (1 input, 3 output).
	Hook uint8
	// Family is the record's netfilter family (2 IPv4, 10 IPv6).
	Family uint8
}

// Stats counts what a [Reader] has seen since it was created.
type Stats struct {
	// Records is the number of records delivered.
	Records uint64
	// ENOBUFS is the number of times the kernel reported that records were
	// dropped because the socket's receive buffer was full. Each report may
	// stand for several lost records.
	ENOBUFS uint64
	// Truncated is the number of datagrams larger than the read buffer.
	Truncated uint64
	// Malformed is the number of messages that could not be decoded.
	Malformed uint64
}

// readBufSize holds the largest record: a 65535-byte copy range plus
// headers and attributes.
const readBufSize = 1<<16 + 4096

// enobufsLogEvery rate-limits the ENOBUFS warning.
const enobufsLogEvery = 10 * time.Second

// Reader reads NFLOG records from a socket made by [Bind].
//
// [Reader.Run] must be called at most once. [Reader.Stats],
// [Reader.SetReadBuffer] and [Reader.Close] are safe to call from any
// goroutine at any time.
type Reader struct {
	f   *os.File
	rc  syscall.RawConn
	log *slog.Logger

	running   atomic.Bool
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	records, enobufs, truncated, malformed atomic.Uint64

	// Touched by Run's goroutine only.
	buf            []byte
	lastENOBUFSLog time.Time
	loggedENOBUFS  uint64
}

// NewReader returns a Reader for the NFLOG socket f and takes ownership of
// f: f is closed before NewReader returns (the Reader works on a duplicate
// of the descriptor, which it puts into non-blocking mode), also on error.
// log receives the Reader's diagnostics; nil discards them.
func NewReader(f *os.File, log *slog.Logger) (*Reader, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	nfd, err := dupNonblock(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("create nflog reader: %w", err)
	}
	r := &Reader{f: os.NewFile(uintptr(nfd), "nflog"), log: log}
	if r.rc, err = r.f.SyscallConn(); err != nil {
		r.f.Close()
		return nil, fmt.Errorf("create nflog reader: %w", err)
	}
	return r, nil
}

// dupNonblock returns a close-on-exec, non-blocking duplicate of f's
// descriptor. f may be in blocking mode (for example when it was made with
// os.NewFile from a descriptor received over a unix socket); the duplicate
// is what the runtime poller will wait on.
func dupNonblock(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl", derr)
	}
	domain, err := unix.GetsockoptInt(nfd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err == nil && domain != unix.AF_NETLINK {
		err = fmt.Errorf("socket domain %d is not AF_NETLINK", domain)
	}
	if err == nil {
		err = unix.SetNonblock(nfd, true)
	}
	if err != nil {
		unix.Close(nfd)
		return -1, err
	}
	return nfd, nil
}

// SetReadBuffer sets the socket's receive buffer (SO_RCVBUF; the kernel
// doubles the value and caps it at net.core.rmem_max). A larger buffer
// absorbs longer bursts before the kernel drops records with ENOBUFS.
func (r *Reader) SetReadBuffer(bytes int) error {
	var serr error
	if err := r.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, bytes)
	}); err != nil {
		return fmt.Errorf("set nflog read buffer: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("set nflog read buffer: %w", os.NewSyscallError("setsockopt", serr))
	}
	return nil
}

// Stats returns the Reader's counters.
func (r *Reader) Stats() Stats {
	return Stats{
		Records:   r.records.Load(),
		ENOBUFS:   r.enobufs.Load(),
		Truncated: r.truncated.Load(),
		Malformed: r.malformed.Load(),
	}
}

// Close closes the socket, which makes a running [Reader.Run] return. It is
// idempotent.
func (r *Reader) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		r.closeErr = r.f.Close()
	})
	return r.closeErr
}

// Run reads records and calls fn for each, on Run's goroutine, in the order
// the kernel sent them; fn must not block for long, or the kernel drops
// records (counted as ENOBUFS). ENOBUFS is counted, logged at most every
// 10 s and never ends the loop; undecodable messages are counted and
// skipped.
//
// Run returns when ctx is done (with ctx.Err()), when [Reader.Close] is
// called (with an error wrapping [os.ErrClosed]), or on a read error. It
// closes the socket before it returns and starts no goroutine that
// outlives it.
func (r *Reader) Run(ctx context.Context, fn func(Record)) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("run nflog reader: already running")
	}
	defer r.Close()
	stop := context.AfterFunc(ctx, func() {
		// A deadline in the past wakes the blocked read at once.
		_ = r.f.SetReadDeadline(time.Unix(1, 0))
	})
	defer stop()

	r.buf = make([]byte, readBufSize)
	for {
		n, truncated, err := r.recv()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if r.closed.Load() {
				// The poller reports "use of closed file", not os.ErrClosed.
				return fmt.Errorf("read nflog: %w", os.ErrClosed)
			}
			if errors.Is(err, unix.ENOBUFS) {
				r.noteENOBUFS()
				continue
			}
			return fmt.Errorf("read nflog: %w", err)
		}
		if truncated {
			r.truncated.Add(1)
			r.log.Warn("nflog datagram larger than read buffer, dropped", "bytes", n)
			continue
		}
		r.dispatch(r.buf[:n], fn)
	}
}

// recv reads one datagram into r.buf, waiting in the runtime poller.
func (r *Reader) recv() (n int, truncated bool, err error) {
	var rerr error
	err = r.rc.Read(func(fd uintptr) bool {
		for {
			var flags int
			n, _, flags, _, rerr = unix.Recvmsg(int(fd), r.buf, nil, unix.MSG_DONTWAIT)
			switch rerr {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			truncated = flags&unix.MSG_TRUNC != 0
			return true
		}
	})
	if err != nil {
		return 0, false, err
	}
	if rerr != nil {
		return 0, false, os.NewSyscallError("recvmsg", rerr)
	}
	return n, truncated, nil
}

func (r *Reader) noteENOBUFS() {
	total := r.enobufs.Add(1)
	now := time.Now()
	if !r.lastENOBUFSLog.IsZero() && now.Sub(r.lastENOBUFSLog) < enobufsLogEvery {
		return
	}
	r.log.Warn("nflog receive buffer overrun, records dropped",
		"enobufs_total", total, "enobufs_since_last_log", total-r.loggedENOBUFS)
	r.lastENOBUFSLog, r.loggedENOBUFS = now, total
}

// dispatch decodes the netlink messages in one datagram. Bytes left over
// after the last whole message, too few for a header, count as malformed.
func (r *Reader) dispatch(b []byte, fn func(Record)) {
	const hdrLen = 16
	if len(b) > 0 && len(b) < hdrLen {
		r.malformed.Add(1)
		r.log.Debug("nflog datagram shorter than a message header", "length", len(b))
		return
	}
	for len(b) >= hdrLen {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		al := (l + 3) &^ 3
		if l < hdrLen || al > len(b) {
			r.malformed.Add(1)
			r.log.Debug("nflog message length out of range", "length", l, "available", len(b))
			return
		}
		var m netlink.Message
		if err := m.UnmarshalBinary(b[:al]); err != nil {
			r.malformed.Add(1)
			r.log.Debug("decode nflog message", "error", err)
			return
		}
		b = b[al:]
		if len(b) > 0 && len(b) < hdrLen {
			r.malformed.Add(1)
			r.log.Debug("nflog datagram ends in a partial header", "length", len(b))
		}
		if m.Header.Type != netlink.HeaderType(nfnlSubsysULOG<<8|nfulnlMsgPacket) {
			continue // acknowledgements and the like
		}
		rec, err := decodeRecord(m.Data)
		if err != nil {
			r.malformed.Add(1)
			r.log.Debug("decode nflog record", "error", err)
			continue
		}
		r.records.Add(1)
		fn(rec)
	}
}

// decodeRecord decodes the body of an NFULNL_MSG_PACKET message: struct
// nfgenmsg followed by NFULA_* attributes.
func decodeRecord(b []byte) (Record, error) {
	if len(b) < 4 {
		return Record{}, fmt.Errorf("decode nfgenmsg: %d bytes: %w", len(b), ErrTruncated)
	}
	rec := Record{Family: b[0]}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return Record{}, fmt.Errorf("decode attributes: %w", err)
	}
	for ad.Next() {
		switch ad.Type() {
		case nfulaPacketHdr:
			ad.Do(func(v []byte) error {
				if len(v) < 3 {
					return fmt.Errorf("packet header of %d bytes", len(v))
				}
				rec.HwProtocol = binary.BigEndian.Uint16(v[0:2])
				rec.Hook = v[2]
				return nil
			})
		case nfulaTimestamp:
			ad.Do(func(v []byte) error {
				if len(v) < 16 {
					return fmt.Errorf("timestamp of %d bytes", len(v))
				}
				sec, usec := binary.BigEndian.Uint64(v[0:8]), binary.BigEndian.Uint64(v[8:16])
				if sec > 0 && sec < 1<<40 && usec < 1e6 {
					rec.Time = time.Unix(int64(sec), int64(usec)*1e3)
				}
				return nil
			})
		case nfulaPrefix:
			rec.Prefix = ad.String()
		case nfulaPayload:
			rec.Payload = ad.Bytes()
		}
	}
	if err := ad.Err(); err != nil {
		return Record{}, fmt.Errorf("decode attributes: %w", err)
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	return rec, nil
}
