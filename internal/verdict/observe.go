// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/record"
)

// ObservePolicy says whose containers may run in observe mode (the
// system configuration's observe section): the ruleset logs and lets
// through what it would block. The zero value allows nobody.
type ObservePolicy struct {
	// Users are user names or numeric uids; a container qualifies when
	// the owner of its network namespace (kernel-verified) is one of
	// them.
	Users []string
	// Projects are dossier.project values of the runtime record: what
	// the container's owner annotated, not verified.
	Projects []string
}

// Firewall modes of Engage's reply.
const (
	ModeEnforce = record.ModeEnforce
	ModeObserve = record.ModeObserve
)

// observeMode decides whether t's ruleset runs in observe mode: its
// record must ask for it and the configuration allow it for the
// namespace's owner or the record's project. note says why a requested
// observe mode was refused.
func (s *Service) observeMode(t *target) (observe bool, note string) {
	if t.rec == nil || t.rec.Mode != record.ModeObserve {
		return false, ""
	}
	if s.cfg.Mode != ModeBuiltin {
		return false, "observe mode needs the built-in ruleset (ruleset.mode: builtin); the container is enforced"
	}
	if s.cfg.Observe.allows(t.owner, t.rec.Dossier[event.DossierProject]) {
		return true, ""
	}
	return false, "observe mode is not allowed for uid " + strconv.FormatUint(uint64(t.owner), 10) +
		" or project " + strconv.Quote(t.rec.Dossier[event.DossierProject]) +
		" (observe.users, observe.projects of the system configuration); the container is enforced"
}

// allows reports whether the policy lets uid's containers, or project's,
// run in observe mode.
func (p ObservePolicy) allows(uid uint32, project string) bool {
	if project != "" && slices.Contains(p.Projects, project) {
		return true
	}
	for _, u := range p.Users {
		u = strings.TrimSpace(u)
		if n, err := strconv.ParseUint(u, 10, 32); err == nil {
			if uint32(n) == uid {
				return true
			}
			continue
		}
		if uu, err := user.Lookup(u); err == nil && uu.Uid == strconv.FormatUint(uint64(uid), 10) {
			return true
		}
	}
	return false
}

// logMode records an observe-mode engagement loudly (a warning of its
// own MESSAGE_ID, every time the ruleset is engaged or verified), and a
// refused request for it.
func (s *Service) logMode(t *target, e engaged) {
	uid := strconv.FormatUint(uint64(t.peer), 10)
	switch {
	case e.observe:
		s.log.Warn("ruleset "+e.table+" of "+t.container+" is in OBSERVE MODE: NOT ENFORCED, new connections are logged and let through",
			"MESSAGE_ID", audit.MsgObserveEngaged, "CLEARANCE_CONTAINER", t.container, "CLEARANCE_OPERATOR_UID", uid,
			audit.FieldMode, ModeObserve, audit.FieldOwnerUID, strconv.FormatUint(uint64(t.owner), 10))
	case e.note != "":
		s.log.Warn("observe mode refused for "+t.container+": "+e.note, "CLEARANCE_CONTAINER", t.container,
			"CLEARANCE_OPERATOR_UID", uid, audit.FieldMode, ModeEnforce)
	}
}
