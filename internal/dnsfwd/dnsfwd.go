// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of [Config] and [Upstream]. A zero field means its default.
const (
	DefaultHoldMax        = 2 * time.Second
	DefaultMinTTL         = 5 * time.Minute
	DefaultMaxTTL         = 24 * time.Hour
	DefaultMaxNames       = 16384
	DefaultMaxLearned     = 65536
	DefaultMaxInFlight    = 1024
	DefaultMaxTCPConns    = 16
	DefaultMaxTCPPipeline = 8
	DefaultTCPIdleTimeout = 10 * time.Second
	DefaultRefreshTimeout = 10 * time.Second

	DefaultAttemptTimeout = time.Second
	DefaultAttempts       = 3
	DefaultRate           = 1000
	DefaultBurst          = 2000
)

// Fixed limits.
const (
	// HoldMargin is the least time an element must have left in the
	// kernel for an answer that needs it to be released at once. An
	// element with less left is learned again before the answer goes out.
	HoldMargin = 30 * time.Second

	// MaxUDPSize is the largest EDNS UDP payload size asked of upstream:
	// a client advertising more is clamped to it, so one pending UDP answer
	// never holds more than this many bytes.
	MaxUDPSize = 4096

	// MaxQuerySize is the largest query accepted from a client over TCP;
	// a longer length prefix closes the connection. (Over UDP a query can
	// be no longer than the datagram.)
	MaxQuerySize = 4096

	// maxChain is the longest CNAME chain followed, question included.
	maxChain = 16
	// maxNamesPerAddr is how many names are kept for one address.
	maxNamesPerAddr = 4
)

// Policy decides what an answer means.
//
// names is the answer's chain: the question name, then each CNAME target
// in order, all canonical (lower case, no trailing dot; the root is "").
// The names came from the container and its resolver and are untrusted.
// Decide must not retain names. Implementations must be safe for
// concurrent use and should not block: Decide runs on the path of every
// query.
type Policy interface {
	Decide(names []string) Decision
}

// Decision is what a [Policy] says of a chain of names.
type Decision struct {
	// Deny is set when some link matched a deny rule; deny wins over
	// allow.
	Deny bool
	// DenyBy is the deny rule, for the report.
	DenyBy string
	// Allow holds the allow rules matched by any link.
	Allow []Grant
}

// Grant is one allow rule matched by a chain: what the answer's addresses
// are allowed for.
type Grant struct {
	// Rule is the rule text, e.g. "*.github.com:443/tcp", for logs and
	// element comments.
	Rule string
	// Proto is the IP protocol (6 tcp, 17 udp); 0 means any protocol
	// (with Port 0: the whole host).
	Proto uint8
	// Port is the destination port; 0 means every port.
	Port uint16
	// Until is when the grant ends: zero means no end (policy); a timed
	// verdict's end otherwise. A grant whose Until has passed is ignored.
	Until time.Time
}

// Learner adds elements to the firewall's allow sets.
//
// Learn returns nil only once the kernel has acknowledged every element of
// els; after that, each element must be in its set with at least its
// Timeout left, including an element that was already there (re-adding
// must refresh its timeout). Learn must honour ctx: when ctx ends it
// should give up and return an error. Any error means the forwarder treats
// every element of els as not learned. Learn must be safe for concurrent
// use and must not retain els after it returns.
type Learner interface {
	Learn(ctx context.Context, els []Element) error
}

// Element is one set element to learn: an address allowed for a protocol
// and port, for a time.
type Element struct {
	Addr  netip.Addr // IPv4 or IPv6, never a 4-in-6 mapped address
	Proto uint8      // from the grant: 0 = any
	Port  uint16     // from the grant: 0 = every port
	// Timeout is max(answer TTL, MinTTL), at most MaxTTL, capped by the
	// grant's Until.
	Timeout time.Duration
	// Name is the question name (for the element comment and the audit).
	// It is untrusted: sanitise before display.
	Name string
	// Rule is the grant's rule text.
	Rule string
}

// DenyMode is what the container gets for a denied name.
type DenyMode int

// Deny modes.
const (
	// DenyNXDomain answers NXDOMAIN (RCODE 3) with the question and EDNS
	// OPT kept and empty answer and authority sections. The default.
	DenyNXDomain DenyMode = iota
	// DenyRefused answers REFUSED (RCODE 5).
	DenyRefused
	// DenyPassAndDrop passes the answer unchanged and lets the firewall
	// drop the connections; the name is still reported.
	DenyPassAndDrop
)

