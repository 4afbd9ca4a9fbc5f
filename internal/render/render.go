// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package render turns clearance events into the content operators see:
// desktop-notification popups (titles, bodies, hints) and terminal text.
//
// Every function here is pure and safe for concurrent use. The texts are the
// seed's (terok-clearance's EventSubscriber), so operators moving from the
// Python implementation see the same popups.
//
// # Untrusted strings
//
// Event strings come from a container (DNS names, dossier values). The hub
// already reduces them to printable ASCII, but each sink escapes again:
// every untrusted value that reaches a popup passes through [Field] (control
// and bidi characters removed, length capped), and the notification client
// applies [PangoEscape] when the server parses markup. Terminal output
// passes through [Terminal].
package render

import (
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/terok-ai/clearance/internal/event"
)

// Urgency is the freedesktop notification urgency level, sent as a D-Bus
// byte ("y").
type Urgency byte

// Urgency levels of the freedesktop notification spec.
const (
	UrgencyLow      Urgency = 0
	UrgencyNormal   Urgency = 1
	UrgencyCritical Urgency = 2
)

// Hints are the notification hints clearance sets: urgency (always sent),
// resident and transient (sent only when true).
type Hints struct {
	Urgency   Urgency
	Resident  bool
	Transient bool
}

// The four hint sets of the seed.
var (
	// HintBlockPending is for a connection_blocked prompt: critical and
	// resident, so the popup survives an action click until the verdict
	// replaces it.
	HintBlockPending = Hints{Urgency: UrgencyCritical, Resident: true}
	// HintSecurityAlert is for shield down/disengaged and failed verdicts.
	HintSecurityAlert = Hints{Urgency: UrgencyCritical}
	// HintConfirmation is for applied verdicts and shield up.
	HintConfirmation = Hints{Urgency: UrgencyNormal, Transient: true}
	// HintLifecycle is for container started/stopped.
	HintLifecycle = Hints{Urgency: UrgencyLow, Transient: true}
)

// Timeouts in milliseconds, as the freedesktop Notify call takes them.
const (
	TimeoutDefault int32 = -1 // the server decides
	TimeoutNever   int32 = 0  // stays until closed
)

// Popup is the content of one notification, before sink escaping.
// Summary and Body are plain text; the notification client escapes them
// for servers that parse markup.
type Popup struct {
	Summary string
	Body    string
	Hints   Hints
	// Timeout in milliseconds: [TimeoutDefault], [TimeoutNever] or a
	// positive value.
	Timeout int32
}

// Action is one notification button: Key is what the server reports in
// ActionInvoked, Label is what the operator reads.
type Action struct {
	Key   string
	Label string
}

// Action keys of prompt buttons. Allow and deny are the hub's verdict
// vocabulary; allow_for is ours (a time-limited allow: the notifier's
// allow_for in docs/configuration.md).
const (
	KeyAllow    = event.ActionAllow
	KeyDeny     = event.ActionDeny
	KeyAllowFor = "allow_for"
	// KeyDefault is the key servers report for a click on the popup
	// body. It never decides anything.
	KeyDefault = "default"
)

// Standard prompt buttons.
var (
	ActionAllowButton = Action{Key: KeyAllow, Label: "Allow"}
	ActionDenyButton  = Action{Key: KeyDeny, Label: "Deny"}
)

// ClockFormat is how first-seen times appear in the repeat line.
const ClockFormat = "15:04:05"

// IdentityLabel names a container for humans from its dossier: "project/task"
// plus " · name" when project and task are set, else the dossier's name,
// else fallback (normally the container id). Values are made inert with
// [Field] and the label is capped at [MaxField] runes.
func IdentityLabel(dossier map[string]string, fallback string) string {
	project := Field(dossier[event.DossierProject])
	task := Field(dossier[event.DossierTask])
	name := Field(dossier[event.DossierName])
	if project != "" && task != "" {
		label := project + "/" + task
		if name != "" {
			label += " · " + name
		}
		return Inert(label, MaxField)
	}
	if name != "" {
		return name
	}
	return Field(fallback)
}

// IdentityLine is the first body line of a prompt: "Task: <label>" when the
// dossier names a project and task, else "Container: <label>".
func IdentityLine(dossier map[string]string, fallback string) string {
	label := IdentityLabel(dossier, fallback)
	if Field(dossier[event.DossierProject]) != "" && Field(dossier[event.DossierTask]) != "" {
		return "Task: " + label
	}
	return "Container: " + label
}

// Target is the name a prompt shows and a verdict names: the domain when
// known, else the destination IP, made inert with [Field]. It is "" when
// the event names neither; such an event gets no prompt.
func Target(ev event.Event) string { return Field(ev.Target()) }

