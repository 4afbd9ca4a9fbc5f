// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/terok-ai/clearance/internal/ask"
	"log/slog"
	"net"
	"os/user"
	"strconv"
	"sync"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/dnsfwd"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/iosystemdservice"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
	"golang.org/x/sys/unix"
)

// Product identity reported by org.varlink.service.GetInfo.
const (
	Vendor  = "terok"
	Product = "clearance-hub"
	URL     = "https://github.com/terok-ai/clearance"
)

// Version is the hub's version, set at link time
// (-ldflags "-X github.com/terok-ai/clearance/internal/hubd.Version=…").
var Version = "0.1.0-dev"

// ExtraStats supplies what is kept outside the hub: ingest and NFLOG
// counters, and the ruleset state ("engaged", "engaging", "external").
type ExtraStats func() Extra

// Extra is what [ExtraStats] reports.
type Extra struct {
	Malformed uint64 // malformed or oversized ingest lines
	ENOBUFS   uint64 // NFLOG records the kernel dropped
	Ruleset   string // "engaged", "engaging" or "external"
	// DNS is the forwarder's counters; nil without a forwarder.
	DNS *dnsfwd.Stats
	// ConfigError is why the configuration was not used, "" when it was.
	ConfigError string
	// Ask is the ask endpoint's counters; nil without an endpoint.
	Ask *AskExtra
}

// AskExtra are the ask endpoint's counters in [Extra].
type AskExtra struct {
	Serving bool
	ask.Stats
}

// NewService builds the varlink service of a hub: org.terok.Clearance1,
// org.terok.ClearanceHub1 and io.systemd.service (org.varlink.service is
// built in).
func NewService(h *hub.Hub, level *slog.LevelVar, extra ExtraStats, log *slog.Logger) (*varlink.Service, error) {
	svc, err := varlink.NewService(Vendor, Product, Version, URL)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := svc.RegisterInterface(orgterokclearance1.VarlinkNew(&compat{hub: h, log: log})); err != nil {
		return nil, err
	}
	if err := svc.RegisterInterface(orgterokclearancehub1.VarlinkNew(&ours{hub: h, extra: extra, log: log})); err != nil {
		return nil, err
	}
	if err := svc.RegisterInterface(iosystemdservice.VarlinkNew(&varlinkapi.SystemdService{Level: level})); err != nil {
		return nil, err
	}
	return svc, nil
}

// ParamCheck is the check of every call's parameters the hub's
// [varlinkapi.Server] runs before dispatch (Server.Params): on every
// interface the hub serves, a missing, ill-typed or unknown parameter is
// answered org.varlink.service.InvalidParameter naming it, as the seed
// answers on org.terok.Clearance1 (docs/varlink.md, "Parameters").
var ParamCheck = sync.OnceValue(func() *varlinkapi.ParamCheck {
	p, err := varlinkapi.NewParamCheck([]string{
		varlinkapi.ServiceDescription,
		new(orgterokclearance1.VarlinkInterface).VarlinkGetDescription(),
		new(orgterokclearancehub1.VarlinkInterface).VarlinkGetDescription(),
		new(iosystemdservice.VarlinkInterface).VarlinkGetDescription(),
	}, "org.terok.Clearance1.Subscribe", "org.terok.ClearanceHub1.Follow")
	if err != nil {
		// The descriptions are compiled in; every hub test builds this.
		panic("hubd: " + err.Error())
	}
	return p
})

// compat implements org.terok.Clearance1, wire-identical to the seed.
type compat struct {
	orgterokclearance1.VarlinkInterface
	hub *hub.Hub
	log *slog.Logger
}

// Subscribe streams every event until the peer hangs up or the hub stops.
func (s *compat) Subscribe(ctx context.Context, c orgterokclearance1.VarlinkCall) error {
	if !c.WantsMore() {
		return varlinkapi.ReplyExpectedMore(ctx, &c.Call)
	}
	sub := s.hub.Subscribe()
	defer sub.Close()
	return streamEvents(ctx, &c.Call, sub, nil)
}

