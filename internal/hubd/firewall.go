// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/nflog"
	"github.com/terok-ai/clearance/internal/nft"
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
	if ip == "" && req.Name() == "" {
		ip = req.Dest
	}
	if _, err := netip.ParseAddr(ip); err != nil && (ip != "" || f.DNS == nil) {
		// A verdict on a name alone (the container asked for it before
		// connecting) needs the DNS forwarder, which learns its
		// addresses; anything else needs an address.
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
		Scope: req.Scope, TTL: ttl, PolicyTarget: policy, Proto: proto, Port: port, Name: req.Name(),
		VerdictID: req.VerdictID}, f.NS)
	if err != nil {
		err = fmt.Errorf("verdict service: %w", err)
		if !answered(err) {
			// The call was sent and no answer came: the service may have
			// committed it. Its own record (same verdict id) says.
			err = &hub.OutcomeUnknownError{Err: err}
		}
		return hub.ApplyResult{}, err
	}
	if res.OK && f.DNS != nil {
		f.DNS.verdictApplied(ctx, req, res.Expires)
	}
	return hub.ApplyResult{OK: res.OK, Stderr: res.Stderr, Expires: res.Expires,
		NotSaved: res.Outcome == audit.OutcomeNotSaved}, nil
}

// answered reports whether err is the verdict service's reply (a typed or
// a generic varlink error), as opposed to a connection that broke or a
// call that timed out before any reply.
func answered(err error) bool {
	var ve *varlink.Error
	return isServiceError(err) || errors.As(err, &ve)
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
	if req.IP == "" && req.Name() != "" {
		// A verdict on a name alone wrote no element; the addresses
		// learned for it carry their own timeout, within the verdict's.
		return nil
	}
	c, err := f.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	proto, port := servicePort(req)
	return c.Revoke(ctx, f.Container, req.IP, proto, port, f.NS)
}

// Engage installs or verifies the container's ruleset, and reports its
// mode.
func (f *Firewall) Engage(ctx context.Context) (verdictclient.Engagement, error) {
	c, err := f.dial(ctx)
	if err != nil {
		return verdictclient.Engagement{}, err
	}
	defer c.Close()
	return c.EngageMode(ctx, f.Container, f.NS)
}

// Verify asks whether the container's ruleset is still as Engage built
// it: "intact", "altered" or "missing".
func (f *Firewall) Verify(ctx context.Context) (string, error) {
	c, err := f.dial(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.Verify(ctx, f.Container, f.NS)
}

// Monitor returns a socket on which the kernel announces every nftables
// change in the container's namespace.
func (f *Firewall) Monitor(ctx context.Context) (*os.File, error) {
	c, err := f.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Monitor(ctx, f.Container, f.NS)
}

// Disengage takes the container's ruleset down.
func (f *Firewall) Disengage(ctx context.Context) error {
	c, err := f.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Disengage(ctx, f.Container, f.NS)
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
	// BlockPrefix and DNSPrefix are the NFLOG prefixes of the ruleset;
	// ObservePrefix that of connections an observe-mode ruleset let
	// through (default nft.DefaultObservePrefix).
	BlockPrefix, DNSPrefix, ObservePrefix string
	// Dossier is attached to every blocked event (the container's
	// identity from its runtime record, already sanitised).
	Dossier map[string]string
	// DNS, if set, runs the container's DNS forwarder beside the NFLOG
	// watch (built-in ruleset) and names blocked destinations; without
	// it, names come from DNS replies logged under DNSPrefix
	// (terok-shield's ruleset).
	DNS *DNS
	// GuardEvery is how often the ruleset is verified while watched
	// (built-in ruleset): a table removed or altered in the namespace is
	// announced as shield_down, audited and engaged again. 0 means
	// [DefaultGuardEvery]; negative, never.
	GuardEvery time.Duration
	Log        *slog.Logger

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
	e, err := w.Firewall.Engage(ctx)
	if err != nil {
		return err
	}
	if e.ModeNote != "" {
		w.Log.Warn("observe mode refused; the container runs enforced: "+e.ModeNote, "container", w.Container)
	}
	w.Hub.SetObserving(e.Observing(), w.Dossier)
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
	if w.GuardEvery >= 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.guard(ctx)
		}()
	}
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

func (w *Watcher) observePrefix() string {
	if w.ObservePrefix != "" {
		return w.ObservePrefix
	}
	return nft.DefaultObservePrefix
}

