// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package relay connects the hubs of one host to a NATS server, so that a
// fleet of hosts can be operated from anywhere: clearance-relay publishes
// every blocked request and every outcome, answers verdict requests
// (request-reply; the hub's own first-verdict-wins rule decides races),
// and mirrors "always" verdicts through a JetStream key-value bucket so
// every host's next container of that policy starts with them.
//
// # Subjects
//
// With the default prefix "clearance" (relay.subject_prefix):
//
//	clearance.<host>.<container>.blocked          a blocked request ([Blocked]); again, marked replay, after a reconnect
//	clearance.<host>.<container>.outcome          a verdict's outcome, a container's exit ([Outcome])
//	clearance.<host>.<container>.decide.<operator> request: a verdict ([DecideRequest] → [DecideReply])
//	clearance.<host>.presence                     the relay's host and containers ([Presence]), every 10 s and on change
//	clearance.fleet.pending                       request to every relay: its pending requests ([]Blocked)
//	clearance.fleet.presence                      request to every relay: its [Presence]
//
// # Who decides
//
// The operator's name is the last token of the decide subject. The NATS
// server's permissions bind it to the authenticated user (alice may
// publish only to clearance.<hosts she answers for>.*.decide.alice), so
// the name is the identity NATS authenticated, and which hosts a user may
// answer for is NATS's decision. The relay passes every verdict to the
// hub through Decide with the channel "nats.<operator>", so a verdict the
// hub would refuse (unknown or already decided request, bad scope) is
// refused, and it is audited like any other.
package relay

import (
	"strings"
)

// Blocked is a blocked request, as published on ….blocked and returned by
// the fleet's pending request.
type Blocked struct {
	Host      string            `json:"host"`
	Container string            `json:"container"`
	RequestID string            `json:"request_id"`
	Dest      string            `json:"dest"`
	Domain    string            `json:"domain"`
	Port      int64             `json:"port"`
	Proto     int64             `json:"proto"`
	Dossier   map[string]string `json:"dossier"`
	Count     int64             `json:"count"`
	FirstUsec int64             `json:"first_seen_usec"`
	// HubStarted identifies the hub instance that holds the request
	// (its start, microseconds); a decide for another instance is
	// answered "restarted".
	HubStarted int64 `json:"hub_started_usec"`
	// Replay is true for a request published again after the relay
	// (re)connected: it may have been seen before.
	Replay bool `json:"replay,omitempty"`
	// AtUsec is when it was published.
	AtUsec int64 `json:"at_usec"`
}

// Target is the destination a verdict on b covers: its name, else its
// address.
func (b Blocked) Target() string {
	if b.Domain != "" {
		return b.Domain
	}
	return b.Dest
}

// Outcome is published on ….outcome: a verdict applied (OK) or failed, or
// the container gone (Event "container_exited").
type Outcome struct {
	Host      string `json:"host"`
	Container string `json:"container"`
	Event     string `json:"event"`
	RequestID string `json:"request_id"`
	Action    string `json:"action"`
	OK        bool   `json:"ok"`
	// By says who decided, as the hub audited it ("by alice (uid 1000)
	// via nats.alice").
	By     string `json:"by"`
	AtUsec int64  `json:"at_usec"`
}

// DecideRequest is an operator's verdict, sent as a request to
// ….<container>.decide.<operator>.
type DecideRequest struct {
	RequestID string `json:"request_id"`
	Action    string `json:"action"`
	// Scope is "once", "container" or "always"; TTLSec the lifetime of a
	// "once" (0: the hub's default).
	Scope   string `json:"scope"`
	TTLSec  int64  `json:"ttl_sec"`
	AnyPort bool   `json:"any_port"`
	// HubStarted is the hub instance the operator saw the request from
	// (Blocked.HubStarted); 0 skips the check.
	HubStarted int64 `json:"hub_started_usec"`
	// VerdictID makes a retried request idempotent: the relay answers a
	// verdict id it has seen with the first answer, applying nothing.
	VerdictID string `json:"verdict_id"`
}

