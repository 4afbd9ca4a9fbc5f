// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"context"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terok-ai/clearance/internal/ask"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// fdAsk prefixes the names under which the ask endpoint's listening
// sockets are kept in the fd store ("ask-tcp4", "ask-tcp6"): a restarted
// hub serves the same sockets (the port stays taken by them), and
// connections made meanwhile wait in their backlog.
const fdAsk = "ask-"

// Ask asks the verdict service for the container's ask endpoint sockets.
// The caller owns them.
func (f *Firewall) Ask(ctx context.Context) (*verdictclient.AskSockets, error) {
	c, err := f.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Ask(ctx, f.Container, f.NS)
}

// AskEndpoint serves the container's ask endpoint (docs/ask.md): the
// verdict service creates its listening sockets inside the container's
// network namespace, the hub serves them unprivileged. A question
// becomes a pending request with the container's reason (or is answered
// at once when a rule already decides it), and the caller waits for the
// verdict.
type AskEndpoint struct {
	// Firewall creates the sockets. Required.
	Firewall *Firewall
	// Server serves them; its Decider is filled in by Run.
	Server *ask.Server
	// Dossier is attached to every request (already sanitised).
	Dossier map[string]string
	// DNS, if set, answers questions on names its rules already decide.
	DNS *DNS
	Log *slog.Logger

	hub       *hub.Hub
	container string
	stored    map[string]*os.File
	serving   atomic.Bool
	ready     chan struct{}
	readyOnce sync.Once
}

// Ready is closed once the endpoint's sockets exist (connections made
// from then on wait in their backlog until served), or the endpoint is
// turned off.
func (a *AskEndpoint) Ready() <-chan struct{} {
	a.readyOnce.Do(func() { a.ready = make(chan struct{}) })
	return a.ready
}

func (a *AskEndpoint) markReady() {
	a.Ready()
	select {
	case <-a.ready:
	default:
		close(a.ready) // only Run's goroutine closes it
	}
}

// Serving reports whether the endpoint's sockets are being served.
func (a *AskEndpoint) Serving() bool { return a != nil && a.serving.Load() }

// Run gets the sockets (from the fd store, else from the verdict
// service, retrying with backoff while it cannot) and serves them until
// ctx ends.
func (a *AskEndpoint) Run(ctx context.Context) error {
	a.Server.Decider = &hubAsker{h: a.hub, fw: a.Firewall, dns: a.DNS, container: a.container, dossier: a.Dossier}
	if a.Server.Log == nil {
		a.Server.Log = a.Log
	}
	backoff := time.Second
	for ctx.Err() == nil {
		socks, err := a.sockets(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if strings.Contains(err.Error(), "ask.port: 0") {
				a.Log.Info("the ask endpoint is turned off in the system configuration", "container", a.container)
				a.markReady()
				break
			}
			a.Log.Warn("ask endpoint not available; retrying", "container", a.container, "err", err, "in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Minute)
			continue
		}
		backoff = time.Second
		a.markReady()
		a.serve(ctx, socks)
	}
	for _, f := range a.stored {
		f.Close()
	}
	return nil
}

// sockets returns the stored sockets, or new ones from the verdict
// service (kept in the fd store).
func (a *AskEndpoint) sockets(ctx context.Context) (map[string]*os.File, error) {
	if len(a.stored) > 0 {
		s := a.stored
		a.stored = nil
		a.Log.Info("ask endpoint sockets taken back from the fd store", "container", a.container)
		return s, nil
	}
	for _, name := range []string{askTCP4, askTCP6} {
		storeFDs(a.Log, fdAsk+name) // stale ones would hold the port
	}
	s, err := a.Firewall.Ask(ctx)
	if err != nil {
		return nil, err
	}
	for name, f := range s.Sockets {
		storeFDs(a.Log, fdAsk+name, f)
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range s.Sockets {
			if !yield(n) {
				return
			}
		}
	})
	a.Log.Info("ask endpoint open", "container", a.container, "port", s.Port, "sockets", strings.Join(names, ","))
	return s.Sockets, nil
}

// Names of the ask sockets (verdict.SockAsk4, verdict.SockAsk6).
const (
	askTCP4 = "tcp4"
	askTCP6 = "tcp6"
)