// streamEvents writes first (when set), then sub's events as
// org.terok.Clearance1.Subscribe replies, until the peer hangs up or
// ctx ends.
func streamEvents(ctx context.Context, c *varlink.Call, sub *hub.Subscription, first []byte) error {
	gone := varlinkapi.Hangup(c)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-gone:
			cancel()
		case <-wctx.Done():
		}
	}()
	c.Continues = true
	if first != nil {
		if _, err := c.Conn.Write(wctx, first); err != nil {
			return nil
		}
	}
	var batch []byte
	for {
		select {
		case <-wctx.Done():
			return nil
		case <-sub.Ready():
		}
		// Write everything queued in one go: one syscall per burst, and
		// each event is encoded once for all subscribers.
		batch = batch[:0]
		n := 0
		for n < maxBatch {
			it, ok := sub.NextItem()
			if !ok {
				break
			}
			batch = append(batch, it.Encoded(encodeSubscribeReply)...)
			n++
		}
		if n == 0 {
			continue
		}
		if _, err := c.Conn.Write(wctx, batch); err != nil {
			return nil // the peer is gone or too slow to ever catch up; the connection ends
		}
		sub.Delivered(n)
		if n == maxBatch {
			sub.Wake()
		}
	}
}

// maxBatch bounds the events written in one burst to a subscriber.
const maxBatch = 256

// encodeSubscribeReply encodes ev as one org.terok.Clearance1.Subscribe
// reply frame, NUL-terminated, byte for byte as the seed sends it:
// {"continues":true,"parameters":{"event":{…}}} (asyncvarlink's key
// order; the generated ReplySubscribe would put "parameters" first).
func encodeSubscribeReply(ev event.Event) []byte {
	b, err := json.Marshal(struct {
		Continues  bool `json:"continues"`
		Parameters struct {
			Event orgterokclearance1.ClearanceEvent `json:"event"`
		} `json:"parameters"`
	}{Continues: true, Parameters: struct {
		Event orgterokclearance1.ClearanceEvent `json:"event"`
	}{toWire(ev)}})
	if err != nil {
		// Strings and a map of strings always marshal.
		panic("encode event: " + err.Error())
	}
	return append(b, 0)
}

// Verdict applies a verdict with the seed's check order and typed errors.
func (s *compat) Verdict(ctx context.Context, c orgterokclearance1.VarlinkCall, container, requestID, dest, action string) error {
	ctx = hub.WithOperator(ctx, operator(&c.Call, "varlink"))
	err := s.hub.Verdict(ctx, container, requestID, dest, action)
	if err == nil {
		return c.ReplyVerdict(ctx, true)
	}
	return replyHubError(ctx, &c.Call, err, s.log)
}

// replyHubError maps the hub's domain errors to varlink errors, in one
// place (STYLE: errors).
func replyHubError(ctx context.Context, call *varlink.Call, err error, log *slog.Logger) error {
	var (
		inv   *hub.InvalidActionError
		unk   *hub.UnknownRequestError
		mis   *hub.TupleMismatchError
		fail  *hub.ApplyFailedError
		scope *hub.InvalidScopeError
		done  *hub.AlreadyDecidedError
	)
	// Every error is written in the seed's byte order,
	// {"error":…,"parameters":{…}} (varlinkapi.ReplyError), with the
	// generated error types for the parameters, in their IDL order.
	const compat, ours = "org.terok.Clearance1.", "org.terok.ClearanceHub1."
	switch {
	case errors.As(err, &done):
		return varlinkapi.ReplyError(ctx, call, ours+"AlreadyDecided", orgterokclearancehub1.AlreadyDecided{
			Request_id: done.RequestID, Action: done.Action, By: done.By.Describe(), At_usec: done.At.UnixMicro()})
	case errors.As(err, &inv):
		return varlinkapi.ReplyError(ctx, call, compat+"InvalidAction", orgterokclearance1.InvalidAction{Action: inv.Action})
	case errors.As(err, &unk):
		return varlinkapi.ReplyError(ctx, call, compat+"UnknownRequest", orgterokclearance1.UnknownRequest{Request_id: unk.RequestID})
	case errors.As(err, &mis):
		return varlinkapi.ReplyError(ctx, call, compat+"VerdictTupleMismatch", orgterokclearance1.VerdictTupleMismatch{
			Expected_container: mis.ExpectedContainer, Expected_dest: mis.ExpectedDest,
			Got_container: mis.GotContainer, Got_dest: mis.GotDest})
	case errors.As(err, &fail):
		return varlinkapi.ReplyError(ctx, call, compat+"ShieldCliFailed", orgterokclearance1.ShieldCliFailed{Action: fail.Action, Stderr: fail.Stderr})
	case errors.As(err, &scope):
		return varlinkapi.ReplyError(ctx, call, ours+"InvalidScope", orgterokclearancehub1.InvalidScope{Scope: scope.Scope})
	}
	log.Error("verdict failed unexpectedly", "err", err)
	return varlinkapi.ReplyError(ctx, call, compat+"ShieldCliFailed", orgterokclearance1.ShieldCliFailed{Stderr: err.Error()})
}

