// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terok-ai/clearance/internal/dnsfwd"
	"github.com/terok-ai/clearance/internal/dnsname"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/nft"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
	"github.com/terok-ai/clearance/internal/verdict"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// DNS is the hub's side of the container's DNS forwarder (built-in
// ruleset): the name rules (the policy's, from the verdict service, and
// the operator's verdicts on names), the forwarder itself (re-created by
// the [Watcher] with fresh sockets whenever the watch is re-established),
// and the connection to the verdict service that learns addresses.
//
// The zero value is not usable; fill in the exported fields. A DNS is
// safe for concurrent use.
type DNS struct {
	// Firewall reaches the verdict service for the container.
	Firewall *Firewall
	// Hub receives denied markers and audit records. Set by [Run].
	Hub *hub.Hub
	// HoldMax, MinTTL, DenyMode, MaxNames and Rate configure the
	// forwarder (see dnsfwd.Config; zero: its defaults).
	HoldMax  time.Duration
	NoHold   bool
	MinTTL   time.Duration
	DenyMode dnsfwd.DenyMode
	MaxNames int
	Rate     float64
	// CacheSize bounds the forwarder's answer cache; 0 turns it off.
	CacheSize int
	// Log receives diagnostics; nil discards.
	Log *slog.Logger

	rules    nameRules
	fwd      atomic.Pointer[dnsfwd.Forwarder]
	onChange func() // the saved state changed (set by Run)

	// stored are forwarder sockets from the fd store with their
	// description, used by the first start; meta describes the sockets in
	// use, for the saved state.
	stored     map[string]*os.File
	storedMeta *forwarderState
	metaMu     sync.Mutex
	meta       *forwarderState
	learner    learner
	tcp        tcpPool

	auditMu  sync.Mutex
	audited  map[learnedKey]struct{}
	denyMu   sync.Mutex
	denying  map[denyKey]time.Time
	deniedAt map[string]time.Time
}

type learnedKey struct {
	name, addr, rule string
	proto, port      int64
}

type denyKey struct {
	ip          string
	proto, port int64
}

func (d *DNS) log() *slog.Logger {
	if d.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Log
}

// Names returns the names the container last resolved to addr (the
// question it asked), most recent first; nil when the forwarder saw none.
func (d *DNS) Names(addr netip.Addr) []string {
	if f := d.fwd.Load(); f != nil {
		return f.Names(addr)
	}
	return nil
}

// Stats returns the current forwarder's counters (zero before the first).
func (d *DNS) Stats() dnsfwd.Stats {
	if f := d.fwd.Load(); f != nil {
		return f.Stats()
	}
	return dnsfwd.Stats{}
}

// start builds the forwarder: on its first call from the sockets a
// previous process of the hub left in the fd store (queries sent while the
// hub restarted wait in them), otherwise from new ones the verdict service
// creates (Forwarder), which then go to the store. The returned func
// serves it until ctx ends.
func (d *DNS) start(ctx context.Context) (func(context.Context) error, error) {
	d.learner.fw, d.tcp.fw = d.Firewall, d.Firewall
	sock, fromStore := d.takeStored()
	if !fromStore {
		d.dropStored()
		c, err := d.Firewall.dial(ctx)
		if err != nil {
			return nil, err
		}
		sock, err = c.Forwarder(ctx, d.Firewall.Container, d.Firewall.NS)
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("forwarder: %w", err)
		}
		d.keep(sock)
	}
	d.rules.setPolicy(sock.Names, d.log())
	cfg, err := d.config(sock)
	if err != nil {
		sock.Close()
		return nil, err
	}
	f, err := dnsfwd.New(cfg)
	if err != nil {
		closeForwarderConfig(cfg)
		return nil, fmt.Errorf("forwarder: %w", err)
	}
	d.fwd.Store(f)
	d.log().Info("DNS forwarder up", "port", sock.Port, "resolvers", sock.Resolvers, "name_rules", len(sock.Names),
		"from_store", fromStore)
	return f.Run, nil
}

