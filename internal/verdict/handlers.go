// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/dnsname"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/policy"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearanceverdict1"
)

// MaxListElements bounds the reply of List: a container's owner can fill
// its own ruleset with any number of elements, and a reply of hundreds of
// thousands of elements costs the service (and the caller) tens of
// megabytes. A bigger ruleset is refused with FirewallFailed, naming the
// count.
const MaxListElements = 20000

// maxStderr caps the stderr of Apply replies, as the seed did.
const maxStderr = 512

// maxTTL bounds ttl_sec (the kernel's element timeouts are 64-bit ms, but
// a century is enough).
const maxTTL = 100 * 365 * 24 * time.Hour

// compat implements org.terok.ClearanceVerdict1, the seed's interface.
type compat struct {
	orgterokclearanceverdict1.VarlinkInterface
	s *Service
}

// Apply never fails: every problem is ok=false with a reason.
func (h *compat) Apply(ctx context.Context, c orgterokclearanceverdict1.VarlinkCall, container, dest, action string) error {
	ok, stderr := h.apply(ctx, &c.Call, container, dest, action)
	return c.ReplyApply(ctx, ok, truncate(stderr))
}

func (h *compat) apply(ctx context.Context, call *varlink.Call, container, dest, action string) (bool, string) {
	s := h.s
	if !event.ValidAction(action) {
		closeFDs(call)
		return false, "invalid action " + quote(action) + " (want allow or deny)"
	}
	r := applyRequest{destText: dest, action: action, scope: ScopeOnce, ttl: s.cfg.OnceTTL, channel: "compat"}
	p, err := policy.ParseDest(dest)
	if s.cfg.execMode() {
		text, ok := shieldDest(dest)
		if !ok {
			closeFDs(call)
			return false, "invalid destination " + quote(dest) + ": must be an IP address, a CIDR prefix or a DNS name"
		}
		r.destText = text
	} else if err != nil {
		closeFDs(call)
		return false, "invalid destination " + quote(dest) + ": must be an IP address or CIDR prefix"
	}
	r.dest = nft.PrefixDest(p)
	t, err := s.resolve(call, container)
	if err != nil {
		s.log.Warn("verdict refused", "container", container, "dest", dest, "action", action, "err", err)
		return false, err.Error()
	}
	defer t.Close()
	a := s.apply(ctx, t, r)
	return a.ok, a.stderr
}

// firewall1 implements org.terok.ClearanceFirewall1.
type firewall1 struct {
	fw1.VarlinkInterface
	s *Service
}

func (h *firewall1) Engage(ctx context.Context, c fw1.VarlinkCall, container string) error {
	t, err := h.s.resolve(&c.Call, container)
	if err != nil {
		return h.s.replyError(ctx, &c, "engage", container, err)
	}
	defer t.Close()
	e, err := h.s.engage(t)
	if err != nil {
		return h.s.replyError(ctx, &c, "engage", container, err)
	}
	mode := ModeEnforce
	if e.observe {
		mode = ModeObserve
	}
	var note *string
	if e.note != "" {
		note = &e.note
	}
	return c.ReplyEngage(ctx, e.table, e.now, &mode, note)
}

func (h *firewall1) Verify(ctx context.Context, c fw1.VarlinkCall, container string) error {
	t, err := h.s.resolve(&c.Call, container)
	if err != nil {
		return h.s.replyError(ctx, &c, "verify", container, err)
	}
	defer t.Close()
	integ, err := h.s.verify(t)
	if err != nil {
		return h.s.replyError(ctx, &c, "verify", container, err)
	}
	return c.ReplyVerify(ctx, string(integ))
}

func (h *firewall1) Watch(ctx context.Context, c fw1.VarlinkCall, container string) error {
	t, err := h.s.resolve(&c.Call, container)
	if err != nil {
		return h.s.replyError(ctx, &c, "watch", container, err)
	}
	defer t.Close()
	f, err := h.s.watch(t)
	if err != nil {
		return h.s.replyError(ctx, &c, "watch", container, err)
	}
	defer f.Close() // the caller has its own copy once the reply is sent
	if c.IsOneway() {
		return nil
	}
	type reply struct {
		Group int64 `json:"group"`
	}
	return c.ReplyWithFDs(ctx, reply{Group: int64(h.s.cfg.Group)}, []*os.File{f})
}