// String returns the mode's configuration spelling.
func (m DenyMode) String() string {
	switch m {
	case DenyNXDomain:
		return "nxdomain"
	case DenyRefused:
		return "refused"
	case DenyPassAndDrop:
		return "pass-and-drop"
	}
	return fmt.Sprintf("DenyMode(%d)", int(m))
}

// ParseDenyMode parses "nxdomain", "refused" or "pass-and-drop"; "" is
// [DenyNXDomain].
func ParseDenyMode(s string) (DenyMode, error) {
	switch s {
	case "", "nxdomain":
		return DenyNXDomain, nil
	case "refused":
		return DenyRefused, nil
	case "pass-and-drop":
		return DenyPassAndDrop, nil
	}
	return 0, fmt.Errorf("parse deny mode %q: want nxdomain, refused or pass-and-drop", s)
}

// Upstream configures the resolvers the forwarder asks.
type Upstream struct {
	// Servers are the resolvers, tried in order (port 53 in production).
	// A server that times out is passed over until the next one times out
	// too. At least one is required.
	Servers []netip.AddrPort

	// UDP4 and UDP6 are the (marked) unconnected UDP sockets queries to
	// IPv4 and IPv6 servers are sent from. Every server needs the socket
	// of its family. Once [Forwarder.Run] has been called, the forwarder
	// owns them and closes them when Run returns.
	UDP4, UDP6 net.PacketConn

	// DialTCP opens a connection to server for one query over TCP; the
	// forwarder closes the returned conn. It is used when the client asked
	// over TCP. Nil means every query goes over UDP, and a truncated answer
	// reaches a TCP client as it is. See [ConnectFile] for a socket from a
	// pool of marked sockets.
	DialTCP func(ctx context.Context, server netip.AddrPort) (net.Conn, error)

	// AttemptTimeout is how long one attempt waits for an answer before
	// the next server is asked (default DefaultAttemptTimeout).
	AttemptTimeout time.Duration
	// Attempts bounds the attempts for one query, servers taken in turn
	// (default DefaultAttempts). A query fails with SERVFAIL after
	// Attempts×AttemptTimeout at most.
	Attempts int

	// Rate is the most queries per second sent upstream, with bursts of up
	// to Burst (defaults DefaultRate, DefaultBurst). A query over the rate
	// is answered REFUSED. A negative Rate means no limit.
	Rate  float64
	Burst int
}