// takeStored returns the stored forwarder (once), if it is complete.
func (d *DNS) takeStored() (*verdictclient.Forwarder, bool) {
	socks, meta := d.stored, d.storedMeta
	d.stored, d.storedMeta = nil, nil
	if meta == nil || len(socks) == 0 {
		for _, f := range socks {
			f.Close()
		}
		return nil, false
	}
	sock := &verdictclient.Forwarder{Port: meta.Port, Mark: meta.Mark, Resolvers: meta.Resolvers, Names: meta.Names,
		Sockets: map[string]*os.File{}}
	for _, name := range meta.Sockets {
		if f, ok := socks[name]; ok {
			sock.Sockets[name] = f
			delete(socks, name)
		}
	}
	for _, f := range socks {
		f.Close()
	}
	if len(sock.Sockets) != len(meta.Sockets) {
		sock.Close()
		return nil, false
	}
	d.setMeta(meta)
	return sock, true
}

// keep stores the forwarder's sockets and remembers their description.
func (d *DNS) keep(sock *verdictclient.Forwarder) {
	meta := &forwarderState{Port: sock.Port, Mark: sock.Mark, Resolvers: sock.Resolvers, Names: sock.Names}
	for name, f := range sock.Sockets {
		meta.Sockets = append(meta.Sockets, name)
		storeFDs(d.log(), fdDNS+name, f)
	}
	d.setMeta(meta)
}

// dropStored removes the forwarder's sockets from the store.
func (d *DNS) dropStored() {
	d.metaMu.Lock()
	meta := d.meta
	d.meta = nil
	d.metaMu.Unlock()
	if meta != nil {
		for _, name := range meta.Sockets {
			storeFDs(d.log(), fdDNS+name)
		}
	}
}

func (d *DNS) setMeta(m *forwarderState) {
	d.metaMu.Lock()
	d.meta = m
	d.metaMu.Unlock()
	d.changed()
}

func (d *DNS) changed() {
	if d.onChange != nil {
		d.onChange()
	}
}

// restore takes back what a previous process of the hub saved: the
// operator's verdicts on names still in force, and the forwarder's
// sockets (socks, from the fd store) with their description.
func (d *DNS) restore(st *dnsState, socks map[string]*os.File) {
	d.stored = socks
	if st == nil {
		return
	}
	d.storedMeta = st.Forwarder
	now := time.Now()
	for _, v := range st.Verdicts {
		p, err := dnsname.ParsePattern(v.Pattern)
		if err != nil || (!v.Until.IsZero() && !now.Before(v.Until)) {
			continue
		}
		d.rules.put(nameRule{pattern: p, action: v.Action, proto: v.Proto, port: v.Port, until: v.Until, source: "verdict"})
	}
}

// state is the DNS side's part of the saved state.
func (d *DNS) state() dnsState {
	var st dnsState
	d.metaMu.Lock()
	st.Forwarder = d.meta
	d.metaMu.Unlock()
	now := time.Now()
	d.rules.mu.RLock()
	for _, r := range d.rules.verdicts {
		if r.live(now) {
			st.Verdicts = append(st.Verdicts, verdictRuleState{Pattern: r.pattern.String(), Action: r.action,
				Proto: r.proto, Port: r.port, Until: r.until})
		}
	}
	d.rules.mu.RUnlock()
	return st
}