func (w *Watcher) handle(rec nflog.Record) {
	now := time.Now()
	switch {
	case w.DNS == nil && w.DNSPrefix != "" && strings.HasPrefix(rec.Prefix, strings.TrimSpace(w.DNSPrefix)):
		answers, _ := nflog.ParseDNS(rec.Payload)
		if len(answers) > 0 {
			w.names.Observe(answers, now)
		}
	case strings.HasPrefix(rec.Prefix, strings.TrimSpace(w.observePrefix())):
		// Observe mode: let through, recorded once per destination.
		p, err := nflog.ParsePacket(rec.Payload)
		if err != nil || p.Dst.IsMulticast() {
			return
		}
		ev := event.Event{Container: w.Container, Dest: p.Dst.String(), Port: int64(p.DstPort), Proto: int64(p.Proto),
			Dossier: w.Dossier}
		if w.DNS != nil {
			if names := w.DNS.Names(p.Dst); len(names) > 0 {
				ev.Domain = sanitize.String(names[0], sanitize.DefaultMax) // names come from the container
			}
		}
		w.Hub.Observed(ev)
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

// DefaultGuardEvery is how often a watched ruleset is verified when the
// kernel's nftables events cannot be followed; with them it is verified
// on every change of a table, chain or rule there, and every
// guardBackstop besides.
const DefaultGuardEvery = 2 * time.Second

// guardBackstop is how often the ruleset is verified although no event
// said it changed (a lost event: the monitor socket's buffer overflowed).
const guardBackstop = time.Minute

// guard verifies the ruleset until ctx ends: whenever the kernel
// announces a change of a table, chain or rule in the container's
// namespace (a monitor socket from the verdict service), or every
// GuardEvery without one. A process holding CAP_NET_ADMIN in the
// namespace (the container, if an administrator allowed it the
// capability, or root) can delete or change the table; prompts would go
// on while nothing is enforced. The guard announces shield_down to every
// subscriber, audits it, engages the ruleset again and announces
// shield_up.
func (w *Watcher) guard(ctx context.Context) {
	every := w.GuardEvery
	if every == 0 {
		every = DefaultGuardEvery
	}
	changed := make(chan struct{}, 1)
	if mon, err := w.Firewall.Monitor(ctx); err != nil {
		w.Log.Info("nftables events not followed; verifying the ruleset periodically", "container", w.Container,
			"every", every, "err", err)
	} else {
		go followNFTables(ctx, mon, w.Log, func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		})
		every = max(every, guardBackstop)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-changed:
		}
		integ, err := w.Firewall.Verify(ctx)
		if err != nil {
			if ctx.Err() == nil {
				w.Log.Debug("ruleset not verified", "container", w.Container, "err", err)
			}
			continue
		}
		switch nft.Integrity(integ) {
		case nft.Intact:
			continue
		case nft.Outdated:
			// Built by clearance for another version or configuration:
			// rebuild it, nobody tampered with it.
			if _, err := w.Firewall.Engage(ctx); err != nil {
				w.Log.Warn("outdated ruleset not rebuilt", "container", w.Container, "err", err)
			}
			continue
		}
		w.Hub.Emit(event.Event{Type: event.ShieldDown, Container: w.Container, Dossier: w.Dossier,
			Reason: "ruleset " + integ + " in the container's namespace"})
		_, err = w.Firewall.Engage(ctx)
		w.Log.Error("ruleset "+integ+" in the container's namespace: egress was not enforced; engaged again",
			audit.FieldMessageID, audit.MsgTampered, audit.FieldContainer, w.Container,
			audit.FieldSide, audit.SideOperator, audit.FieldReason, integ, "err", err)
		if err == nil {
			w.Hub.Emit(event.Event{Type: event.ShieldUp, Container: w.Container, Dossier: w.Dossier})
		}
	}
}

// followNFTables reads the kernel's nftables events from mon (closing it
// when ctx ends) and calls changed for every change of a table, chain,
// rule or set, and when events were lost.
func followNFTables(ctx context.Context, mon *os.File, log *slog.Logger, changed func()) {
	// A descriptor received over SCM_RIGHTS is blocking; a non-blocking
	// copy lets the runtime's poller wake the read when ctx ends.
	f, err := nonblocking(mon)
	if err != nil {
		log.Warn("nftables events not followed", "err", err)
		return
	}
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		switch {
		case errors.Is(err, unix.ENOBUFS):
			changed() // events were lost: one of them may have been a change
			continue
		case err != nil:
			if ctx.Err() == nil {
				log.Warn("nftables events lost", "err", err)
			}
			f.Close()
			return
		}
		if nftChanged(buf[:n]) {
			changed()
		}
	}
}

// nonblocking returns a non-blocking duplicate of f and closes f.
func nonblocking(f *os.File) (*os.File, error) {
	defer f.Close()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// nftChanged reports whether the netlink messages in b announce a change
// of a table, chain, rule or set (element changes, which verdicts and
// learned addresses make all the time, do not count).
func nftChanged(b []byte) bool {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return false
		}
		if typ>>8 == unix.NFNL_SUBSYS_NFTABLES {
			switch typ & 0xff {
			case unix.NFT_MSG_NEWTABLE, unix.NFT_MSG_DELTABLE, unix.NFT_MSG_NEWCHAIN, unix.NFT_MSG_DELCHAIN,
				unix.NFT_MSG_NEWRULE, unix.NFT_MSG_DELRULE, unix.NFT_MSG_DELSET:
				return true
			}
		}
		l = (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if l >= len(b) {
			return false
		}
		b = b[l:]
	}
	return false
}
