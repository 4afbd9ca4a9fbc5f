// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nft

import (
	"net/netip"

	"golang.org/x/sys/unix"
)

// Reason is why a destination passes or not.
type Reason string

// Reasons reported by [Firewall.Explain], in rule order.
const (
	// ReasonNotEngaged: the table does not exist, nothing is filtered.
	ReasonNotEngaged Reason = "not-engaged"
	// ReasonLoopback: loopback traffic is accepted (oifname "lo").
	ReasonLoopback Reason = "loopback"
	// ReasonDNS: port 53 is redirected to the container's DNS forwarder
	// (refused at once while there is none); only the forwarder's own
	// marked packets reach the resolvers.
	ReasonDNS Reason = "dns"
	// ReasonDenied: the destination is in a deny set; dropped silently.
	ReasonDenied Reason = "denied"
	// ReasonAllowed: the destination is in an allow set.
	ReasonAllowed Reason = "allowed"
	// ReasonLearned: the destination was learned from a DNS answer for an
	// allowed name.
	ReasonLearned Reason = "learned"
	// ReasonBlocked: no rule matches; the packet is logged to NFLOG (which
	// raises a prompt) and rejected.
	ReasonBlocked Reason = "blocked"
	// ReasonObserved: no rule matches, and the ruleset is in observe
	// mode: the packet is logged to NFLOG (no prompt) and accepted.
	ReasonObserved Reason = "observed"
)

// Verdicts reported in [Explanation.Verdict].
const (
	VerdictAccept   = "accept"
	VerdictDrop     = "drop"
	VerdictReject   = "reject"
	VerdictRedirect = "redirect"
)

// Explanation is the answer of [Firewall.Explain] for one destination.
//
// It follows clearance's rule order (loopback, DNS, deny sets, allow sets,
// learned sets, log+reject). For a terok-shield layout only the sets are
// known: the shield's own rules (private ranges, its 0.6.x
// allow-before-deny order, its DNS rules) are not modelled. Established
// connections are always accepted, whatever the explanation.
type Explanation struct {
	Dest  netip.Addr
	Proto uint8
	Port  uint16
	// Reason is the first rule that matches.
	Reason Reason
	// Verdict is VerdictAccept, VerdictDrop, VerdictReject or
	// VerdictRedirect.
	Verdict string
	// Prompt is true when a new connection is logged to NFLOG, which makes
	// the hub raise a prompt (ReasonBlocked only).
	Prompt bool
	// Match is the set element that decided (ReasonDenied, ReasonAllowed,
	// ReasonLearned).
	Match *Element
	// Shadowed are further matching elements that did not decide, e.g. an
	// allow element overridden by a deny.
	Shadowed []Element
}

// matches reports whether element e of a set of kind k covers dst for
// proto and port. With proto 0 (unknown), port elements match any
// protocol with that port.
func (e stored) matches(k setKind, dst netip.Addr, proto uint8, port uint16) bool {
	if !e.contains(dst) {
		return false
	}
	if !k.concat() {
		return true
	}
	return e.port == port && (proto == 0 || e.proto == proto)
}

func explain(l Layout, s *snapshot, dst netip.Addr, proto uint8, port uint16) Explanation {
	dst = dst.Unmap().WithZone("")
	x := Explanation{Dest: dst, Proto: proto, Port: port}
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
	if port == 53 && (proto == 0 || proto == unix.IPPROTO_UDP || proto == unix.IPPROTO_TCP) && l.NAT != "" {
		if s.dnsPort != 0 {
			decide(ReasonDNS, VerdictRedirect)
		} else {
			decide(ReasonDNS, VerdictReject)
		}
		return x
	}
	for _, ref := range l.listSets() {
		ss, ok := s.sets[ref.name]
		if !ok || ref.v4 != dst.Is4() {
			continue
		}
		for _, e := range ss.elems {
			if !e.matches(ref.kind, dst, proto, port) {
				continue
			}
			el := e.element(ref.name, ref.list)
			if x.Match == nil {
				x.Match = &el
				switch ref.list {
				case actionDeny:
					decide(ReasonDenied, VerdictDrop)
				case ListLearned:
					decide(ReasonLearned, VerdictAccept)
				default:
					decide(ReasonAllowed, VerdictAccept)
				}
			} else {
				x.Shadowed = append(x.Shadowed, el)
			}
		}
	}
	if x.Reason == "" && s.observing() {
		decide(ReasonObserved, VerdictAccept)
	}
	if x.Reason == "" {
		decide(ReasonBlocked, VerdictReject)
		x.Prompt = true
	}
	return x
}
