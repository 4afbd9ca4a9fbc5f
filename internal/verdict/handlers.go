package verdict

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/policy"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearanceverdict1"
)

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
	r := applyRequest{destText: dest, action: action, scope: ScopeOnce, ttl: s.cfg.OnceTTL}
	p, err := policy.ParseDest(dest)
	if err != nil && !s.cfg.execMode() {
		closeFDs(call)
		return false, "invalid destination " + quote(dest) + ": must be an IP address or CIDR prefix"
	}
	r.dest = p
	t, err := s.resolve(call, container)
	if err != nil {
		s.log.Warn("verdict refused", "container", container, "dest", dest, "action", action, "err", err)
		return false, err.Error()
	}
	defer t.Close()
	ok, stderr, _ := s.apply(ctx, t, r)
	if !ok {
		s.log.Warn("verdict failed", "container", container, "dest", dest, "action", action, "stderr", stderr)
	}
	return ok, stderr
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
	table, now, err := h.s.engage(t)
	if err != nil {
		return h.s.replyError(ctx, &c, "engage", container, err)
	}
	return c.ReplyEngage(ctx, table, now)
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

func (h *firewall1) Apply(ctx context.Context, c fw1.VarlinkCall, container, ip, action, scope string, ttlSec int64, policyTarget string) error {
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
	p, err := policy.ParseDest(ip)
	if err != nil && (!s.cfg.execMode() || scope == ScopeAlways) {
		closeFDs(&c.Call)
		return c.ReplyInvalidDestination(ctx, ip)
	}
	r.dest = p
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
	ok, stderr, exp := s.apply(ctx, t, r)
	if !ok {
		s.log.Warn("verdict failed", "container", container, "dest", ip, "action", action, "scope", scope, "stderr", stderr)
	}
	return c.ReplyApply(ctx, ok, truncate(stderr), usec(exp))
}

func (h *firewall1) Revoke(ctx context.Context, c fw1.VarlinkCall, container, ip string) error {
	p, err := policy.ParseDest(ip)
	if err != nil {
		closeFDs(&c.Call)
		return c.ReplyInvalidDestination(ctx, ip)
	}
	err = h.s.withFirewall(&c.Call, container, func(t *target, fw Firewall) error {
		if err := fw.Revoke(p); err != nil {
			return &firewallError{op: "revoke", err: err}
		}
		return nil
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
	switch proto {
	case "", "tcp", "udp":
	default:
		closeFDs(&c.Call)
		return c.ReplyInvalidParameter(ctx, "proto")
	}
	var x nft.Explanation
	err = h.s.withFirewall(&c.Call, container, func(t *target, fw Firewall) error {
		var err error
		if x, err = fw.Explain(a, uint16(port)); err != nil {
			return &firewallError{op: "explain", err: err}
		}
		return nil
	})
	if err != nil {
		return h.s.replyError(ctx, &c, "explain", container, err)
	}
	var exp time.Time
	if x.Match != nil && x.Match.Timeout > 0 {
		exp = h.s.cfg.Now().Add(x.Match.Expires)
	}
	return c.ReplyExplain(ctx, x.Verdict, string(x.Reason), usec(exp))
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
	t, err := s.resolve(call, container)
	if err != nil {
		return err
	}
	defer t.Close()
	fw, release, err := s.openFirewall(t)
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
	if e.Prefix.IsValid() {
		dest = e.Prefix.String()
		if e.Prefix.IsSingleIP() {
			dest = e.Prefix.Addr().String()
		}
	}
	w := fw1.Element{List: e.List, Set: e.Set, Dest: dest, Comment: e.Comment}
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
