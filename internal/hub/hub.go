// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package hub is the heart of clearance-hub, one per container: it keeps
// the set of requests waiting for a verdict, fans every event out to
// subscribers over bounded drop-oldest queues, validates verdicts exactly
// as the seed does, and hands them to an [Applier].
//
// The package is pure Go: no sockets, no syscalls. The varlink glue, the
// ingest socket and the NFLOG reader live elsewhere and call [Hub.Publish],
// [Hub.Blocked], [Hub.Subscribe], [Hub.Verdict] and [Hub.Decide].
//
// # Verdict semantics
//
// [Hub.Verdict] follows the seed's check order: the action is validated
// first, then the request id is looked up, then the (container, dest)
// pair is compared with what was emitted, then the verdict is applied.
// A failed application, for whatever reason, restores the request so the
// operator can retry (the seed lost it on unexpected errors). The
// verdict_applied event is fanned out before Verdict returns.
package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/event"
)

// Defaults for [Config].
const (
	DefaultQueueDepth   = 1024
	DefaultPendingTTL   = time.Hour
	DefaultMaxPending   = 4096
	DefaultApplyTimeout = 15 * time.Second
	DefaultReemit       = time.Second
)

// Verdict scopes accepted by [Hub.Decide].
const (
	ScopeOnce      = audit.ScopeOnce
	ScopeContainer = audit.ScopeContainer
	ScopeAlways    = audit.ScopeAlways
)

// Applier writes a verdict into the container's firewall.
//
// Apply must be safe for concurrent use. It returns OK=false with a short
// human-readable Stderr when the firewall refused or failed, and a non-nil
// error for failures to reach the firewall at all; the hub treats both as
// a failed verdict and restores the request.
type Applier interface {
	Apply(ctx context.Context, req ApplyRequest) (ApplyResult, error)
}

// ApplyRequest is one verdict to write.
type ApplyRequest struct {
	Container string // the container as the event named it
	Dest      string // the verdict target: domain, or IP when no domain is known
	IP        string // the destination IP of the blocked packet ("" if unknown)
	Port      int64
	Proto     int64
	Action    string        // event.ActionAllow or event.ActionDeny
	Scope     string        // ScopeOnce, ScopeContainer or ScopeAlways
	TTL       time.Duration // for ScopeOnce; 0 means the applier's default
	// AnyPort widens the verdict from the prompt's port and protocol to
	// the whole host (or name).
	AnyPort bool
	// VerdictID is the hub's id of this verdict, in its audit record and
	// the verdict service's (CLEARANCE_VERDICT_ID).
	VerdictID string
}

// Name returns the DNS name the verdict is about, "" for an address.
func (r ApplyRequest) Name() string {
	if r.Dest == r.IP {
		return ""
	}
	return r.Dest
}

// covers reports whether a verdict r also decides a request for the same
// target on proto and port.
func (r ApplyRequest) covers(proto, port int64) bool {
	return r.AnyPort || (r.Proto == proto && r.Port == port)
}

// ApplyResult is what the firewall answered.
type ApplyResult struct {
	OK      bool
	Stderr  string    // diagnostic text, at most a few hundred bytes
	Expires time.Time // zero when the verdict does not expire
	// NotSaved: OK, the verdict holds for the container's life, but an
	// "always" verdict could not be written to the policy (Stderr says
	// why).
	NotSaved bool
}

// OutcomeUnknownError wraps an Applier error after which the verdict may
// or may not be in the kernel (the verdict service went away before its
// reply). The verdict service's own record says what happened.
type OutcomeUnknownError struct{ Err error }

