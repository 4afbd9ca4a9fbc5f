// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hubclient"
	"github.com/terok-ai/clearance/internal/notify"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/render"
	"github.com/terok-ai/clearance/internal/sockets"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// shutdownGrace bounds closing the prompts on exit, so SIGTERM is
// honoured within a second even with a hung notification server.
const shutdownGrace = 500 * time.Millisecond

// headlessHint is logged when prompts cannot be shown.
const headlessHint = "desktop prompts are unavailable; use `clearancectl watch` in a terminal"

// Run is the clearance-notifier daemon. It follows every hub socket
// matching opts.Globs (inotify, plus a slow safety rescan), shows their
// prompts as desktop notifications and sends the operator's choices back
// to the hub that asked, until ctx ends. It then closes its prompts and
// returns nil.
//
// Without a session bus it runs headless (hubs are still followed, so
// prompts appear when a bus does) unless opts.HeadlessExitOK is set, in
// which case it returns nil at once. It never autolaunches a bus.
func Run(ctx context.Context, opts Options) error {
	o := opts.withDefaults()
	if len(o.Globs) == 0 {
		return errors.New("run notifier: no hub socket globs configured")
	}
	log := o.Logger

	bus, busErr := o.DialBus(ctx)
	if busErr != nil {
		if errors.Is(busErr, notify.ErrNoSessionBus) {
			log.Warn("no session bus: "+headlessHint, "err", busErr)
			if o.HeadlessExitOK {
				o.Status.Ready("headless: no session bus")
				o.Status.Stopping()
				return nil
			}
		} else if ctx.Err() == nil {
			log.Warn("connect notification bus: "+headlessHint+" until it is reachable", "err", busErr)
		}
	}

	w, err := newWatcher(o.Globs, log)
	if err != nil {
		if bus != nil {
			bus.Disconnect()
		}
		return fmt.Errorf("run notifier: %w", err)
	}
	defer w.Close()

	d := &daemon{
		opts:    &o,
		log:     log,
		hubs:    map[string]*hubEntry{},
		routes:  map[string]*hubConn{},
		targets: map[string]string{},
		claimed: map[claim]bool{},
		down:    map[string]*downState{},
		records: recordGlobs(o.Globs),
		changed: make(chan struct{}, 1),
		bus:     bus,
	}
	d.popups = notify.NewPopups(offline{}, &notify.PopupsConfig{
		Logger:        log,
		MaxVisible:    o.MaxVisible,
		RatePerMinute: o.RatePerMinute,
		AllowForLabel: AllowForLabel(o.AllowFor),
		Changed:       d.kick,
	})

	if o.observe != nil {
		o.observe(d)
	}

	hubCtx, stopHubs := context.WithCancel(context.WithoutCancel(ctx))
	busCtx, stopBus := context.WithCancel(context.WithoutCancel(ctx))
	actCtx, stopActions := context.WithCancel(context.WithoutCancel(ctx))
	d.hubCtx, d.actCtx = hubCtx, actCtx
	d.popups.OnAction(d.onAction)

	var busDone sync.WaitGroup
	busDone.Go(func() { d.busLoop(busCtx, bus, busErr) })

	d.reconcile(w.Scan())
	d.checkDown()
	o.Status.Ready(d.status())
	log.Info("notifier running", "globs", o.Globs)

	flush := o.flushTick
	if flush == nil {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		flush = t.C
	}
	rescan := time.NewTicker(o.Rescan)
	defer rescan.Stop()
	lastStatus := ""
	for ctx.Err() == nil {
		// Whether hubs may be down is looked at when the file system or
		// a hub connection changed, and on the ticks; not on every
		// change of the prompts (a flood kicks the loop constantly).
		check := false
		select {
		case <-ctx.Done():
		case <-w.Changed():
			d.reconcile(w.Scan())
			check = true
		case <-rescan.C:
			d.reconcile(w.Scan())
			check = true
		case <-d.recheck():
			d.reconcile(w.Scan())
			check = true
		case <-flush:
			if pending, _ := d.popups.Pending(); pending > 0 {
				d.popups.Flush(hubCtx)
			}
			check = true
		case <-d.changed:
		}
		if d.hubsChanged.Swap(false) || check {
			d.checkDown()
		}
		if s := d.status(); s != lastStatus {
			o.Status.Status(s)
			lastStatus = s
		}
	}

	// Shutdown: stop following hubs, close the prompts (their buttons
	// would lead nowhere once we are gone), then leave the bus.
	o.Status.Stopping()
	log.Info("notifier stopping")
	stopHubs()
	d.mu.Lock()
	hubs := make([]*hubEntry, 0, len(d.hubs))
	for _, e := range d.hubs {
		hubs = append(hubs, e)
	}
	d.mu.Unlock()
	for _, e := range hubs {
		<-e.done
	}
	stopActions()
	d.actions.Wait()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	for _, c := range d.containers() {
		d.popups.CloseContainer(cctx, c)
	}
	cancel()
	stopBus()
	busDone.Wait()
	return nil
}

