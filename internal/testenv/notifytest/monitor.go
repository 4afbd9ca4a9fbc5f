// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// Seen is one message a [Monitor] saw on the bus.
type Seen struct {
	// Kind is the method called on org.freedesktop.Notifications
	// ("Notify", "CloseNotification", "GetCapabilities", ...), or "Owner"
	// for a NameOwnerChanged of that name.
	Kind string
	// Sender is the unique name of the caller (Owner: the bus).
	Sender string
	// Summary is a Notify call's summary.
	Summary string
	// Owner is, for "Owner", the new owner: "" when the name was released
	// and nobody has it.
	Owner string
}

// Monitor watches a bus as a D-Bus monitor (BecomeMonitor): every method
// call addressed to org.freedesktop.Notifications, whether or not a
// server owns that name (a call to an absent server is seen too, before
// the bus answers it with ServiceUnknown), and every NameOwnerChanged of
// that name, in bus order. Its methods are safe for concurrent use.
//
// A monitor lives as long as its bus: after [Bus.Restart], start another.
type Monitor struct {
	conn *dbus.Conn
	done chan struct{}
	once sync.Once

	addr string

	mu      sync.Mutex
	seen    []Seen
	changed chan struct{}
	syncs   map[string]chan struct{} // sync token → closed when seen
	serial  int
}

// monitorSync is the interface of the signal a Monitor emits to itself to
// know it is watching.
const monitorSync = "io.clearance.test.MonitorSync"

// NewMonitor starts a Monitor on the bus at addr and returns once it
// watches. It is stopped in tb.Cleanup.
func NewMonitor(tb testing.TB, addr string) *Monitor {
	tb.Helper()
	m, err := StartMonitor(addr)
	if err != nil {
		tb.Fatalf("start bus monitor: %v", err)
	}
	tb.Cleanup(m.Close)
	return m
}

// StartMonitor is [NewMonitor] without a testing.TB: the caller must call
// [Monitor.Close].
func StartMonitor(addr string) (*Monitor, error) {
	conn, err := dbus.Connect(addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	m := &Monitor{conn: conn, addr: addr, done: make(chan struct{}), changed: make(chan struct{}),
		syncs: map[string]chan struct{}{}}
	rules := []string{
		"type='method_call',destination='" + busName + "'",
		"type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='" + busName + "'",
		"type='signal',interface='" + monitorSync + "'",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.Monitoring.BecomeMonitor", 0, rules, uint32(0)).Store(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("BecomeMonitor: %w", err)
	}
	msgs := make(chan *dbus.Message, 4096)
	conn.Eavesdrop(msgs)
	go m.read(msgs)
	// Messages between the BecomeMonitor reply and Eavesdrop are lost:
	// Sync re-emits until one shows up.
	if err := m.Sync(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// Sync returns once the monitor has seen everything the bus handled
// before the call: it emits a signal from a connection of its own (again
// and again, in case the first ones were lost while the monitor started)
// and waits for it. A method call whose reply its caller already has was
// handled before.
func (m *Monitor) Sync() error {
	m.mu.Lock()
	m.serial++
	token := fmt.Sprintf("sync-%d", m.serial)
	seen := make(chan struct{})
	m.syncs[token] = seen
	m.mu.Unlock()
	emitter, err := dbus.Connect(m.addr)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer emitter.Close()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	again := time.NewTicker(20 * time.Millisecond)
	defer again.Stop()
	for {
		if err := emitter.Emit("/", monitorSync+".Ping", token); err != nil {
			return fmt.Errorf("emit sync signal: %w", err)
		}
		select {
		case <-seen:
			return nil
		case <-again.C:
		case <-deadline.C:
			return errors.New("the monitor never saw its sync signal")
		}
	}
}

func (m *Monitor) read(msgs <-chan *dbus.Message) {
	for {
		var msg *dbus.Message
		select {
		case msg = <-msgs:
		case <-m.done:
			return
		}
		if msg == nil {
			return // godbus closed the channel: the bus connection is gone
		}
		iface, _ := msg.Headers[dbus.FieldInterface].Value().(string)
		member, _ := msg.Headers[dbus.FieldMember].Value().(string)
		sender, _ := msg.Headers[dbus.FieldSender].Value().(string)
		var s Seen
		switch {
		case msg.Type == dbus.TypeSignal && iface == monitorSync:
			tok, _ := firstString(msg.Body)
			m.mu.Lock()
			if ch, ok := m.syncs[tok]; ok {
				delete(m.syncs, tok)
				close(ch)
			}
			m.mu.Unlock()
			continue
		case msg.Type == dbus.TypeSignal && member == "NameOwnerChanged":
			if len(msg.Body) != 3 {
				continue
			}
			name, _ := msg.Body[0].(string)
			owner, _ := msg.Body[2].(string)
			if name != busName {
				continue
			}
			s = Seen{Kind: "Owner", Sender: sender, Owner: owner}
		case msg.Type == dbus.TypeMethodCall && iface == ifaceName:
			s = Seen{Kind: member, Sender: sender}
			if member == "Notify" && len(msg.Body) > 3 {
				s.Summary, _ = msg.Body[3].(string)
			}
		default:
			continue
		}
		m.mu.Lock()
		m.seen = append(m.seen, s)
		close(m.changed)
		m.changed = make(chan struct{})
		m.mu.Unlock()
	}
}

func firstString(body []any) (string, bool) {
	if len(body) == 0 {
		return "", false
	}
	s, ok := body[0].(string)
	return s, ok
}

// Seen returns a copy of everything seen so far, in bus order.
func (m *Monitor) Seen() []Seen {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.seen)
}

// WaitFor waits until pred, called with everything seen after each new
// message, returns true, and returns what was seen; it returns an error
// describing it when timeout passes first.
func (m *Monitor) WaitFor(pred func([]Seen) bool, timeout time.Duration) ([]Seen, error) {
	return waitRecorded(func() ([]Seen, <-chan struct{}) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return slices.Clone(m.seen), m.changed
	}, pred, timeout, func(seen []Seen) string { return "seen:" + DescribeSeen(seen) })
}

// waitRecorded waits until pred holds for what snap returns, taking a
// new snapshot whenever the channel snap returned with the last one is
// closed (the recorder's change notification), and returns the last
// snapshot; after timeout, an error naming what was recorded.
func waitRecorded[T any](snap func() ([]T, <-chan struct{}), pred func([]T) bool, timeout time.Duration, describe func([]T) string) ([]T, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		got, changed := snap()
		if pred(got) {
			return got, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return got, fmt.Errorf("condition not met after %v; %s", timeout, describe(got))
		}
	}
}

// Close stops watching. It is idempotent.
func (m *Monitor) Close() {
	m.once.Do(func() {
		close(m.done)
		m.conn.Close()
	})
}

// DescribeSeen renders what a Monitor saw, for failure messages.
func DescribeSeen(seen []Seen) string {
	var b strings.Builder
	for _, s := range seen {
		switch s.Kind {
		case "Owner":
			fmt.Fprintf(&b, "\n  owner -> %q", s.Owner)
		case "Notify":
			fmt.Fprintf(&b, "\n  Notify from %s: %q", s.Sender, s.Summary)
		default:
			fmt.Fprintf(&b, "\n  %s from %s", s.Kind, s.Sender)
		}
	}
	return b.String()
}
