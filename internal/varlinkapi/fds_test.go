// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package varlinkapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketPair returns the two ends of a kernel AF_UNIX stream socket pair
// as *net.UnixConn, closed when the test ends.
func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
		t.Cleanup(func() { c.Close() })
	}
	return conns[0], conns[1]
}

// pipe returns an os.Pipe closed when the test ends.
func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// sameFile reports whether a and b are the same open file description's
// inode (a received fd is a new number for the sender's file).
func sameFile(t *testing.T, a, b *os.File) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	if err := unix.Fstat(int(a.Fd()), &sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(int(b.Fd()), &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// closeOnExec reports whether f has FD_CLOEXEC set.
func closeOnExec(t *testing.T, f *os.File) bool {
	t.Helper()
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	return flags&unix.FD_CLOEXEC != 0
}

// writeEndClosed reports whether every write end of the pipe whose read
// end is r is closed: a read then sees EOF instead of blocking.
func writeEndClosed(t *testing.T, r *os.File) bool {
	t.Helper()
	r.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err := r.Read(make([]byte, 1))
	return errors.Is(err, io.EOF)
}

func TestParseRights(t *testing.T) {
	r1, w1 := pipe(t)
	r2, _ := pipe(t)

	// The fds a control message carries are the receiver's, so dup them
	// as the kernel would.
	dup := func(f *os.File) int {
		fd, err := unix.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	files := parseRights(unix.UnixRights(dup(w1), dup(r2)))
	defer closeFiles(files)
	if len(files) != 2 {
		t.Fatalf("parseRights of two fds: %d files", len(files))
	}
	if !sameFile(t, files[0], w1) || !sameFile(t, files[1], r2) {
		t.Errorf("parseRights files are not the fds that were sent")
	}
	for i, f := range files {
		if !closeOnExec(t, f) {
			t.Errorf("file %d lacks FD_CLOEXEC", i)
		}
	}
	// The received write end is a working writer on the sender's pipe.
	if _, err := files[0].Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if b := make([]byte, 1); func() bool { n, _ := r1.Read(b); return n == 1 && b[0] == 'x' }() == false {
		t.Errorf("the byte written through the received fd did not arrive")
	}

	// Credentials next to rights: only the rights become files.
	creds := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())})
	mixed := parseRights(append(creds, unix.UnixRights(dup(w1))...))
	defer closeFiles(mixed)
	if len(mixed) != 1 || !sameFile(t, mixed[0], w1) {
		t.Errorf("parseRights of credentials then one fd: %d files", len(mixed))
	}

	for _, tt := range []struct {
		name string
		oob  []byte
	}{
		{"credentials only", creds},
		{"truncated header", unix.UnixRights(0)[:8]},
		{"length beyond the buffer", func() []byte {
			b := unix.UnixRights(0)
			h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
			h.SetLen(len(b) + 64)
			return b
		}()},
		{"empty", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if files := parseRights(tt.oob); len(files) != 0 {
				closeFiles(files)
				t.Errorf("parseRights(%x) = %d files, want none", tt.oob, len(files))
			}
		})
	}
}

func TestWriteWithFDs(t *testing.T) {
	a, b := socketPair(t)
	sender, receiver := newConn(a, 8<<20), newConn(b, 8<<20)
	ctx := context.Background()
	if !sender.CanPassFDs() || sender.NetConn() != net.Conn(a) {
		t.Fatalf("a Unix socket conn: CanPassFDs %v, NetConn %v", sender.CanPassFDs(), sender.NetConn())
	}

	r, w := pipe(t)
	if n, err := sender.WriteWithFDs(ctx, []byte("first\x00"), []*os.File{w, r}); err != nil || n != 6 {
		t.Fatalf("WriteWithFDs = %d, %v", n, err)
	}
	// No fds: a plain write.
	if n, err := sender.WriteWithFDs(ctx, []byte("second\x00"), nil); err != nil || n != 7 {
		t.Fatalf("WriteWithFDs without fds = %d, %v", n, err)
	}
	msg, fds, err := receiver.ReadBytesWithFDs(ctx, 0)
	if err != nil || string(msg) != "first\x00" || len(fds) != 2 {
		t.Fatalf("ReadBytesWithFDs = %q, %d fds, %v", msg, len(fds), err)
	}
	defer closeFiles(fds)
	if !sameFile(t, fds[0], w) || !sameFile(t, fds[1], r) {
		t.Errorf("received fds are not the pipe's ends")
	}
	// The caller keeps its fds: they are still open after the write.
	if _, err := w.Write([]byte("y")); err != nil {
		t.Errorf("the sender's fd after WriteWithFDs: %v", err)
	}
	msg, fds2, err := receiver.ReadBytesWithFDs(ctx, 0)
	if err != nil || string(msg) != "second\x00" || len(fds2) != 0 {
		t.Fatalf("second message = %q, %d fds, %v", msg, len(fds2), err)
	}

	// A message larger than one write: the fds ride on its first bytes
	// and the rest follows.
	big := append(bytes.Repeat([]byte("z"), 4<<20), 0)
	done := make(chan error, 1)
	go func() {
		n, err := sender.WriteWithFDs(ctx, big, []*os.File{w})
		if err == nil && n != len(big) {
			err = errors.New("short write")
		}
		done <- err
	}()
	msg, fds3, err := receiver.ReadBytesWithFDs(ctx, 0)
	if err != nil || !bytes.Equal(msg, big) || len(fds3) != 1 {
		t.Fatalf("large message: %d bytes (want %d), %d fds, %v", len(msg), len(big), len(fds3), err)
	}
	closeFiles(fds3)
	if err := <-done; err != nil {
		t.Fatalf("large WriteWithFDs: %v", err)
	}

	if _, _, err := receiver.ReadBytesWithFDs(ctx, '\n'); err == nil {
		t.Errorf("ReadBytesWithFDs with delimiter '\\n' succeeded")
	}
}

