// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package varlinkapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// errTooLarge reports a message longer than the connection's limit. The
// oversized message has been read and discarded up to its terminating NUL,
// so the connection's framing is intact and later messages can be served.
var errTooLarge = errors.New("message too large")

const readChunk = 16 << 10

// conn is one server-side varlink connection: NUL-framed messages with a
// size limit, optional SCM_RIGHTS file descriptors, context-aware writes,
// and hang-up detection for streaming handlers.
//
// It implements varlink.ReadWriterContext, varlink.FDReadWriter and
// varlink.GetNetConn, so handlers see it as Call.Conn.
//
// Reads happen either in the serve loop (next) or, once a handler asked
// for [conn.Hangup], in a background reader; never both at once, because
// the serve loop is blocked in the handler while the background reader runs
// and the connection is closed when that handler returns.
type conn struct {
	nc  net.Conn
	uc  *net.UnixConn // nil when nc is not a Unix socket
	max int

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	frames  []frame    // complete messages not yet served
	partial []byte     // the message being received
	fds     []*os.File // fds received for the message being received
	discard bool       // skipping the rest of an oversized message
	readErr error      // the socket's terminal read error, once seen
	chunk   []byte     // read buffer of next, kept for the connection's life

	hangupOnce    sync.Once
	hangupStarted atomic.Bool
	gone          chan struct{} // closed when the peer hung up (after Hangup)
}

func newConn(nc net.Conn, max int) *conn {
	c := &conn{nc: nc, max: max, gone: make(chan struct{})}
	if uc, ok := nc.(*net.UnixConn); ok {
		c.uc = uc
	}
	return c
}

// NetConn returns the underlying connection, for peer credentials.
func (c *conn) NetConn() net.Conn { return c.nc }

// CanPassFDs reports whether file descriptors can travel on this connection.
func (c *conn) CanPassFDs() bool { return c.uc != nil }

// readOnce reads one chunk from the socket, collecting any SCM_RIGHTS fds.
func (c *conn) readOnce(p []byte) (int, []*os.File, error) {
	if c.uc == nil {
		n, err := c.nc.Read(p)
		return n, nil, err
	}
	oob := make([]byte, unix.CmsgSpace(16*4))
	n, oobn, _, _, err := c.uc.ReadMsgUnix(p, oob)
	n, oobn = max(n, 0), max(oobn, 0)
	var files []*os.File
	if oobn > 0 {
		files = parseRights(oob[:oobn])
	}
	if n == 0 && err == nil && oobn == 0 {
		err = io.EOF
	}
	return n, files, err
}

func parseRights(oob []byte) []*os.File {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "varlink-fd"))
		}
	}
	return files
}

// frame is one received message, or the error that stands in its place.
type frame struct {
	msg []byte
	fds []*os.File
	err error
}

// next returns the next NUL-terminated message without its terminator,
// with the fds that arrived with it. A message longer than the limit is
// consumed and reported as errTooLarge. When deadline is not zero and no
// complete message has arrived by then, it fails with an error wrapping
// [os.ErrDeadlineExceeded] (and the connection is no longer usable).
func (c *conn) next(ctx context.Context, deadline time.Time) ([]byte, []*os.File, error) {
	// The deadline is set before the cancellation hook is registered, so
	// a context that is already done still wins.
	c.nc.SetReadDeadline(deadline)
	defer c.nc.SetReadDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { c.nc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if c.chunk == nil {
		c.chunk = make([]byte, readChunk)
	}
	chunk := c.chunk
	for {
		c.mu.Lock()
		if len(c.frames) > 0 {
			f := c.frames[0]
			c.frames = c.frames[1:]
			c.mu.Unlock()
			return f.msg, f.fds, f.err
		}
		if err := c.readErr; err != nil {
			c.mu.Unlock()
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			c.closeFDs()
			return nil, nil, err
		}
		c.mu.Unlock()
		n, files, err := c.readOnce(chunk)
		c.mu.Lock()
		c.fds = append(c.fds, files...)
		c.appendLocked(chunk[:n])
		c.readErr = err
		c.mu.Unlock()
	}
}

// appendLocked splits freshly read bytes into frames. Bytes of an oversized
// message are dropped as they arrive, so memory stays bounded by the limit.
func (c *conn) appendLocked(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			if c.discard {
				return
			}
			if len(c.partial)+len(p) > c.max {
				c.partial = nil
				c.discard = true
				return
			}
			c.partial = append(c.partial, p...)
			return
		}
		switch {
		case c.discard:
			c.frames = append(c.frames, frame{err: errTooLarge})
			c.discard = false
		case len(c.partial)+i > c.max:
			c.frames = append(c.frames, frame{err: errTooLarge})
		default:
			msg := append(bytes.Clone(c.partial), p[:i]...)
			c.frames = append(c.frames, frame{msg: msg, fds: c.fds})
			c.fds = nil
		}
		c.partial = c.partial[:0]
		p = p[i+1:]
	}
}

