// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package notifier is clearance-notifier, the desktop channel of
// clearance: one process per graphical login that follows every hub of
// the user, shows its prompts as freedesktop notifications and sends the
// operator's Allow/Deny back to the hub that asked.
//
// [Run] is the daemon; [Main] is the whole command line (the daemon and
// the one-off "notify" command) behind cmd/clearance-notifier.
//
// # Finding hubs
//
// Hub sockets are found by glob patterns (config notifier.hub_glob,
// default [config.DefaultHubGlobs]: $XDG_RUNTIME_DIR/clearance/*/hub.sock
// and the seed's $XDG_RUNTIME_DIR/terok/clearance/*.sock and
// …/terok/clearance/*/hub.sock). The directories a
// pattern can descend through are watched with inotify, including the
// nearest existing ancestor while the base directory does not exist yet,
// so a hub is followed as soon as it binds its socket; a rescan every
// minute is only a safety net. Names starting with "." and anything that
// is not a socket are ignored.
//
// Each hub gets one connection streaming org.terok.Clearance1.Subscribe
// and one for calls: Pending (so prompts waiting from before show up),
// Verdict, and Decide for the optional time-limited allow. A hub that
// restarts is reconnected with backoff (100 ms doubling to 10 s, reset on
// success); a hub whose directory is removed is forgotten at once and its
// prompts are closed (a hub whose socket alone vanished gets a grace
// period to come back).
//
// # Desktop
//
// Prompts go through [notify.Popups] on a [notify.Client] dialled from
// $DBUS_SESSION_BUS_ADDRESS only: no autolaunch, ever. A lost bus is
// dialled again with backoff. While nobody owns
// org.freedesktop.Notifications (the bus came back before the
// notification server, or the server exited) nothing is sent to the
// name: the prompts wait, and no rate-limit token is spent. Whenever the
// name gets an owner (NameOwnerChanged, or a bus dialled with the server
// already on it), every pending prompt is shown again, once. Of the calls
// that race a server's departure at most one goes out. Without any
// session bus the daemon runs headless (logging that prompts are
// unavailable and pointing at `clearancectl watch`), or exits 0 when
// notifier.headless_exit_ok is set.
//
// # Service manager
//
// READY=1 is sent once the daemon runs, and STATUS= keeps "N hubs (M
// connected), P pending (V shown), notifications: ok" current: it is sent
// again whenever a hub's prompts, the bus or the notification server
// change (and at least every second). "notifications: ok" means a bus
// connection and an owner of org.freedesktop.Notifications; otherwise it
// reads "notifications: unavailable (no session bus; …)" or "(no
// notification server; …)", and nothing counts as shown. SIGTERM closes
// the prompts (their buttons would lead nowhere) and exits 0.
//
// # Memory
//
// The daemon's live heap stays under 1 MiB with nothing pending; what it
// tracks is bounded by the pending prompts and the containers still
// there (a container whose hub went away is forgotten entirely). Unless
// $GOGC is set it runs the garbage collector at [DaemonGCPercent], so
// the garbage of steady traffic does not pile up to Go's default 4 MiB
// heap floor. `go run ./test/bench -only soak` measures its resident size
// over a long run.
package notifier
