package event

// Journal identifiers of issue 12's observe mode (item 2) and the
// container's own reason (item 6), kept together so that they move in one
// piece into the audit package. Each MESSAGE_ID has its entry in
// packaging/clearance.catalog and its row in docs/audit.md.
const (
	// MsgObserveEngaged: clearance-verdict engaged (or verified) a
	// container's ruleset in observe mode: NOT ENFORCED. PRIORITY 4.
	MsgObserveEngaged = "3f9a6c1e8b2d4f7a9c0e5b1d7a3f6c28"
	// MsgObserved: clearance-hub saw a container in observe mode reach a
	// destination for the first time (logged and let through). PRIORITY 6.
	MsgObserved = "d41e7b9c2a5f4e8b9d3c6a1f0e7b2c59"
	// MsgAsked: the container asked for a destination itself, through
	// its ask endpoint, with its reason. PRIORITY 6.
	MsgAsked = "6e2c9a4f1b7d4c3e8a5f0d2b9c7e1a46"
)

// Journal fields of the same records (besides the common CLEARANCE_*).
const (
	// FieldMode is the container's firewall mode: "observe" or "enforce".
	FieldMode = "CLEARANCE_MODE"
	// FieldOwnerUID is the kernel-verified owner of the container's
	// network namespace.
	FieldOwnerUID = "CLEARANCE_OWNER_UID"
	// FieldAskNew is "true" when an ask raised a new request, "false"
	// when it joined one already pending.
	FieldAskNew = "CLEARANCE_ASK_NEW"
)
