// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/godbus/dbus/v5"
)

// Manager is the part of a systemd service manager the hook uses. The
// D-Bus implementation is returned by [DialManager]; tests pass fakes.
// Implementations need not be safe for concurrent use.
type Manager interface {
	// StartUnit queues a start job for unit (mode "replace") and returns
	// once it is queued, not once it finished.
	StartUnit(ctx context.Context, unit string) error
	// StopUnit queues a stop job for unit (mode "replace").
	StopUnit(ctx context.Context, unit string) error
	// ResetFailedUnit clears the failed state of unit (errors ignored by
	// callers: a unit that never failed has nothing to reset).
	ResetFailedUnit(ctx context.Context, unit string) error
	// ActiveState returns unit's ActiveState ("active", "activating",
	// "inactive", "failed", …); a unit the manager does not know is
	// "inactive".
	ActiveState(ctx context.Context, unit string) (string, error)
	// Close closes the connection.
	Close() error
}

// Scope says which service manager the hook talks to.
type Scope int

const (
	// ScopeUser is a user's manager (systemd --user) reached under its
	// runtime directory (/run/user/<uid>).
	ScopeUser Scope = iota
	// ScopeSystem is the system manager.
	ScopeSystem
)

func (s Scope) String() string {
	if s == ScopeSystem {
		return "system"
	}
	return "user"
}

// ManagerTarget locates a service manager.
type ManagerTarget struct {
	Scope Scope
	// RuntimeDir is the user manager's runtime directory
	// (/run/user/<uid>); unused for ScopeSystem.
	RuntimeDir string
}

// Addresses returns the sockets to try, best first: the manager's private
// peer-to-peer socket (no bus daemon needed, what systemctl uses), then the
// bus.
func (t ManagerTarget) Addresses() (private, bus string) {
	if t.Scope == ScopeSystem {
		return "/run/systemd/private", "/run/dbus/system_bus_socket"
	}
	return filepath.Join(t.RuntimeDir, "systemd", "private"), filepath.Join(t.RuntimeDir, "bus")
}

// Reachable reports whether one of the target's sockets exists.
func (t ManagerTarget) Reachable() bool {
	p, b := t.Addresses()
	return isSocket(p) || isSocket(b)
}

func isSocket(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// DialManager connects to the service manager t names, trying its private
// socket first and its bus second. Authentication is SASL EXTERNAL
// without an identity claim, so the kernel-reported peer uid decides: that
// is what works from inside rootless podman's user namespace, where the
// hook's uid 0 means nothing to the host (a client that claims "0" there is
// rejected).
func DialManager(ctx context.Context, t ManagerTarget) (Manager, error) {
	private, bus := t.Addresses()
	var errs []error
	for _, a := range []struct {
		path  string
		hello bool
	}{{private, false}, {bus, true}} {
		c, err := dialDBus(ctx, a.path, a.hello)
		if err == nil {
			return &dbusManager{conn: c, obj: c.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1")}, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("connect to the %s manager: %w", t.Scope, errors.Join(errs...))
}

func dialDBus(ctx context.Context, path string, hello bool) (*dbus.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	uc := nc.(*net.UnixConn)
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	uc.SetDeadline(deadline) // bounds the handshake; cleared below
	c, err := dbus.DialUnix(uc, dbus.WithAuth(dbus.AuthExternal("")))
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("dbus %s: %w", path, err)
	}
	if err := c.Auth(nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("dbus auth %s: %w", path, err)
	}
	if hello {
		if err := c.Hello(); err != nil {
			c.Close()
			return nil, fmt.Errorf("dbus hello %s: %w", path, err)
		}
	}
	uc.SetDeadline(time.Time{})
	return c, nil
}

type dbusManager struct {
	conn *dbus.Conn
	obj  dbus.BusObject
}

const managerIface = "org.freedesktop.systemd1.Manager."

func (m *dbusManager) StartUnit(ctx context.Context, unit string) error {
	var job dbus.ObjectPath
	if err := m.obj.CallWithContext(ctx, managerIface+"StartUnit", 0, unit, "replace").Store(&job); err != nil {
		return fmt.Errorf("start %s: %w", unit, err)
	}
	return nil
}

func (m *dbusManager) StopUnit(ctx context.Context, unit string) error {
	var job dbus.ObjectPath
	err := m.obj.CallWithContext(ctx, managerIface+"StopUnit", 0, unit, "replace").Store(&job)
	if isNoSuchUnit(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop %s: %w", unit, err)
	}
	return nil
}

func (m *dbusManager) ResetFailedUnit(ctx context.Context, unit string) error {
	err := m.obj.CallWithContext(ctx, managerIface+"ResetFailedUnit", 0, unit).Store()
	if err != nil {
		return fmt.Errorf("reset-failed %s: %w", unit, err)
	}
	return nil
}

func (m *dbusManager) ActiveState(ctx context.Context, unit string) (string, error) {
	var path dbus.ObjectPath
	err := m.obj.CallWithContext(ctx, managerIface+"GetUnit", 0, unit).Store(&path)
	if isNoSuchUnit(err) {
		return "inactive", nil
	}
	if err != nil {
		return "", fmt.Errorf("get unit %s: %w", unit, err)
	}
	var v dbus.Variant
	err = m.conn.Object("org.freedesktop.systemd1", path).CallWithContext(ctx,
		"org.freedesktop.DBus.Properties.Get", 0, "org.freedesktop.systemd1.Unit", "ActiveState").Store(&v)
	if isNoSuchUnit(err) {
		return "inactive", nil // unloaded between the two calls
	}
	if err != nil {
		return "", fmt.Errorf("get ActiveState of %s: %w", unit, err)
	}
	s, ok := v.Value().(string)
	if !ok {
		return "", fmt.Errorf("get ActiveState of %s: unexpected type %s", unit, v.Signature())
	}
	return s, nil
}

func (m *dbusManager) Close() error { return m.conn.Close() }

func isNoSuchUnit(err error) bool {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name == "org.freedesktop.systemd1.NoSuchUnit" || de.Name == "org.freedesktop.DBus.Error.UnknownObject"
	}
	return false
}
