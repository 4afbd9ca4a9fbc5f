// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/nflog"
	"github.com/terok-ai/clearance/internal/sanitize"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// Firewall is the hub's client of the privileged verdict service
// (org.terok.ClearanceFirewall1). It opens one connection per call: the
// service is started per connection (Accept=yes), so nothing privileged
// runs between calls.
//
// Firewall implements [hub.Applier]. It is safe for concurrent use.
type Firewall struct {
	// Socket is the verdict service's socket (default
	// verdictclient.DefaultSocket).
	Socket string
	// Container is the id the container's runtime record was written under.
	Container string
	// OnceTTL is the default lifetime of a "once" verdict; 0 leaves it to
	// the service's configuration.
	OnceTTL time.Duration
	// NS, if set, is the container's network namespace, opened by the hub
	// itself. It is passed with every call (SCM_RIGHTS), so the service
	// acts on the namespace the hub proved it can open instead of
	// resolving a pid from the runtime record. The Firewall does not own
	// it.
	NS *os.File
	// Policy names the YAML policy "always" verdicts are saved to; ""
	// leaves it to the runtime record.
	Policy string
	// DNS, if set, is told of verdicts on names (the forwarder follows
	// them) and of their end.
	DNS *DNS
}

func (f *Firewall) dial(ctx context.Context) (*verdictclient.Client, error) {
	return verdictclient.Dial(ctx, f.Socket)
}

// Apply writes a verdict into the container's ruleset: for the blocked
// packet's address, narrowed to its port and protocol (TCP, UDP, SCTP)
// unless req.AnyPort, with the name the verdict is about stored with the
// element (and saved instead of the address by "always").
func (f *Firewall) Apply(ctx context.Context, req hub.ApplyRequest) (hub.ApplyResult, error) {
	ip := req.IP
	if ip == "" {
		ip = req.Dest
	}
	if _, err := netip.ParseAddr(ip); err != nil {
		return hub.ApplyResult{Stderr: fmt.Sprintf("no IP address to %s for %q", req.Action, req.Dest)}, nil
	}
	ttl := req.TTL
	if ttl == 0 && req.Scope == hub.ScopeOnce {
		ttl = f.OnceTTL
	}
	c, err := f.dial(ctx)
	if err != nil {
		return hub.ApplyResult{}, err
	}
	defer c.Close()
	policy := ""
	if req.Scope == hub.ScopeAlways {
		policy = f.Policy
	}
	proto, port := servicePort(req)
	res, err := c.Apply(ctx, verdictclient.ApplyRequest{Container: f.Container, IP: ip, Action: req.Action,
		Scope: req.Scope, TTL: ttl, PolicyTarget: policy, Proto: proto, Port: port, Name: req.Name()}, f.NS)
	if err != nil {
		return hub.ApplyResult{}, fmt.Errorf("verdict service: %w", err)
	}
	if res.OK && f.DNS != nil {
		f.DNS.verdictApplied(ctx, req, res.Expires)
	}
	return hub.ApplyResult{OK: res.OK, Stderr: res.Stderr, Expires: res.Expires}, nil
}

// servicePort returns the protocol name and port a verdict is narrowed
// to, or "" and 0 for the whole host (req.AnyPort, or a protocol without
// ports).
func servicePort(req hub.ApplyRequest) (string, int) {
	if req.AnyPort || req.Port <= 0 || req.Port > 65535 {
		return "", 0
	}
	switch req.Proto {
	case event.ProtoTCP:
		return "tcp", int(req.Port)
	case event.ProtoUDP:
		return "udp", int(req.Port)
	case protoSCTP:
		return "sctp", int(req.Port)
	}
	return "", 0
}

// protoSCTP is the IP protocol number of SCTP.
const protoSCTP = 132

// Revoke takes back what Apply wrote for req.
func (f *Firewall) Revoke(ctx context.Context, req hub.ApplyRequest) error {
	if f.DNS != nil {
		f.DNS.verdictRevoked(req)
	}
	c, err := f.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	proto, port := servicePort(req)
	return c.Revoke(ctx, f.Container, req.IP, proto, port, f.NS)
}