// Config configures a [Forwarder]. Only Upstream is required; see each
// field for its zero value.
type Config struct {
	// UDP are the client-facing UDP sockets (127.0.0.1:port and
	// [::1]:port in the container) and TCP the client-facing listeners.
	// Once [Forwarder.Run] has been called, the forwarder owns them and
	// closes them when Run returns.
	UDP []net.PacketConn
	TCP []net.Listener

	// Upstream are the resolvers and the sockets to reach them.
	Upstream Upstream

	// Policy decides what answers mean. Nil passes every answer through
	// unchanged (names are still remembered).
	Policy Policy

	// Learner adds allowed addresses to the firewall. Required when
	// Policy is set.
	Learner Learner

	// DenyMode is what a denied name gets (default DenyNXDomain).
	DenyMode DenyMode

	// HoldMax bounds how long an answer is held for Learn (default
	// DefaultHoldMax); after it, the client gets SERVFAIL.
	HoldMax time.Duration
	// NoHold releases answers at once while their addresses are being
	// learned, so the container's first connect races the firewall. It
	// exists to measure that race (tests, benchmarks); never set it
	// otherwise.
	NoHold bool
	// MinTTL is the least time an element is learned for, and a name is
	// remembered for, whatever the answer's TTL (default DefaultMinTTL).
	MinTTL time.Duration
	// MaxTTL is the most time an element is learned for, and a name is
	// remembered for, whatever the answer's TTL (default DefaultMaxTTL).
	MaxTTL time.Duration

	// MaxNames bounds the addresses [Forwarder.Names] remembers (default
	// DefaultMaxNames); the least recently used is dropped first.
	MaxNames int
	// MaxLearned bounds the table of learned elements (default
	// DefaultMaxLearned). Forgetting an element only means that the next
	// answer needing it is held while it is learned again.
	MaxLearned int
	// MaxInFlight bounds the queries being resolved at once (default
	// DefaultMaxInFlight); a query over it is answered REFUSED.
	MaxInFlight int
	// MaxTCPConns bounds the client TCP connections (default
	// DefaultMaxTCPConns); one over it is closed at once.
	MaxTCPConns int
	// MaxTCPPipeline bounds the queries outstanding on one TCP connection
	// (default DefaultMaxTCPPipeline); further queries are not read until
	// one is answered.
	MaxTCPPipeline int
	// TCPIdleTimeout closes a client TCP connection with nothing
	// outstanding after this long without a query (default
	// DefaultTCPIdleTimeout).
	TCPIdleTimeout time.Duration
	// RefreshTimeout bounds one background refresh Learn (default
	// DefaultRefreshTimeout).
	RefreshTimeout time.Duration
	// CacheEntries bounds the answer cache (default DefaultCacheEntries;
	// its bytes are bounded by MaxCacheBytes too). A negative value turns
	// the cache off: every query goes upstream.
	CacheEntries int

	// OnDenied is called for each query whose answer was denied, with the
	// question name (canonical, untrusted), the query type (1 A, 28 AAAA,
	// …) and the deny rule. It is called on the query's goroutine and must
	// not block. Nil ignores.
	OnDenied func(name string, qtype uint16, rule string)
	// OnLearned is called after the kernel acknowledged els (held or
	// background), for the audit, before the answers waiting for els are
	// released. It must not block or retain els. Nil ignores.
	OnLearned func(els []Element)
	// OnHoldTimeout is called when an answer for name was replaced by
	// SERVFAIL because HoldMax passed. It must not block. Nil ignores.
	OnHoldTimeout func(name string)

	// Log receives warnings (rate-limited) and debug lines. Nil discards.
	Log *slog.Logger

	// Now returns the wall-clock time used for TTLs, expiries and
	// Grant.Until (default time.Now). Timeouts and the rate limit use the
	// monotonic clock regardless. For tests.
	Now func() time.Time
}

// Stats counts what a [Forwarder] did since [New]. All counters only grow;
// the fields below "gauges" are current values.
type Stats struct {
	QueriesUDP uint64 // client messages received over UDP
	QueriesTCP uint64 // client messages received over TCP
	Answers    uint64 // replies sent to clients, of any RCODE (a send to a client gone away included)

	Forwarded        uint64 // queries sent upstream (one per client query, whatever the attempts)
	UpstreamTCP      uint64 // upstream attempts over TCP
	UpstreamTimeouts uint64 // upstream attempts that timed out or failed
	UpstreamFailures uint64 // queries for which every attempt failed (SERVFAIL)

	Held         uint64 // answers held until Learn returned
	HoldTimeouts uint64 // held answers replaced by SERVFAIL after HoldMax: the misses
	LearnErrors  uint64 // Learn calls that returned an error (held or background)
	Learned      uint64 // elements the kernel acknowledged
	Refreshes    uint64 // background refresh Learn calls

	Denied          uint64 // answers for denied names
	RefusedOverload uint64 // queries refused (in-flight cap, rate) and TCP connections closed (connection cap)
	Spoofed         uint64 // upstream replies matching no pending query (wrong id, source or question, or late)
	Malformed       uint64 // client messages dropped or answered FORMERR/NOTIMP, and upstream answers rejected
	CacheHits       uint64 // queries answered from the answer cache (upstream not asked)

	// gauges
	InFlight     int // queries being resolved
	InFlightPeak int // the most queries ever resolved at once
	TCPConns     int // open client TCP connections
	NamesKnown   int // addresses in the name table
	LearnedKnown int // elements in the learned table
	CacheKnown   int // answers in the answer cache
}