func (c *conn) closeFDs() {
	c.mu.Lock()
	fds := c.fds
	c.fds = nil
	for _, f := range c.frames {
		fds = append(fds, f.fds...)
	}
	c.frames = nil
	c.mu.Unlock()
	closeFiles(fds)
}

func closeFiles(fds []*os.File) {
	for _, f := range fds {
		f.Close()
	}
}

// Hangup returns a channel closed when the peer closes its end. The first
// call starts a background reader; from then on the connection serves no
// further requests and is closed when the current handler returns. Bytes
// the peer sends meanwhile are read and dropped (a varlink peer may not
// pipeline calls behind a streaming call).
func (c *conn) Hangup() <-chan struct{} {
	c.hangupOnce.Do(func() {
		c.hangupStarted.Store(true)
		go func() {
			defer close(c.gone)
			b := make([]byte, 512)
			for {
				if _, _, err := c.readOnce(b); err != nil {
					return
				}
			}
		}()
	})
	return c.gone
}

// watching reports whether a handler asked for hang-up detection.
func (c *conn) watching() bool { return c.hangupStarted.Load() }

// Write writes b completely, giving up when ctx ends.
func (c *conn) Write(ctx context.Context, b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	stop := context.AfterFunc(ctx, func() { c.nc.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	n, err := c.nc.Write(b)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return n, err
}

// WriteWithFDs writes b with fds attached as SCM_RIGHTS to its first byte.
// The caller keeps ownership of fds. Like Write, it gives up when ctx
// ends and then returns ctx's error.
func (c *conn) WriteWithFDs(ctx context.Context, b []byte, fds []*os.File) (int, error) {
	if len(fds) == 0 {
		return c.Write(ctx, b)
	}
	if c.uc == nil {
		return 0, fmt.Errorf("write with fds: not a unix socket")
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	stop := context.AfterFunc(ctx, func() { c.nc.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	raw := make([]int, len(fds))
	for i, f := range fds {
		raw[i] = int(f.Fd())
	}
	n, _, err := c.uc.WriteMsgUnix(b, unix.UnixRights(raw...), nil)
	for err == nil && n < len(b) {
		var m int
		m, err = c.nc.Write(b[n:])
		n += m
	}
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return n, err
}

// ReadBytes returns the next message including its delimiter. The varlink
// library only calls it for protocol upgrades, which clearance never
// offers; it is implemented for completeness.
func (c *conn) ReadBytes(ctx context.Context, delim byte) ([]byte, error) {
	if delim != 0 {
		return nil, fmt.Errorf("read bytes: unsupported delimiter %q", delim)
	}
	msg, fds, err := c.next(ctx, time.Time{})
	closeFiles(fds)
	if err != nil {
		return nil, err
	}
	return append(msg, 0), nil
}

// ReadBytesWithFDs is ReadBytes returning the fds received with the message.
func (c *conn) ReadBytesWithFDs(ctx context.Context, delim byte) ([]byte, []*os.File, error) {
	if delim != 0 {
		return nil, nil, fmt.Errorf("read bytes: unsupported delimiter %q", delim)
	}
	msg, fds, err := c.next(ctx, time.Time{})
	if err != nil {
		return nil, nil, err
	}
	return append(msg, 0), fds, nil
}

// Read reads raw bytes from the socket. The varlink library only calls it
// for protocol upgrades, which clearance never offers.
func (c *conn) Read(ctx context.Context, p []byte) (int, error) {
	stop := context.AfterFunc(ctx, func() { c.nc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	return c.nc.Read(p)
}

// Close closes the connection and any unclaimed fds.
func (c *conn) Close() error {
	c.closeFDs()
	return c.nc.Close()
}