func (e *OutcomeUnknownError) Error() string { return "outcome unknown: " + e.Err.Error() }
func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// Config configures a [Hub]. The zero value is usable except for Applier,
// which must be set before any verdict.
type Config struct {
	// Container is the id of the container this hub serves (for logs and
	// generated request ids).
	Container string

	// ContainerID is the container's full id (from its runtime record),
	// recorded in every audit record as CLEARANCE_CONTAINER_ID; "" when
	// unknown.
	ContainerID string

	// Policy and Project are the container's policy name and its
	// dossier's project, recorded in audit records (CLEARANCE_POLICY,
	// CLEARANCE_PROJECT) so they can be selected per policy or project.
	Policy, Project string

	// QueueDepth bounds each subscriber's queue (default
	// DefaultQueueDepth). When full, the oldest queued event is dropped,
	// so a slow subscriber never slows the others.
	QueueDepth int

	// PendingTTL is how long an undecided request stays valid (default
	// DefaultPendingTTL). Older requests are purged.
	PendingTTL time.Duration

	// MaxPending bounds the pending set (default DefaultMaxPending); the
	// oldest request is evicted beyond it.
	MaxPending int

	// ApplyTimeout bounds one Applier call (default DefaultApplyTimeout).
	ApplyTimeout time.Duration

	// Reemit is the minimum interval between two connection_blocked
	// events for the same coalesced destination (default DefaultReemit).
	Reemit time.Duration

	// Applier writes verdicts.
	Applier Applier

	// Log receives the audit trail and warnings. Nil discards.
	Log *slog.Logger

	// Now returns the current time (default time.Now). For tests.
	Now func() time.Time

	// Notice, if set, is sent to every subscriber when it subscribes, as
	// a hub_notice event (reason Notice): something the operator must know
	// about the hub itself.
	Notice string

	// OnChange, if set, is called after the [State] changed (a request
	// added, decided or purged, a timed verdict added or ended), outside
	// the hub's lock. It must not block: the daemon uses it to save the
	// state in the background.
	OnChange func()
}

// Hub is one container's event bus and verdict gate. Its methods are safe
// for concurrent use.
type Hub struct {
	cfg    Config
	log    *slog.Logger
	idBase string
	seq    atomic.Uint64

	mu      sync.Mutex
	pending map[string]*pending // by request id
	order   []*pending          // insertion order, with removed entries skipped lazily
	flows   map[flowKey]*pending
	subs    map[*Subscription]struct{}
	purged  map[string]uint64 // container → purge generation
	gen     uint64
	expiry  map[expiryKey]expiring
	decided map[decidedKey]time.Time // recently decided destinations, see Blocked
	done    map[string]doneRequest   // recently decided request ids, see Decide
	// inflight are the request ids a verdict is being applied to (out of
	// pending meanwhile), for Await.
	inflight map[string]struct{}

	waiters waiters   // woken on every change, for Await
	observe observing // observe mode and its destinations, see Observed

	started   time.Time
	eventsIn  atomic.Uint64
	eventsOut atomic.Uint64
	dropped   atomic.Uint64
	coalesced atomic.Uint64
	okCount   atomic.Uint64
	failCount atomic.Uint64
}

// pending is one request waiting for a verdict.
type pending struct {
	ev        event.Event
	target    string
	count     int64
	first     time.Time
	last      time.Time
	lastEmit  time.Time
	flow      flowKey
	hasFlow   bool
	container string
	live      bool // in the pending set
	claimed   bool // a verdict on it is in flight
}

// flowKey identifies repeats of one blocked destination.
type flowKey struct {
	container, dest, domain string
	port, proto             int64
}

// New returns a hub configured by cfg.
func New(cfg Config) *Hub {
	if cfg.QueueDepth <= 0 {
		cfg.QueueDepth = DefaultQueueDepth
	}
	if cfg.PendingTTL <= 0 {
		cfg.PendingTTL = DefaultPendingTTL
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = DefaultApplyTimeout
	}
	if cfg.Reemit <= 0 {
		cfg.Reemit = DefaultReemit
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{
		cfg:     cfg,
		log:     log,
		idBase:  newIDBase(),
		pending: make(map[string]*pending),
		flows:   make(map[flowKey]*pending),
		subs:    make(map[*Subscription]struct{}),
		purged:  make(map[string]uint64),
		expiry:  make(map[expiryKey]expiring),
		decided: make(map[decidedKey]time.Time),
		done:    make(map[string]doneRequest),
		started: cfg.Now(),

		inflight: make(map[string]struct{}),
	}
}

// newIDBase returns a random prefix that makes the hub's own request ids
// unique across restarts without any persistent state.
func newIDBase() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return hex.EncodeToString(b[:])
}

