// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package sd

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// sentStates is an injectable Notifier.Send.
type sentStates struct {
	mu     sync.Mutex
	states []string
	ch     chan string
	err    error
}

func (s *sentStates) send(state string) (bool, error) {
	s.mu.Lock()
	s.states = append(s.states, state)
	s.mu.Unlock()
	if s.ch != nil {
		s.ch <- state
	}
	return s.err == nil, s.err
}

func TestNotifierStates(t *testing.T) {
	tests := []struct {
		name string
		do   func(n *Notifier)
		want []string
	}{
		{"ready with status", func(n *Notifier) { n.Ready("listening") }, []string{"READY=1\nSTATUS=listening"}},
		{"ready without status", func(n *Notifier) { n.Ready("") }, []string{"READY=1"}},
		{"status", func(n *Notifier) { n.Status("2 subscribers, 1 pending") }, []string{"STATUS=2 subscribers, 1 pending"}},
		{"status newlines flattened", func(n *Notifier) { n.Status("a\nREADY=1\r") }, []string{"STATUS=a READY=1 "}},
		{"stopping", func(n *Notifier) { n.Stopping() }, []string{"STOPPING=1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sentStates{}
			tt.do(&Notifier{Send: s.send})
			if diff := cmp.Diff(tt.want, s.states); diff != "" {
				t.Fatalf("unexpected states (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNotifierLogsErrorOnce(t *testing.T) {
	var buf bytes.Buffer
	s := &sentStates{err: errors.New("connect: connection refused")}
	n := NewNotifier(slog.New(slog.NewTextHandler(&buf, nil)))
	n.Send = s.send
	n.Ready("x")
	n.Status("y")
	n.Stopping()
	if got := strings.Count(buf.String(), "systemd notification failed"); got != 1 {
		t.Fatalf("logged %d times, want once:\n%s", got, buf.String())
	}
	if len(s.states) != 3 {
		t.Fatalf("sent %d states, want 3 (errors must not stop later sends)", len(s.states))
	}
}

func TestNotifierZeroValueOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	var n Notifier // no logger: must not panic either
	n.Ready("x")
	n.Status("y")
	n.Stopping()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n.RunWatchdog(ctx)
}

func TestRunWatchdogInjected(t *testing.T) {
	t.Run("disabled returns at once without sending", func(t *testing.T) {
		s := &sentStates{}
		n := &Notifier{Send: s.send, WatchdogInterval: func() (time.Duration, error) { return 0, nil }}
		n.RunWatchdog(testutil.Context(t)) // would block forever if enabled
		if len(s.states) != 0 {
			t.Fatalf("sent %q, want nothing", s.states)
		}
	})
	t.Run("bad settings are logged and return", func(t *testing.T) {
		var buf bytes.Buffer
		n := &Notifier{
			Log:              slog.New(slog.NewTextHandler(&buf, nil)),
			WatchdogInterval: func() (time.Duration, error) { return 0, errors.New("WATCHDOG_USEC: bad") },
		}
		n.RunWatchdog(testutil.Context(t))
		if !strings.Contains(buf.String(), "WATCHDOG_USEC: bad") {
			t.Fatalf("error not logged: %q", buf.String())
		}
	})
	t.Run("pings until cancelled", func(t *testing.T) {
		s := &sentStates{ch: make(chan string)}
		n := &Notifier{Send: s.send, WatchdogInterval: func() (time.Duration, error) { return 2 * time.Millisecond, nil }}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); n.RunWatchdog(ctx) }()
		for range 3 {
			if got := <-s.ch; got != "WATCHDOG=1" {
				t.Fatalf("sent %q, want WATCHDOG=1", got)
			}
		}
		cancel()
		// Drain a ping that may be in flight, then wait for the return.
		for {
			select {
			case <-s.ch:
				continue
			case <-done:
				return
			}
		}
	})
}

// listenNotify creates a notification socket as systemd would and points
// NOTIFY_SOCKET at it.
func listenNotify(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen notify socket: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

func readDatagram(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifierRealSocket(t *testing.T) {
	c := listenNotify(t)
	n := NewNotifier(testutil.Logger(t))
	n.Ready("listening")
	n.Status("1 subscriber, 0 pending")
	n.Stopping()
	var got []string
	for range 3 {
		got = append(got, readDatagram(t, c))
	}
	want := []string{"READY=1\nSTATUS=listening", "STATUS=1 subscriber, 0 pending", "STOPPING=1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("unexpected datagrams (-want +got):\n%s", diff)
	}
}

func TestRunWatchdogRealSocket(t *testing.T) {
	c := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "20000") // 20 ms: pings every 10 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n := NewNotifier(testutil.Logger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.RunWatchdog(ctx) }()
	for range 3 {
		if got := readDatagram(t, c); got != "WATCHDOG=1" {
			t.Fatalf("got datagram %q, want WATCHDOG=1", got)
		}
	}
	cancel()
	<-done

	t.Run("other pid's watchdog is ignored", func(t *testing.T) {
		t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
		n.RunWatchdog(testutil.Context(t)) // returns at once
	})
}

func TestStoreFDs(t *testing.T) {
	dir := t.TempDir()
	addr := &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"}
	srv, err := net.ListenUnixgram("unixgram", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	t.Setenv("NOTIFY_SOCKET", addr.Name)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := StoreFDs("nflog", r, w); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 256), make([]byte, 256)
	n, oobn, _, _, err := srv.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "FDSTORE=1\nFDNAME=nflog" {
		t.Errorf("state %q", got)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages %v %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 2 {
		t.Fatalf("rights %v %v", fds, err)
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	if err := RemoveFDs("nflog"); err != nil {
		t.Fatal(err)
	}
	n, _, _, _, _ = srv.ReadMsgUnix(buf, oob)
	if got := string(buf[:n]); got != "FDSTOREREMOVE=1\nFDNAME=nflog" {
		t.Errorf("state %q", got)
	}
	for _, bad := range []string{"", "a:b", "with space", strings.Repeat("x", 256)} {
		if err := StoreFDs(bad, r); err == nil {
			t.Errorf("StoreFDs(%q) = nil error", bad)
		}
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := StoreFDs("x", r); !errors.Is(err, ErrNoStore) {
		t.Errorf("without NOTIFY_SOCKET: %v", err)
	}
}
