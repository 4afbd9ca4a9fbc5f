// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package notifytest is test support for code that shows desktop
// notifications: a private dbus-daemon per test ([StartBus]) and a
// recording fake org.freedesktop.Notifications server ([NewServer]) that can
// click buttons, dismiss popups and restart.
//
// Everything started here is stopped in tb.Cleanup.
package notifytest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

const (
	busName   = "org.freedesktop.Notifications"
	objPath   = dbus.ObjectPath("/org/freedesktop/Notifications")
	ifaceName = "org.freedesktop.Notifications"
)

// Bus is a private dbus-daemon started by [NewBus] or [LaunchBus]. Its
// methods are safe for concurrent use.
type Bus struct {
	// Addr is the bus address, for dbus.Connect or
	// DBUS_SESSION_BUS_ADDRESS. It names the socket path only (no guid=),
	// so it stays valid across [Bus.Restart].
	Addr string

	bin, conf string
	stderr    *testutil.Buffer

	mu  sync.Mutex
	cmd *exec.Cmd // nil while stopped
}

// StartBus starts a private session dbus-daemon for tb and returns its
// address. The daemon is killed in tb.Cleanup.
func StartBus(tb testing.TB) string { return NewBus(tb).Addr }

// NewBus starts a private session dbus-daemon
// (dbus-daemon --nofork --nopidfile --print-address=1 with a minimal
// config) listening on a socket in a temporary directory. It fails tb (or
// skips outside CI) when dbus-daemon is not installed.
func NewBus(tb testing.TB) *Bus {
	tb.Helper()
	testutil.RequireTool(tb, "dbus-daemon")
	b, err := LaunchBus(tb.TempDir())
	if b != nil {
		tb.Cleanup(func() {
			b.Stop()
			if tb.Failed() {
				tb.Logf("dbus-daemon stderr:\n%s", b.stderr.String())
			}
		})
	}
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// LaunchBus starts a private session dbus-daemon with its socket and
// configuration in dir, for harnesses without a testing.TB (the
// benchmarks): the caller must call [Bus.Stop]. On error the returned Bus,
// if not nil, must be stopped too.
func LaunchBus(dir string) (*Bus, error) {
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "bus")
	conf := filepath.Join(dir, "session.conf")
	if err := os.WriteFile(conf, BusConfig(sock), 0o600); err != nil {
		return nil, fmt.Errorf("write bus config: %w", err)
	}
	b := &Bus{Addr: "unix:path=" + sock, bin: bin, conf: conf, stderr: &testutil.Buffer{}}
	return b, b.start()
}

// start runs the daemon and waits until it prints its address (it
// listens by then); b.mu must not be held.
func (b *Bus) start() error {
	cmd := exec.Command(b.bin, "--config-file="+b.conf, "--nofork", "--nopidfile", "--print-address=1")
	cmd.Stderr = b.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("dbus-daemon stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dbus-daemon: %w", err)
	}
	b.mu.Lock()
	b.cmd = cmd
	b.mu.Unlock()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "unix:") {
		return fmt.Errorf("read dbus-daemon address (%q): %w", line, err)
	}
	return nil
}