// NewRequestID returns a fresh opaque request id for this hub.
func (h *Hub) NewRequestID() string {
	return h.idBase + "-" + strconv.FormatUint(h.seq.Add(1), 10)
}

// Publish records and fans out an event from a producer (ingest socket).
// The event must already be sanitised. connection_blocked events become
// pending requests; container_exited, shield_down and shield_disengaged
// purge that container's pending requests; every event reaches every
// subscriber.
func (h *Hub) Publish(ev event.Event) {
	ev.Normalize()
	h.eventsIn.Add(1)
	now := h.cfg.Now()
	h.mu.Lock()
	switch ev.Type {
	case event.ConnectionBlocked:
		if ev.RequestID != "" {
			h.addPendingLocked(ev, now, flowKey{}, false)
		}
	case event.ContainerExited, event.ShieldDown, event.ShieldDisengaged:
		h.purgeLocked(ev.Container)
	}
	h.fanOutLocked(ev)
	h.mu.Unlock()
	if ev.Type == event.ConnectionBlocked {
		h.auditBlocked(ev)
	}
	h.changed()
}

// Blocked records a blocked packet seen by the hub's own NFLOG watch. A
// repeat of a destination that is already pending is coalesced: it bumps
// the request's count and is re-announced (same request id) at most once
// per Reemit interval. It returns the request id.
func (h *Hub) Blocked(ev event.Event) string {
	ev.Type = event.ConnectionBlocked
	ev.Normalize()
	h.eventsIn.Add(1)
	now := h.cfg.Now()
	key := flowKey{ev.Container, ev.Dest, ev.Domain, ev.Port, ev.Proto}
	h.mu.Lock()
	if h.recentlyDecidedLocked(ev, now) {
		// Logged before the verdict reached the kernel: not a new
		// request for a destination the operator just decided.
		h.coalesced.Add(1)
		h.mu.Unlock()
		return ""
	}
	p, ok := h.flows[key]
	if !ok && ev.Domain != "" {
		// The container asked for this name before it connected (Ask):
		// the connection is that request, not a second prompt.
		p, ok = h.flows[flowKey{ev.Container, "", ev.Domain, ev.Port, ev.Proto}]
	}
	if ok {
		p.count++
		p.last = now
		id := p.ev.RequestID
		if !p.claimed && now.Sub(p.lastEmit) >= h.cfg.Reemit {
			p.lastEmit = now
			h.fanOutLocked(p.ev)
		} else {
			h.coalesced.Add(1)
		}
		h.mu.Unlock()
		return id
	}
	ev.RequestID = h.NewRequestID()
	h.addPendingLocked(ev, now, key, true)
	h.fanOutLocked(ev)
	h.mu.Unlock()
	h.auditBlocked(ev)
	h.changed()
	return ev.RequestID
}

func (h *Hub) addPendingLocked(ev event.Event, now time.Time, key flowKey, hasFlow bool) {
	if old, ok := h.pending[ev.RequestID]; ok {
		h.removeLocked(old)
	}
	for len(h.pending) >= h.cfg.MaxPending {
		h.removeLocked(h.oldestLocked())
	}
	p := &pending{ev: ev, target: ev.Target(), count: 1, first: now, last: now, lastEmit: now,
		flow: key, hasFlow: hasFlow, container: ev.Container}
	h.insertLocked(p)
}

// insertLocked adds p to the pending set as its newest entry.
func (h *Hub) insertLocked(p *pending) {
	p.live = true
	h.pending[p.ev.RequestID] = p
	if p.hasFlow {
		if _, busy := h.flows[p.flow]; !busy {
			h.flows[p.flow] = p
		}
	}
	h.order = append(h.order, p)
	if len(h.order) > 2*len(h.pending)+64 {
		live := h.order[:0]
		for _, q := range h.order {
			if q.live {
				live = append(live, q)
			}
		}
		clear(h.order[len(live):])
		h.order = live
	}
}

