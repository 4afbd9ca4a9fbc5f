// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package hubd assembles clearance-hub, the per-container hub daemon: the
// [hub.Hub] behind its varlink socket (org.terok.Clearance1,
// org.terok.ClearanceHub1, io.systemd.service), the ingest socket for
// external producers, the NFLOG watch through the privileged verdict
// service, and the systemd notification protocol.
package hubd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/ingest"
	"github.com/terok-ai/clearance/internal/varlinkapi"
)

// SDNotifier is the part of the systemd notification protocol the hub
// uses; *sd.Notifier implements it.
type SDNotifier interface {
	Ready(status string)
	Status(status string)
	Stopping()
	RunWatchdog(ctx context.Context)
}

// Options configures [Run].
type Options struct {
	// Container is the id the hub serves. Required.
	Container string

	// Varlink and Ingest are the listeners (from socket activation, or
	// bound by the caller). At least one varlink listener is required;
	// Run closes them all when it returns.
	Varlink []net.Listener
	Ingest  []net.Listener

	// Hub configures the hub core. Container, Log and (unless set)
	// Applier are filled in by Run.
	Hub hub.Config

	// MaxMessage bounds a varlink request; MaxLine an ingest line.
	MaxMessage int
	MaxLine    int

	// Watcher, if set, feeds blocked packets from NFLOG (builtin or
	// terok-shield ruleset through the verdict service). Run starts it.
	Watcher *Watcher

	// Ask, if set, serves the container's ask endpoint (docs/ask.md).
	// Run starts it.
	Ask *AskEndpoint

	// Level is the log level io.systemd.service.SetLogLevel changes.
	Level *slog.LevelVar

	// Log receives the audit trail and diagnostics. Nil discards.
	Log *slog.Logger

	// SD is the systemd notifier; nil means none.
	SD SDNotifier

	// StatusEvery is how often STATUS= is refreshed (default 2s).
	StatusEvery time.Duration

	// RebindEvery is how often the hub checks that its socket files still
	// exist, and binds them again if not (default 2s).
	RebindEvery time.Duration

	// Ready, if set, is called once the hub is serving (after READY=1).
	Ready func(*hub.Hub)

	// Stored are the descriptors a previous process of this hub left in
	// systemd's file descriptor store; Run takes them over.
	Stored Stored

	// ConfigError, when set, says why the configuration was not used
	// (file:line): the hub runs on the defaults, reports it in Stats and
	// sends it once to each subscriber as a hub_notice event.
	ConfigError string
}

// Stored are the descriptors a hub keeps in systemd's file descriptor
// store across a restart of its process.
type Stored struct {
	// State is the memfd with the saved state (pending requests, timed
	// verdicts, verdicts on names, the forwarder's description).
	State *os.File
	// NFLOG is the bound NFLOG socket: records blocked while the hub was
	// down wait in it.
	NFLOG *os.File
	// DNS are the forwarder's sockets by name (verdict.SockUDP4 …).
	DNS map[string]*os.File
	// Ask are the ask endpoint's listening sockets by name
	// (verdict.SockAsk4 …).
	Ask map[string]*os.File
}

func (s Stored) close() {
	for _, f := range []*os.File{s.State, s.NFLOG} {
		if f != nil {
			f.Close()
		}
	}
	for _, m := range []map[string]*os.File{s.DNS, s.Ask} {
		for _, f := range m {
			f.Close()
		}
	}
}