// ours implements org.terok.ClearanceHub1.
type ours struct {
	orgterokclearancehub1.VarlinkInterface
	hub   *hub.Hub
	extra ExtraStats
	log   *slog.Logger
}

// Pending lists the requests waiting for a verdict.
func (s *ours) Pending(ctx context.Context, c orgterokclearancehub1.VarlinkCall) error {
	return c.ReplyPending(ctx, pendingWire(s.hub.Pending()))
}

// Follow is Pending, then Subscribe's stream, from one moment: the first
// reply carries the backlog, every later one an event, encoded as
// Subscribe encodes it (the parameter is "event" in both interfaces and
// Event has ClearanceEvent's fields, so the bytes are the same and shared
// with Subscribe's subscribers).
func (s *ours) Follow(ctx context.Context, c orgterokclearancehub1.VarlinkCall) error {
	if !c.WantsMore() {
		return varlinkapi.ReplyExpectedMore(ctx, &c.Call)
	}
	sub, ps := s.hub.SubscribePending()
	defer sub.Close()
	pending := pendingWire(ps)
	first, err := json.Marshal(struct {
		Continues  bool `json:"continues"`
		Parameters struct {
			Pending *[]orgterokclearancehub1.PendingRequest `json:"pending"`
		} `json:"parameters"`
	}{Continues: true, Parameters: struct {
		Pending *[]orgterokclearancehub1.PendingRequest `json:"pending"`
	}{&pending}})
	if err != nil {
		return err
	}
	return streamEvents(ctx, &c.Call, sub, append(first, 0))
}

// pendingWire converts pending requests to the wire.
func pendingWire(ps []hub.PendingRequest) []orgterokclearancehub1.PendingRequest {
	out := make([]orgterokclearancehub1.PendingRequest, 0, len(ps))
	for _, p := range ps {
		ev := p.Event
		out = append(out, orgterokclearancehub1.PendingRequest{
			Container: ev.Container, Request_id: ev.RequestID, Dest: ev.Dest, Port: ev.Port,
			Proto: ev.Proto, Domain: ev.Domain, Target: ev.Target(), Dossier: ev.Dossier,
			Count: p.Count, First_seen_usec: p.FirstSeen.UnixMicro(), Last_seen_usec: p.LastSeen.UnixMicro(),
		})
		if ev.Reason != "" {
			r := ev.Reason
			out[len(out)-1].Reason = &r
		}
	}
	return out
}