// BlockedTitle is the summary of a prompt: "Blocked: <target>:<port>"
// ("Blocked: [2001:db8::1]:443" for an IPv6 address).
func BlockedTitle(ev event.Event) string {
	return "Blocked: " + HostPort(Target(ev), ev.Port)
}

// Blocked renders a connection_blocked prompt. count is how many blocks of
// the same (container, target) the popup stands for; when it exceeds 1 the
// body gains "Blocked N times since HH:MM:SS" with firstSeen in local time.
//
// Body lines: the identity line; "Address: <ip>:<port>" when the title names
// a domain (so the operator also sees where it resolved to); "Protocol:
// <TCP|UDP|n>"; the container's own reason when it asked ([ReasonLine]);
// the repeat line.
func Blocked(ev event.Event, count int, firstSeen time.Time) Popup {
	lines := []string{IdentityLine(ev.Dossier, ev.Container)}
	if dest := Field(ev.Dest); ev.Domain != "" && dest != "" && dest != Field(ev.Domain) {
		lines = append(lines, "Address: "+HostPort(dest, ev.Port))
	}
	lines = append(lines, "Protocol: "+event.ProtoName(ev.Proto))
	if r := ReasonLine(ev.Reason); r != "" {
		lines = append(lines, r)
	}
	if count > 1 {
		lines = append(lines, "Blocked "+strconv.Itoa(count)+" times since "+firstSeen.Format(ClockFormat))
	}
	return Popup{
		Summary: BlockedTitle(ev),
		Body:    strings.Join(lines, "\n"),
		Hints:   HintBlockPending,
		Timeout: TimeoutNever,
	}
}

// ReasonLine is how a prompt shows the container's own reason (it asked
// for the destination through its ask endpoint): quoted, inert, capped
// and labelled as the container's unverified claim; "" without one.
func ReasonLine(reason string) string {
	r := strings.TrimSpace(Field(reason))
	if r == "" {
		return ""
	}
	return "The container says (unverified): \"" + r + "\""
}

// VerdictTitle is the summary that replaces a prompt once the hub applied
// (ok) or failed to apply a verdict: "Allowed: x", "Denied: x", "Allow
// failed: x", "Deny failed: x"; other actions are title-cased.
func VerdictTitle(action string, ok bool, target string) string {
	var word string
	switch {
	case ok && action == event.ActionAllow:
		word = "Allowed"
	case ok && action == event.ActionDeny:
		word = "Denied"
	case !ok && action == event.ActionAllow:
		word = "Allow failed"
	case !ok && action == event.ActionDeny:
		word = "Deny failed"
	case ok:
		word = titleCase(Field(action))
	default:
		word = titleCase(Field(action)) + " failed"
	}
	return word + ": " + Field(target)
}

// NoAnswer starts the reason of a failed verdict_applied that the notifier
// makes up itself when the hub's connection broke before its reply.
const NoAnswer = "no answer from the hub"

// Verdict renders the popup that replaces a prompt after verdict_applied.
// dossier and container are those captured when the block was shown (the
// verdict event itself carries no dossier); by is who decided, as this
// hub's verdict_applied reason says it ("by alice (uid 1000) via
// clearancectl"; a seed hub sends ""), shown on a line of its own.
func Verdict(action string, ok bool, target string, dossier map[string]string, container, by string) Popup {
	if !ok && strings.HasPrefix(by, NoAnswer) {
		// The hub went away before answering: the verdict may well be in
		// the kernel. Say so, not that it failed.
		return Popup{
			Summary: titleCase(Field(action)) + " unconfirmed: " + Field(target),
			Body: IdentityLine(dossier, container) + "\nNo answer from the hub; the prompt comes back if the verdict " +
				"did not land (clearancectl log shows what the kernel got)",
			Hints:   HintConfirmation,
			Timeout: TimeoutDefault,
		}
	}
	h := HintConfirmation
	if !ok {
		h = HintSecurityAlert
	}
	body := IdentityLine(dossier, container)
	if by = Field(by); by != "" {
		r, size := utf8.DecodeRuneInString(by)
		body += "\n" + string(unicode.ToUpper(r)) + by[size:] // "By alice (uid 1000) via clearancectl"
	}
	return Popup{
		Summary: VerdictTitle(action, ok, target),
		Body:    body,
		Hints:   h,
		Timeout: TimeoutDefault,
	}
}