// daemon is the state of one Run.
type daemon struct {
	opts   *Options
	log    *slog.Logger
	popups *notify.Popups
	hubCtx context.Context // parent of every hub goroutine
	actCtx context.Context // parent of every verdict call

	actions sync.WaitGroup // verdict calls in flight

	// changed wakes the main loop to send a new status line (kick).
	changed chan struct{}

	mu      sync.Mutex
	hubs    map[string]*hubEntry // by socket path
	routes  map[string]*hubConn  // container → the hub that speaks for it (see hubEvent)
	targets map[string]string    // request id → raw target, when rendering changed it
	claimed map[claim]bool       // hubs refused a container, logged once
	bus     Bus                  // the connected bus, nil while there is none
	wake    chan struct{}        // fires when a forget or down deadline passes
	wakeSet time.Time

	hubsChanged atomic.Bool           // a hub connected or was refused since checkDown
	records     []string              // glob patterns of runtime records beside hub sockets
	down        map[string]*downState // hub socket path → its record without an answering hub
}

// downState is a container whose runtime record is there while its hub
// is not answering.
type downState struct {
	id       string    // the hub's instance: its directory's name
	record   string    // the record's path
	since    time.Time // first seen down
	notified bool      // the notice is out
}

// recordGlobs returns, for every hub glob whose sockets are named
// "hub.sock", the runtime records beside them ("container.json"):
// clearance's layout, where the OCI hook writes a user's record into the
// hub's directory.
func recordGlobs(globs []string) []string {
	var out []string
	for _, g := range globs {
		if filepath.Base(g) == sockets.HubSocketName {
			out = append(out, filepath.Join(filepath.Dir(g), record.FileName))
		}
	}
	return out
}

// downKey is the Popups notice key of a hub that is down.
func downKey(sock string) string { return "hub_down\x00" + sock }