func TestWriteWithFDsNotUnix(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := newConn(a, 1024)
	if c.CanPassFDs() {
		t.Errorf("CanPassFDs on a net.Pipe")
	}
	_, w := pipe(t)
	if _, err := c.WriteWithFDs(context.Background(), []byte("x\x00"), []*os.File{w}); err == nil {
		t.Fatal("WriteWithFDs with fds on a net.Pipe succeeded")
	}
}

// TestWriteWithFDsContext: a write the peer never reads gives up when its
// context ends, with the context's error.
func TestWriteWithFDsContext(t *testing.T) {
	a, _ := socketPair(t)
	c := newConn(a, 1024)
	_, w := pipe(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	n, err := c.WriteWithFDs(ctx, make([]byte, 64<<20), []*os.File{w})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WriteWithFDs to a peer that never reads = %d, %v; want context.DeadlineExceeded", n, err)
	}
}

// TestReadBytesClosesFDs: ReadBytes, for callers that take no fds, closes
// the ones that came with the message, and Close closes those of messages
// never read.
func TestReadBytesClosesFDs(t *testing.T) {
	a, b := socketPair(t)
	sender, receiver := newConn(a, 1024), newConn(b, 1024)
	ctx := context.Background()
	r1, w1 := pipe(t)
	r2, w2 := pipe(t)
	if _, err := sender.WriteWithFDs(ctx, []byte("one\x00"), []*os.File{w1}); err != nil {
		t.Fatal(err)
	}
	if _, err := sender.WriteWithFDs(ctx, []byte("two\x00"), []*os.File{w2}); err != nil {
		t.Fatal(err)
	}
	w1.Close()
	w2.Close()

	msg, err := receiver.ReadBytes(ctx, 0)
	if err != nil || string(msg) != "one\x00" {
		t.Fatalf("ReadBytes = %q, %v", msg, err)
	}
	if !writeEndClosed(t, r1) {
		t.Errorf("ReadBytes kept the fd that came with the message open")
	}
	if _, err := receiver.ReadBytes(ctx, 'x'); err == nil {
		t.Errorf("ReadBytes with delimiter 'x' succeeded")
	}
	// "two" and its fd may already sit in the receive queue or still be in
	// the socket; either way Close must not leak the fd it took.
	receiver.mu.Lock()
	queued := len(receiver.frames)
	receiver.mu.Unlock()
	if queued == 0 {
		// Pull it into the frame queue without claiming it.
		n, files, err := receiver.readOnce(receiver.chunk)
		if err != nil {
			t.Fatal(err)
		}
		receiver.mu.Lock()
		receiver.fds = append(receiver.fds, files...)
		receiver.appendLocked(receiver.chunk[:n])
		receiver.mu.Unlock()
	}
	receiver.Close()
	if !writeEndClosed(t, r2) {
		t.Errorf("Close kept the fd of an unread message open")
	}
}

// TestConnRead: the raw Read passes bytes through and gives up with its
// context.
func TestConnRead(t *testing.T) {
	a, b := socketPair(t)
	c := newConn(b, 1024)
	if _, err := a.Write([]byte("raw")); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 8)
	n, err := c.Read(context.Background(), p)
	if err != nil || string(p[:n]) != "raw" {
		t.Fatalf("Read = %q, %v", p[:n], err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Read(ctx, p); err == nil {
		t.Fatal("Read with a cancelled context and nothing to read succeeded")
	}
}

// TestHangup: the channel closes when the peer closes its end, not before,
// and bytes the peer sends meanwhile are dropped rather than served.
func TestHangup(t *testing.T) {
	a, b := socketPair(t)
	c := newConn(b, 1024)
	gone := c.Hangup()
	if c.Hangup() != gone || !c.watching() {
		t.Fatal("a second Hangup returned another channel, or watching is false")
	}
	if _, err := a.Write([]byte("pipelined\x00")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gone:
		t.Fatal("hang-up reported while the peer is connected")
	case <-time.After(100 * time.Millisecond):
	}
	a.Close()
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("no hang-up 10 s after the peer closed")
	}
}