// Lifecycle renders the popup for a lifecycle event (shield_down,
// shield_disengaged, shield_up, container_started, container_exited). ok is
// false for every other event type.
func Lifecycle(ev event.Event) (p Popup, ok bool) {
	label := IdentityLabel(ev.Dossier, ev.Container)
	switch ev.Type {
	case event.ShieldDown:
		return Popup{
			Summary: "Shield down: " + label,
			Body:    "Outbound firewall bypassed — allowlist is not enforced.",
			Hints:   HintSecurityAlert,
			Timeout: TimeoutDefault,
		}, true
	case event.ShieldDisengaged:
		return Popup{
			Summary: "Shield disengaged: " + label,
			Body:    "Outbound firewall disengaged — every destination is reachable.",
			Hints:   HintSecurityAlert,
			Timeout: TimeoutDefault,
		}, true
	case event.ShieldUp:
		return Popup{
			Summary: "Shield up: " + label,
			Body:    "Outbound firewall restored.",
			Hints:   HintConfirmation,
			Timeout: TimeoutDefault,
		}, true
	case event.ContainerStarted:
		return Popup{
			Summary: "Container started: " + label,
			Hints:   HintLifecycle,
			Timeout: TimeoutDefault,
		}, true
	case event.ContainerExited:
		var body string
		if r := Field(ev.Reason); r != "" {
			body = "Reason: " + r
		}
		return Popup{
			Summary: "Container stopped: " + label,
			Body:    body,
			Hints:   HintLifecycle,
			Timeout: TimeoutDefault,
		}, true
	}
	return Popup{}, false
}

// HubNotice renders a hub_notice event: something the operator should
// know about the container's hub itself, in the hub's words (made inert),
// e.g. that it runs on its default configuration because the
// configuration file is invalid. It stays until closed: the operator is
// told once.
func HubNotice(ev event.Event) Popup {
	return Popup{
		Summary: "clearance hub: " + IdentityLabel(ev.Dossier, ev.Container),
		Body:    Field(ev.Reason),
		Hints:   Hints{Urgency: UrgencyCritical},
		Timeout: TimeoutNever,
	}
}

// HubDown renders the notice for a container of the user whose runtime
// record exists but whose hub is down or failed: its firewall still
// blocks, and nobody is asked. id is the hub's instance (the container's
// short id), name the container's name when known.
func HubDown(id, name string) Popup {
	label := Field(id)
	if n := Field(name); n != "" && n != label {
		label = n + " (" + label + ")"
	}
	return Popup{
		Summary: "No prompts for " + label + ": its clearance hub is down",
		Body: "Blocked connections stay blocked, and nobody is asked.\n" +
			"See: systemctl --user status clearance-hub@" + Field(id) + ".service",
		Hints:   Hints{Urgency: UrgencyCritical},
		Timeout: TimeoutNever,
	}
}

// Waiting renders the single summary popup shown when prompts are held
// back (visible cap or rate limit): "N more waiting — clearancectl pending".
// latest lists the newest held-back prompts, one line each, newest first.
func Waiting(n int, latest []string) Popup {
	return Popup{
		Summary: strconv.Itoa(n) + " more waiting — clearancectl pending",
		Body:    strings.Join(latest, "\n"),
		Hints:   Hints{Urgency: UrgencyNormal, Resident: true},
		Timeout: TimeoutNever,
	}
}

// NoActions renders the single notice shown instead of prompts when the
// notification server cannot show buttons: it tells the operator how to
// decide from a terminal. n is the number of prompts waiting, latestID the
// request id of the newest and latest its one-line description.
func NoActions(n int, latest, latestID string) Popup {
	word := "connections"
	if n == 1 {
		word = "connection"
	}
	lines := []string{
		"This notification server cannot show Allow/Deny buttons.",
		"Decide in a terminal: clearancectl watch",
		"or: clearancectl allow ID / clearancectl deny ID",
	}
	if latest != "" {
		lines = append(lines, "Latest: "+latest+" (ID "+Field(latestID)+")")
	}
	return Popup{
		Summary: strconv.Itoa(n) + " blocked " + word + " waiting for a verdict",
		Body:    strings.Join(lines, "\n"),
		Hints:   Hints{Urgency: UrgencyCritical, Resident: true},
		Timeout: TimeoutNever,
	}
}

// BlockedLine is a one-line description of a prompt for summaries:
// "<target>:<port> · <identity label>".
func BlockedLine(ev event.Event) string {
	return HostPort(Target(ev), ev.Port) + " · " + IdentityLabel(ev.Dossier, ev.Container)
}

// PangoEscape escapes s for a notification server that parses Pango markup
// ("body-markup" capability): "&" first, then "<" and ">". Nothing else is
// changed; newlines are kept.
func PangoEscape(s string) string {
	if !strings.ContainsAny(s, "&<>") {
		return s
	}
	s = strings.ReplaceAll(s, "&", "&amp;")
	s = strings.ReplaceAll(s, "<", "&lt;")
	return strings.ReplaceAll(s, ">", "&gt;")
}

func titleCase(s string) string {
	r, size := utf8.DecodeRuneInString(s)
	if size == 0 {
		return s
	}
	return string(unicode.ToUpper(r)) + strings.ToLower(s[size:])
}