func (h *Hub) oldestLocked() *pending {
	for len(h.order) > 0 {
		p := h.order[0]
		if p.live {
			return p
		}
		h.order[0] = nil
		h.order = h.order[1:]
	}
	return nil
}

func (h *Hub) removeLocked(p *pending) {
	if p == nil {
		return
	}
	p.live = false
	if h.pending[p.ev.RequestID] == p {
		delete(h.pending, p.ev.RequestID)
	}
	if p.hasFlow && h.flows[p.flow] == p {
		delete(h.flows, p.flow)
	}
}

func (h *Hub) purgeLocked(container string) {
	h.gen++
	h.purged[container] = h.gen
	for _, p := range h.pending {
		if p.container == container {
			h.removeLocked(p)
		}
	}
}

// Expire purges pending requests older than PendingTTL and returns how
// many it removed. The daemon calls it periodically.
func (h *Hub) Expire() int {
	now := h.cfg.Now()
	h.mu.Lock()
	n := 0
	for _, p := range h.pending {
		if now.Sub(p.last) > h.cfg.PendingTTL {
			h.removeLocked(p)
			n++
		}
	}
	for id, d := range h.done {
		if now.Sub(d.at) > doneKept {
			delete(h.done, id)
		}
	}
	h.mu.Unlock()
	if n > 0 {
		h.changed()
	}
	return n
}

// Emit fans out an event the hub produced itself (verdict expiry, DNS
// naming updates) without touching the pending set.
func (h *Hub) Emit(ev event.Event) {
	ev.Normalize()
	h.mu.Lock()
	h.fanOutLocked(ev)
	h.mu.Unlock()
}

func (h *Hub) fanOutLocked(ev event.Event) {
	if len(h.subs) == 0 {
		return
	}
	it := &Item{Event: ev}
	for s := range h.subs {
		if s.push(it) {
			h.dropped.Add(1)
		}
	}
}

// Verdict applies an operator's verdict with the seed's semantics
// (org.terok.Clearance1.Verdict). It returns nil on success, or one of
// *InvalidActionError, *UnknownRequestError, *TupleMismatchError,
// *ApplyFailedError.
func (h *Hub) Verdict(ctx context.Context, container, requestID, dest, action string) error {
	_, err := h.decide(ctx, decision{container: container, requestID: requestID, dest: dest,
		action: action, scope: ScopeOnce, checkTuple: true})
	return err
}

// Decide applies a verdict addressed by request id alone, with a scope
// and, for ScopeOnce, a TTL (0 = the applier's default). The verdict
// covers the request's destination, port and protocol, or with anyPort
// every port of it. It returns when the verdict expires (zero when it
// does not). Errors are those of [Hub.Verdict] plus *InvalidScopeError.
func (h *Hub) Decide(ctx context.Context, requestID, action, scope string, ttl time.Duration, anyPort bool) (time.Time, error) {
	return h.decide(ctx, decision{requestID: requestID, action: action, scope: scope, ttl: ttl, anyPort: anyPort})
}

type decision struct {
	container, requestID, dest, action, scope string
	ttl                                       time.Duration
	anyPort                                   bool
	checkTuple                                bool
	op                                        Operator
}

// Operator identifies who decided a verdict, for the audit trail.
type Operator struct {
	UID     int    // kernel-verified uid of the caller; -1 when unknown
	User    string // the uid's user name, "" when unknown
	Channel string // how the verdict arrived: "varlink", "notifier", "clearancectl", …
}

// Describe says who decided, for people: "by alice (uid 1000) via
// clearancectl". Subscribers get it as the reason of verdict_applied.
func (o Operator) Describe() string {
	who := "by an unknown caller"
	switch {
	case o.User != "" && o.UID >= 0:
		who = "by " + o.User + " (uid " + strconv.Itoa(o.UID) + ")"
	case o.UID >= 0:
		who = "by uid " + strconv.Itoa(o.UID)
	}
	if o.Channel != "" {
		who += " via " + o.Channel
	}
	return who
}

type operatorKey struct{}

// WithOperator returns a context carrying the operator of a verdict;
// [Hub.Verdict] and [Hub.Decide] record it in the audit trail.
func WithOperator(ctx context.Context, op Operator) context.Context {
	return context.WithValue(ctx, operatorKey{}, op)
}

