// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hub

import (
	"net"
	"strconv"
	"time"

	"github.com/terok-ai/clearance/internal/event"
)

// Journal MESSAGE_IDs of clearance's audit records (see
// packaging/clearance.catalog). They are stable: tools and operators
// filter on them.
const (
	MsgBlocked       = "8a3c1f5e2b7d4e90a1c6f0d24b9e7a31"
	MsgVerdict       = "5d2e8b1a9c4f4a7e8b3d6c0f1e2a9b74"
	MsgVerdictFailed = "c7f1a2e9d3b84c5a9e6f0b1d2c3a4e85"
	MsgExpired       = "2b9d4e7f1a3c4d8e9f0a1b2c3d4e5f96"
	MsgEngaged       = "e1a4c7b2d5f84e3a9c6b0d1f2e3a4b57"
	MsgDisengaged    = "f3b6d9e2a5c74b1e8d0f1a2b3c4d5e68"
	MsgDenied        = "830105b6fa30461ca8df0dcd68d7da61"
	MsgLearned       = "7b717c2af1d3482486e648e95cde2c0c"
)

// Attribute keys that the journal handler passes through as journal
// fields unchanged.
const (
	keyMessageID = "MESSAGE_ID"
	keyContainer = "CLEARANCE_CONTAINER"
	// keyContainerID is the container's full id (podman's 64 characters),
	// as podman run -d prints it; CLEARANCE_CONTAINER is the id the hub
	// is named by (the first 12).
	keyContainerID = "CLEARANCE_CONTAINER_ID"
	// keyPolicy and keyProject name the container's policy and its
	// dossier's project, so records can be selected per project or policy
	// ("clearancectl policy propose --project").
	keyPolicy    = "CLEARANCE_POLICY"
	keyProject   = "CLEARANCE_PROJECT"
	keyRequestID = "CLEARANCE_REQUEST_ID"
	keyDest      = "CLEARANCE_DEST"
	keyDomain    = "CLEARANCE_DOMAIN"
	keyPort      = "CLEARANCE_PORT"
	keyProto     = "CLEARANCE_PROTO"
	keyAction    = "CLEARANCE_ACTION"
	keyScope     = "CLEARANCE_SCOPE"
	keyExpires   = "CLEARANCE_EXPIRES_USEC"
	keyChannel   = "CLEARANCE_CHANNEL"
	keyOperator  = "CLEARANCE_OPERATOR_UID"
	keyReason    = "CLEARANCE_REASON"
)

func (h *Hub) eventAttrs(ev event.Event) []any {
	return []any{keyContainerID, h.cfg.ContainerID,
		keyContainer, ev.Container, keyRequestID, ev.RequestID, keyDest, ev.Dest,
		keyDomain, ev.Domain, keyPort, strconv.FormatInt(ev.Port, 10),
		keyProto, event.ProtoName(ev.Proto),
	}
}

func (h *Hub) auditBlocked(ev event.Event) {
	args := append([]any{keyMessageID, MsgBlocked}, h.eventAttrs(ev)...)
	h.log.Info("blocked "+ev.Target()+":"+strconv.FormatInt(ev.Port, 10), args...)
}

func (h *Hub) auditVerdict(p *pending, d decision, res ApplyResult) {
	var exp string
	if !res.Expires.IsZero() {
		exp = strconv.FormatInt(res.Expires.UnixMicro(), 10)
	}
	args := append([]any{keyMessageID, MsgVerdict}, h.eventAttrs(p.ev)...)
	args = append(args, keyAction, d.action, keyScope, d.scope, keyExpires, exp, keyChannel, d.op.Channel,
		keyOperator, strconv.Itoa(d.op.UID))
	h.log.Info("verdict "+d.action+" "+p.target+" ("+d.scope+")", args...)
}

func (h *Hub) auditFailed(p *pending, d decision, stderr string) {
	args := append([]any{keyMessageID, MsgVerdictFailed}, h.eventAttrs(p.ev)...)
	args = append(args, keyAction, d.action, keyScope, d.scope, keyChannel, d.op.Channel,
		keyOperator, strconv.Itoa(d.op.UID), keyReason, stderr)
	h.log.Warn("verdict "+d.action+" "+p.target+" failed", args...)
}

// AuditExpired records that a verdict's element timed out, and tells
// subscribers.
func (h *Hub) AuditExpired(container, dest string, at time.Time) {
	h.log.Info("verdict expired for "+dest, keyMessageID, MsgExpired, keyContainer, container, keyContainerID, h.cfg.ContainerID,
		keyDest, dest, keyExpires, strconv.FormatInt(at.UnixMicro(), 10))
	ev := event.Event{Type: event.VerdictExpired, Container: container, Dest: dest}
	if net.ParseIP(dest) == nil {
		ev.Dest, ev.Domain = "", dest
	}
	h.Emit(ev)
}

// Denied records that the container asked for a name its policy or a
// verdict denies, and announces a connection_denied marker (never a
// prompt). ev carries the name (Domain), and the address, port and
// protocol when a connection was dropped; rule is the deny rule.
func (h *Hub) Denied(ev event.Event, rule string) {
	ev.Type = event.ConnectionDenied
	ev.Action = event.ActionDeny
	ev.Reason = rule
	ev.Normalize()
	args := append([]any{keyMessageID, MsgDenied}, h.eventAttrs(ev)...)
	args = append(args, keyAction, event.ActionDeny, keyReason, rule)
	h.log.Info("denied "+ev.Target()+" by "+rule, args...)
	h.Emit(ev)
}

// AuditLearned records that the DNS forwarder let the firewall allow addr
// because it was an answer for name, under rule; the caller records each
// (name, address, rule) once.
func (h *Hub) AuditLearned(name, addr string, proto, port int64, rule string, expires time.Time) {
	h.log.Info("learned "+addr+" for "+name, keyMessageID, MsgLearned, keyContainer, h.cfg.Container,
		keyContainerID, h.cfg.ContainerID, keyPolicy, h.cfg.Policy, keyProject, h.cfg.Project,
		keyDest, addr, keyDomain, name, keyPort, strconv.FormatInt(port, 10), keyProto, event.ProtoName(proto),
		keyAction, event.ActionAllow, keyReason, rule, keyExpires, strconv.FormatInt(expires.UnixMicro(), 10))
}
