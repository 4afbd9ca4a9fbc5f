// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package sd integrates clearance's daemons with systemd: readiness,
// status and watchdog notifications (sd_notify), a log/slog handler that
// writes structured entries to the journal, and syslog log levels for
// io.systemd.service.SetLogLevel.
//
// Everything here degrades to a no-op (notifications) or to plain text on
// stderr (logging) when the process does not run under systemd, so the same
// binary works in a terminal, in tests and in a unit.
//
// Socket activation lives in package sockets.
package sd

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify(3) state to the service manager.
//
// The zero value is ready to use: it talks to $NOTIFY_SOCKET through
// go-systemd and does nothing when that variable is unset. The first error
// is logged (to Log, if set) and later ones are dropped, so a broken
// notification socket never floods the log. A Notifier is safe for
// concurrent use; do not change its fields after first use.
type Notifier struct {
	// Send delivers one state string (assignments separated by newlines)
	// and reports whether it was sent. Nil means
	// daemon.SdNotify(false, state), which returns (false, nil) outside
	// systemd.
	Send func(state string) (sent bool, err error)

	// WatchdogInterval reports the watchdog timeout, or 0 when the watchdog
	// is off. Nil means daemon.SdWatchdogEnabled(false) (WATCHDOG_USEC and
	// WATCHDOG_PID).
	WatchdogInterval func() (time.Duration, error)

	// Log receives the first error. Nil discards it.
	Log *slog.Logger

	errOnce sync.Once
}

// NewNotifier returns a Notifier for $NOTIFY_SOCKET that logs its first
// error to log.
func NewNotifier(log *slog.Logger) *Notifier {
	return &Notifier{Log: log}
}

// Ready tells the service manager that start-up is complete (READY=1),
// with a human-readable status line when status is not empty.
func (n *Notifier) Ready(status string) {
	state := daemon.SdNotifyReady
	if status != "" {
		state += "\nSTATUS=" + oneLine(status)
	}
	n.notify(state)
}

// Status updates the status line shown by systemctl status (STATUS=).
func (n *Notifier) Status(status string) {
	n.notify("STATUS=" + oneLine(status))
}

// Stopping tells the service manager that the service is shutting down
// (STOPPING=1).
func (n *Notifier) Stopping() {
	n.notify(daemon.SdNotifyStopping)
}

// RunWatchdog sends WATCHDOG=1 every half watchdog interval until ctx ends,
// starting with one immediately. It returns at once when the watchdog is
// not enabled for this process (no WATCHDOG_USEC, or WATCHDOG_PID names
// another process) or its settings cannot be parsed (logged once). Run it
// in its own goroutine; it holds no resources after it returns.
func (n *Notifier) RunWatchdog(ctx context.Context) {
	interval, err := n.watchdogInterval()
	if err != nil {
		n.logOnce("read watchdog settings", err)
		return
	}
	if interval <= 0 {
		return
	}
	period := interval / 2
	if period <= 0 {
		period = interval
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		n.notify(daemon.SdNotifyWatchdog)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *Notifier) watchdogInterval() (time.Duration, error) {
	if n.WatchdogInterval != nil {
		return n.WatchdogInterval()
	}
	return daemon.SdWatchdogEnabled(false)
}

func (n *Notifier) notify(state string) {
	send := n.Send
	if send == nil {
		send = func(s string) (bool, error) { return daemon.SdNotify(false, s) }
	}
	if _, err := send(state); err != nil {
		n.logOnce("send sd_notify state", err)
	}
}

func (n *Notifier) logOnce(what string, err error) {
	n.errOnce.Do(func() {
		if n.Log != nil {
			n.Log.Warn("systemd notification failed; further failures are not logged",
				"op", what, "err", err)
		}
	})
}

// oneLine keeps a status on one line: a newline would start a new
// assignment in the notification datagram.
func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