func operatorFrom(ctx context.Context) Operator {
	if op, ok := ctx.Value(operatorKey{}).(Operator); ok {
		return op
	}
	return Operator{UID: -1, Channel: "unknown"}
}

func (h *Hub) decide(ctx context.Context, d decision) (time.Time, error) {
	d.op = operatorFrom(ctx)
	if !event.ValidAction(d.action) {
		return time.Time{}, &InvalidActionError{Action: d.action}
	}
	switch d.scope {
	case ScopeOnce, ScopeContainer, ScopeAlways:
	default:
		return time.Time{}, &InvalidScopeError{Scope: d.scope}
	}
	if d.ttl < 0 {
		return time.Time{}, &InvalidScopeError{Scope: d.scope + " (negative ttl)"}
	}

	h.mu.Lock()
	p, ok := h.pending[d.requestID]
	if !ok {
		done, was := h.done[d.requestID]
		h.mu.Unlock()
		if was && !d.checkTuple && h.cfg.Now().Sub(done.at) <= doneKept {
			return time.Time{}, &AlreadyDecidedError{RequestID: d.requestID, Action: done.action, By: done.by, At: done.at}
		}
		return time.Time{}, &UnknownRequestError{RequestID: d.requestID}
	}
	if d.checkTuple && (p.container != d.container || p.target != d.dest) {
		h.mu.Unlock()
		return time.Time{}, &TupleMismatchError{
			ExpectedContainer: p.container, ExpectedDest: p.target,
			GotContainer: d.container, GotDest: d.dest,
		}
	}
	if !d.checkTuple {
		d.container, d.dest = p.container, p.target
	}
	// Claim the request while the verdict is in flight: a second verdict
	// on the same id gets UnknownRequest, as in the seed. Its flow stays
	// mapped, so packets blocked meanwhile are counted, not a new prompt.
	delete(h.pending, p.ev.RequestID)
	p.live, p.claimed = false, true
	h.inflight[p.ev.RequestID] = struct{}{}
	gen := h.purged[p.container]
	h.mu.Unlock()

	req := ApplyRequest{Container: d.container, Dest: d.dest, IP: p.ev.Dest, Port: p.ev.Port,
		Proto: p.ev.Proto, Action: d.action, Scope: d.scope, TTL: d.ttl, AnyPort: d.anyPort,
		VerdictID: newVerdictID()}
	res, applyErr := h.apply(ctx, req)
	ok = applyErr == nil && res.OK

	h.mu.Lock()
	p.claimed = false
	delete(h.inflight, p.ev.RequestID)
	if ok {
		h.removeLocked(p)
		h.trackExpiryLocked(req, res.Expires)
		h.markDecidedLocked(req, h.cfg.Now())
		h.rememberDoneLocked(d.requestID, d, res.Expires)
		// Superseded requests for the same target (and port, unless the
		// verdict covers every port) are decided too.
		for _, q := range h.pending {
			if q.container == p.container && q.target == p.target && req.covers(q.ev.Proto, q.ev.Port) {
				h.removeLocked(q)
				h.rememberDoneLocked(q.ev.RequestID, d, res.Expires)
			}
		}
	} else if _, taken := h.pending[p.ev.RequestID]; h.purged[p.container] == gen && !taken {
		// Restore, unless the container went away meanwhile.
		h.insertLocked(p)
	} else {
		h.removeLocked(p)
	}
	// Who decided travels in reason, a field every seed client already
	// has (and ignores for verdict_applied), so the other channels can say
	// "Allowed by alice via clearancectl" instead of closing silently.
	h.fanOutLocked(event.Event{Type: event.VerdictApplied, Container: d.container,
		RequestID: d.requestID, Action: d.action, OK: ok, Reason: d.op.Describe(), Dossier: map[string]string{}})
	if ok && d.scope == ScopeAlways {
		// What the policy now holds, for clients that share it (the
		// fleet relay); seed clients ignore the type.
		port, proto := p.ev.Port, p.ev.Proto
		if d.anyPort {
			port, proto = 0, 0
		}
		h.fanOutLocked(event.Event{Type: event.VerdictSaved, Container: d.container, RequestID: d.requestID,
			Dest: p.ev.Dest, Domain: p.ev.Domain, Port: port, Proto: proto, Action: d.action, OK: true,
			Reason: d.op.Describe(), Dossier: map[string]string{}})
	}
	h.mu.Unlock()
	h.changed()

	if ok {
		h.okCount.Add(1)
		h.auditVerdict(p, d, req, res)
		return res.Expires, nil
	}
	h.failCount.Add(1)
	stderr := res.Stderr
	if applyErr != nil {
		stderr = applyErr.Error()
	}
	h.auditFailed(p, d, req, stderr, errors.As(applyErr, new(*OutcomeUnknownError)))
	return time.Time{}, &ApplyFailedError{Action: d.action, Stderr: stderr}
}