// serve serves socks until ctx ends or every listener fails.
func (a *AskEndpoint) serve(ctx context.Context, socks map[string]*os.File) {
	var wg sync.WaitGroup
	for name, f := range socks {
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			a.Log.Warn("ask endpoint socket unusable", "socket", name, "err", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Server.Serve(ctx, ln); err != nil && ctx.Err() == nil {
				a.Log.Warn("ask endpoint socket failed", "socket", name, "err", err)
			}
		}()
	}
	a.serving.Store(true)
	wg.Wait()
	a.serving.Store(false)
	if ctx.Err() == nil {
		// Every listener ended: ask for new sockets.
		for name := range socks {
			storeFDs(a.Log, fdAsk+name)
		}
	}
}

// hubAsker answers the endpoint's questions with the hub: what a rule
// already decides is answered at once, anything else becomes a pending
// request carrying the container's reason.
type hubAsker struct {
	h         *hub.Hub
	fw        *Firewall
	dns       *DNS
	container string
	dossier   map[string]string
}

// Ask implements [ask.Decider].
func (a *hubAsker) Ask(ctx context.Context, q ask.Question) (ask.Answer, error) {
	out := ask.Answer{Dest: q.Dest, Port: int(q.Port), Proto: q.Proto, Reason: q.Reason}
	proto := int64(event.ProtoTCP)
	if q.Proto == "udp" {
		proto = event.ProtoUDP
	}
	if a.h.Observing() {
		out.Status, out.By = ask.StatusAllowed, "observe mode"
		out.Message = "this container runs in observe mode: its firewall does not enforce; connect"
		return out, nil
	}
	if status, by := a.ruled(ctx, q, proto); status != "" {
		out.Status, out.By = status, by
		out.Message = "already " + status + " by " + by
		return out, nil
	}
	ev := event.Event{Container: a.container, Port: int64(q.Port), Proto: proto, Reason: q.Reason, Dossier: a.dossier}
	if q.IsName {
		ev.Domain = q.Dest
	} else {
		ev.Dest = q.Dest
	}
	id, _ := a.h.Ask(ev)
	out.Status, out.RequestID = ask.StatusPending, id
	out.Message = "waiting for the operator's verdict"
	return out, nil
}

// ruled returns the status and rule of a question a rule already
// decides: for a name, the DNS forwarder's name rules (policy and
// verdicts); for an address, the container's ruleset. "" when none does.
func (a *hubAsker) ruled(ctx context.Context, q ask.Question, proto int64) (status, by string) {
	if q.IsName {
		if a.dns == nil {
			return "", ""
		}
		if r, ok := a.dns.rules.denies(q.Dest, uint8(proto), q.Port); ok {
			return ask.StatusDenied, "rule " + r.text()
		}
		dec := a.dns.rules.Decide([]string{q.Dest})
		for _, g := range dec.Allow {
			if (g.Port == 0 || g.Port == q.Port) && (g.Proto == 0 || int64(g.Proto) == proto) {
				return ask.StatusAllowed, "rule " + g.Rule
			}
		}
		return "", ""
	}
	if a.fw == nil {
		return "", ""
	}
	c, err := a.fw.dial(ctx)
	if err != nil {
		return "", ""
	}
	defer c.Close()
	x, err := c.Explain(ctx, a.fw.Container, q.Dest, int(q.Port), q.Proto, a.fw.NS)
	if err != nil {
		return "", ""
	}
	rule := x.Reason
	if x.Comment != "" {
		rule += " (" + x.Comment + ")"
	}
	switch nft.Reason(x.Reason) {
	case nft.ReasonAllowed, nft.ReasonLearned, nft.ReasonLoopback:
		return ask.StatusAllowed, "rule " + rule
	case nft.ReasonDenied:
		return ask.StatusDenied, "rule " + rule
	}
	return "", ""
}

// Await implements [ask.Decider].
func (a *hubAsker) Await(ctx context.Context, id string) ask.Answer {
	o := a.h.Await(ctx, id)
	switch o.State {
	case hub.OutcomeDecided:
		out := ask.Answer{Status: ask.StatusDenied, Scope: o.Scope, By: o.By}
		if o.Action == event.ActionAllow {
			out.Status = ask.StatusAllowed
		}
		if !o.Expires.IsZero() {
			out.ExpiresUsec = o.Expires.UnixMicro()
		}
		out.Message = out.Status + " " + o.By
		return out
	case hub.OutcomeGone:
		return ask.Answer{Status: ask.StatusGone,
			Message: "the request is no longer pending: it expired unanswered, or the hub forgot it; ask again"}
	}
	return ask.Answer{Status: ask.StatusPending}
}
