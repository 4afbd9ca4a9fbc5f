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
)

// Attribute keys that the journal handler passes through as journal
// fields unchanged.
const (
	keyMessageID = "MESSAGE_ID"
	keyContainer = "CLEARANCE_CONTAINER"
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

func eventAttrs(ev event.Event) []any {
	return []any{
		keyContainer, ev.Container, keyRequestID, ev.RequestID, keyDest, ev.Dest,
		keyDomain, ev.Domain, keyPort, strconv.FormatInt(ev.Port, 10),
		keyProto, event.ProtoName(ev.Proto),
	}
}

func (h *Hub) auditBlocked(ev event.Event) {
	args := append([]any{keyMessageID, MsgBlocked}, eventAttrs(ev)...)
	h.log.Info("blocked "+ev.Target()+":"+strconv.FormatInt(ev.Port, 10), args...)
}

func (h *Hub) auditVerdict(p *pending, d decision, res ApplyResult) {
	var exp string
	if !res.Expires.IsZero() {
		exp = strconv.FormatInt(res.Expires.UnixMicro(), 10)
	}
	args := append([]any{keyMessageID, MsgVerdict}, eventAttrs(p.ev)...)
	args = append(args, keyAction, d.action, keyScope, d.scope, keyExpires, exp, keyChannel, d.op.Channel,
		keyOperator, strconv.Itoa(d.op.UID))
	h.log.Info("verdict "+d.action+" "+p.target+" ("+d.scope+")", args...)
}

func (h *Hub) auditFailed(p *pending, d decision, stderr string) {
	args := append([]any{keyMessageID, MsgVerdictFailed}, eventAttrs(p.ev)...)
	args = append(args, keyAction, d.action, keyScope, d.scope, keyChannel, d.op.Channel,
		keyOperator, strconv.Itoa(d.op.UID), keyReason, stderr)
	h.log.Warn("verdict "+d.action+" "+p.target+" failed", args...)
}

// AuditExpired records that a verdict's element timed out, and tells
// subscribers.
func (h *Hub) AuditExpired(container, dest string, at time.Time) {
	h.log.Info("verdict expired for "+dest, keyMessageID, MsgExpired, keyContainer, container,
		keyDest, dest, keyExpires, strconv.FormatInt(at.UnixMicro(), 10))
	ev := event.Event{Type: event.VerdictExpired, Container: container, Dest: dest}
	if net.ParseIP(dest) == nil {
		ev.Dest, ev.Domain = "", dest
	}
	h.Emit(ev)
}
