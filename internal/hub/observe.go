// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hub

import (
	"strconv"
	"sync"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/event"
)

// ObserveNotice is the hub_notice a container in observe mode announces
// to every subscriber.
const ObserveNotice = "OBSERVE MODE: this container's firewall is NOT ENFORCED. New connections are " +
	"logged and let through, not blocked; no prompts. Propose a policy from what it did: clearancectl policy propose --container "

// maxObserved bounds the destinations a hub remembers as observed; when
// it is full, it starts afresh (destinations are then recorded again).
const maxObserved = 65536

// observing is a hub's observe mode and the destinations it recorded.
type observing struct {
	mu      sync.Mutex
	on      bool
	dossier map[string]string
	seen    map[flowKey]struct{}
}

// SetObserving records whether the container's ruleset runs in observe
// mode, as the verdict service reported it when it engaged the ruleset.
// When it turns on, every subscriber gets a hub_notice saying the
// container is not enforced, and so does each later subscriber when it
// subscribes; dossier is the container's, for the notice.
func (h *Hub) SetObserving(on bool, dossier map[string]string) {
	h.observe.mu.Lock()
	was := h.observe.on
	h.observe.on = on
	h.observe.dossier = cloneMap(dossier)
	h.observe.mu.Unlock()
	if on && !was {
		h.log.Warn("the container's ruleset is in OBSERVE MODE: not enforced", keyContainer, h.cfg.Container,
			keyContainerID, h.cfg.ContainerID, keyPolicy, h.cfg.Policy, keyProject, h.cfg.Project)
		h.Emit(h.observeNotice())
	}
}

// Observing reports whether the container's ruleset runs in observe mode.
func (h *Hub) Observing() bool {
	h.observe.mu.Lock()
	defer h.observe.mu.Unlock()
	return h.observe.on
}

func (h *Hub) observeNotice() event.Event {
	h.observe.mu.Lock()
	d := cloneMap(h.observe.dossier)
	h.observe.mu.Unlock()
	return event.Event{Type: event.HubNotice, Container: h.cfg.Container, Reason: ObserveNotice + h.cfg.Container,
		Dossier: d}
}

// Observed records a connection the container's observe-mode ruleset
// logged and let through: each destination (address, name, port,
// protocol) once per hub process, as a journal record (audit.MsgObserved, with
// the fields of a blocked record) and an "observed" event for
// subscribers. It is never a prompt. It reports whether the destination
// was new.
func (h *Hub) Observed(ev event.Event) bool {
	ev.Type = event.Observed
	ev.Normalize()
	key := flowKey{ev.Container, ev.Dest, ev.Domain, ev.Port, ev.Proto}
	h.observe.mu.Lock()
	if h.observe.seen == nil || len(h.observe.seen) >= maxObserved {
		h.observe.seen = make(map[flowKey]struct{})
	}
	if _, dup := h.observe.seen[key]; dup {
		h.observe.mu.Unlock()
		h.coalesced.Add(1)
		return false
	}
	h.observe.seen[key] = struct{}{}
	h.observe.mu.Unlock()
	h.eventsIn.Add(1)
	args := append([]any{keyMessageID, audit.MsgObserved}, h.eventAttrs(ev)...)
	args = append(args, keyPolicy, h.cfg.Policy, keyProject, h.cfg.Project, audit.FieldMode, "observe")
	h.log.Info("observed "+ev.Target()+":"+strconv.FormatInt(ev.Port, 10)+" (observe mode: let through)", args...)
	h.Emit(ev)
	return true
}