// config wraps the sockets of sock; on error they are all closed.
func (d *DNS) config(sock *verdictclient.Forwarder) (dnsfwd.Config, error) {
	cfg := dnsfwd.Config{
		Policy: &d.rules, Learner: &d.learner, DenyMode: d.DenyMode,
		HoldMax: d.HoldMax, NoHold: d.NoHold, MinTTL: d.MinTTL, MaxNames: d.MaxNames, CacheEntries: cacheEntries(d.CacheSize),
		OnDenied: d.onDenied, OnLearned: d.onLearned, OnHoldTimeout: d.onHoldTimeout,
		Log: d.log(),
	}
	cfg.Upstream.Rate = d.Rate
	cfg.Upstream.DialTCP = d.tcp.dial
	for _, r := range sock.Resolvers {
		a, err := netip.ParseAddr(r)
		if err != nil {
			continue
		}
		cfg.Upstream.Servers = append(cfg.Upstream.Servers, netip.AddrPortFrom(a, 53))
	}
	var errs []error
	for name, f := range sock.Sockets {
		switch name {
		case verdict.SockUDP4, verdict.SockUDP6, verdict.SockUp4, verdict.SockUp6:
			pc, err := net.FilePacketConn(f)
			f.Close()
			if err != nil {
				errs = append(errs, fmt.Errorf("socket %s: %w", name, err))
				continue
			}
			switch name {
			case verdict.SockUp4:
				cfg.Upstream.UDP4 = pc
			case verdict.SockUp6:
				cfg.Upstream.UDP6 = pc
			default:
				cfg.UDP = append(cfg.UDP, pc)
			}
		case verdict.SockTCP4, verdict.SockTCP6:
			ln, err := net.FileListener(f)
			f.Close()
			if err != nil {
				errs = append(errs, fmt.Errorf("socket %s: %w", name, err))
				continue
			}
			cfg.TCP = append(cfg.TCP, ln)
		default:
			f.Close()
		}
	}
	if len(cfg.Upstream.Servers) == 0 {
		errs = append(errs, errors.New("no resolvers: configure ruleset.resolvers, or the container's resolv.conf names none"))
	}
	if err := errors.Join(errs...); err != nil {
		closeForwarderConfig(cfg)
		return dnsfwd.Config{}, err
	}
	return cfg, nil
}

// cacheEntries maps dns.cache_size to dnsfwd.Config.CacheEntries, where
// 0 means the default and a negative value no cache.
func cacheEntries(size int) int {
	if size <= 0 {
		return -1
	}
	return size
}

func closeForwarderConfig(cfg dnsfwd.Config) {
	for _, pc := range cfg.UDP {
		pc.Close()
	}
	for _, ln := range cfg.TCP {
		ln.Close()
	}
	for _, pc := range []net.PacketConn{cfg.Upstream.UDP4, cfg.Upstream.UDP6} {
		if pc != nil {
			pc.Close()
		}
	}
}

// deniedEvery is how often one denied name is announced and audited: a
// program retrying a denied name is one record, not a flood.
const deniedEvery = 10 * time.Second

func (d *DNS) onDenied(name string, qtype uint16, rule string) {
	if d.Hub == nil {
		return
	}
	now := time.Now()
	d.denyMu.Lock()
	if d.deniedAt == nil || len(d.deniedAt) > 4096 {
		d.deniedAt = make(map[string]time.Time)
	}
	last, seen := d.deniedAt[name]
	if seen && now.Sub(last) < deniedEvery {
		d.denyMu.Unlock()
		return
	}
	d.deniedAt[name] = now
	d.denyMu.Unlock()
	d.Hub.Denied(event.Event{Container: d.Firewall.Container, Domain: name}, rule)
}

func (d *DNS) onHoldTimeout(name string) {
	d.log().Warn("DNS answer withheld: the firewall did not learn its addresses in time; the container got SERVFAIL",
		"domain", name, "hold_max", d.HoldMax)
}

// onLearned audits each (name, address, rule) once per hub.
func (d *DNS) onLearned(els []dnsfwd.Element) {
	if d.Hub == nil {
		return
	}
	now := time.Now()
	d.auditMu.Lock()
	defer d.auditMu.Unlock()
	if d.audited == nil || len(d.audited) > 65536 {
		d.audited = make(map[learnedKey]struct{})
	}
	for _, e := range els {
		k := learnedKey{name: e.Name, addr: e.Addr.String(), rule: e.Rule, proto: int64(e.Proto), port: int64(e.Port)}
		if _, done := d.audited[k]; done {
			continue
		}
		d.audited[k] = struct{}{}
		d.Hub.AuditLearned(e.Name, k.addr, k.proto, k.port, e.Rule, now.Add(e.Timeout))
	}
}

