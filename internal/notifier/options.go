// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/terok-ai/clearance/internal/config"
	"github.com/terok-ai/clearance/internal/notify"
)

// Defaults for [Options].
const (
	DefaultBackoffMin  = 100 * time.Millisecond
	DefaultBackoffMax  = 10 * time.Second
	DefaultBusRetry    = 30 * time.Second
	DefaultRescan      = 60 * time.Second
	DefaultForgetAfter = 10 * time.Second
	DefaultDownAfter   = 10 * time.Second
	DefaultCallTimeout = 30 * time.Second
)

// Bus is the connection to a notification server that [Run] shows prompts
// through: a [notify.Notifier] plus the client's event stream. *notify.Client
// implements it.
//
// Events must deliver [notify.Disconnected] (or be closed) when the
// connection is lost, and [notify.DaemonGone] / [notify.DaemonRestarted]
// when the notification server leaves or arrives; Owner returns the
// server's unique name, "" while there is none. Disconnect closes the
// connection and must be safe to call more than once.
type Bus interface {
	notify.Notifier
	Events() <-chan notify.Event
	Owner() string
	Disconnect() error
}

// StatusNotifier receives the daemon's readiness and status for the service
// manager. *sd.Notifier implements it.
type StatusNotifier interface {
	Ready(status string)
	Status(status string)
	Stopping()
}

// Options configures [Run]. Only Globs is required; every other zero field
// takes its default.
type Options struct {
	// Globs are absolute glob patterns of hub sockets, already expanded
	// (config.Notifier.Globs), such as
	// "/run/user/1000/clearance/*/hub.sock". Names starting with "." and
	// anything that is not a socket are ignored.
	Globs []string

	// AllowFor, when positive, adds a third button "Allow <AllowFor>" that
	// allows with scope "once" for that long (org.terok.ClearanceHub1.Decide).
	AllowFor time.Duration

	// MaxVisible caps the prompts on screen; 0 means the default of
	// [notify.PopupsConfig].
	MaxVisible int

	// RatePerMinute caps the prompts shown or updated per container per
	// minute; 0 means the default of [notify.PopupsConfig].
	RatePerMinute int

	// HeadlessExitOK makes Run return nil at once when there is no session
	// bus at all ($DBUS_SESSION_BUS_ADDRESS unset). Otherwise Run keeps
	// running headless and tries the bus again every BusRetry.
	HeadlessExitOK bool

	// Logger receives the daemon's log. Nil discards.
	Logger *slog.Logger

	// Status receives READY=1 and STATUS= updates. Nil sends nothing.
	Status StatusNotifier

	// DialBus connects to the notification server. Nil means
	// [notify.DialSession] (which never autolaunches a bus).
	DialBus func(ctx context.Context) (Bus, error)

	// BackoffMin and BackoffMax bound the wait between reconnection
	// attempts to a hub or to the bus: it starts at BackoffMin, doubles
	// after each failure up to BackoffMax, and starts again after a
	// success. Defaults 100 ms and 10 s: a hub found a moment before it
	// listens is retried at once, a hub that is gone costs little.
	BackoffMin, BackoffMax time.Duration

	// BusRetry is the wait between attempts to find a session bus when
	// there is none at all. Default 30 s.
	BusRetry time.Duration

	// Rescan is the interval of the safety rescan of the globs, in case an
	// inotify event was lost. Default 60 s.
	Rescan time.Duration

	// ForgetAfter is how long a hub whose socket vanished (while its
	// directory stays) is kept, waiting for it to come back, before its
	// prompts are closed. A hub whose directory is gone is forgotten at
	// once. Default 10 s.
	ForgetAfter time.Duration

	// DownAfter is how long a container's runtime record must have been
	// there without a hub answering on the socket beside it (missing, or
	// refusing connections) before the operator is told that the hub is
	// down, once. Shorter gaps are a container starting or stopping, or
	// a hub restarting. Default 10 s.
	DownAfter time.Duration

	// CallTimeout bounds one Verdict, Decide or Pending call to a hub.
	// Default 30 s (a verdict may wait for the firewall).
	CallTimeout time.Duration

	// flushTick, when set (tests), replaces the one-second ticker that
	// drives Popups.Flush: each value sent is one flush cycle.
	flushTick <-chan time.Time

	// observe, when set (tests), is called with the daemon's state once
	// Run has built it, before anything runs.
	observe func(*daemon)
}

// FromConfig returns Options for the [config.Notifier] section, with env
// variables in the globs expanded. Logger, Status and DialBus are left for
// the caller.
func FromConfig(c config.Notifier) Options {
	return Options{
		Globs:          c.Globs(),
		AllowFor:       c.AllowFor,
		MaxVisible:     c.MaxVisible,
		RatePerMinute:  c.RatePerMinute,
		HeadlessExitOK: c.HeadlessExitOK,
	}
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Status == nil {
		o.Status = nopStatus{}
	}
	if o.DialBus == nil {
		log := o.Logger
		o.DialBus = func(ctx context.Context) (Bus, error) {
			c, err := notify.DialSession(ctx, &notify.Config{Logger: log})
			if err != nil {
				return nil, err
			}
			return c, nil
		}
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = DefaultBackoffMin
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(DefaultBackoffMax, o.BackoffMin)
	}
	if o.BusRetry <= 0 {
		o.BusRetry = DefaultBusRetry
	}
	if o.Rescan <= 0 {
		o.Rescan = DefaultRescan
	}
	if o.ForgetAfter <= 0 {
		o.ForgetAfter = DefaultForgetAfter
	}
	if o.DownAfter <= 0 {
		o.DownAfter = DefaultDownAfter
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	return o
}

type nopStatus struct{}

func (nopStatus) Ready(string)  {}
func (nopStatus) Status(string) {}
func (nopStatus) Stopping()     {}

// AllowForLabel is the label of the time-limited allow button: "Allow 1 h",
// "Allow 30 min", "Allow 1 h 30 min", "Allow 45 s".
func AllowForLabel(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	var parts []string
	if h := d / time.Hour; h > 0 {
		parts = append(parts, strconv.FormatInt(int64(h), 10)+" h")
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		parts = append(parts, strconv.FormatInt(int64(m), 10)+" min")
		d -= m * time.Minute
	}
	if s := d / time.Second; s > 0 || len(parts) == 0 {
		parts = append(parts, strconv.FormatInt(int64(max(s, 1)), 10)+" s")
	}
	return "Allow " + strings.Join(parts, " ")
}