// Forwarder is one container's DNS forwarder. Create it with [New], serve
// with [Forwarder.Run]. Its methods are safe for concurrent use, before,
// during and after Run.
type Forwarder struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	names   *nameTable
	learned *learnTable
	cache   *answerCache // nil: off
	up      *upstream
	limiter *bucket

	// exchange asks upstream; a seam for the fuzz targets.
	exchange func(ctx context.Context, q *query) ([]byte, error)

	inflight chan struct{}
	tcpSlots chan struct{}

	running atomic.Bool
	wg      sync.WaitGroup // every goroutine Run started

	// bg is the context of background work (Learn calls, refresh); set by
	// Run before anything can use it.
	bg context.Context

	st counters

	// learnDone, if set, is called after a Learn call has been accounted
	// for. For tests.
	learnDone func(err error)

	logServe, logUpstream, logLearn, logHold, logMalformed logLimiter
}

type counters struct {
	queriesUDP, queriesTCP, answers                                atomic.Uint64
	forwarded, upstreamTCP, upstreamTimeouts, upstreamFailures     atomic.Uint64
	held, holdTimeouts, learnErrors, learnedEls, refreshes, denied atomic.Uint64
	refused, spoofed, malformed, cacheHits                         atomic.Uint64
	inflightPeak                                                   atomic.Int64
	tcpConns                                                       atomic.Int64
}

// New checks cfg, fills in defaults and returns a Forwarder that does
// nothing until [Forwarder.Run]. New does not take ownership of the
// sockets in cfg; Run does.
func New(cfg Config) (*Forwarder, error) {
	if len(cfg.Upstream.Servers) == 0 {
		return nil, errors.New("new forwarder: no upstream servers")
	}
	for _, s := range cfg.Upstream.Servers {
		if !s.IsValid() || s.Port() == 0 {
			return nil, fmt.Errorf("new forwarder: upstream server %s: no address or port", s)
		}
		if s.Addr().Unmap().Is4() && cfg.Upstream.UDP4 == nil {
			return nil, fmt.Errorf("new forwarder: upstream server %s: no IPv4 socket", s)
		}
		if !s.Addr().Unmap().Is4() && cfg.Upstream.UDP6 == nil {
			return nil, fmt.Errorf("new forwarder: upstream server %s: no IPv6 socket", s)
		}
	}
	if cfg.Policy != nil && cfg.Learner == nil {
		return nil, errors.New("new forwarder: a policy needs a learner")
	}
	if cfg.DenyMode < DenyNXDomain || cfg.DenyMode > DenyPassAndDrop {
		return nil, fmt.Errorf("new forwarder: unknown deny mode %d", int(cfg.DenyMode))
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.HoldMax, DefaultHoldMax)
	def(&cfg.MinTTL, DefaultMinTTL)
	def(&cfg.MaxTTL, DefaultMaxTTL)
	cfg.MaxTTL = max(cfg.MaxTTL, cfg.MinTTL)
	def(&cfg.TCPIdleTimeout, DefaultTCPIdleTimeout)
	def(&cfg.RefreshTimeout, DefaultRefreshTimeout)
	def(&cfg.Upstream.AttemptTimeout, DefaultAttemptTimeout)
	defInt(&cfg.MaxNames, DefaultMaxNames)
	defInt(&cfg.MaxLearned, DefaultMaxLearned)
	defInt(&cfg.MaxInFlight, DefaultMaxInFlight)
	defInt(&cfg.MaxTCPConns, DefaultMaxTCPConns)
	defInt(&cfg.MaxTCPPipeline, DefaultMaxTCPPipeline)
	defInt(&cfg.Upstream.Attempts, DefaultAttempts)
	if cfg.Upstream.Rate == 0 {
		cfg.Upstream.Rate = DefaultRate
	}
	defInt(&cfg.Upstream.Burst, DefaultBurst)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	f := &Forwarder{
		cfg:      cfg,
		log:      log,
		now:      cfg.Now,
		names:    newNameTable(cfg.MaxNames),
		learned:  newLearnTable(cfg.MaxLearned),
		limiter:  newBucket(cfg.Upstream.Rate, cfg.Upstream.Burst),
		inflight: make(chan struct{}, cfg.MaxInFlight),
		tcpSlots: make(chan struct{}, cfg.MaxTCPConns),
		bg:       context.Background(),
	}
	switch {
	case cfg.CacheEntries == 0:
		f.cache = newAnswerCache(DefaultCacheEntries)
	case cfg.CacheEntries > 0:
		f.cache = newAnswerCache(cfg.CacheEntries)
	}
	f.up = newUpstream(f)
	f.exchange = f.up.exchange
	return f, nil
}

