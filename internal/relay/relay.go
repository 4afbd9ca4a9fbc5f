// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hubclient"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// Defaults for [Config].
const (
	DefaultPrefix   = "clearance"
	DefaultBucket   = "clearance-always"
	DefaultScan     = time.Second
	DefaultPresence = 10 * time.Second
)

// Config configures a [Relay]. Host and URL are required.
type Config struct {
	// Host names this host on the subjects (a [ValidToken]).
	Host string
	// URL is the NATS server (nats://host:4222, tls://…; several
	// separated by commas).
	URL string
	// Options are extra nats.go options: credentials, TLS, a name.
	Options []nats.Option
	// Prefix is the first subject token(s) (default DefaultPrefix).
	Prefix string
	// Bucket is the JetStream key-value bucket of "always" verdicts
	// (default DefaultBucket).
	Bucket string
	// HubGlob finds the local hub sockets (…/<container>/hub.sock).
	HubGlob []string
	// Scan is how often the hub sockets are looked for (default
	// DefaultScan); Presence how often the host announces itself.
	Scan, Presence time.Duration
	// Adopter applies "always" verdicts given on other hosts to this
	// host's policies; nil only records them.
	Adopter Adopter
	// Log receives warnings and the audit of mirrored verdicts; nil
	// discards.
	Log *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnConnected, if set, is called after every (re)connect, once what
	// is pending was published again. For tests and the readiness
	// notification.
	OnConnected func()
	// OnDisconnected, if set, is called when the connection is lost.
	OnDisconnected func()
}

// Adopter applies a mirrored "always" verdict to this host's policy, so
// its next container of that policy starts with it.
type Adopter interface {
	Adopt(ctx context.Context, a Always) error
}

// Relay connects the hubs of one host to NATS. Run it once.
type Relay struct {
	cfg    Config
	subj   Subjects
	runCtx context.Context // Run's, for work started from events
	log    *slog.Logger
	id     string
	// nc is set by Run once Connect returns, and by the connect
	// handlers, which nats.go may call before that.
	nc atomic.Pointer[nats.Conn]

	mu       sync.Mutex
	hubs     map[string]*localHub
	presence chan struct{}
	wg       sync.WaitGroup
	seen     map[string]*decision // verdict id → its first answer
	// mirroring holds "<container>/<request id>" of "always" verdicts
	// this relay mirrors itself (before its reply); their verdict_saved
	// event is then not mirrored a second time.
	mirroring map[string]bool
	kv        jetstream.KeyValue
	kvReady   chan struct{}
	connected bool
}

// decision is the answer to one verdict id, or the wait for it.
type decision struct {
	done  chan struct{}
	reply DecideReply
	at    time.Time
}