// Errors of a DecideReply.
const (
	ErrAlreadyDecided = "already_decided"
	ErrUnknownRequest = "unknown_request"
	ErrRestarted      = "restarted"
	ErrNoContainer    = "no_container"
	ErrRefused        = "refused"
	ErrInvalid        = "invalid"
	ErrFailed         = "failed"
)

// DecideReply answers a DecideRequest.
type DecideReply struct {
	OK          bool   `json:"ok"`
	Host        string `json:"host"`
	Container   string `json:"container"`
	Action      string `json:"action"`
	Scope       string `json:"scope"`
	ExpiresUsec int64  `json:"expires_usec"`
	// Error is one of the Err* names when OK is false; Message explains
	// it in words.
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
	// By and AtUsec name the earlier verdict of an already_decided.
	By     string `json:"by,omitempty"`
	AtUsec int64  `json:"at_usec,omitempty"`
}

// Presence is published on <prefix>.<host>.presence.
type Presence struct {
	Host string `json:"host"`
	// Relay is this relay process's instance id (new on every start).
	Relay      string          `json:"relay"`
	Containers []ContainerInfo `json:"containers"`
	AtUsec     int64           `json:"at_usec"`
}

// ContainerInfo is one hub in a Presence.
type ContainerInfo struct {
	ID         string `json:"id"`
	Policy     string `json:"policy"`
	HubStarted int64  `json:"hub_started_usec"`
	Pending    int    `json:"pending"`
	Up         bool   `json:"up"`
}

// Always is one mirrored "always" verdict, the value of a key of the
// key-value bucket.
type Always struct {
	Policy string `json:"policy"`
	Action string `json:"action"`
	// IP is the address the verdict was given on; Name the DNS name
	// (empty for an address verdict). Proto and Port narrow it (""/0:
	// every port).
	IP    string `json:"ip"`
	Name  string `json:"name,omitempty"`
	Proto string `json:"proto,omitempty"`
	Port  int64  `json:"port,omitempty"`
	// By is the operator as NATS authenticated them ("nats.alice"), or
	// as the origin hub audited them; Host the host it was given on.
	By     string `json:"by"`
	Host   string `json:"host"`
	AtUsec int64  `json:"at_usec"`
}

// ValidToken reports whether s may be one token of a NATS subject for a
// host, container or operator name: 1 to 64 letters, digits, '-' and '_'.
func ValidToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Subjects builds the subjects of one prefix.
type Subjects struct{ Prefix string }

func (s Subjects) join(parts ...string) string {
	return s.Prefix + "." + strings.Join(parts, ".")
}

// Blocked is where host's container publishes blocked requests.
func (s Subjects) Blocked(host, container string) string {
	return s.join(host, container, "blocked")
}

// Outcome is where host's container publishes outcomes.
func (s Subjects) Outcome(host, container string) string {
	return s.join(host, container, "outcome")
}

// Decide is where operator sends verdicts for host's container.
func (s Subjects) Decide(host, container, operator string) string {
	return s.join(host, container, "decide", operator)
}

// Presence is where host's relay announces itself.
func (s Subjects) Presence(host string) string { return s.join(host, "presence") }

// FleetPending is the scatter-gather request for every relay's pending
// requests.
func (s Subjects) FleetPending() string { return s.join("fleet", "pending") }

// FleetPresence is the scatter-gather request for every relay's
// [Presence].
func (s Subjects) FleetPresence() string { return s.join("fleet", "presence") }

// View are the subjects a fleet view subscribes to: every host's blocked
// requests, outcomes and presence. A view never subscribes to the whole
// prefix: it would also receive the verdict requests, and a request to a
// host without a relay would then wait for its timeout instead of being
// answered "no responders" at once.
func (s Subjects) View() []string {
	return []string{s.join("*", "*", "blocked"), s.join("*", "*", "outcome"), s.join("*", "presence")}
}