func (h *firewall1) Monitor(ctx context.Context, c fw1.VarlinkCall, container string) error {
	t, err := h.s.resolve(&c.Call, container)
	if err != nil {
		return h.s.replyError(ctx, &c, "monitor", container, err)
	}
	defer t.Close()
	f, err := h.s.monitor(t)
	if err != nil {
		return h.s.replyError(ctx, &c, "monitor", container, err)
	}
	defer f.Close() // the caller has its own copy once the reply is sent
	if c.IsOneway() {
		return nil
	}
	return c.ReplyWithFDs(ctx, struct{}{}, []*os.File{f})
}

func (h *firewall1) Apply(ctx context.Context, c fw1.VarlinkCall, container, ip, action, scope string, ttlSec int64,
	policyTarget string, proto *string, port *int64, name *string, verdictID *string) error {
	s := h.s
	switch {
	case !event.ValidAction(action):
		closeFDs(&c.Call)
		return c.ReplyInvalidParameter(ctx, "action")
	case scope != ScopeOnce && scope != ScopeContainer && scope != ScopeAlways:
		closeFDs(&c.Call)
		return c.ReplyInvalidParameter(ctx, "scope")
	case ttlSec < 0 || ttlSec > int64(maxTTL/time.Second) || (ttlSec > 0 && scope != ScopeOnce):
		closeFDs(&c.Call)
		return c.ReplyInvalidParameter(ctx, "ttl_sec")
	case policyTarget != "" && (!policy.ValidName(policyTarget) || scope != ScopeAlways):
		closeFDs(&c.Call)
		return c.ReplyInvalidParameter(ctx, "policy_target")
	}
	r := applyRequest{destText: ip, action: action, scope: scope, policyTarget: policyTarget}
	if verdictID != nil {
		if !validVerdictID(*verdictID) {
			closeFDs(&c.Call)
			return c.ReplyInvalidParameter(ctx, "verdict_id")
		}
		r.verdictID = *verdictID
	}
	if name != nil && *name != "" {
		pat, err := dnsname.ParsePattern(*name)
		if err != nil {
			closeFDs(&c.Call)
			return c.ReplyInvalidParameter(ctx, "name")
		}
		r.name = pat.String()
	}
	p, err := policy.ParseDest(ip)
	// A verdict on a name alone (ip ""): no element now, the hub's DNS
	// forwarder learns the name's addresses as DNS returns them.
	nameOnly := ip == "" && r.name != "" && s.cfg.Mode == ModeBuiltin
	if err != nil && !nameOnly && (!s.cfg.execMode() || scope == ScopeAlways) {
		closeFDs(&c.Call)
		return c.ReplyInvalidDestination(ctx, ip)
	}
	if nameOnly {
		r.destText = r.name
	}
	if s.cfg.execMode() {
		text, ok := shieldDest(ip)
		if !ok {
			closeFDs(&c.Call)
			return c.ReplyInvalidDestination(ctx, ip)
		}
		r.destText = text
	}
	svcProto, svcPort, bad := service(proto, port)
	if bad != "" {
		closeFDs(&c.Call)
		return c.ReplyInvalidParameter(ctx, bad)
	}
	r.dest = nft.Dest{Prefix: p, Proto: svcProto, Port: svcPort}
	if scope == ScopeOnce {
		r.ttl = s.cfg.OnceTTL
		if ttlSec > 0 {
			r.ttl = time.Duration(ttlSec) * time.Second
		}
	}
	t, err := s.resolve(&c.Call, container)
	if err != nil {
		return s.replyError(ctx, &c, "apply", container, err)
	}
	defer t.Close()
	a := s.apply(ctx, t, r)
	outcome := a.outcome
	return c.ReplyApply(ctx, a.ok, truncate(a.stderr), usec(a.expires), &outcome)
}

// service validates an optional protocol and port pair: both absent (or
// "" and 0) mean every port. bad names the invalid parameter.
func service(proto *string, port *int64) (p uint8, n uint16, bad string) {
	var ps string
	var pn int64
	if proto != nil {
		ps = *proto
	}
	if port != nil {
		pn = *port
	}
	switch {
	case ps == "" && pn == 0:
		return 0, 0, ""
	case pn <= 0 || pn > math.MaxUint16:
		return 0, 0, "port"
	}
	p, err := nft.ParseProto(ps)
	if err != nil {
		return 0, 0, "proto"
	}
	return p, uint16(pn), ""
}