// verdictApplied follows an operator's verdict on a name: the name rule
// makes the forwarder learn (or deny) its future addresses, and its
// current addresses other than the one applied are learned now.
func (d *DNS) verdictApplied(ctx context.Context, req hub.ApplyRequest, expires time.Time) {
	name := req.Name()
	if name == "" {
		return
	}
	r, err := d.rules.addVerdict(req, expires)
	if err != nil {
		d.log().Warn("verdict on a name the forwarder cannot match", "domain", name, "err", err)
		return
	}
	d.changed()
	if req.Action != event.ActionAllow {
		return
	}
	f := d.fwd.Load()
	if f == nil {
		return
	}
	timeout := d.MinTTL
	if timeout <= 0 {
		timeout = dnsfwd.DefaultMinTTL
	}
	if !expires.IsZero() {
		timeout = min(timeout, time.Until(expires))
	}
	if timeout <= 0 {
		return
	}
	var els []dnsfwd.Element
	for _, a := range f.Addrs(name) {
		if a.String() == req.IP {
			continue
		}
		els = append(els, dnsfwd.Element{Addr: a, Proto: r.proto, Port: r.port, Timeout: timeout, Name: name, Rule: r.text()})
	}
	if len(els) == 0 {
		return
	}
	if err := d.learner.Learn(ctx, els); err != nil {
		d.log().Warn("learn the current addresses of an allowed name", "domain", name, "err", err)
		return
	}
	d.onLearned(els)
}

// verdictRevoked drops the name rule of a verdict that ended.
func (d *DNS) verdictRevoked(req hub.ApplyRequest) {
	d.rules.removeVerdict(req)
	d.changed()
}

// blocked is called for a blocked connection the forwarder named: when a
// rule denies the name on that port (a deny narrowed to a port, or
// pass-and-drop), the connection is denied without a prompt, and the
// address is dropped silently from now on for the rule's lifetime. It
// reports whether the connection was handled.
func (d *DNS) blocked(ev event.Event) bool {
	if ev.Domain == "" {
		return false
	}
	proto, port := uint8(0), uint16(0)
	if ev.Proto > 0 && ev.Proto < 256 && ev.Port > 0 && ev.Port < 65536 {
		proto, port = uint8(ev.Proto), uint16(ev.Port)
	}
	r, ok := d.rules.denies(ev.Domain, proto, port)
	if !ok {
		return false
	}
	k := denyKey{ip: ev.Dest, proto: ev.Proto, port: ev.Port}
	now := time.Now()
	d.denyMu.Lock()
	if d.denying == nil {
		d.denying = make(map[denyKey]time.Time)
	}
	for k2, at := range d.denying {
		if now.Sub(at) > 5*time.Second {
			delete(d.denying, k2)
		}
	}
	_, busy := d.denying[k]
	d.denying[k] = now
	d.denyMu.Unlock()
	if d.Hub != nil {
		d.Hub.Denied(ev, r.text())
	}
	if busy {
		return true
	}
	go func() {
		req := hub.ApplyRequest{Container: d.Firewall.Container, Dest: ev.Domain, IP: ev.Dest, Port: ev.Port,
			Proto: ev.Proto, Action: event.ActionDeny, Scope: hub.ScopeOnce, AnyPort: r.port == 0}
		req.TTL = d.Firewall.OnceTTL
		if !r.until.IsZero() {
			req.TTL = time.Until(r.until)
		} else if req.TTL == 0 {
			req.TTL = time.Hour
		}
		if req.TTL < time.Second {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := d.Firewall.Apply(ctx, req)
		if err != nil || !res.OK {
			d.log().Warn("drop a denied name's address", "domain", ev.Domain, "dest", ev.Dest, "err", err, "stderr", res.Stderr)
		}
	}()
	return true
}

// nameRule is one rule of the name table.
type nameRule struct {
	pattern dnsname.Pattern
	action  string
	proto   uint8
	port    uint16
	until   time.Time // zero: no end
	source  string    // where it came from, for the audit
}

// text is the rule as a policy writes it, with its source.
func (r nameRule) text() string {
	s := r.pattern.String()
	if r.port != 0 {
		s += ":" + strconv.Itoa(int(r.port))
		if r.proto != 0 {
			s += "/" + nft.ProtoName(r.proto)
		}
	}
	if r.source != "" {
		s += " (" + r.source + ")"
	}
	return s
}

func (r nameRule) live(now time.Time) bool { return r.until.IsZero() || now.Before(r.until) }

// covers reports whether the rule applies to proto and port (0, 0: any).
func (r nameRule) covers(proto uint8, port uint16) bool {
	return r.port == 0 || (r.port == port && (r.proto == 0 || r.proto == proto))
}

type verdictRuleKey struct {
	pattern     dnsname.Pattern
	proto, port int64
}

// nameRules is the forwarder's [dnsfwd.Policy]: the policy's name rules
// and the operator's verdicts on names. Deny wins over allow.
type nameRules struct {
	mu       sync.RWMutex
	policy   []nameRule
	verdicts map[verdictRuleKey]nameRule
}

// setPolicy replaces the policy's rules; rules that do not parse (the
// verdict service checked them already) are logged and skipped.
func (t *nameRules) setPolicy(rs []fw1.NameRule, log *slog.Logger) {
	out := make([]nameRule, 0, len(rs))
	for _, r := range rs {
		p, err := dnsname.ParsePattern(r.Pattern)
		if err != nil {
			log.Warn("skip a name rule", "pattern", r.Pattern, "source", r.Source, "err", err)
			continue
		}
		nr := nameRule{pattern: p, action: r.Action, port: uint16(r.Port), source: r.Source}
		if r.Proto != "" {
			proto, err := nft.ParseProto(r.Proto)
			if err != nil {
				log.Warn("skip a name rule", "pattern", r.Pattern, "source", r.Source, "err", err)
				continue
			}
			nr.proto = proto
		}
		out = append(out, nr)
	}
	t.mu.Lock()
	t.policy = out
	t.mu.Unlock()
}

// addVerdict adds the name rule of an operator's verdict on a name.
func (t *nameRules) addVerdict(req hub.ApplyRequest, until time.Time) (nameRule, error) {
	p, err := dnsname.ParsePattern(req.Name())
	if err != nil {
		return nameRule{}, err
	}
	r := nameRule{pattern: p, action: req.Action, until: until, source: "verdict"}
	proto, port := servicePort(req)
	if proto != "" {
		r.proto, _ = nft.ParseProto(proto)
		r.port = uint16(port)
	}
	t.put(r)
	return r, nil
}

// put adds (or replaces) a verdict rule.
func (t *nameRules) put(r nameRule) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.verdicts == nil {
		t.verdicts = make(map[verdictRuleKey]nameRule)
	}
	t.verdicts[verdictRuleKey{r.pattern, int64(r.proto), int64(r.port)}] = r
}