// Run serves one container's hub until ctx ends, then shuts down cleanly:
// STOPPING=1, every connection closed, every goroutine finished.
func Run(ctx context.Context, o Options) error {
	if o.Container == "" {
		return errors.New("hub: no container id")
	}
	if len(o.Varlink) == 0 {
		return errors.New("hub: no varlink listener")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("container", o.Container)
	if o.Level == nil {
		o.Level = new(slog.LevelVar)
	}
	store, saved, err := openStateStore(o.Stored.State, log)
	if err != nil {
		log.Warn("hub state", "err", err)
	}
	defer store.close()
	hc := o.Hub
	hc.Container = o.Container
	hc.Log = log
	hc.OnChange = store.changed
	if o.ConfigError != "" {
		hc.Notice = "clearance-hub runs on its default configuration: " + o.ConfigError
	}
	h := hub.New(hc)
	if saved != nil {
		h.Restore(saved.Hub)
		log.Info("hub state taken back after a restart", "pending", len(saved.Hub.Pending),
			"timed_verdicts", len(saved.Hub.Expiry), "saved", saved.Saved)
	}

	in := &ingest.Server{
		Sink: func(ev event.Event) error {
			// The container a producer names is informational; the hub
			// serves exactly one container, named by its unit instance.
			h.Publish(ev)
			return nil
		},
		Log: log, MaxLine: o.MaxLine,
	}
	extra := func() Extra {
		st := in.Stats()
		x := Extra{Malformed: st.Malformed + st.Oversized, Ruleset: "external", ConfigError: o.ConfigError}
		if o.Watcher != nil {
			x.ENOBUFS = o.Watcher.ENOBUFS()
			x.Ruleset = "engaging"
			if o.Watcher.Watching() {
				x.Ruleset = "engaged"
			}
			if o.Watcher.DNS != nil {
				ds := o.Watcher.DNS.Stats()
				x.DNS = &ds
			}
		}
		if o.Ask != nil {
			x.Ask = &AskExtra{Serving: o.Ask.Serving(), Stats: o.Ask.Server.Stats()}
		}
		return x
	}
	svc, err := NewService(h, o.Level, extra, log)
	if err != nil {
		return fmt.Errorf("varlink service: %w", err)
	}
	vs := &varlinkapi.Server{Service: svc, Log: log, MaxMessage: o.MaxMessage, Params: ParamCheck()}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(o.Varlink)+len(o.Ingest)+1)
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	if store != nil {
		snapshot := func() savedState {
			st := savedState{Hub: h.State()}
			if o.Watcher != nil && o.Watcher.DNS != nil {
				st.DNS = o.Watcher.DNS.state()
			}
			return st
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			store.run(ctx, snapshot)
		}()
	}
	for _, ln := range o.Varlink {
		run(func() error { return vs.Serve(ctx, ln) })
	}
	for _, ln := range o.Ingest {
		run(func() error { return in.Serve(ctx, ln) })
	}
	// Sockets whose files are deleted under the hub are bound again.
	var ingestPaths sync.Map
	for _, ln := range o.Ingest {
		if p := socketPath(ln); p != "" {
			ingestPaths.Store(p, true)
		}
	}
	rb := &rebinder{log: log, serve: func(ln net.Listener) {
		if _, ok := ingestPaths.Load(socketPath(ln)); ok {
			run(func() error { return in.Serve(ctx, ln) })
			return
		}
		run(func() error { return vs.Serve(ctx, ln) })
	}}
	rb.watch(o.Varlink...)
	rb.watch(o.Ingest...)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rb.run(ctx, o.rebindEvery())
	}()
	if o.Watcher != nil {
		o.Watcher.Hub = h
		o.Watcher.Container = o.Container
		if o.Watcher.Log == nil {
			o.Watcher.Log = log
		}
		o.Watcher.stored = o.Stored.NFLOG
		if d := o.Watcher.DNS; d != nil {
			d.Hub = h
			if d.Log == nil {
				d.Log = log
			}
			d.onChange = store.changed
			var ds *dnsState
			if saved != nil {
				ds = &saved.DNS
			}
			d.restore(ds, o.Stored.DNS)
			defer d.close()
		} else {
			for _, f := range o.Stored.DNS {
				f.Close()
			}
		}
		o.Watcher.Ready() // initialise before the goroutine starts
		run(func() error { return o.Watcher.Run(ctx) })
		if saved == nil && o.Watcher.Firewall != nil {
			// No saved state to come back to: rebuild the timed verdicts
			// in force from the ruleset once the watch is up.
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-o.Watcher.Ready():
				case <-ctx.Done():
					return
				}
				ex, err := o.Watcher.Firewall.timedVerdicts(ctx, time.Now())
				if err != nil {
					log.Warn("rebuild timed verdicts from the ruleset", "err", err)
					return
				}
				h.Restore(hub.State{Expiry: ex})
				if len(ex) > 0 {
					log.Info("timed verdicts rebuilt from the ruleset", "count", len(ex))
				}
			}()
		}
	} else {
		for _, f := range o.Stored.DNS {
			f.Close()
		}
		if f := o.Stored.NFLOG; f != nil {
			f.Close()
		}
	}

	if o.Ask != nil {
		o.Ask.hub = h
		o.Ask.container = o.Container
		if o.Ask.Log == nil {
			o.Ask.Log = log
		}
		o.Ask.stored = o.Stored.Ask
		o.Ask.Ready() // initialise before the goroutine starts
		run(func() error { return o.Ask.Run(ctx) })
	} else {
		for _, f := range o.Stored.Ask {
			f.Close()
		}
	}

	status := func() string {
		st := h.Stats()
		s := fmt.Sprintf("serving %s: %d subscriber(s), %d pending", o.Container, st.Subscribers, st.Pending)
		if st.Observing {
			s = "OBSERVE MODE, NOT ENFORCED: " + s
		}
		return s
	}
	// READY=1 means blocked packets reach subscribers and the container
	// may ask from its first instruction: wait for the NFLOG watch and
	// the ask endpoint's sockets, but not forever (a missing verdict
	// service must not keep the unit in "activating"; both keep retrying).
	upCtx, upCancel := context.WithTimeout(ctx, 5*time.Second)
	waitUp := func(ready <-chan struct{}, what string) {
		select {
		case <-ready:
		case <-upCtx.Done():
			if ctx.Err() == nil {
				log.Warn(what + " not up yet; serving without it for now")
			}
		}
	}
	if o.Watcher != nil {
		waitUp(o.Watcher.Ready(), "NFLOG watch")
	}
	if o.Ask != nil {
		waitUp(o.Ask.Ready(), "ask endpoint")
	}
	upCancel()
	if o.SD != nil {
		o.SD.Ready(status())
		run(func() error { o.SD.RunWatchdog(ctx); return nil })
	}
	log.Info("hub ready", "subscribers", 0)
	if o.Ready != nil {
		o.Ready(h)
	}

	every := o.StatusEvery
	if every <= 0 {
		every = 2 * time.Second
	}
	statusTick := time.NewTicker(every)
	defer statusTick.Stop()
	// Timed verdicts are checked against the wall clock every second.
	expiryTick := time.NewTicker(time.Second)
	defer expiryTick.Stop()
	last := ""
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-expiryTick.C:
			h.ExpireVerdicts(ctx)
		case <-statusTick.C:
			if n := h.Expire(); n > 0 {
				log.Info("purged stale pending requests", "count", n)
			}
			if s := status(); s != last && o.SD != nil {
				o.SD.Status(s)
				last = s
			}
		}
	}
	if o.SD != nil {
		o.SD.Stopping()
	}
	cancel()
	wg.Wait()
	for _, ln := range o.Varlink {
		ln.Close()
	}
	for _, ln := range o.Ingest {
		ln.Close()
	}
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	log.Info("hub stopped")
	return errors.Join(errs...)
}

func (o Options) rebindEvery() time.Duration {
	if o.RebindEvery > 0 {
		return o.RebindEvery
	}
	return 2 * time.Second
}