func (h *Hub) apply(ctx context.Context, req ApplyRequest) (res ApplyResult, err error) {
	if h.cfg.Applier == nil {
		return ApplyResult{}, fmt.Errorf("no verdict applier configured")
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.ApplyTimeout)
	defer cancel()
	defer func() {
		// An applier that panics must not lose the request either.
		if r := recover(); r != nil {
			err = fmt.Errorf("verdict applier panicked: %v", r)
		}
	}()
	return h.cfg.Applier.Apply(ctx, req)
}

// newVerdictID returns a fresh verdict id: 16 random hex digits.
func newVerdictID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// doneRequest is a request decided recently: a second verdict on it gets
// AlreadyDecidedError naming who decided.
type doneRequest struct {
	action  string
	by      Operator
	at      time.Time
	scope   string
	expires time.Time // zero: the verdict does not expire
}

// doneKept is how long a decided request is remembered (and at most
// doneMax of them).
const (
	doneKept = 10 * time.Minute
	doneMax  = 4096
)

func (h *Hub) rememberDoneLocked(id string, d decision, expires time.Time) {
	now := h.cfg.Now()
	if len(h.done) >= doneMax {
		for k, old := range h.done {
			if now.Sub(old.at) > doneKept || len(h.done) >= doneMax {
				delete(h.done, k)
			}
		}
	}
	h.done[id] = doneRequest{action: d.action, by: d.op, at: now, scope: d.scope, expires: expires}
}

// decidedGrace is how long after a verdict blocked packets to the same
// destination are taken for records the kernel logged before the verdict
// landed, and not shown as a new prompt.
const decidedGrace = 2 * time.Second

type decidedKey struct {
	container, dest string
	proto, port     int64 // 0, 0: every port
}

func (h *Hub) markDecidedLocked(req ApplyRequest, now time.Time) {
	if req.IP == "" {
		return
	}
	for k, at := range h.decided { // keep the map small
		if now.Sub(at) >= decidedGrace {
			delete(h.decided, k)
		}
	}
	k := decidedKey{container: req.Container, dest: req.IP}
	if !req.AnyPort {
		k.proto, k.port = req.Proto, req.Port
	}
	h.decided[k] = now
}

// recentlyDecidedLocked reports whether ev's destination (its port, or
// every port) was decided less than decidedGrace ago.
func (h *Hub) recentlyDecidedLocked(ev event.Event, now time.Time) bool {
	for _, k := range []decidedKey{{ev.Container, ev.Dest, ev.Proto, ev.Port}, {ev.Container, ev.Dest, 0, 0}} {
		if at, ok := h.decided[k]; ok {
			if now.Sub(at) < decidedGrace {
				return true
			}
			delete(h.decided, k)
		}
	}
	return false
}

// Revoker is implemented by appliers that can take a verdict back; the
// hub uses it to end a timed verdict on time by the wall clock, which,
// unlike the kernel's element timeout, keeps running during suspend.
type Revoker interface {
	// Revoke takes back what Apply wrote for req.
	Revoke(ctx context.Context, req ApplyRequest) error
}

// expiryKey is what one verdict wrote: its destination, port (0, 0: every
// port) and name.
type expiryKey struct {
	container, ip, name string
	proto, port         int64
}