// checkDown tells the operator, once, about every container of theirs
// whose runtime record has been there for DownAfter while its hub is not
// answering (its socket is missing, or refuses connections): the hub is
// down or failed, its firewall blocks and nobody is asked. The notice
// goes away when the hub answers again or the record is removed (the
// container ended).
func (d *daemon) checkDown() {
	now := time.Now()
	recs := map[string]string{} // hub socket → record
	for _, g := range d.records {
		matches, _ := filepath.Glob(g)
		for _, m := range matches {
			id := filepath.Base(filepath.Dir(m))
			if !record.ValidID(id) || strings.HasPrefix(id, ".") {
				continue
			}
			recs[filepath.Join(filepath.Dir(m), sockets.HubSocketName)] = m
		}
	}
	type change struct {
		key   string
		popup *render.Popup // nil: clear
		id    string
	}
	var changes []change
	var next time.Time
	d.mu.Lock()
	for sock, rec := range recs {
		e := d.hubs[sock]
		if e != nil && e.missing.IsZero() && !e.conn.refused.Load() {
			if st := d.down[sock]; st != nil {
				delete(d.down, sock)
				if st.notified {
					changes = append(changes, change{key: downKey(sock), id: st.id})
				}
			}
			continue
		}
		st := d.down[sock]
		if st == nil {
			st = &downState{id: filepath.Base(filepath.Dir(sock)), record: rec, since: now}
			d.down[sock] = st
		}
		if st.notified {
			continue
		}
		if due := st.since.Add(d.opts.DownAfter); now.Before(due) {
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		st.notified = true
		var name string
		if r, err := record.Read(rec); err == nil {
			name = r.Name
		}
		p := render.HubDown(st.id, name)
		changes = append(changes, change{key: downKey(sock), popup: &p, id: st.id})
	}
	for sock, st := range d.down {
		if _, ok := recs[sock]; !ok { // the container is gone
			delete(d.down, sock)
			if st.notified {
				changes = append(changes, change{key: downKey(sock), id: st.id})
			}
		}
	}
	d.armWakeLocked(next)
	d.mu.Unlock()
	for _, c := range changes {
		if c.popup == nil {
			d.log.Info("hub answers again, or its container is gone", "hub", c.id)
			d.popups.ClearNotice(d.hubCtx, c.key)
			continue
		}
		d.log.Warn("hub down: the container has a runtime record but its hub does not answer", "hub", c.id)
		d.popups.Notice(d.hubCtx, c.key, c.id, *c.popup)
	}
}

// hubEntry is a followed hub.
type hubEntry struct {
	conn    *hubConn
	cancel  context.CancelFunc
	done    chan struct{}
	missing time.Time // when its socket was last seen missing; zero while present
}

// reconcile follows new sockets and forgets vanished ones: at once when
// the hub's directory is gone, after ForgetAfter when only the socket is
// (a restarting hub binds it again).
func (d *daemon) reconcile(socks []string) {
	now := time.Now()
	present := make(map[string]bool, len(socks))
	for _, s := range socks {
		present[s] = true
	}
	var forget []*hubEntry
	d.mu.Lock()
	for _, s := range socks {
		e, ok := d.hubs[s]
		if ok {
			if !e.missing.IsZero() {
				e.missing = time.Time{}
				e.conn.Poke()
			}
			continue
		}
		conn := newHubConn(s, d.opts, d)
		ctx, cancel := context.WithCancel(d.hubCtx)
		e = &hubEntry{conn: conn, cancel: cancel, done: make(chan struct{})}
		d.hubs[s] = e
		d.log.Info("found hub", "hub", s)
		go func() {
			defer close(e.done)
			conn.run(ctx)
		}()
	}
	var next time.Time
	for path, e := range d.hubs {
		if present[path] {
			continue
		}
		if e.missing.IsZero() {
			e.missing = now
		}
		deadline := e.missing.Add(d.opts.ForgetAfter)
		if !isDir(filepath.Dir(path)) || !now.Before(deadline) {
			delete(d.hubs, path)
			forget = append(forget, e)
			continue
		}
		if next.IsZero() || deadline.Before(next) {
			next = deadline
		}
	}
	d.armWakeLocked(next)
	d.mu.Unlock()

	for _, e := range forget {
		d.forget(e)
	}
}

// forget stops following a hub and forgets its containers: their prompts
// and shield-down alerts are closed, and nothing is kept for them.
func (d *daemon) forget(e *hubEntry) {
	d.log.Info("hub gone; closing its prompts", "hub", e.conn.path)
	e.cancel()
	<-e.done
	d.mu.Lock()
	var containers []string
	for c, h := range d.routes {
		if h == e.conn {
			containers = append(containers, c)
			delete(d.routes, c)
		}
	}
	for c := range d.claimed {
		if c.h == e.conn {
			delete(d.claimed, c)
		}
	}
	d.mu.Unlock()
	slices.Sort(containers)
	for _, c := range containers {
		d.popups.Forget(d.hubCtx, c)
	}
}

// armWakeLocked makes recheck fire at t (zero: never).
func (d *daemon) armWakeLocked(t time.Time) {
	if t.IsZero() || (!d.wakeSet.IsZero() && !t.Before(d.wakeSet) && d.wake != nil) {
		return
	}
	ch := make(chan struct{})
	d.wake, d.wakeSet = ch, t
	time.AfterFunc(time.Until(t)+10*time.Millisecond, func() {
		d.mu.Lock()
		if d.wake == ch {
			d.wake, d.wakeSet = nil, time.Time{}
		}
		d.mu.Unlock()
		close(ch)
	})
}

// recheck returns a channel closed when a forget deadline has passed (nil,
// blocking forever, when none is due).
func (d *daemon) recheck() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.wake
}