// Stop kills the dbus-daemon and waits for it: every connection to the
// bus breaks. It is idempotent.
func (b *Bus) Stop() {
	b.mu.Lock()
	cmd := b.cmd
	b.cmd = nil
	b.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// Restart kills the dbus-daemon, as when a session bus dies, and starts
// a new one at the same address: every connection breaks, and the new bus
// has no names owned until clients take them again (a [Server] needs
// [Server.Start]).
func (b *Bus) Restart() error {
	b.Stop()
	return b.start()
}

// Call is one method call the fake server received.
type Call struct {
	Method string // "Notify" or "CloseNotification"
	Sender string // unique name of the caller

	// Notify arguments.
	App        string
	ReplacesID uint32
	Icon       string
	Summary    string
	Body       string
	Actions    []string // flat key,label list as sent
	Hints      map[string]dbus.Variant
	Timeout    int32

	// ID is the id Notify returned, or the id CloseNotification named.
	ID uint32
}

// Hint returns the Go value of hint k and whether it was sent.
func (c Call) Hint(k string) (any, bool) {
	v, ok := c.Hints[k]
	if !ok {
		return nil, false
	}
	return v.Value(), true
}

// Server is a fake notification server exporting exactly Notify,
// CloseNotification, GetCapabilities and GetServerInformation. Its
// methods are safe for concurrent use.
type Server struct {
	addr string

	mu      sync.Mutex
	conn    *dbus.Conn
	caps    []string
	calls   []Call
	nextID  uint32
	open    map[uint32]bool
	changed chan struct{} // closed and replaced on every recorded call
}

// NewServer connects to the bus at addr, exports the fake server and takes
// the name org.freedesktop.Notifications. caps is what GetCapabilities
// answers. The connection is closed in tb.Cleanup.
func NewServer(tb testing.TB, addr string, caps []string) *Server {
	tb.Helper()
	s := NewStoppedServer(tb, addr, caps)
	if err := s.Start(); err != nil {
		tb.Fatalf("start fake notification server: %v", err)
	}
	return s
}

// NewStoppedServer returns a fake server that is not on the bus yet: no
// notification server is there until [Server.Start] takes the name. Its
// connection is closed in tb.Cleanup.
func NewStoppedServer(tb testing.TB, addr string, caps []string) *Server {
	s := newServer(addr, caps)
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// StartServer is [NewServer] for harnesses without a testing.TB (the
// benchmarks): the caller must call [Server.Close].
func StartServer(addr string, caps []string) (*Server, error) {
	s := newServer(addr, caps)
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

func newServer(addr string, caps []string) *Server {
	return &Server{addr: addr, caps: slices.Clone(caps), open: map[uint32]bool{}, changed: make(chan struct{})}
}

// Start connects to the bus, exports the server and takes the name
// org.freedesktop.Notifications (the bus emits NameOwnerChanged). It is a
// no-op while the server is running; after [Server.Stop], or after the
// bus restarted, it takes the name again on a new connection.
func (s *Server) Start() error {
	s.mu.Lock()
	running := s.conn != nil && s.conn.Connected()
	s.mu.Unlock()
	if running {
		return nil
	}
	if err := s.Stop(); err != nil { // a connection the bus dropped
		return err
	}
	conn, err := s.start()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	return nil
}

// Close stops the server; recorded calls are kept.
func (s *Server) Close() error { return s.Stop() }

func (s *Server) start() (*dbus.Conn, error) {
	conn, err := dbus.Connect(s.addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	methods := map[string]any{
		"Notify": func(sender dbus.Sender, app string, replaces uint32, icon, summary, body string,
			actions []string, hints map[string]dbus.Variant, timeout int32) (uint32, *dbus.Error) {
			return s.notify(Call{Method: "Notify", Sender: string(sender), App: app, ReplacesID: replaces,
				Icon: icon, Summary: summary, Body: body, Actions: actions, Hints: hints, Timeout: timeout}), nil
		},
		"CloseNotification": func(sender dbus.Sender, id uint32) *dbus.Error {
			s.closeNotification(string(sender), id)
			return nil
		},
		"GetCapabilities": func() ([]string, *dbus.Error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			return slices.Clone(s.caps), nil
		},
		"GetServerInformation": func() (string, string, string, string, *dbus.Error) {
			return "notifytest", "clearance", "1.0", "1.2", nil
		},
	}
	if err := conn.ExportMethodTable(methods, objPath, ifaceName); err != nil {
		conn.Close()
		return nil, fmt.Errorf("export: %w", err)
	}
	reply, err := conn.RequestName(busName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		conn.Close()
		return nil, fmt.Errorf("request name %s: reply %v: %w", busName, reply, err)
	}
	return conn, nil
}

func (s *Server) notify(c Call) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := c.ReplacesID
	if id == 0 || !s.open[id] {
		s.nextID++
		id = s.nextID
	}
	s.open[id] = true
	c.ID = id
	s.record(c)
	return id
}

func (s *Server) closeNotification(sender string, id uint32) {
	s.mu.Lock()
	wasOpen := s.open[id]
	delete(s.open, id)
	s.record(Call{Method: "CloseNotification", Sender: sender, ID: id})
	conn := s.conn
	s.mu.Unlock()
	if wasOpen && conn != nil {
		_ = conn.Emit(objPath, ifaceName+".NotificationClosed", id, uint32(3))
	}
}

// record appends c and wakes WaitFor; s.mu must be held.
func (s *Server) record(c Call) {
	s.calls = append(s.calls, c)
	close(s.changed)
	s.changed = make(chan struct{})
}

// Unique returns the unique bus name the server currently answers from.
func (s *Server) Unique() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return ""
	}
	return s.conn.Names()[0]
}

// Calls returns a copy of every call recorded so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Notifications returns the recorded Notify calls.
func (s *Server) Notifications() []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Method == "Notify" {
			out = append(out, c)
		}
	}
	return out
}