// validVerdictID accepts a verdict id: 1–64 characters of [A-Za-z0-9_.:-]
// (the hub's are hex), so it can go into a journal field as it is.
func validVerdictID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// validComment accepts a learned element's comment: printable ASCII
// without spaces (a DNS name, as the hub canonicalised it).
func validComment(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func (h *firewall1) Revoke(ctx context.Context, c fw1.VarlinkCall, container, ip string, proto *string, port *int64) error {
	p, err := policy.ParseDest(ip)
	if err != nil {
		closeFDs(&c.Call)
		return c.ReplyInvalidDestination(ctx, ip)
	}
	svcProto, svcPort, bad := service(proto, port)
	if bad != "" {
		closeFDs(&c.Call)
		return c.ReplyInvalidParameter(ctx, bad)
	}
	d := nft.Dest{Prefix: p, Proto: svcProto, Port: svcPort}
	err = h.s.withFirewall(&c.Call, container, func(t *target, fw Firewall) error {
		if err := fw.Revoke(d); err != nil {
			return &firewallError{op: "revoke", err: err}
		}
		return h.s.cutFlows(t, d, "revoke")
	})
	if err != nil {
		return h.s.replyError(ctx, &c, "revoke", container, err)
	}
	return c.ReplyRevoke(ctx)
}

func (h *firewall1) List(ctx context.Context, c fw1.VarlinkCall, container string) error {
	var out []fw1.Element
	err := h.s.withFirewall(&c.Call, container, func(t *target, fw Firewall) error {
		els, err := fw.List()
		if err != nil {
			return &firewallError{op: "list", err: err}
		}
		if len(els) > MaxListElements {
			return &firewallError{op: "list", err: fmt.Errorf("the ruleset holds %d elements, more than List returns (%d); "+
				"ask Explain about single destinations, or inspect it with nft in the container's namespace", len(els), MaxListElements)}
		}
		now := h.s.cfg.Now()
		out = make([]fw1.Element, 0, len(els))
		for _, e := range els {
			out = append(out, wireElement(e, now))
		}
		return nil
	})
	if err != nil {
		return h.s.replyError(ctx, &c, "list", container, err)
	}
	return c.ReplyList(ctx, out)
}

func (h *firewall1) Explain(ctx context.Context, c fw1.VarlinkCall, container, ip string, port int64, proto string) error {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Zone() != "" {
		closeFDs(&c.Call)
		return c.ReplyInvalidDestination(ctx, ip)
	}
	if port < 0 || port > math.MaxUint16 {
		closeFDs(&c.Call)
		return c.ReplyInvalidParameter(ctx, "port")
	}
	var p uint8
	if proto != "" {
		if p, err = nft.ParseProto(proto); err != nil {
			closeFDs(&c.Call)
			return c.ReplyInvalidParameter(ctx, "proto")
		}
	}
	var x nft.Explanation
	err = h.s.withFirewall(&c.Call, container, func(t *target, fw Firewall) error {
		var err error
		if x, err = fw.Explain(a, p, uint16(port)); err != nil {
			return &firewallError{op: "explain", err: err}
		}
		return nil
	})
	if err != nil {
		return h.s.replyError(ctx, &c, "explain", container, err)
	}
	var exp time.Time
	var set, comment *string
	var packets, bytes *int64
	if m := x.Match; m != nil {
		if m.Timeout > 0 {
			exp = h.s.cfg.Now().Add(m.Expires)
		}
		p, b := int64(m.Packets), int64(m.Bytes)
		set, comment, packets, bytes = &m.Set, &m.Comment, &p, &b
	}
	return c.ReplyExplain(ctx, x.Verdict, string(x.Reason), usec(exp), set, comment, packets, bytes)
}

func (h *firewall1) Forwarder(ctx context.Context, c fw1.VarlinkCall, container string) error {
	t, err := h.s.resolve(&c.Call, container)
	if err != nil {
		return h.s.replyError(ctx, &c, "forwarder", container, err)
	}
	defer t.Close()
	rs, names, err := h.s.policy(t)
	if err != nil {
		return h.s.replyError(ctx, &c, "forwarder", container, &firewallError{op: "forwarder", err: err})
	}
	fs, err := h.s.forwarder(t)
	if err != nil {
		return h.s.replyError(ctx, &c, "forwarder", container, err)
	}
	defer fs.close() // the caller has its own copies once the reply is sent
	if c.IsOneway() {
		return nil
	}
	resolvers := make([]string, 0, len(rs.Resolvers))
	for _, r := range rs.Resolvers {
		resolvers = append(resolvers, r.String())
	}
	h.s.log.Info("DNS forwarder sockets for "+container, "container", container, "port", fs.port,
		"sockets", strings.Join(fs.names, ","), "resolvers", strings.Join(resolvers, ","))
	type reply struct {
		Port      int64          `json:"port"`
		Mark      int64          `json:"mark"`
		Sockets   []string       `json:"sockets"`
		Resolvers []string       `json:"resolvers"`
		Names     []fw1.NameRule `json:"names"`
	}
	return c.ReplyWithFDs(ctx, reply{Port: int64(fs.port), Mark: int64(h.s.cfg.dnsMark()), Sockets: fs.names,
		Resolvers: resolvers, Names: names}, fs.files)
}

func (h *firewall1) UpstreamTCP(ctx context.Context, c fw1.VarlinkCall, container, family string, count int64) error {
	var fam int
	switch family {
	case "ip4":
		fam = unix.AF_INET
	case "ip6":
		fam = unix.AF_INET6
	default:
		closeFDs(&c.Call)
		return c.ReplyInvalidParameter(ctx, "family")
	}
	if count < 1 || count > maxUpstreamTCP {
		closeFDs(&c.Call)
		return c.ReplyInvalidParameter(ctx, "count")
	}
	t, err := h.s.resolve(&c.Call, container)
	if err != nil {
		return h.s.replyError(ctx, &c, "upstream-tcp", container, err)
	}
	defer t.Close()
	files, err := h.s.upstreamTCP(t, fam, int(count))
	if err != nil {
		return h.s.replyError(ctx, &c, "upstream-tcp", container, err)
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if c.IsOneway() {
		return nil
	}
	type reply struct {
		Count int64 `json:"count"`
	}
	return c.ReplyWithFDs(ctx, reply{Count: int64(len(files))}, files)
}

// maxLearn bounds the elements of one Learn or Unlearn call.
const maxLearn = 1024

// learned validates wire elements; bad names the invalid parameter.
func learned(els []fw1.Learned, needTTL bool) ([]nft.Learned, string) {
	if len(els) > maxLearn {
		return nil, "elements"
	}
	out := make([]nft.Learned, 0, len(els))
	for _, e := range els {
		a, err := netip.ParseAddr(e.Dest)
		if err != nil || a.Zone() != "" {
			return nil, "dest"
		}
		var proto *string
		var port *int64
		if e.Proto != "" || e.Port != 0 {
			proto, port = &e.Proto, &e.Port
		}
		p, n, bad := service(proto, port)
		if bad != "" {
			return nil, bad
		}
		ttl := time.Duration(e.Ttl_ms) * time.Millisecond
		if needTTL && (e.Ttl_ms <= 0 || ttl > 7*24*time.Hour) {
			return nil, "ttl_ms"
		}
		if len(e.Comment) > 253 || (e.Comment != "" && !validComment(e.Comment)) {
			return nil, "comment"
		}
		out = append(out, nft.Learned{Dest: nft.Dest{Prefix: nft.Host(a), Proto: p, Port: n}, Timeout: ttl, Comment: e.Comment})
	}
	return out, ""
}

func (h *firewall1) Learn(ctx context.Context, c fw1.VarlinkCall, container string, elements []fw1.Learned) error {
	ls, bad := learned(elements, true)
	if bad != "" {
		closeFDs(&c.Call)
		return c.ReplyInvalidParameter(ctx, bad)
	}
	// Learn reads nothing of the ruleset: no guard (see openFirewallFor).
	err := h.s.withFirewallFor(&c.Call, container, false, func(t *target, fw Firewall) error {
		if h.s.cfg.Mode != ModeBuiltin {
			return &firewallError{op: "learn", err: errors.New("learned addresses need the built-in ruleset")}
		}
		if err := fw.Learn(ls); err != nil {
			return &firewallError{op: "learn", err: err}
		}
		return nil
	})
	if err != nil {
		return h.s.replyError(ctx, &c, "learn", container, err)
	}
	h.s.log.Debug("learned addresses", "container", container, "count", len(ls))
	return c.ReplyLearn(ctx)
}

func (h *firewall1) Unlearn(ctx context.Context, c fw1.VarlinkCall, container string, elements []fw1.Learned) error {
	ls, bad := learned(elements, false)
	if bad != "" {
		closeFDs(&c.Call)
		return c.ReplyInvalidParameter(ctx, bad)
	}
	ds := make([]nft.Dest, 0, len(ls))
	for _, l := range ls {
		ds = append(ds, l.Dest)
	}
	err := h.s.withFirewall(&c.Call, container, func(t *target, fw Firewall) error {
		if err := fw.Unlearn(ds); err != nil {
			return &firewallError{op: "unlearn", err: err}
		}
		return nil
	})
	if err != nil {
		return h.s.replyError(ctx, &c, "unlearn", container, err)
	}
	return c.ReplyUnlearn(ctx)
}

func (h *firewall1) Disengage(ctx context.Context, c fw1.VarlinkCall, container string) error {
	t, err := h.s.resolve(&c.Call, container)
	if err != nil {
		return h.s.replyError(ctx, &c, "disengage", container, err)
	}
	defer t.Close()
	if err := h.s.disengage(t); err != nil {
		return h.s.replyError(ctx, &c, "disengage", container, err)
	}
	return c.ReplyDisengage(ctx)
}

// withFirewall resolves container and runs fn with its open firewall.
func (s *Service) withFirewall(call *varlink.Call, container string, fn func(*target, Firewall) error) error {
	return s.withFirewallFor(call, container, true, fn)
}

// withFirewallFor is [Service.withFirewall] for an operation that reads
// the ruleset or not (see [Service.openFirewallFor]).
func (s *Service) withFirewallFor(call *varlink.Call, container string, reads bool, fn func(*target, Firewall) error) error {
	t, err := s.resolve(call, container)
	if err != nil {
		return err
	}
	defer t.Close()
	fw, release, err := s.openFirewallFor(t, reads)
	if err != nil {
		return err
	}
	defer release()
	if err := fn(t, fw); err != nil {
		return s.failed(t, err)
	}
	return nil
}

// replyError maps the service's errors to varlink errors, in one place.
func (s *Service) replyError(ctx context.Context, c *fw1.VarlinkCall, op, container string, err error) error {
	var (
		perm  *permissionError
		none  *noSuchContainerError
		stale *staleRecordError
		fwe   *firewallError
	)
	switch {
	case errors.As(err, &perm):
		s.log.Warn(op+" refused", "container", container, "err", err)
		return c.ReplyPermissionDenied(ctx, perm.reason)
	case errors.As(err, &none):
		s.log.Info(op+": no such container", "container", container, "err", err)
		return c.ReplyNoSuchContainer(ctx, container)
	case errors.As(err, &stale):
		s.log.Warn(op+" refused: stale record", "container", container, "err", err)
		return c.ReplyStaleRecord(ctx, container, stale.reason)
	case errors.As(err, &fwe):
		s.log.Error(op+" failed", "container", container, "err", err)
		return c.ReplyFirewallFailed(ctx, fwe.op, truncate(fwe.err.Error()))
	}
	s.log.Error(op+" failed unexpectedly", "container", container, "err", err)
	return c.ReplyFirewallFailed(ctx, op, truncate(err.Error()))
}

// wireElement converts a set element; expiry is wall-clock time now +
// the kernel's remaining time.
func wireElement(e nft.Element, now time.Time) fw1.Element {
	dest := e.First.String() + "-" + e.Last.String()
	if p := e.Dest.Prefix; p.IsValid() {
		dest = p.String()
		if p.IsSingleIP() {
			dest = p.Addr().String()
		}
	}
	w := fw1.Element{List: e.List, Set: e.Set, Dest: dest, Comment: e.Comment}
	if e.Packets > 0 || e.Bytes > 0 {
		p, b := int64(e.Packets), int64(e.Bytes)
		w.Packets, w.Bytes = &p, &b
	}
	if !e.Dest.Whole() {
		proto, port := nft.ProtoName(e.Dest.Proto), int64(e.Dest.Port)
		w.Proto, w.Port = &proto, &port
	}
	if e.Timeout > 0 {
		w.Timeout_sec = int64((e.Timeout + time.Second - 1) / time.Second)
		w.Expires_usec = now.Add(e.Expires).UnixMicro()
	}
	return w
}

// closeFDs closes fds a call passed when it is answered before resolve.
func closeFDs(c *varlink.Call) {
	for _, f := range c.RequestFDs() {
		f.Close()
	}
}

func usec(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// truncate caps s at maxStderr bytes on a UTF-8 boundary.
func truncate(s string) string {
	s = strings.TrimSpace(s)
	if len(s) <= maxStderr {
		return s
	}
	s = s[:maxStderr]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return "\"" + strings.ToValidUTF8(s, "?") + "\""
}