// Engage installs or verifies the container's ruleset.
func (f *Firewall) Engage(ctx context.Context) (engagedNow bool, err error) {
	c, err := f.dial(ctx)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_, now, err := c.Engage(ctx, f.Container, f.NS)
	return now, err
}

// Watch asks the service for the container's bound NFLOG socket. The
// caller owns the returned file.
func (f *Firewall) Watch(ctx context.Context) (*os.File, error) {
	c, err := f.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	file, _, err := c.Watch(ctx, f.Container, f.NS)
	return file, err
}

// Watcher turns the container's NFLOG records into blocked requests at the
// hub: it engages the ruleset, gets the bound NFLOG socket from the verdict
// service, reads it, names destinations from the DNS replies it logs, and
// calls [hub.Hub.Blocked]. When the socket or the service goes away it
// retries with backoff.
type Watcher struct {
	Hub       *hub.Hub
	Firewall  *Firewall
	Container string
	// BlockPrefix and DNSPrefix are the NFLOG prefixes of the ruleset.
	BlockPrefix, DNSPrefix string
	// Dossier is attached to every blocked event (the container's
	// identity from its runtime record, already sanitised).
	Dossier map[string]string
	// DNS, if set, runs the container's DNS forwarder beside the NFLOG
	// watch (built-in ruleset) and names blocked destinations; without
	// it, names come from DNS replies logged under DNSPrefix
	// (terok-shield's ruleset).
	DNS *DNS
	Log *slog.Logger

	names    nflog.Names
	stored   *os.File // an NFLOG socket from the fd store, used by the first attempt
	enobufs  atomic.Pointer[func() uint64]
	watching atomic.Bool
	ready    chan struct{}
}

// Ready is closed once the first NFLOG socket is being read.
func (w *Watcher) Ready() <-chan struct{} {
	if w.ready == nil {
		w.ready = make(chan struct{})
	}
	return w.ready
}

// Watching reports whether an NFLOG socket is being read right now.
func (w *Watcher) Watching() bool { return w.watching.Load() }

