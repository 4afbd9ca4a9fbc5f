package nft

import (
	"net/netip"
)

// Reason is why a destination passes or not.
type Reason string

// Reasons reported by [Firewall.Explain], in rule order.
const (
	// ReasonNotEngaged: the table does not exist, nothing is filtered.
	ReasonNotEngaged Reason = "not-engaged"
	// ReasonLoopback: loopback traffic is accepted (oifname "lo").
	ReasonLoopback Reason = "loopback"
	// ReasonResolver: port 53 of a configured resolver is open.
	ReasonResolver Reason = "resolver"
	// ReasonDenied: the destination is in a deny set; dropped silently.
	ReasonDenied Reason = "denied"
	// ReasonAllowed: the destination is in an allow set.
	ReasonAllowed Reason = "allowed"
	// ReasonBlocked: no rule matches; the packet is logged to NFLOG (which
	// raises a prompt) and rejected with icmpx admin-prohibited.
	ReasonBlocked Reason = "blocked"
)

// Verdicts reported in [Explanation.Verdict].
const (
	VerdictAccept = "accept"
	VerdictDrop   = "drop"
	VerdictReject = "reject"
)

// Explanation is the answer of [Firewall.Explain] for one destination.
//
// It follows clearance's rule order (loopback, resolvers, deny sets, allow
// sets, log+reject). For a terok-shield layout only the sets are known:
// the shield's own rules (private ranges, its 0.6.x allow-before-deny order,
// its DNS rules) are not modelled, and resolvers are never reported.
// Established connections are always accepted, whatever the explanation.
type Explanation struct {
	Dest netip.Addr
	Port uint16
	// Reason is the first rule that matches.
	Reason Reason
	// Verdict is VerdictAccept, VerdictDrop or VerdictReject.
	Verdict string
	// Prompt is true when a new connection is logged to NFLOG, which makes
	// the hub raise a prompt (ReasonBlocked only).
	Prompt bool
	// Match is the set element that decided (ReasonDenied, ReasonAllowed).
	Match *Element
	// Shadowed are further matching elements that did not decide, e.g. an
	// allow element overridden by a deny.
	Shadowed []Element
}

func explain(l Layout, s *snapshot, dst netip.Addr, port uint16) Explanation {
	dst = dst.Unmap().WithZone("")
	x := Explanation{Dest: dst, Port: port}
	decide := func(r Reason, v string) {
		if x.Reason == "" {
			x.Reason, x.Verdict = r, v
		}
	}
	if !s.engaged {
		decide(ReasonNotEngaged, VerdictAccept)
		return x
	}
	if dst.IsLoopback() {
		decide(ReasonLoopback, VerdictAccept)
		return x
	}
	if port == 53 {
		name := l.Resolver4
		if dst.Is6() {
			name = l.Resolver6
		}
		if ss, ok := s.sets[name]; ok && name != "" {
			for _, e := range ss.elems {
				if e.first.Compare(dst) <= 0 && dst.Compare(e.last) <= 0 {
					decide(ReasonResolver, VerdictAccept)
					return x
				}
			}
		}
	}
	for _, ref := range l.listSets() {
		ss, ok := s.sets[ref.name]
		if !ok || ref.v4 != dst.Is4() {
			continue
		}
		for _, e := range ss.elems {
			if e.first.Compare(dst) > 0 || dst.Compare(e.last) > 0 {
				continue
			}
			el := e.element(ref.name, ref.list)
			if x.Match == nil {
				x.Match = &el
				if ref.list == actionDeny {
					decide(ReasonDenied, VerdictDrop)
				} else {
					decide(ReasonAllowed, VerdictAccept)
				}
			} else {
				x.Shadowed = append(x.Shadowed, el)
			}
		}
	}
	if x.Reason == "" {
		decide(ReasonBlocked, VerdictReject)
		x.Prompt = true
	}
	return x
}
