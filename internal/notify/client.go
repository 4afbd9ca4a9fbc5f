// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/godbus/dbus/v5"

	"github.com/terok-ai/clearance/internal/render"
)

// Match rules, strictly quoted (dbus-broker rejects unquoted values). The
// Notifications rule has no sender=: relays (xdg-desktop-portal) and
// daemons whose well-known name differs from the emitting connection would
// be missed; authenticity is checked in code against the name's owner.
const (
	matchNotifications   = "type='signal',interface='org.freedesktop.Notifications',path='/org/freedesktop/Notifications'"
	matchNameOwnerChange = "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='org.freedesktop.Notifications'"
)

const (
	busDaemonName = "org.freedesktop.DBus"
	busDaemonPath = dbus.ObjectPath("/org/freedesktop/DBus")
)

// Config configures a [Client]. The zero value (or nil) is usable.
type Config struct {
	// Logger receives warnings about rejected signals and refused
	// match rules. Nil discards.
	Logger *slog.Logger
	// AppName is sent as app_name; empty means [DefaultAppName].
	AppName string
	// AppIcon is the default app_icon ("" for none).
	AppIcon string
	// EventBuffer is the capacity of the Events channel; 0 means 64.
	EventBuffer int
}

// Client is a connection to the notification server on a session bus.
// Its methods are safe for concurrent use. The caller must drain
// [Client.Events] until it is closed and must call [Client.Close].
type Client struct {
	conn    *dbus.Conn
	obj     dbus.BusObject
	log     *slog.Logger
	appName string
	appIcon string

	sigs   chan *dbus.Signal
	events chan Event
	closed chan struct{}
	once   sync.Once
	done   chan struct{} // closed when the dispatch loop has ended

	mu        sync.Mutex
	owner     string   // unique name owning BusName, "" when none
	announced string   // the owner last reported (or resolved in Dial): events report changes of it
	tracking  bool     // the NameOwnerChanged match is installed: owner is kept current
	caps      []string // cached GetCapabilities reply
	capsValid bool
}

// DialSession connects to the session bus named by
// $DBUS_SESSION_BUS_ADDRESS, and only that. Unset or empty (or an
// "autolaunch:" address) returns [ErrNoSessionBus] without side effects.
func DialSession(ctx context.Context, cfg *Config) (*Client, error) {
	addr := os.Getenv("DBUS_SESSION_BUS_ADDRESS")
	if strings.TrimSpace(addr) == "" || strings.HasPrefix(addr, "autolaunch:") {
		return nil, ErrNoSessionBus
	}
	return Dial(ctx, addr, cfg)
}

// Dial opens a private connection to the bus at addr (a D-Bus address such
// as "unix:path=/run/user/1000/bus"), authenticates, says Hello, installs
// the signal match rules and resolves the owner of
// org.freedesktop.Notifications. A server need not be running yet: its
// arrival is reported as [DaemonRestarted]; until then the calls fail with
// [ErrNoServer] without being sent.
func Dial(ctx context.Context, addr string, cfg *Config) (*Client, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	conn, err := connect(ctx, addr)
	if err != nil {
		return nil, err
	}
	c := &Client{
		conn:    conn,
		obj:     conn.Object(BusName, ObjectPath),
		log:     cfg.Logger,
		appName: cfg.AppName,
		appIcon: cfg.AppIcon,
		sigs:    make(chan *dbus.Signal, 256),
		closed:  make(chan struct{}),
		done:    make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.appName == "" {
		c.appName = DefaultAppName
	}
	buf := cfg.EventBuffer
	if buf <= 0 {
		buf = 64
	}
	c.events = make(chan Event, buf)
	conn.Signal(c.sigs)

	bus := conn.BusObject()
	// Owner changes first, so none is missed between GetNameOwner and the
	// match being installed.
	if err := bus.CallWithContext(ctx, "org.freedesktop.DBus.AddMatch", 0, matchNameOwnerChange).Store(); err != nil {
		if ctx.Err() != nil {
			conn.Close()
			return nil, fmt.Errorf("add match: %w", err)
		}
		c.log.Warn("AddMatch refused: notification daemon restarts will not be noticed", "rule", matchNameOwnerChange, "err", err)
	} else {
		c.tracking = true
	}
	if err := bus.CallWithContext(ctx, "org.freedesktop.DBus.AddMatch", 0, matchNotifications).Store(); err != nil {
		if ctx.Err() != nil {
			conn.Close()
			return nil, fmt.Errorf("add match: %w", err)
		}
		c.log.Warn("AddMatch refused: popup actions will not be received", "rule", matchNotifications, "err", err)
	}
	var owner string
	err = bus.CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, BusName).Store(&owner)
	var derr dbus.Error
	switch {
	case err == nil:
	case errors.As(err, &derr) && derr.Name == errNameHasNoOwner:
		owner = ""
	default:
		conn.Close()
		return nil, fmt.Errorf("get owner of %s: %w", BusName, err)
	}
	c.owner, c.announced = owner, owner
	go c.dispatch()
	return c, nil
}