// New checks cfg and returns a Relay.
func New(cfg Config) (*Relay, error) {
	if !ValidToken(cfg.Host) || cfg.Host == "fleet" {
		return nil, fmt.Errorf("relay host %q: 1 to 64 letters, digits, '-' and '_' (and not \"fleet\")", cfg.Host)
	}
	if cfg.URL == "" {
		return nil, errors.New("relay: no NATS url (nats.url)")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	for _, t := range strings.Split(cfg.Prefix, ".") {
		if !ValidToken(t) {
			return nil, fmt.Errorf("relay subject prefix %q: dot-separated tokens of letters, digits, '-' and '_'", cfg.Prefix)
		}
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if !ValidToken(cfg.Bucket) {
		return nil, fmt.Errorf("relay bucket %q: letters, digits, '-' and '_'", cfg.Bucket)
	}
	if cfg.Scan <= 0 {
		cfg.Scan = DefaultScan
	}
	if cfg.Presence <= 0 {
		cfg.Presence = DefaultPresence
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var b [8]byte
	rand.Read(b[:])
	return &Relay{cfg: cfg, subj: Subjects{Prefix: cfg.Prefix}, log: log, id: hex.EncodeToString(b[:]),
		hubs: map[string]*localHub{}, presence: make(chan struct{}, 1), seen: map[string]*decision{}, mirroring: map[string]bool{},
		kvReady: make(chan struct{})}, nil
}

// Run connects and relays until ctx ends. The NATS server need not be up:
// the relay keeps trying, local hubs and prompts never depend on it, and
// after every (re)connect what is still pending is published again
// (marked replay).
func (r *Relay) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.runCtx = ctx
	// closed is closed when nats.go gives up on the connection for good,
	// which it does only when the server refuses the same credentials
	// twice in a row (an unknown account, an expired or revoked JWT, a
	// wrong password): an outage is retried for ever, a refusal is not
	// (nats.go's default; systemd restarts the unit, which reads the
	// credentials again).
	closed := make(chan struct{})
	opts := append([]nats.Option{
		nats.Name("clearance-relay " + r.cfg.Host),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.ConnectHandler(func(c *nats.Conn) { r.nc.Store(c); r.onConnect("connected") }),
		nats.ReconnectHandler(func(c *nats.Conn) { r.nc.Store(c); r.onConnect("reconnected") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			r.mu.Lock()
			r.connected = false
			r.mu.Unlock()
			r.log.Warn("NATS connection lost; local prompts are unaffected", "err", err)
			if r.cfg.OnDisconnected != nil {
				r.cfg.OnDisconnected()
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			r.log.Warn("NATS error", "subject", subj, "err", err)
		}),
	}, r.cfg.Options...)
	nc, err := nats.Connect(r.cfg.URL, opts...)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	r.nc.Store(nc)
	defer nc.Close()

	if _, err := nc.Subscribe(r.subj.Decide(r.cfg.Host, "*", "*"), func(m *nats.Msg) {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.onDecide(ctx, m)
		}()
	}); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if _, err := nc.Subscribe(r.subj.FleetPending(), func(m *nats.Msg) {
		data, _ := json.Marshal(r.Pending())
		m.Respond(data)
	}); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if _, err := nc.Subscribe(r.subj.FleetPresence(), func(m *nats.Msg) {
		data, _ := json.Marshal(r.presenceNow())
		m.Respond(data)
	}); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.mirrorLoop(ctx)
	}()

	scan := time.NewTicker(r.cfg.Scan)
	defer scan.Stop()
	pres := time.NewTicker(r.cfg.Presence)
	defer pres.Stop()
	r.scanHubs(ctx)
	for {
		select {
		case <-ctx.Done():
			r.publishPresence()
			nc.Flush()
			nc.Close()
			r.wg.Wait()
			return nil
		case <-closed:
			stopped := ctx.Err() != nil
			cancel()
			r.wg.Wait()
			if stopped {
				return nil
			}
			return &RefusedError{Err: nc.LastError()}
		case <-scan.C:
			r.scanHubs(ctx)
		case <-pres.C:
			r.publishPresence()
		case <-r.presence:
			r.publishPresence()
		}
	}
}

// onConnect publishes what is pending again (nats.go calls it from its
// own goroutine).
func (r *Relay) onConnect(what string) {
	r.mu.Lock()
	r.connected = true
	r.mu.Unlock()
	n := 0
	for _, b := range r.Pending() {
		b.Replay = true
		r.publishBlocked(b)
		n++
	}
	r.publishPresence()
	r.log.Info("NATS "+what, "url", r.nc.Load().ConnectedUrlRedacted(), "replayed", n)
	if r.cfg.OnConnected != nil {
		r.cfg.OnConnected()
	}
}

// Pending returns every request the host's hubs hold, oldest first.
func (r *Relay) Pending() []Blocked {
	out := []Blocked{}
	for _, h := range r.localHubs() {
		_, bs := h.snapshot()
		out = append(out, bs...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FirstUsec < out[j].FirstUsec })
	return out
}

func (r *Relay) localHubs() []*localHub {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*localHub, 0, len(r.hubs))
	for _, h := range r.hubs {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func (r *Relay) hub(id string) *localHub {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hubs[id]
}

func (r *Relay) presenceChanged() {
	select {
	case r.presence <- struct{}{}:
	default:
	}
}

func (r *Relay) presenceNow() Presence {
	p := Presence{Host: r.cfg.Host, Relay: r.id, Containers: []ContainerInfo{}, AtUsec: r.cfg.Now().UnixMicro()}
	for _, h := range r.localHubs() {
		info, _ := h.snapshot()
		p.Containers = append(p.Containers, info)
	}
	return p
}

func (r *Relay) publishPresence() {
	r.publish(r.subj.Presence(r.cfg.Host), r.presenceNow())
}

// seenTTL is how long a verdict id's answer is kept for retries, and
// maxSeen how many are kept at most.
const (
	seenTTL = 10 * time.Minute
	maxSeen = 8192
)

// onDecide answers one verdict request.
func (r *Relay) onDecide(ctx context.Context, m *nats.Msg) {
	toks := strings.Split(m.Subject, ".")
	n := len(toks)
	reply := DecideReply{Host: r.cfg.Host}
	if n < 4 || toks[n-2] != "decide" {
		reply.Error, reply.Message = ErrInvalid, "bad subject "+m.Subject
	} else {
		reply = r.decide(ctx, toks[n-3], toks[n-1], m.Data)
	}
	data, _ := json.Marshal(reply)
	if m.Reply != "" {
		if err := m.Respond(data); err != nil {
			r.log.Warn("answer verdict request", "err", err)
		}
	}
}

// decide applies one verdict through the local hub, once per verdict id.
func (r *Relay) decide(ctx context.Context, container, operator string, data []byte) DecideReply {
	fail := func(code, format string, args ...any) DecideReply {
		return DecideReply{Host: r.cfg.Host, Container: container, Error: code, Message: fmt.Sprintf(format, args...)}
	}
	if !ValidOperator(operator) {
		return fail(ErrInvalid, "operator name %q: 1 to 27 of a-z, 0-9, '-' and '_'", operator)
	}
	var req DecideRequest
	if len(data) > 4096 {
		return fail(ErrInvalid, "verdict request larger than 4096 bytes")
	}
	if err := json.Unmarshal(data, &req); err != nil {
		return fail(ErrInvalid, "verdict request is not JSON: %v", err)
	}
	if req.Scope == "" {
		req.Scope = "once"
	}
	switch {
	case req.Action != event.ActionAllow && req.Action != event.ActionDeny:
		return fail(ErrInvalid, "action %q: allow or deny", req.Action)
	case req.Scope != "once" && req.Scope != "container" && req.Scope != "always":
		return fail(ErrInvalid, "scope %q: once, container or always", req.Scope)
	case req.RequestID == "" || len(req.RequestID) > 256:
		return fail(ErrInvalid, "request id: 1 to 256 bytes")
	case req.TTLSec < 0:
		return fail(ErrInvalid, "ttl_sec %d is negative", req.TTLSec)
	case len(req.VerdictID) > 128:
		return fail(ErrInvalid, "verdict id longer than 128 bytes")
	}
	if req.VerdictID != "" {
		key := operator + "/" + req.VerdictID
		r.mu.Lock()
		now := r.cfg.Now()
		for k, d := range r.seen {
			if now.Sub(d.at) > seenTTL {
				delete(r.seen, k)
			}
		}
		if d, ok := r.seen[key]; ok {
			r.mu.Unlock()
			select {
			case <-d.done:
			case <-ctx.Done():
				return fail(ErrFailed, "relay stopping")
			}
			return d.reply
		}
		if len(r.seen) >= maxSeen {
			// Remembering more would let a sender grow the relay without
			// bound; the hub still applies a request once (a repeat gets
			// already_decided instead of the first answer).
			r.mu.Unlock()
			return r.apply(ctx, container, operator, req)
		}
		d := &decision{done: make(chan struct{}), at: now}
		r.seen[key] = d
		r.mu.Unlock()
		defer close(d.done)
		reply := r.apply(ctx, container, operator, req)
		d.reply = reply
		return reply
	}
	return r.apply(ctx, container, operator, req)
}

// apply hands the verdict to the hub's Decide: the hub's checks and its
// first-verdict-wins rule decide, and it audits the verdict with the
// channel "nats.<operator>".
func (r *Relay) apply(ctx context.Context, container, operator string, req DecideRequest) DecideReply {
	reply := DecideReply{Host: r.cfg.Host, Container: container, Action: req.Action, Scope: req.Scope}
	h := r.hub(container)
	if h == nil {
		reply.Error = ErrNoContainer
		reply.Message = fmt.Sprintf("host %s has no container %s now (it exited, or the host restarted): nothing applied", r.cfg.Host, container)
		return reply
	}
	started := h.startedUsec()
	restarted := req.HubStarted != 0 && started != 0 && req.HubStarted != started
	blocked, known := h.lookup(req.RequestID)
	mirrorKey := container + "/" + req.RequestID
	if known && req.Scope == "always" {
		r.mu.Lock()
		r.mirroring[mirrorKey] = true
		r.mu.Unlock()
		defer func() {
			if !reply.OK {
				r.takeMirroring(mirrorKey)
			}
		}()
	}
	var anyPort *bool
	if req.AnyPort {
		anyPort = &req.AnyPort
	}
	channel := "nats." + operator
	calls := hubclient.Caller{Path: h.sock, Timeout: hubCallTimeout}
	defer calls.Close()
	var expires int64
	err := calls.Call(ctx, func(ctx context.Context, c *varlink.Connection) error {
		var err error
		_, expires, err = orgterokclearancehub1.Decide().Call(ctx, c, req.RequestID, req.Action, req.Scope, req.TTLSec, anyPort, &channel)
		return err
	})
	var notSent *hubclient.NotSentError
	if errors.As(err, &notSent) {
		reply.Error, reply.Message = ErrFailed, fmt.Sprintf("hub of %s on %s not reachable: %v", container, r.cfg.Host, err)
		return reply
	}
	if err != nil {
		return r.decideError(reply, err, req, restarted, started)
	}
	reply.OK, reply.ExpiresUsec = true, expires
	if req.Scope == "always" && known {
		a, ok := alwaysOf(blocked, h.policy, req, "nats."+operator, r.cfg.Host, r.cfg.Now())
		if !ok {
			reply.Message = "applied here; not mirrored to the fleet: only TCP and UDP ports can be"
		} else if err := r.mirror(ctx, a); err != nil {
			reply.Message = "applied here; not mirrored to the fleet: " + err.Error()
			r.log.Warn("always verdict not mirrored", "container", container, "request_id", req.RequestID, "err", err)
		}
	}
	return reply
}

// takeMirroring reports whether key was being mirrored by apply, and
// forgets it.
func (r *Relay) takeMirroring(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	was := r.mirroring[key]
	delete(r.mirroring, key)
	return was
}

func (r *Relay) decideError(reply DecideReply, err error, req DecideRequest, restarted bool, started int64) DecideReply {
	var p struct {
		Action string `json:"action"`
		By     string `json:"by"`
		AtUsec int64  `json:"at_usec"`
		Stderr string `json:"stderr"`
	}
	errParams(err, &p)
	switch varlinkapi.ErrorName(err) {
	case "org.terok.ClearanceHub1.AlreadyDecided":
		reply.Error, reply.Action, reply.By, reply.AtUsec = ErrAlreadyDecided, p.Action, p.By, p.AtUsec
		reply.Message = fmt.Sprintf("request %s was already decided (%s) %s; nothing applied", req.RequestID, p.Action, p.By)
	case "org.terok.Clearance1.UnknownRequest":
		if restarted {
			reply.Error = ErrRestarted
			reply.Message = fmt.Sprintf("the hub of %s on %s restarted at %s, after request %s was shown; the request is gone: nothing applied (look at what is pending now)",
				reply.Container, reply.Host, time.UnixMicro(started).UTC().Format(time.RFC3339), req.RequestID)
		} else {
			reply.Error = ErrUnknownRequest
			reply.Message = fmt.Sprintf("request %s is not pending on %s/%s (expired, purged or never there): nothing applied", req.RequestID, reply.Host, reply.Container)
		}
	case "org.terok.Clearance1.ShieldCliFailed":
		reply.Error = ErrRefused
		reply.Message = "the firewall refused: " + p.Stderr + "; the request is still pending"
	case "org.terok.ClearanceHub1.InvalidScope", "org.terok.Clearance1.InvalidAction", "org.varlink.service.InvalidParameter":
		reply.Error, reply.Message = ErrInvalid, "the hub refused the verdict: "+varlinkapi.ErrorName(err)
	default:
		reply.Error, reply.Message = ErrFailed, "the hub failed: "+err.Error()
	}
	return reply
}

// errParams decodes a varlink error's parameters into v.
func errParams(err error, v any) {
	var ve *varlink.Error
	if errors.As(err, &ve) {
		if raw, ok := ve.Parameters.(*json.RawMessage); ok && raw != nil {
			json.Unmarshal(*raw, v)
		}
		return
	}
	if b, jerr := json.Marshal(err); jerr == nil {
		json.Unmarshal(b, v)
	}
}

// ValidOperator reports whether s may name an operator on a decide
// subject: it becomes the hub's audit channel "nats.<s>", so 1 to 27
// characters of a-z, 0-9, '-' and '_'.
func ValidOperator(s string) bool {
	if s == "" || len(s) > 27 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