func (t *nameRules) removeVerdict(req hub.ApplyRequest) {
	p, err := dnsname.ParsePattern(req.Name())
	if err != nil {
		return
	}
	var proto uint8
	ps, port := servicePort(req)
	if ps != "" {
		proto, _ = nft.ParseProto(ps)
	}
	t.mu.Lock()
	delete(t.verdicts, verdictRuleKey{p, int64(proto), int64(port)})
	t.mu.Unlock()
}

// each calls fn for every live rule.
func (t *nameRules) each(now time.Time, fn func(nameRule)) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, r := range t.policy {
		fn(r)
	}
	for _, r := range t.verdicts {
		if r.live(now) {
			fn(r)
		}
	}
}

// Decide implements [dnsfwd.Policy]: a deny rule for every port of a link
// denies the answer; allow rules of any link grant their port. Denies
// narrowed to a port do not deny the answer (the name has other ports);
// [DNS.blocked] enforces them on the connection.
func (t *nameRules) Decide(names []string) dnsfwd.Decision {
	var dec dnsfwd.Decision
	t.each(time.Now(), func(r nameRule) {
		for _, n := range names {
			if !r.pattern.Match(n) {
				continue
			}
			switch {
			case r.action == event.ActionDeny && r.port == 0:
				if !dec.Deny {
					dec.Deny, dec.DenyBy = true, r.text()
				}
			case r.action == event.ActionAllow:
				dec.Allow = append(dec.Allow, dnsfwd.Grant{Rule: r.text(), Proto: r.proto, Port: r.port, Until: r.until})
			}
			return
		}
	})
	if dec.Deny {
		dec.Allow = nil
	}
	return dec
}

// denies returns the deny rule that covers name on proto and port, if
// any.
func (t *nameRules) denies(name string, proto uint8, port uint16) (nameRule, bool) {
	var found nameRule
	ok := false
	t.each(time.Now(), func(r nameRule) {
		if !ok && r.action == event.ActionDeny && r.pattern.Match(name) && r.covers(proto, port) {
			found, ok = r, true
		}
	})
	return found, ok
}