// ENOBUFS reports how many times the kernel dropped records because the
// hub read too slowly.
func (w *Watcher) ENOBUFS() uint64 {
	f := w.enobufs.Load()
	if f == nil {
		return 0
	}
	return (*f)()
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	if w.ready == nil {
		w.ready = make(chan struct{})
	}
	var total uint64
	readyOnce := false
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := w.once(ctx, &total, func() {
			if !readyOnce {
				readyOnce = true
				close(w.ready)
			}
			backoff = 100 * time.Millisecond
		})
		if ctx.Err() != nil {
			return nil
		}
		w.Log.Warn("nflog watch lost; retrying", "container", w.Container, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	return nil
}

func (w *Watcher) once(ctx context.Context, total *uint64, up func()) error {
	if _, err := w.Firewall.Engage(ctx); err != nil {
		return err
	}
	f := w.stored
	w.stored = nil
	if f != nil {
		w.Log.Info("NFLOG socket taken back from the fd store: records blocked meanwhile follow", "container", w.Container)
	} else {
		// The stored socket, if any, still binds the group: drop it first.
		storeFDs(w.Log, fdNFLOG)
		var err error
		if f, err = w.Firewall.Watch(ctx); err != nil {
			return err
		}
		storeFDs(w.Log, fdNFLOG, f)
	}
	r, err := nflog.NewReader(f, w.Log)
	if err != nil {
		f.Close()
		return err
	}
	r.SetReadBuffer(4 << 20)
	base := *total
	count := func() uint64 { return base + r.Stats().ENOBUFS }
	w.enobufs.Store(&count)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	fwdErr := make(chan error, 1)
	if w.DNS != nil {
		run, err := w.DNS.start(ctx)
		if err != nil {
			// Prompts still work; the container's DNS fails closed (its
			// redirect leads nowhere) until the next attempt.
			w.Log.Warn("DNS forwarder not started; the container's DNS is refused", "container", w.Container, "err", err)
		} else {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := run(ctx)
				if ctx.Err() == nil {
					if err == nil {
						err = errors.New("DNS forwarder ended")
					}
					fwdErr <- err
					cancel()
				}
			}()
		}
	}
	up()
	w.watching.Store(true)
	err = r.Run(ctx, w.handle)
	w.watching.Store(false)
	cancel()
	wg.Wait()
	*total = base + r.Stats().ENOBUFS
	select {
	case ferr := <-fwdErr:
		return ferr
	default:
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	if err == nil {
		err = errors.New("nflog reader ended")
	}
	return err
}

func (w *Watcher) handle(rec nflog.Record) {
	now := time.Now()
	switch {
	case w.DNS == nil && w.DNSPrefix != "" && strings.HasPrefix(rec.Prefix, strings.TrimSpace(w.DNSPrefix)):
		answers, _ := nflog.ParseDNS(rec.Payload)
		if len(answers) > 0 {
			w.names.Observe(answers, now)
		}
	case w.BlockPrefix == "" || strings.HasPrefix(rec.Prefix, strings.TrimSpace(w.BlockPrefix)):
		p, err := nflog.ParsePacket(rec.Payload)
		if err != nil || p.Dst.IsMulticast() {
			return // multicast (e.g. ff02::/16 neighbour discovery) is noise, not a prompt
		}
		ev := event.Event{Container: w.Container, Dest: p.Dst.String(), Port: int64(p.DstPort), Proto: int64(p.Proto),
			Dossier: w.Dossier}
		if w.DNS != nil {
			if names := w.DNS.Names(p.Dst); len(names) > 0 {
				ev.Domain = sanitize.String(names[0], sanitize.DefaultMax) // names come from the container
			}
			if w.DNS.blocked(ev) {
				return // a name a rule denies: dropped from now on, no prompt
			}
		} else if name, ok := w.names.Lookup(p.Dst, now); ok {
			ev.Domain = sanitize.String(name, sanitize.DefaultMax) // DNS names come from the container
		}
		w.Hub.Blocked(ev)
	}
}

// timedVerdicts rebuilds the timed verdicts in force from the container's
// ruleset (its allow and deny elements with a timeout), for a hub that
// has no saved state to take them from: their expiry is enforced by the
// wall clock again.
func (f *Firewall) timedVerdicts(ctx context.Context, now time.Time) ([]hub.ExpiryState, error) {
	c, err := f.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	els, err := c.List(ctx, f.Container, f.NS)
	if err != nil {
		return nil, err
	}
	var out []hub.ExpiryState
	for _, e := range els {
		if e.Timeout_sec <= 0 || e.Expires_usec <= 0 || (e.List != event.ActionAllow && e.List != event.ActionDeny) {
			continue
		}
		if _, err := netip.ParseAddr(e.Dest); err != nil {
			continue // a CIDR: verdicts are about single addresses
		}
		req := hub.ApplyRequest{Container: f.Container, Dest: e.Dest, IP: e.Dest, Action: e.List, Scope: hub.ScopeOnce,
			AnyPort: true}
		if e.Comment != "" && strings.IndexFunc(e.Comment, func(r rune) bool { return r <= ' ' || r > '~' }) < 0 {
			req.Dest = e.Comment // the name the verdict was about
		}
		if e.Port != nil && e.Proto != nil && *e.Port > 0 {
			req.AnyPort, req.Port = false, *e.Port
			switch *e.Proto {
			case "tcp":
				req.Proto = event.ProtoTCP
			case "udp":
				req.Proto = event.ProtoUDP
			case "sctp":
				req.Proto = protoSCTP
			}
		}
		at := time.UnixMicro(e.Expires_usec)
		if at.Before(now) {
			at = now
		}
		out = append(out, hub.ExpiryState{Request: req, At: at})
	}
	return out, nil
}