// claim is a hub and a container it named.
type claim struct {
	h         *hubConn
	container string
}

// hubEvent routes a hub's event to the popups and remembers which hub
// speaks for its container: the first one that named it, for as long as
// that hub is followed. Another socket naming the same container is
// ignored, so its prompts cannot stand in for the real ones and no
// verdict meant for the container goes to it; a verdict goes back on the
// connection its request came from.
func (d *daemon) hubEvent(_ context.Context, h *hubConn, ev event.Event) {
	d.mu.Lock()
	if ev.Container != "" {
		if owner, ok := d.routes[ev.Container]; ok && owner != h {
			c := claim{h, ev.Container}
			first := !d.claimed[c]
			if first {
				if len(d.claimed) >= maxRawTargets {
					clear(d.claimed)
				}
				d.claimed[c] = true
			}
			d.mu.Unlock()
			if first {
				d.log.Warn("ignoring a hub's events for a container another hub speaks for", "hub", h.path,
					"container", render.Terminal(ev.Container), "speaking_hub", owner.path)
			}
			return
		}
		d.routes[ev.Container] = h
	}
	switch ev.Type {
	case event.ConnectionBlocked:
		// The popup names the target made inert; the verdict must name
		// it as the hub does. Only the rare unclean ones are kept.
		if raw := ev.Target(); render.Target(ev) != raw {
			if len(d.targets) >= maxRawTargets {
				clear(d.targets)
			}
			d.targets[ev.RequestID] = raw
		}
	case event.VerdictApplied:
		delete(d.targets, ev.RequestID)
	}
	d.mu.Unlock()
	// Not the hub session's context: a call already on its way to the
	// notification server must get its reply even when the hub's stream
	// ends meanwhile, or the popup shown would be lost track of.
	d.popups.HandleEvent(d.hubCtx, ev)
}

// maxRawTargets bounds the raw-target map; hubs sanitise what they send,
// so it normally stays empty.
const maxRawTargets = 1024

// hubReconnected closes the prompts of a hub that came back: its request
// ids died with the old process, and its pending set, delivered next,
// brings back what still waits.
func (d *daemon) hubReconnected(_ context.Context, h *hubConn) {
	d.mu.Lock()
	var containers []string
	for c, hc := range d.routes {
		if hc == h {
			containers = append(containers, c)
		}
	}
	d.mu.Unlock()
	slices.Sort(containers)
	for _, c := range containers {
		d.popups.CloseContainer(d.hubCtx, c)
	}
}

// onAction sends the operator's choice to the container's hub. It runs on
// the bus goroutine, so the call itself goes to its own goroutine. When
// the hub cannot be reached or refuses, the prompt shows the failure
// ("Allow failed: …"); otherwise the hub's verdict_applied resolves it.
func (d *daemon) onAction(container, requestID, target, action string) {
	d.mu.Lock()
	h := d.routes[container]
	if raw, ok := d.targets[requestID]; ok {
		target = raw
	}
	d.mu.Unlock()
	verdictAction, allowFor := action, time.Duration(0)
	if action == render.KeyAllowFor {
		verdictAction, allowFor = event.ActionAllow, d.opts.AllowFor
	}
	log := d.log.With("container", container, "request_id", requestID, "dest", target, "action", action)
	d.actions.Go(func() {
		ctx := d.actCtx
		var err error
		if h == nil {
			err = errors.New("no hub known for this container")
		} else {
			log.Info("sending verdict", "hub", h.path)
			err = h.verdict(ctx, container, requestID, target, verdictAction, allowFor)
		}
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			return
		}
		var done *orgterokclearancehub1.AlreadyDecided
		if errors.As(err, &done) {
			// Another channel was first: show its outcome, and who.
			log.Info("already decided", "by", done.By, "decided", done.Action)
			d.popups.HandleEvent(ctx, event.Event{Type: event.VerdictApplied, Container: container,
				RequestID: requestID, Action: done.Action, OK: true, Reason: done.By, Dossier: map[string]string{}})
			return
		}
		log.Warn("verdict failed", "err", err)
		reason := ""
		if h != nil && hubclient.OutcomeUnknown(err) {
			reason = render.NoAnswer + ": " + err.Error()
		}
		d.popups.HandleEvent(ctx, event.Event{Type: event.VerdictApplied, Container: container,
			RequestID: requestID, Action: verdictAction, OK: false, Reason: reason, Dossier: map[string]string{}})
	})
}