// connect is dbus.Connect (dial, auth, Hello) bounded by ctx. The dial
// context is not handed to godbus: that would close the connection when
// ctx ends.
func connect(ctx context.Context, addr string) (*dbus.Conn, error) {
	type result struct {
		conn *dbus.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		conn, err := dbus.Connect(addr)
		ch <- result{conn, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("connect session bus: %w", r.err)
		}
		return r.conn, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("connect session bus: %w", ctx.Err())
	}
}

// Events delivers popup actions, closes, the notification server leaving
// ([DaemonGone]) and arriving ([DaemonRestarted]), and, last, a
// [Disconnected] when the bus connection is lost. The channel is closed
// after Disconnected or after [Client.Disconnect].
func (c *Client) Events() <-chan Event { return c.events }

// Owner returns the unique bus name signals are accepted from: the current
// owner of org.freedesktop.Notifications, "" when none (no notification
// server is running, or the bus connection is lost).
func (c *Client) Owner() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.owner
}

// Disconnect closes the connection and the Events channel (without a
// Disconnected event). It is idempotent.
func (c *Client) Disconnect() error {
	var err error
	c.once.Do(func() {
		close(c.closed)
		err = c.conn.Close()
	})
	<-c.done
	return err
}

// Capabilities calls GetCapabilities. The reply is cached until the owner
// of org.freedesktop.Notifications changes.
func (c *Client) Capabilities(ctx context.Context) ([]string, error) {
	c.mu.Lock()
	if c.capsValid {
		caps := slices.Clone(c.caps)
		c.mu.Unlock()
		return caps, nil
	}
	c.mu.Unlock()
	owner, err := c.server()
	if err != nil {
		return nil, fmt.Errorf("call GetCapabilities: %w", err)
	}
	var caps []string
	if err := c.obj.CallWithContext(ctx, Interface+".GetCapabilities", dbus.FlagNoAutoStart).Store(&caps); err != nil {
		return nil, fmt.Errorf("call GetCapabilities: %w", c.failed(owner, err))
	}
	c.mu.Lock()
	if c.owner == owner { // not raced by a restart
		c.caps, c.capsValid = slices.Clone(caps), true
	}
	c.mu.Unlock()
	return caps, nil
}

// ServerInfo calls GetServerInformation.
func (c *Client) ServerInfo(ctx context.Context) (ServerInfo, error) {
	owner, err := c.server()
	if err != nil {
		return ServerInfo{}, fmt.Errorf("call GetServerInformation: %w", err)
	}
	var si ServerInfo
	err = c.obj.CallWithContext(ctx, Interface+".GetServerInformation", dbus.FlagNoAutoStart).
		Store(&si.Name, &si.Vendor, &si.Version, &si.SpecVersion)
	if err != nil {
		return ServerInfo{}, fmt.Errorf("call GetServerInformation: %w", c.failed(owner, err))
	}
	return si, nil
}

// Notify shows n and returns the server's id for it. Summary and body are
// Pango-escaped when the server announces body-markup (or when its
// capabilities cannot be read: escaping is the safe side), and sent
// verbatim otherwise. Without a notification server it fails with
// [ErrNoServer] and sends nothing.
func (c *Client) Notify(ctx context.Context, n Notification) (uint32, error) {
	summary, body := n.Summary, n.Body
	caps, err := c.Capabilities(ctx)
	if errors.Is(err, ErrNoServer) {
		return 0, fmt.Errorf("call Notify: %w", ErrNoServer)
	}
	owner, err2 := c.server()
	if err2 != nil {
		return 0, fmt.Errorf("call Notify: %w", err2)
	}
	if err != nil || slices.Contains(caps, CapBodyMarkup) {
		summary, body = render.PangoEscape(summary), render.PangoEscape(body)
	}
	icon := n.Icon
	if icon == "" {
		icon = c.appIcon
	}
	actions := make([]string, 0, 2*len(n.Actions))
	for _, a := range n.Actions {
		actions = append(actions, a.Key, a.Label)
	}
	var id uint32
	err = c.obj.CallWithContext(ctx, Interface+".Notify", dbus.FlagNoAutoStart,
		c.appName, n.ReplacesID, icon, summary, body, actions, hintMap(n.Hints), n.Timeout).Store(&id)
	if err != nil {
		return 0, fmt.Errorf("call Notify: %w", c.failed(owner, err))
	}
	return id, nil
}

// Close asks the server to close popup id (CloseNotification). An unknown
// id is harmless.
func (c *Client) Close(ctx context.Context, id uint32) error {
	owner, err := c.server()
	if err != nil {
		return fmt.Errorf("call CloseNotification %d: %w", id, err)
	}
	if err := c.obj.CallWithContext(ctx, Interface+".CloseNotification", dbus.FlagNoAutoStart, id).Store(); err != nil {
		return fmt.Errorf("call CloseNotification %d: %w", id, c.failed(owner, err))
	}
	return nil
}