type expiring struct {
	req ApplyRequest
	at  time.Time
}

func keyOf(req ApplyRequest) expiryKey {
	k := expiryKey{container: req.Container, ip: req.IP, name: req.Name()}
	if !req.AnyPort {
		k.proto, k.port = req.Proto, req.Port
	}
	return k
}

func (h *Hub) trackExpiryLocked(req ApplyRequest, at time.Time) {
	k := keyOf(req)
	if at.IsZero() {
		delete(h.expiry, k) // a lasting verdict replaced any timed one
		return
	}
	h.expiry[k] = expiring{req: req, at: at}
}

// ExpireVerdicts ends every timed verdict whose expiry has passed by the
// wall clock: it revokes the element if the applier can (the kernel's own
// timeout may lag after a suspend), announces a verdict_expired event and
// writes the audit record. It returns how many expired. The daemon calls
// it every second.
func (h *Hub) ExpireVerdicts(ctx context.Context) int {
	now := h.cfg.Now()
	h.mu.Lock()
	var due []struct {
		k expiryKey
		e expiring
	}
	for k, e := range h.expiry {
		if !now.Before(e.at) {
			due = append(due, struct {
				k expiryKey
				e expiring
			}{k, e})
			delete(h.expiry, k)
		}
	}
	h.mu.Unlock()
	if len(due) > 0 {
		h.changed()
	}
	for _, d := range due {
		if r, ok := h.cfg.Applier.(Revoker); ok {
			if err := r.Revoke(ctx, d.e.req); err != nil {
				h.log.Warn("revoke expired verdict", "container", d.k.container, "dest", d.k.ip, "err", err)
			}
		}
		h.AuditExpired(d.k.container, d.e.req.Dest, d.e.at)
	}
	return len(due)
}

// PendingRequest is a request waiting for a verdict, as [Hub.Pending]
// reports it.
type PendingRequest struct {
	Event     event.Event
	Count     int64
	FirstSeen time.Time
	LastSeen  time.Time
}

// Pending returns every request waiting for a verdict, oldest first.
func (h *Hub) Pending() []PendingRequest {
	h.mu.Lock()
	out := h.pendingLocked()
	h.mu.Unlock()
	sortPending(out)
	return out
}

// pendingLocked copies the pending requests, unsorted. h.mu is held.
func (h *Hub) pendingLocked() []PendingRequest {
	out := make([]PendingRequest, 0, len(h.pending))
	for _, p := range h.pending {
		ev := p.ev
		ev.Dossier = cloneMap(ev.Dossier)
		out = append(out, PendingRequest{Event: ev, Count: p.count, FirstSeen: p.first, LastSeen: p.last})
	}
	return out
}

// sortPending orders pending requests oldest first, then by request id.
func sortPending(out []PendingRequest) {
	sort.Slice(out, func(i, j int) bool {
		if !out[i].FirstSeen.Equal(out[j].FirstSeen) {
			return out[i].FirstSeen.Before(out[j].FirstSeen)
		}
		return out[i].Event.RequestID < out[j].Event.RequestID
	})
}

func cloneMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Stats are the hub's counters.
type Stats struct {
	Container      string
	Subscribers    int
	Pending        int
	EventsIn       uint64
	EventsOut      uint64
	Dropped        uint64
	Coalesced      uint64
	VerdictsOK     uint64
	VerdictsFailed uint64
	Started        time.Time
	// Observing is true while the container's ruleset runs in observe
	// mode (not enforced).
	Observing bool
}

// Stats returns a snapshot of the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	subs, pend := len(h.subs), len(h.pending)
	h.mu.Unlock()
	return Stats{
		Container: h.cfg.Container, Subscribers: subs, Pending: pend,
		EventsIn: h.eventsIn.Load(), EventsOut: h.eventsOut.Load(), Dropped: h.dropped.Load(),
		Coalesced: h.coalesced.Load(), VerdictsOK: h.okCount.Load(), VerdictsFailed: h.failCount.Load(),
		Started: h.started, Observing: h.Observing(),
	}
}