// Take returns the calls recorded so far and forgets them, atomically: a
// long-running harness answering prompts keeps the record from growing.
func (s *Server) Take() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.calls
	s.calls = nil
	return out
}

// Reset forgets the recorded calls (open popups stay open).
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
}

// Open returns the ids of the popups currently shown, sorted.
func (s *Server) Open() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []uint32
	for id := range s.open {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// SetCapabilities changes what GetCapabilities answers from now on.
func (s *Server) SetCapabilities(caps []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.caps = slices.Clone(caps)
}

// WaitFor waits until pred, called with all recorded calls after each new
// one, returns true, and returns those calls. It returns an error naming
// the last calls seen when timeout passes first.
func (s *Server) WaitFor(pred func([]Call) bool, timeout time.Duration) ([]Call, error) {
	return waitRecorded(func() ([]Call, <-chan struct{}) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return slices.Clone(s.calls), s.changed
	}, pred, timeout, func(calls []Call) string { return fmt.Sprintf("%d calls: %s", len(calls), Describe(calls)) })
}

// Describe renders calls compactly for failure messages.
func Describe(calls []Call) string {
	var b strings.Builder
	for _, c := range calls {
		if c.Method == "Notify" {
			fmt.Fprintf(&b, "\n  Notify(replaces=%d) -> %d %q %q %q", c.ReplacesID, c.ID, c.Summary, c.Body, c.Actions)
		} else {
			fmt.Fprintf(&b, "\n  %s(%d)", c.Method, c.ID)
		}
	}
	return b.String()
}

// Invoke emits ActionInvoked(id, key) from the server, as if the operator
// clicked a button.
func (s *Server) Invoke(id uint32, key string) error {
	conn := s.current()
	if conn == nil {
		return errors.New("server stopped")
	}
	return conn.Emit(objPath, ifaceName+".ActionInvoked", id, key)
}

// Dismiss closes popup id on the server side and emits
// NotificationClosed(id, reason) (2 = dismissed by the user, 1 = expired).
func (s *Server) Dismiss(id, reason uint32) error {
	s.mu.Lock()
	delete(s.open, id)
	conn := s.conn
	s.mu.Unlock()
	if conn == nil {
		return errors.New("server stopped")
	}
	return conn.Emit(objPath, ifaceName+".NotificationClosed", id, reason)
}

// Restart simulates a notification daemon restart: the current connection
// releases org.freedesktop.Notifications and closes, a new connection takes
// the name (the bus emits NameOwnerChanged twice), and every open popup is
// forgotten. Recorded calls are kept.
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.Start()
}

// Stop releases the name and closes the server's connection: no
// notification server is left on the bus until [Server.Start]. Every open
// popup is forgotten. A connection the bus already dropped (the bus was
// restarted) is just closed.
func (s *Server) Stop() error {
	s.mu.Lock()
	old := s.conn
	s.conn = nil
	s.open = map[uint32]bool{}
	s.mu.Unlock()
	if old == nil {
		return nil
	}
	if !old.Connected() {
		_ = old.Close()
		return nil
	}
	if _, err := old.ReleaseName(busName); err != nil {
		old.Close()
		return fmt.Errorf("release name: %w", err)
	}
	return old.Close()
}

func (s *Server) current() *dbus.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// Spoof connects a second client to the bus and emits ActionInvoked(id,
// key) from it with the Notifications path and interface: a local
// process pretending to be the notification server.
func Spoof(tb testing.TB, addr string, id uint32, key string) {
	tb.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		tb.Fatalf("spoof connect: %v", err)
	}
	defer conn.Close()
	if err := conn.Emit(objPath, ifaceName+".ActionInvoked", id, key); err != nil {
		tb.Fatalf("spoof emit: %v", err)
	}
	// A round trip on the same connection orders the emitted signal
	// before whatever the test does next on the bus.
	var names []string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.ListNames", 0).Store(&names); err != nil {
		tb.Fatalf("spoof round trip: %v", err)
	}
}

// BusConfig returns a minimal session-bus configuration listening on the
// Unix socket at path, for dbus-daemon --config-file: no service
// directories (nothing can be D-Bus-activated, so no notification daemon
// installed on the machine can answer), EXTERNAL auth, open policy.
func BusConfig(path string) []byte { return fmt.Appendf(nil, busConfig, path) }

const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`
