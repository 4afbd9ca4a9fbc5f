// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package notify shows clearance prompts as freedesktop desktop
// notifications (org.freedesktop.Notifications, spec 1.2) over a private
// D-Bus session-bus connection.
//
// [Client] is a thin, spoof-checked client of the notification server: it
// sends Notify/CloseNotification and delivers ActionInvoked and
// NotificationClosed signals, but only those sent by the current owner of
// org.freedesktop.Notifications. [Popups] is the prompt manager the
// notifier daemon drives from a stream of hub events: coalescing, verdict
// replacement, flood control, daemon restarts.
//
// # Session bus
//
// The bus address is taken from $DBUS_SESSION_BUS_ADDRESS only. When it is
// unset, [DialSession] returns [ErrNoSessionBus] at once: clearance never
// autolaunches a bus (no dbus-launch, no X11 lookup, no
// /run/user/UID/bus guess), and every call uses [dbus.FlagNoAutoStart], so
// a missing notification server is never D-Bus-activated by us.
//
// # Testing
//
// Package notifytest starts a private dbus-daemon and exports a recording
// fake notification server.
package notify

import (
	"errors"

	"github.com/godbus/dbus/v5"

	"github.com/terok-ai/clearance/internal/render"
)

// D-Bus names of the freedesktop notification service.
const (
	BusName    = "org.freedesktop.Notifications"
	ObjectPath = dbus.ObjectPath("/org/freedesktop/Notifications")
	Interface  = "org.freedesktop.Notifications"
)

// DefaultAppName is the app_name clearance sends with every Notify.
const DefaultAppName = "clearance"

// Server capabilities clearance looks at (GetCapabilities).
const (
	CapActions    = "actions"
	CapBodyMarkup = "body-markup"
	CapPersist    = "persistence"
)

// CloseReason is the reason code of a NotificationClosed signal.
type CloseReason uint32

// Close reasons of the freedesktop notification spec.
const (
	ReasonExpired   CloseReason = 1
	ReasonDismissed CloseReason = 2
	ReasonClosed    CloseReason = 3 // by a CloseNotification call
	ReasonUndefined CloseReason = 4
)

// ErrNoSessionBus is returned by [DialSession] when
// $DBUS_SESSION_BUS_ADDRESS is unset or empty (or asks for autolaunch).
// A notifier treats it as "headless": nothing to show, nothing to retry.
var ErrNoSessionBus = errors.New("no session bus: DBUS_SESSION_BUS_ADDRESS is not set")

// ErrNoServer is returned (wrapped) by the calls of a [Client] while no
// notification server owns org.freedesktop.Notifications: the call is not
// sent (or, for the one call that raced the server's departure, was
// answered NameHasNoOwner). [DaemonRestarted] reports the next server.
var ErrNoServer = errors.New("no notification server on the bus")

// Notification is one Notify call. Summary and Body are plain text; the
// client escapes them when the server parses markup.
type Notification struct {
	// ReplacesID updates an existing popup in place when non-zero.
	ReplacesID uint32
	// Icon is the app_icon; empty means [Config.AppIcon].
	Icon    string
	Summary string
	Body    string
	// Actions become the flat key,label list of the Notify call.
	Actions []render.Action
	Hints   render.Hints
	// Timeout is expire_timeout in milliseconds: -1 server default,
	// 0 never.
	Timeout int32
}

// FromPopup builds a Notification from rendered content.
func FromPopup(p render.Popup, replaces uint32, actions []render.Action) Notification {
	return Notification{
		ReplacesID: replaces,
		Summary:    p.Summary,
		Body:       p.Body,
		Actions:    actions,
		Hints:      p.Hints,
		Timeout:    p.Timeout,
	}
}

// ServerInfo is the reply of GetServerInformation.
type ServerInfo struct {
	Name, Vendor, Version, SpecVersion string
}

// Event is what [Client.Events] delivers: [ActionInvoked], [Closed],
// [DaemonGone], [DaemonRestarted] or [Disconnected].
type Event interface{ isEvent() }

// ActionInvoked reports that the operator chose the action Key on popup ID.
type ActionInvoked struct {
	ID  uint32
	Key string
}

// Closed reports that popup ID went away.
type Closed struct {
	ID     uint32
	Reason CloseReason
}

// DaemonRestarted reports that org.freedesktop.Notifications got a new
// owner (a notification server started or restarted). Popup ids of the
// previous owner are void: re-post what is still pending.
type DaemonRestarted struct {
	Owner string // the new unique name
}

// DaemonGone reports that org.freedesktop.Notifications lost its owner
// (the notification server exited) and nobody has it now: its popups are
// gone, and calls fail with [ErrNoServer] until [DaemonRestarted].
type DaemonGone struct{}

// Disconnected reports that the bus connection is gone. It is the last
// event before the channel closes; the caller dials again.
type Disconnected struct{}

func (ActionInvoked) isEvent()   {}
func (Closed) isEvent()          {}
func (DaemonRestarted) isEvent() {}
func (DaemonGone) isEvent()      {}
func (Disconnected) isEvent()    {}