// server returns the owner a call goes to, or [ErrNoServer] when the
// name is known to have none: a call then would only earn an error reply,
// so it is not sent. Without the owner-change match nothing is known, and
// every call is sent.
func (c *Client) server() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tracking && c.owner == "" {
		return "", ErrNoServer
	}
	return c.owner, nil
}

// failed looks at the error of a call made while owner had the name. A
// reply saying the name has no owner means the server left and its
// NameOwnerChanged is still on the way: the owner is forgotten now, so
// the calls after this one are not sent (at most one goes out per
// departure). A newer owner, already reported, is left alone.
func (c *Client) failed(owner string, err error) error {
	var derr dbus.Error
	if !errors.As(err, &derr) || (derr.Name != errNameHasNoOwner && derr.Name != errServiceUnknown) {
		return err
	}
	c.mu.Lock()
	if c.tracking && c.owner == owner {
		c.owner = ""
		c.caps, c.capsValid = nil, false
	}
	c.mu.Unlock()
	return fmt.Errorf("%w: %w", ErrNoServer, err)
}

// The bus's replies to a call for a name nobody owns: with
// FlagNoAutoStart, and without it when nothing can be activated.
const (
	errNameHasNoOwner = "org.freedesktop.DBus.Error.NameHasNoOwner"
	errServiceUnknown = "org.freedesktop.DBus.Error.ServiceUnknown"
)

// hintMap builds the a{sv} hints: urgency always (a byte), resident and
// transient only when set.
func hintMap(h render.Hints) map[string]dbus.Variant {
	m := map[string]dbus.Variant{"urgency": dbus.MakeVariant(byte(h.Urgency))}
	if h.Resident {
		m["resident"] = dbus.MakeVariant(true)
	}
	if h.Transient {
		m["transient"] = dbus.MakeVariant(true)
	}
	return m
}

// dispatch turns bus signals into Events until the connection closes.
func (c *Client) dispatch() {
	defer close(c.done)
	defer close(c.events)
	for s := range c.sigs {
		if ev := c.translate(s); ev != nil {
			if !c.emit(ev) {
				return
			}
		}
	}
	// godbus closed the channel: the connection is gone, and with it
	// any server we could reach.
	c.mu.Lock()
	c.owner = ""
	c.caps, c.capsValid = nil, false
	c.mu.Unlock()
	select {
	case <-c.closed:
	default:
		c.emit(Disconnected{})
	}
}

func (c *Client) emit(ev Event) bool {
	select {
	case c.events <- ev:
		return true
	case <-c.closed:
		return false
	}
}

// translate validates one signal and returns its Event, or nil to drop it.
func (c *Client) translate(s *dbus.Signal) Event {
	if s.Name == busDaemonName+".NameOwnerChanged" {
		if s.Sender != busDaemonName || s.Path != busDaemonPath {
			return nil
		}
		var name, oldOwner, newOwner string
		if err := dbus.Store(s.Body, &name, &oldOwner, &newOwner); err != nil || name != BusName {
			return nil
		}
		c.mu.Lock()
		if c.owner != newOwner {
			c.owner = newOwner
			c.caps, c.capsValid = nil, false
		}
		prev := c.announced
		c.announced = newOwner
		c.mu.Unlock()
		if prev == newOwner {
			return nil // already known from GetNameOwner in Dial
		}
		c.log.Info("notification server owner changed", "old", oldOwner, "new", newOwner)
		if newOwner == "" {
			return DaemonGone{}
		}
		return DaemonRestarted{Owner: newOwner}
	}
	if s.Path != ObjectPath || !strings.HasPrefix(s.Name, Interface+".") {
		return nil
	}
	member := strings.TrimPrefix(s.Name, Interface+".")
	c.mu.Lock()
	owner := c.owner
	c.mu.Unlock()
	if owner == "" {
		c.log.Warn("rejecting notification signal: owner of "+BusName+" not resolved", "member", member, "sender", s.Sender)
		return nil
	}
	if s.Sender != owner {
		c.log.Warn("rejecting notification signal (possible local-bus spoof)", "member", member, "sender", s.Sender, "expected", owner)
		return nil
	}
	switch member {
	case "ActionInvoked":
		var id uint32
		var key string
		if err := dbus.Store(s.Body, &id, &key); err != nil {
			c.log.Warn("ActionInvoked with unexpected body", "body", fmt.Sprint(s.Body))
			return nil
		}
		return ActionInvoked{ID: id, Key: key}
	case "NotificationClosed":
		var id, reason uint32
		if err := dbus.Store(s.Body, &id, &reason); err != nil {
			c.log.Warn("NotificationClosed with unexpected body", "body", fmt.Sprint(s.Body))
			return nil
		}
		return Closed{ID: id, Reason: CloseReason(reason)}
	}
	return nil
}