// Stats reports the hub's counters.
func (s *ours) Stats(ctx context.Context, c orgterokclearancehub1.VarlinkCall) error {
	st := s.hub.Stats()
	x := Extra{Ruleset: "external"}
	if s.extra != nil {
		x = s.extra()
	}
	out := orgterokclearancehub1.HubStats{
		Container: st.Container, Subscribers: int64(st.Subscribers), Pending: int64(st.Pending),
		Events_in: int64(st.EventsIn), Events_out: int64(st.EventsOut), Dropped: int64(st.Dropped),
		Malformed: int64(x.Malformed), Verdicts_ok: int64(st.VerdictsOK), Verdicts_failed: int64(st.VerdictsFailed),
		Nflog_enobufs: int64(x.ENOBUFS), Started_usec: st.Started.UnixMicro(), Ruleset: x.Ruleset,
	}
	if x.ConfigError != "" {
		out.Config_error = &x.ConfigError
	}
	mode := "enforce"
	if st.Observing {
		mode = "observe"
	}
	out.Mode = &mode
	if a := x.Ask; a != nil {
		out.Ask = &orgterokclearancehub1.AskStats{Serving: a.Serving, Requests: int64(a.Requests), Asked: int64(a.Asked),
			Answered: int64(a.Answered), Bad_requests: int64(a.BadRequests), Timed_out: int64(a.TimedOut),
			Rate_limited: int64(a.RateLimited), Refused: int64(a.Refused), Waiting: a.Waiting}
	}
	if d := x.DNS; d != nil {
		out.Dns = &orgterokclearancehub1.DNSStats{
			Queries: int64(d.QueriesUDP + d.QueriesTCP), Answers: int64(d.Answers), Held: int64(d.Held),
			Hold_timeouts: int64(d.HoldTimeouts), Learn_errors: int64(d.LearnErrors), Learned: int64(d.Learned),
			Denied: int64(d.Denied), Refused_overload: int64(d.RefusedOverload), Spoofed: int64(d.Spoofed),
			Malformed: int64(d.Malformed), Upstream_failures: int64(d.UpstreamFailures),
		}
		hits := int64(d.CacheHits)
		out.Dns.Cache_hits = &hits
	}
	return c.ReplyStats(ctx, out)
}

// Decide applies a verdict by request id with a scope.
func (s *ours) Decide(ctx context.Context, c orgterokclearancehub1.VarlinkCall, requestID, action, scope string, ttlSec int64, anyPort *bool, channel *string) error {
	if ttlSec < 0 || ttlSec > int64(100*365*24*time.Hour/time.Second) {
		return varlinkapi.ReplyError(ctx, &c.Call, varlinkapi.InvalidParameter, map[string]string{"parameter": "ttl_sec"})
	}
	ch := "varlink"
	if channel != nil && *channel != "" {
		if !validChannel(*channel) {
			return varlinkapi.ReplyError(ctx, &c.Call, varlinkapi.InvalidParameter, map[string]string{"parameter": "channel"})
		}
		ch = *channel
	}
	ctx = hub.WithOperator(ctx, operator(&c.Call, ch))
	exp, err := s.hub.Decide(ctx, requestID, action, scope, time.Duration(ttlSec)*time.Second, anyPort != nil && *anyPort)
	if err != nil {
		return replyHubError(ctx, &c.Call, err, s.log)
	}
	var usec int64
	if !exp.IsZero() {
		usec = exp.UnixMicro()
	}
	return c.ReplyDecide(ctx, true, usec)
}

// operator identifies the caller of a verdict by its kernel-verified uid.
// validChannel accepts a client's name for itself: 1..32 characters of
// [a-z0-9._-].
func validChannel(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func operator(c *varlink.Call, channel string) hub.Operator {
	op := hub.Operator{UID: -1, Channel: channel}
	if uc, ok := varlinkapi.PeerConn(c).(*net.UnixConn); ok {
		if raw, err := uc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) {
				if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
					op.UID = int(cred.Uid)
				}
			})
		}
	}
	return Caller(op.UID, op.Channel)
}

// Caller is the operator a caller with this kernel-verified uid (-1 when
// unknown) on this channel is shown as: its user name comes from the user
// database (/etc/passwd; no NSS modules in a static binary), "" when the
// uid has no entry.
func Caller(uid int, channel string) hub.Operator {
	op := hub.Operator{UID: uid, Channel: channel}
	if uid < 0 {
		return op
	}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		op.User = u.Username
	}
	return op
}

func toWire(ev event.Event) orgterokclearance1.ClearanceEvent {
	d := ev.Dossier
	if d == nil {
		d = map[string]string{}
	}
	return orgterokclearance1.ClearanceEvent{
		Type: ev.Type, Container: ev.Container, Request_id: ev.RequestID, Dest: ev.Dest,
		Port: ev.Port, Proto: ev.Proto, Domain: ev.Domain, Action: ev.Action, Ok: ev.OK,
		Reason: ev.Reason, Dossier: d,
	}
}