// Run serves the sockets in the Config until ctx ends or a socket fails
// for good. Before it returns, it closes every socket of the Config (client
// sockets, listeners and their connections, upstream sockets) and waits
// for every goroutine it started, Learn calls included, to finish. It
// returns nil when ctx ended and the socket's error otherwise. Run may be
// called once.
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("run dns forwarder: already run")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.bg = ctx

	var (
		errOnce sync.Once
		runErr  error
	)
	fail := func(err error) {
		if err == nil || ctx.Err() != nil {
			return
		}
		errOnce.Do(func() { runErr = err })
		cancel()
	}
	goRun := func(fn func() error) {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			fail(fn())
		}()
	}

	for _, pc := range []net.PacketConn{f.cfg.Upstream.UDP4, f.cfg.Upstream.UDP6} {
		if pc != nil {
			goRun(func() error { return f.up.read(ctx, pc) })
		}
	}
	goRun(func() error { f.refresher(ctx); return nil })
	for _, pc := range f.cfg.UDP {
		goRun(func() error { return f.serveUDP(ctx, pc) })
	}
	for _, ln := range f.cfg.TCP {
		goRun(func() error { return f.serveTCP(ctx, ln) })
	}

	<-ctx.Done()
	// Closing unblocks every read and accept; the query goroutines watch
	// ctx and finish on their own.
	for _, pc := range f.cfg.UDP {
		pc.Close()
	}
	for _, ln := range f.cfg.TCP {
		ln.Close()
	}
	for _, pc := range []net.PacketConn{f.cfg.Upstream.UDP4, f.cfg.Upstream.UDP6} {
		if pc != nil {
			pc.Close()
		}
	}
	// Queries waiting for upstream without a goroutine end now, not at
	// their attempt timers.
	f.up.abortAll()
	f.wg.Wait()
	return runErr
}

// Names returns the question names addr was an answer for, most recent
// first, at most 4, each for max(TTL, MinTTL) (at most MaxTTL) after its
// last answer.
// A 4-in-6 mapped address is looked up as IPv4. The names are canonical
// and untrusted: sanitise before display. Nil when none is known.
func (f *Forwarder) Names(addr netip.Addr) []string {
	return f.names.lookup(addr.Unmap(), f.now())
}

// Addrs returns the addresses currently known for the question name
// (canonical: lower case, no trailing dot), in no particular order. Nil
// when none is known.
func (f *Forwarder) Addrs(name string) []netip.Addr {
	return f.names.addrs(name, f.now())
}

// Forget drops what the forwarder knows to be in the firewall for addr
// (every protocol and port), or for every address when addr is the zero
// Addr. The hub calls it after elements were removed from the kernel
// behind the forwarder's back (a revoked verdict, a flushed set, a
// ruleset installed anew): the next answer needing them is held and
// learned again instead of being released at once. A Learn call in
// flight still completes its waiting answers but is not recorded.
func (f *Forwarder) Forget(addr netip.Addr) {
	f.learned.forget(addr.Unmap())
}

// Stats returns the counters and gauges.
func (f *Forwarder) Stats() Stats {
	s := &f.st
	return Stats{
		QueriesUDP:       s.queriesUDP.Load(),
		QueriesTCP:       s.queriesTCP.Load(),
		Answers:          s.answers.Load(),
		Forwarded:        s.forwarded.Load(),
		UpstreamTCP:      s.upstreamTCP.Load(),
		UpstreamTimeouts: s.upstreamTimeouts.Load(),
		UpstreamFailures: s.upstreamFailures.Load(),
		Held:             s.held.Load(),
		HoldTimeouts:     s.holdTimeouts.Load(),
		LearnErrors:      s.learnErrors.Load(),
		Learned:          s.learnedEls.Load(),
		Refreshes:        s.refreshes.Load(),
		Denied:           s.denied.Load(),
		RefusedOverload:  s.refused.Load(),
		Spoofed:          s.spoofed.Load(),
		Malformed:        s.malformed.Load(),
		CacheHits:        s.cacheHits.Load(),
		InFlight:         len(f.inflight),
		InFlightPeak:     int(s.inflightPeak.Load()),
		TCPConns:         int(s.tcpConns.Load()),
		NamesKnown:       f.names.len(),
		LearnedKnown:     f.learned.len(),
		CacheKnown:       f.cache.len(),
	}
}
