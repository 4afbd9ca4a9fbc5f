// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hub

import (
	"net"
	"strconv"
	"time"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/event"
)

// The audit schema lives in internal/audit; these short names keep the
// record builders below readable.
const (
	keyMessageID   = audit.FieldMessageID
	keyContainer   = audit.FieldContainer
	keyContainerID = audit.FieldContainerID
	keyPolicy      = audit.FieldPolicy
	keyProject     = audit.FieldProject
	keyRequestID   = audit.FieldRequestID
	keyDest        = audit.FieldDest
	keyDomain      = audit.FieldDomain
	keyPort        = audit.FieldPort
	keyProto       = audit.FieldProto
	keyAction      = audit.FieldAction
	keyScope       = audit.FieldScope
	keyExpires     = audit.FieldExpires
	keyChannel     = audit.FieldChannel
	keyOperator    = audit.FieldOperatorUID
	keyReason      = audit.FieldReason
)

// eventAttrs are the fields every record about an event carries: the
// container (its policy and project too, so "policy propose --project"
// finds blocked requests and verdicts, not only learned addresses), the
// request and the destination.
func (h *Hub) eventAttrs(ev event.Event) []any {
	return []any{keyContainerID, h.cfg.ContainerID, keyPolicy, h.cfg.Policy, keyProject, h.cfg.Project,
		keyContainer, ev.Container, keyRequestID, ev.RequestID, keyDest, ev.Dest,
		keyDomain, ev.Domain, keyPort, strconv.FormatInt(ev.Port, 10),
		keyProto, event.ProtoName(ev.Proto),
	}
}

func (h *Hub) auditBlocked(ev event.Event) {
	args := append([]any{keyMessageID, audit.MsgBlocked}, h.eventAttrs(ev)...)
	h.log.Info("blocked "+ev.Target()+":"+strconv.FormatInt(ev.Port, 10), args...)
}

// verdictAttrs are the fields of the hub's (the operator side's) record
// of a verdict.
func (h *Hub) verdictAttrs(p *pending, d decision, req ApplyRequest, outcome string) []any {
	args := h.eventAttrs(p.ev)
	return append(args, keyAction, d.action, keyScope, d.scope, keyChannel, d.op.Channel,
		keyOperator, strconv.Itoa(d.op.UID), audit.FieldOperator, d.op.User,
		audit.FieldVerdictID, req.VerdictID, audit.FieldSide, audit.SideOperator, audit.FieldOutcome, outcome,
		keyPolicy, h.cfg.Policy, keyProject, h.cfg.Project)
}

func (h *Hub) auditVerdict(p *pending, d decision, req ApplyRequest, res ApplyResult) {
	var exp string
	if !res.Expires.IsZero() {
		exp = strconv.FormatInt(res.Expires.UnixMicro(), 10)
	}
	outcome, msg := audit.OutcomeApplied, "verdict "+d.action+" "+p.target+" ("+d.scope+")"
	if res.NotSaved {
		outcome, msg = audit.OutcomeNotSaved, msg+", applied for the container, not saved to policy"
	}
	args := append([]any{keyMessageID, audit.MsgVerdict}, h.verdictAttrs(p, d, req, outcome)...)
	args = append(args, keyExpires, exp, keyReason, res.Stderr)
	h.log.Info(msg, args...)
}

// auditFailed records a verdict that was not applied (refused), or whose
// outcome the hub did not learn (unknown).
func (h *Hub) auditFailed(p *pending, d decision, req ApplyRequest, stderr string, unknown bool) {
	outcome, msg := audit.OutcomeRefused, "verdict "+d.action+" "+p.target+" failed"
	if unknown {
		outcome, msg = audit.OutcomeUnknown, "verdict "+d.action+" "+p.target+": outcome unknown"
	}
	args := append([]any{keyMessageID, audit.MsgVerdictFailed}, h.verdictAttrs(p, d, req, outcome)...)
	args = append(args, keyReason, stderr)
	h.log.Warn(msg, args...)
}

// AuditExpired records that a verdict's element timed out, and tells
// subscribers.
func (h *Hub) AuditExpired(container, dest string, at time.Time) {
	h.log.Info("verdict expired for "+dest, keyMessageID, audit.MsgExpired, keyContainer, container, keyContainerID, h.cfg.ContainerID,
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
	args := append([]any{keyMessageID, audit.MsgDenied}, h.eventAttrs(ev)...)
	args = append(args, keyAction, event.ActionDeny, keyReason, rule)
	h.log.Info("denied "+ev.Target()+" by "+rule, args...)
	h.Emit(ev)
}

// AuditLearned records that the DNS forwarder let the firewall allow addr
// because it was an answer for name, under rule; the caller records each
// (name, address, rule) once.
func (h *Hub) AuditLearned(name, addr string, proto, port int64, rule string, expires time.Time) {
	h.log.Info("learned "+addr+" for "+name, keyMessageID, audit.MsgLearned, keyContainer, h.cfg.Container,
		keyContainerID, h.cfg.ContainerID, keyPolicy, h.cfg.Policy, keyProject, h.cfg.Project,
		keyDest, addr, keyDomain, name, keyPort, strconv.FormatInt(port, 10), keyProto, event.ProtoName(proto),
		keyAction, event.ActionAllow, keyReason, rule, keyExpires, strconv.FormatInt(expires.UnixMicro(), 10))
}