// busLoop keeps the popups attached to a notification server: it feeds
// the bus events to the popups and, when the connection is lost, dials
// again with backoff (slowly when there is no session bus at all).
func (d *daemon) busLoop(ctx context.Context, bus Bus, err error) {
	backoff := d.opts.BackoffMin
	for {
		if bus != nil {
			d.setBus(bus)
			backoff = d.opts.BackoffMin
			// Without a notification server on it, this makes no call:
			// the prompts wait for its DaemonRestarted.
			d.popups.Reattach(ctx, bus)
			d.pump(ctx, bus)
			bus.Disconnect()
			d.setBus(nil)
			if ctx.Err() != nil {
				return
			}
			d.log.Warn("notification bus connection lost; reconnecting")
			d.popups.Reattach(ctx, offline{})
		}
		wait := backoff
		if errors.Is(err, notify.ErrNoSessionBus) {
			wait = d.opts.BusRetry
		} else {
			backoff = min(2*backoff, d.opts.BackoffMax)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		bus, err = d.opts.DialBus(ctx)
		switch {
		case err == nil:
			d.log.Info("connected to the notification bus")
		case ctx.Err() != nil:
			return
		case errors.Is(err, notify.ErrNoSessionBus):
			d.log.Debug("still no session bus", "err", err)
		default:
			d.log.Info("notification bus unreachable; retrying", "err", err, "in", backoff)
		}
	}
}

// pump delivers bus events until the connection is lost or ctx ends.
func (d *daemon) pump(ctx context.Context, bus Bus) {
	events := bus.Events()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if _, lost := ev.(notify.Disconnected); lost {
				return
			}
			d.popups.HandleSignal(ctx, ev)
			d.kick() // the server may have come or gone
		}
	}
}

func (d *daemon) setBus(bus Bus) {
	d.mu.Lock()
	d.bus = bus
	d.mu.Unlock()
	d.kick()
}

// hubChanged wakes the main loop: a hub connected or was refused.
func (d *daemon) hubChanged(*hubConn) {
	d.hubsChanged.Store(true)
	d.kick()
}

// kick wakes the main loop to recompute the status line. It never
// blocks.
func (d *daemon) kick() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// containers lists every container some hub reported.
func (d *daemon) containers() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.routes))
	for c := range d.routes {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// status is the one-line STATUS= for systemctl status, as things are
// now: "notifications: ok" only while the bus is connected and a
// notification server owns its name.
func (d *daemon) status() string {
	d.mu.Lock()
	n, up := len(d.hubs), 0
	for _, e := range d.hubs {
		if e.conn.connected.Load() {
			up++
		}
	}
	bus := d.bus
	d.mu.Unlock()
	pending, shown := d.popups.Pending()
	// Nothing is shown without a server, whatever Popups has yet to
	// learn about its departure.
	state := "notifications: ok"
	switch {
	case bus == nil:
		state, shown = "notifications: unavailable (no session bus; clearancectl watch)", 0
	case bus.Owner() == "":
		state, shown = "notifications: unavailable (no notification server; clearancectl watch)", 0
	}
	return fmt.Sprintf("%d hubs (%d connected), %d pending (%d shown), %s", n, up, pending, shown, state)
}

// offline is the notifier used while no bus is connected: every call
// fails at once with notify.ErrNoServer, so Popups makes no more calls
// and the prompts wait until a bus is attached.
type offline struct{}

var errOffline = fmt.Errorf("not connected to the session bus: %w", notify.ErrNoServer)

func (offline) Capabilities(context.Context) ([]string, error)              { return nil, errOffline }
func (offline) Notify(context.Context, notify.Notification) (uint32, error) { return 0, errOffline }
func (offline) Close(context.Context, uint32) error                         { return errOffline }
