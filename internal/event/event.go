// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package event defines the clearance event record shared by every part of
// clearance: the hub produces it, the varlink layer puts it on the wire as
// org.terok.Clearance1.ClearanceEvent, and the notifier and clearancectl
// render it.
//
// The record is wire-identical to the seed's: all eleven fields are always
// serialised, and Dossier is never nil once an event has passed through
// [Event.Normalize].
package event

import "strconv"

// Event types on the wire (org.terok.Clearance1.ClearanceEvent.type).
const (
	ConnectionBlocked = "connection_blocked"
	VerdictApplied    = "verdict_applied"
	ContainerStarted  = "container_started"
	ContainerExited   = "container_exited"
	ShieldUp          = "shield_up"
	ShieldDown        = "shield_down"
	ShieldDisengaged  = "shield_disengaged"
	// VerdictExpired is an event of ours: a "once" verdict's element timed
	// out. Seed clients ignore event types they do not know.
	VerdictExpired = "verdict_expired"
	// VerdictSaved is an event of ours, sent right after the
	// verdict_applied of an "always" verdict: what was written to the
	// container's policy (dest, domain, and port and proto unless the
	// verdict covers every port: 0), action, and in reason who decided.
	// clearance-relay mirrors it to the fleet.
	VerdictSaved = "verdict_saved"
	// ConnectionDenied is an event of ours: the container asked for a name
	// its policy or a verdict denies (the DNS forwarder answered
	// NXDOMAIN, REFUSED, or the firewall drops the connection). It is a
	// marker, never a prompt: domain is the name, dest the address when a
	// connection was dropped, reason the rule.
	ConnectionDenied = "connection_denied"
	// HubNotice is an event of ours: something the operator should know
	// about the hub itself (reason), e.g. that it runs on its default
	// configuration because the configuration file is invalid. Sent once
	// to each subscriber when it subscribes.
	HubNotice = "hub_notice"
	// Observed is an event of ours: a container in observe mode (its
	// ruleset logs and lets through what it would block) reached a
	// destination for the first time. Never a prompt; dest, port, proto
	// and domain as in connection_blocked.
	Observed = "observed"
)

// Verdict actions, the only two values org.terok.Clearance1.Verdict accepts
// (case-sensitive).
const (
	ActionAllow = "allow"
	ActionDeny  = "deny"
)

// Well-known dossier keys (the orchestrator's identity bundle).
const (
	DossierProject       = "project"
	DossierTask          = "task"
	DossierName          = "name"
	DossierContainerName = "container_name"
)

// IP protocol numbers carried in Event.Proto.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Event is one clearance event. Its JSON form is the seed's ClearanceEvent:
// field order and names are part of the wire contract.
type Event struct {
	Type      string            `json:"type"`
	Container string            `json:"container"`
	RequestID string            `json:"request_id"`
	Dest      string            `json:"dest"`
	Port      int64             `json:"port"`
	Proto     int64             `json:"proto"`
	Domain    string            `json:"domain"`
	Action    string            `json:"action"`
	OK        bool              `json:"ok"`
	Reason    string            `json:"reason"`
	Dossier   map[string]string `json:"dossier"`
}

// Normalize makes e safe to serialise for strict clients: a nil Dossier
// becomes an empty map, so it is sent as {} and never as null.
func (e *Event) Normalize() {
	if e.Dossier == nil {
		e.Dossier = map[string]string{}
	}
}

// Target is what a verdict on a connection_blocked event must name: the
// domain when known, else the destination IP (docs/seed-compat.md §S3.4).
func (e *Event) Target() string {
	if e.Domain != "" {
		return e.Domain
	}
	return e.Dest
}

// ValidAction reports whether a is one of the two verdict actions.
func ValidAction(a string) bool { return a == ActionAllow || a == ActionDeny }

// ProtoName renders an IP protocol number as the seed's popups do.
func ProtoName(p int64) string {
	switch p {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	}
	return strconv.FormatInt(p, 10)
}