// learnIdle is how long the learner keeps its verdict connection open
// without a call: below the verdict service's idle timeout (5 s by
// default), which closes a connection that sends nothing for as long.
const learnIdle = 3 * time.Second

// learner is the forwarder's [dnsfwd.Learner]: Learn calls on one verdict
// connection, kept open while the forwarder is busy and closed when idle.
type learner struct {
	fw *Firewall

	mu    sync.Mutex
	c     *verdictclient.Client
	timer *time.Timer
}

// Learn implements [dnsfwd.Learner].
func (l *learner) Learn(ctx context.Context, els []dnsfwd.Element) error {
	ls := make([]verdictclient.Learned, 0, len(els))
	for _, e := range els {
		v := verdictclient.Learned{IP: e.Addr.String(), Port: int(e.Port), TTL: e.Timeout, Comment: e.Name}
		if e.Proto != 0 {
			v.Proto = nft.ProtoName(e.Proto)
		}
		ls = append(ls, v)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var err error
	for attempt := range 2 {
		if l.c == nil {
			if l.c, err = l.fw.dial(ctx); err != nil {
				return err
			}
		}
		err = l.c.Learn(ctx, l.fw.Container, ls, l.fw.NS)
		if err == nil || isServiceError(err) || attempt == 1 {
			break
		}
		// The connection broke (the instance exited): once more on a new one.
		l.c.Close()
		l.c = nil
	}
	if l.timer == nil {
		l.timer = time.AfterFunc(learnIdle, l.closeIdle)
	} else {
		l.timer.Reset(learnIdle)
	}
	return err
}

func (l *learner) closeIdle() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c != nil {
		l.c.Close()
		l.c = nil
	}
}

// close closes the connection and stops the idle timer.
func (l *learner) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
	}
	if l.c != nil {
		l.c.Close()
		l.c = nil
	}
}

// isServiceError reports whether err is a reply of the verdict service
// (as opposed to a broken connection).
func isServiceError(err error) bool {
	var (
		pd *fw1.PermissionDenied
		ns *fw1.NoSuchContainer
		sr *fw1.StaleRecord
		id *fw1.InvalidDestination
		ff *fw1.FirewallFailed
	)
	return errors.As(err, &pd) || errors.As(err, &ns) || errors.As(err, &sr) || errors.As(err, &id) || errors.As(err, &ff)
}

// tcpPool hands out marked TCP sockets of the container's namespace for
// the forwarder's upstream TCP queries, fetched from the verdict service
// a few at a time.
type tcpPool struct {
	fw *Firewall

	mu    sync.Mutex
	socks map[string][]*os.File // by family
}

// tcpBatch is how many sockets one UpstreamTCP call fetches.
const tcpBatch = 4

// dial implements dnsfwd.Upstream.DialTCP.
func (p *tcpPool) dial(ctx context.Context, server netip.AddrPort) (net.Conn, error) {
	family := "ip4"
	if server.Addr().Is6() {
		family = "ip6"
	}
	f, err := p.take(ctx, family)
	if err != nil {
		return nil, err
	}
	return dnsfwd.ConnectFile(ctx, f, server)
}

func (p *tcpPool) take(ctx context.Context, family string) (*os.File, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.socks == nil {
		p.socks = make(map[string][]*os.File)
	}
	if len(p.socks[family]) == 0 {
		c, err := p.fw.dial(ctx)
		if err != nil {
			return nil, err
		}
		fs, err := c.UpstreamTCP(ctx, p.fw.Container, family, tcpBatch, p.fw.NS)
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("upstream tcp sockets: %w", err)
		}
		p.socks[family] = fs
	}
	fs := p.socks[family]
	f := fs[len(fs)-1]
	p.socks[family] = fs[:len(fs)-1]
	return f, nil
}

// close closes the sockets not handed out.
func (p *tcpPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, fs := range p.socks {
		for _, f := range fs {
			f.Close()
		}
	}
	p.socks = nil
}

// close releases the learner's connection, the pooled sockets and stored
// sockets never used.
func (d *DNS) close() {
	d.learner.close()
	d.tcp.close()
	for _, f := range d.stored {
		f.Close()
	}
	d.stored = nil
}
