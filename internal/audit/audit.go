// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package audit is the schema of clearance's audit trail in the systemd
// journal: the MESSAGE_IDs of its records, the CLEARANCE_* fields they
// carry and the values of the enumerated ones. Every component that
// writes or reads records (the hub, the verdict service, the OCI hook,
// clearancectl) takes them from here; packaging/clearance.catalog and
// docs/audit.md describe the same set, which this package's tests check.
package audit

// Journal MESSAGE_IDs, one per kind of record. They are stable: tools and
// operators filter on them.
const (
	MsgBlocked       = "8a3c1f5e2b7d4e90a1c6f0d24b9e7a31" // a connection was blocked and prompted for
	MsgVerdict       = "5d2e8b1a9c4f4a7e8b3d6c0f1e2a9b74" // a verdict was applied
	MsgVerdictFailed = "c7f1a2e9d3b84c5a9e6f0b1d2c3a4e85" // a verdict was not applied, or its outcome is unknown
	MsgExpired       = "2b9d4e7f1a3c4d8e9f0a1b2c3d4e5f96" // a timed verdict ran out
	MsgEngaged       = "e1a4c7b2d5f84e3a9c6b0d1f2e3a4b57" // a container's ruleset was installed
	MsgDisengaged    = "f3b6d9e2a5c74b1e8d0f1a2b3c4d5e68" // a container's ruleset was removed
	MsgDenied        = "830105b6fa30461ca8df0dcd68d7da61" // a name the policy denies was asked for
	MsgLearned       = "7b717c2af1d3482486e648e95cde2c0c" // an address of an allowed name was learned
	MsgFlowsCut      = "a7c3e5f1b9d24c6e8f0a2b4c6d8e0f13" // established connections were cut
	MsgRefused       = "b4d2f6a8c0e14a3b9d7f1e5c3a2b8d60" // the OCI hook refused a container
	MsgTampered      = "fd32c15f9c8f484dae98141b2d269b42" // a ruleset was found removed or altered, and repaired
	// MsgObserveEngaged: a container's ruleset was engaged (or verified)
	// in observe mode: NOT ENFORCED (clearance-verdict, PRIORITY 4).
	MsgObserveEngaged = "3f9a6c1e8b2d4f7a9c0e5b1d7a3f6c28"
	// MsgObserved: a container in observe mode reached a destination for
	// the first time, logged and let through (clearance-hub).
	MsgObserved = "d41e7b9c2a5f4e8b9d3c6a1f0e7b2c59"
	// MsgAsked: the container asked for a destination itself, through its
	// ask endpoint, with its reason (clearance-hub).
	MsgAsked = "6e2c9a4f1b7d4c3e8a5f0d2b9c7e1a46"
	// MsgPolicyWritten: a caller's whole policy file was written through
	// the verdict service's WritePolicy (clearance-verdict).
	MsgPolicyWritten = "3e8c1d7a5b9f4e2c8a6d0b4f2e1c9a57"
	// MsgMirrored: an "always" verdict given through this host's
	// clearance-relay was put in the fleet's bucket (docs/fleet.md).
	MsgMirrored = "28a6547329de49668c1fe01aff1a93d0"
	// MsgAdopted: an "always" verdict of another host was applied to this
	// host's policy by clearance-relay (or refused, deny wins).
	MsgAdopted = "3d34026f6e2f4cc3935142644bfebbcb"
)

// Kind is a record's kind by its MESSAGE_ID, as clearancectl log names it.
type Kind struct {
	ID, Name string
}

// Kinds lists every kind of record, in the order clearancectl documents
// them.
var Kinds = []Kind{
	{MsgBlocked, "blocked"},
	{MsgVerdict, "verdict"},
	{MsgVerdictFailed, "failed"},
	{MsgExpired, "expired"},
	{MsgEngaged, "engaged"},
	{MsgDisengaged, "disengaged"},
	{MsgDenied, "denied"},
	{MsgLearned, "learned"},
	{MsgFlowsCut, "cut"},
	{MsgRefused, "refused"},
	{MsgTampered, "tampered"},
	{MsgAsked, "asked"},
	{MsgObserved, "observed"},
	{MsgObserveEngaged, "not-enforced"},
	{MsgPolicyWritten, "policy-written"},
	{MsgMirrored, "mirrored"},
	{MsgAdopted, "adopted"},
}

// KindName names the kind of MESSAGE_ID id, "other" when it is none of
// clearance's.
func KindName(id string) string {
	for _, k := range Kinds {
		if k.ID == id {
			return k.Name
		}
	}
	return "other"
}

// Journal fields. The journal handler (internal/sd) passes attributes
// with these keys through as fields, unchanged.
const (
	FieldMessageID = "MESSAGE_ID"
	// FieldContainer is the id the container's hub is named by (the first
	// 12 characters of podman's); FieldContainerID is the full id, as
	// podman run -d prints it.
	FieldContainer   = "CLEARANCE_CONTAINER"
	FieldContainerID = "CLEARANCE_CONTAINER_ID"
	// FieldPolicy and FieldProject name the container's policy and its
	// dossier's project, so records can be selected per policy or project.
	FieldPolicy    = "CLEARANCE_POLICY"
	FieldProject   = "CLEARANCE_PROJECT"
	FieldRequestID = "CLEARANCE_REQUEST_ID"
	FieldDest      = "CLEARANCE_DEST"   // an IP address or prefix
	FieldDomain    = "CLEARANCE_DOMAIN" // the name asked for, may be empty
	FieldPort      = "CLEARANCE_PORT"   // 0: every port
	FieldProto     = "CLEARANCE_PROTO"  // TCP, UDP, …
	FieldAction    = "CLEARANCE_ACTION" // allow, deny
	FieldScope     = "CLEARANCE_SCOPE"  // once, container, always
	FieldExpires   = "CLEARANCE_EXPIRES_USEC"
	FieldChannel   = "CLEARANCE_CHANNEL" // how a verdict arrived: notifier, clearancectl, varlink, …
	// FieldOperatorUID is the kernel-verified uid of whoever gave the
	// verdict or called the verdict service; FieldOperator its user name.
	FieldOperatorUID = "CLEARANCE_OPERATOR_UID"
	FieldOperator    = "CLEARANCE_OPERATOR"
	FieldReason      = "CLEARANCE_REASON"
	// FieldVerdictID joins the two records of one verdict: the hub's
	// (what the operator asked, the outcome the hub learned) and the
	// verdict service's (what the kernel got).
	FieldVerdictID = "CLEARANCE_VERDICT_ID"
	// FieldSide says which side wrote a verdict record: SideOperator (the
	// hub) or SideKernel (the verdict service, after its commit).
	FieldSide    = "CLEARANCE_SIDE"
	FieldOutcome = "CLEARANCE_OUTCOME"
	// FieldCounters, on a disengaged record, lists the packets and bytes
	// every allow and deny element matched: one line per element,
	// "list dest proto port packets bytes name" (proto and port "-" for
	// every port, name "-" when the element has none).
	FieldCounters = "CLEARANCE_COUNTERS"
	FieldTable    = "CLEARANCE_TABLE"
	// FieldMode is a container's firewall mode, "observe" or "enforce"
	// (observe-mode records).
	FieldMode = "CLEARANCE_MODE"
	// FieldOwnerUID is the kernel-verified owner of the container's
	// network namespace (observe-mode records).
	FieldOwnerUID = "CLEARANCE_OWNER_UID"
	// FieldAskNew is "true" when an ask raised a new request, "false"
	// when it joined one already pending.
	FieldAskNew = "CLEARANCE_ASK_NEW"
	// FieldHost is the host a fleet record is about (clearance-relay).
	FieldHost = "CLEARANCE_HOST"
)

// Sides of a verdict.
const (
	SideOperator = "operator"
	SideKernel   = "kernel"
)

// Outcomes of a verdict (FieldOutcome).
const (
	OutcomeApplied = "applied" // in the kernel, and saved to the policy if the scope asked for it
	// OutcomeNotSaved: in the kernel for the container's life, but an
	// "always" verdict could not be written to the policy.
	OutcomeNotSaved = "applied-not-saved"
	OutcomeRefused  = "refused" // the verdict service or the firewall refused; nothing changed
	// OutcomeUnknown: the hub lost the verdict service before its reply;
	// the kernel side's record (same verdict id) says what happened.
	OutcomeUnknown = "unknown"
)

// Scopes of a verdict (FieldScope).
const (
	ScopeOnce      = "once"      // until the element's timeout
	ScopeContainer = "container" // until the container exits
	ScopeAlways    = "always"    // and written to the container's policy
)

// Fields lists every CLEARANCE_* field a record may carry.
var Fields = []string{
	FieldContainer, FieldContainerID, FieldPolicy, FieldProject, FieldRequestID, FieldDest, FieldDomain,
	FieldPort, FieldProto, FieldAction, FieldScope, FieldExpires, FieldChannel, FieldOperatorUID,
	FieldOperator, FieldReason, FieldVerdictID, FieldSide, FieldOutcome, FieldCounters, FieldTable,
	FieldMode, FieldOwnerUID, FieldAskNew, FieldHost,
}
