// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notify

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/render"
)

// Notifier is what [Popups] needs from a notification client. *[Client]
// implements it; tests may fake it.
//
// Notify returns the server's id for the popup; ids are valid only until
// the server restarts. A call failing with an error that wraps
// [ErrNoServer] tells Popups that no server is there: it then makes no
// call at all until [DaemonRestarted] or [Popups.Reattach].
type Notifier interface {
	Capabilities(ctx context.Context) ([]string, error)
	Notify(ctx context.Context, n Notification) (uint32, error)
	Close(ctx context.Context, id uint32) error
}

// Notification categories, as the seed names them: which popups are shown.
// Cleanup (closing stale prompts) always happens, whatever is enabled.
const (
	CategoryBlocked          = "blocked"
	CategoryVerdict          = "verdict"
	CategoryShieldUp         = "shield_up"
	CategoryShieldDown       = "shield_down" // shield_down and shield_disengaged
	CategoryContainerStarted = "container_started"
	CategoryContainerExited  = "container_exited"
)

// AllCategories lists every notification category.
var AllCategories = []string{CategoryBlocked, CategoryVerdict, CategoryShieldUp, CategoryShieldDown,
	CategoryContainerStarted, CategoryContainerExited}

// ActionFunc receives the operator's choice on a prompt: action is
// [render.KeyAllow], [render.KeyDeny] or [render.KeyAllowFor]. The notifier
// daemon turns it into a Verdict (or Decide) call on the container's hub.
type ActionFunc func(container, requestID, target, action string)

// PopupsConfig configures [Popups]. The zero value (or nil) is usable.
type PopupsConfig struct {
	// Logger receives one line per prompt shown, action and failure. Nil
	// discards.
	Logger *slog.Logger
	// MaxVisible caps the prompts shown at once; more wait behind one
	// summary popup. 0 means 5.
	MaxVisible int
	// RatePerMinute limits the prompts shown or updated per container
	// (a token bucket with a burst of one minute's worth). 0 means 30.
	RatePerMinute int
	// AllowForLabel, when set, adds a third button with key
	// [render.KeyAllowFor] and this label (e.g. "Allow 1 h"); the daemon
	// decides what the time limit is.
	AllowForLabel string
	// MaxButtons is how many action buttons the notification server
	// shows (GNOME Shell shows three). The allow_for button is left out
	// when it would not fit; below two, prompts fall back to the
	// no-buttons notice. 0 means 3.
	MaxButtons int
	// Categories are the enabled notification categories; nil means
	// all of [AllCategories]. Unknown names are ignored.
	Categories []string
	// CallTimeout bounds each call to the notification server; 0 means
	// 5 s.
	CallTimeout time.Duration
	// Now is the clock (first-seen times, rate limit); nil means
	// time.Now.
	Now func() time.Time
	// Changed, when set, is called after anything that may change what
	// [Popups.Pending] reports (prompts, what is shown, whether a server
	// is there), without Popups' lock held. It must not block; calls may
	// be spurious.
	Changed func()
}

// Popups manages the prompts of every container on one notification
// server: one popup per pending (container, target), updated in place as
// repeats arrive, replaced by the outcome when the verdict is applied,
// closed when the container exits or its shield goes down, and re-posted
// when the server restarts.
//
// Flood control: at most MaxVisible prompts are shown and each container
// may show or update at most RatePerMinute prompts a minute; prompts held
// back wait behind a single summary popup ("N more waiting — clearancectl
// pending") and are shown as slots free up. Servers without the "actions"
// capability get no prompts at all, only one notice pointing at
// clearancectl, so no dead buttons are shown.
//
// While no notification server is there (a call failed with [ErrNoServer],
// or [DaemonGone]), Popups keeps its prompts but calls nothing: no retry
// loop knocks at an empty bus name, and no rate-limit token is spent. The
// next [DaemonRestarted] (or [Popups.Reattach]) shows them again, each
// once.
//
// The daemon feeds hub events to [Popups.HandleEvent] and client events to
// [Popups.HandleSignal], calls [Popups.Flush] about once a second (it
// shows updates the rate limit held back) and [Popups.Reattach] after
// re-dialling the bus. All methods are safe for concurrent use; calls to
// the notification server are made under one lock, in order.
type Popups struct {
	log        *slog.Logger
	maxVisible int
	rate       float64
	allowFor   string
	maxButtons int
	categories map[string]bool
	timeout    time.Duration
	now        func() time.Time
	changed    func()

	mu       chanMutex
	n        Notifier
	onAction ActionFunc

	capsKnown bool
	actions   bool // server shows buttons and MaxButtons >= 2
	offline   bool // no notification server: make no call until one appears

	prompts   map[promptKey]*prompt
	byRequest map[string]*prompt
	byID      map[uint32]ref
	hidden    []*prompt // held-back prompts, oldest first; may hold stale entries
	nHidden   int
	nVisible  int
	seq       uint64

	summaryID    uint32
	summaryStale bool
	summaryLast  time.Time

	shieldDown map[string]shieldPopup // container → shield-down popup
	notices    map[string]*notice     // key → a notice shown once (Notice)
	buckets    map[string]*bucket
}

// maxNotices bounds the notices kept; a notice past it is not shown.
const maxNotices = 256

// notice is one popup of [Popups.Notice].
type notice struct {
	container string
	popup     render.Popup
	id        uint32 // its popup on the current server, 0 when none
	shown     bool   // shown once: never again, whatever the server does
}

type promptKey struct{ container, target string }

type promptState int

const (
	stateHidden   promptState = iota // pending, not shown (cap, rate, no buttons, Notify failed)
	stateVisible                     // shown with buttons
	stateDetached                    // decided, its popup is gone; waits for the outcome
	stateGone                        // resolved; stale queue entry
)

// maxAliases bounds the request ids a coalesced prompt remembers, so a
// verdict given for one of the recent ones (clearancectl allow ID) still
// resolves the popup.
const maxAliases = 16

type prompt struct {
	key       promptKey
	ev        event.Event // the latest block
	requestID string      // the latest request id: what a click decides
	aliases   []string    // every request id this prompt stands for
	count     int
	seq       uint64 // arrival order
	firstSeen time.Time
	id        uint32
	state     promptState
	stale     bool // changed since it was last shown
	decided   bool // an action was delivered for the current request id
}

type refKind int

const (
	refPrompt refKind = iota
	refSummary
	refShieldDown
	refNotice
)

type ref struct {
	kind      refKind
	prompt    *prompt
	container string
	key       string // of a notice
}

type shieldPopup struct {
	id    uint32
	popup render.Popup
}

// NewPopups returns a manager showing popups through n.
func NewPopups(n Notifier, cfg *PopupsConfig) *Popups {
	if cfg == nil {
		cfg = &PopupsConfig{}
	}
	p := &Popups{
		log:        cfg.Logger,
		maxVisible: cfg.MaxVisible,
		rate:       float64(cfg.RatePerMinute),
		allowFor:   cfg.AllowForLabel,
		maxButtons: cfg.MaxButtons,
		timeout:    cfg.CallTimeout,
		now:        cfg.Now,
		changed:    cfg.Changed,
		mu:         newChanMutex(),
		n:          n,
		prompts:    map[promptKey]*prompt{},
		byRequest:  map[string]*prompt{},
		byID:       map[uint32]ref{},
		shieldDown: map[string]shieldPopup{},
		notices:    map[string]*notice{},
		buckets:    map[string]*bucket{},
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.maxVisible <= 0 {
		p.maxVisible = 5
	}
	if p.rate <= 0 {
		p.rate = 30
	}
	if p.maxButtons <= 0 {
		p.maxButtons = 3
	}
	if p.timeout <= 0 {
		p.timeout = 5 * time.Second
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.changed == nil {
		p.changed = func() {}
	}
	cats := cfg.Categories
	if cats == nil {
		cats = AllCategories
	}
	p.categories = map[string]bool{}
	for _, c := range cats {
		if slices.Contains(AllCategories, c) {
			p.categories[c] = true
		}
	}
	return p
}

// OnAction sets the function called when the operator chooses Allow, Deny
// or the allow_for button on a prompt. It is called at most once per
// request id (a double click sends one verdict), never for the body-click
// "default" action, without Popups' lock held, on the goroutine that
// called [Popups.HandleSignal]; it should not block for long.
func (p *Popups) OnAction(f ActionFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onAction = f
}

// HandleEvent shows what a hub event means for the operator, following
// the seed's dispatch: prompts for connection_blocked, outcomes for
// verdict_applied, lifecycle popups, and closing a container's prompts
// on container_exited, shield_down and shield_disengaged, and each
// hub_notice once (category shield_down: a container in observe mode is
// not enforced either). Disabled categories suppress popups but never the
// cleanup.
func (p *Popups) HandleEvent(ctx context.Context, ev event.Event) {
	switch ev.Type {
	case event.ConnectionBlocked:
		if p.enabled(CategoryBlocked) {
			p.ShowBlocked(ctx, ev)
		}
	case event.VerdictApplied:
		p.ShowVerdict(ctx, ev)
	case event.ContainerStarted:
		p.lifecycle(ctx, ev, CategoryContainerStarted)
	case event.ContainerExited:
		p.Forget(ctx, ev.Container)
		p.lifecycle(ctx, ev, CategoryContainerExited)
	case event.ShieldUp:
		p.closeShieldDown(ctx, ev.Container)
		p.lifecycle(ctx, ev, CategoryShieldUp)
	case event.ShieldDown, event.ShieldDisengaged:
		p.CloseContainer(ctx, ev.Container)
		p.lifecycle(ctx, ev, CategoryShieldDown)
	case event.HubNotice:
		// Sent again on every subscription (a hub restart, our
		// reconnect): shown once per container and text.
		p.Notice(ctx, "hub_notice\x00"+ev.Container+"\x00"+ev.Reason, ev.Container, render.HubNotice(ev))
	}
}

// Notice shows popup once under key, for container: a second Notice with
// the same key does nothing until [Popups.ClearNotice] or
// [Popups.Forget] of the container drops it, even when the operator closed
// the popup or the notification server restarted. It spends a token of
// the container's rate limit like a prompt; held back by the limit, or
// while no server is there, it is shown by a later [Popups.Flush] or by
// the next server.
func (p *Popups) Notice(ctx context.Context, key, container string, popup render.Popup) {
	if !p.mu.LockContext(ctx) {
		return
	}
	defer p.unlock()
	if _, ok := p.notices[key]; ok || len(p.notices) >= maxNotices {
		return
	}
	n := &notice{container: container, popup: popup}
	p.notices[key] = n
	p.showNotice(ctx, key, n, p.now())
}

// ClearNotice closes the notice under key, if any, and forgets it: the
// next Notice with that key is shown again.
func (p *Popups) ClearNotice(ctx context.Context, key string) {
	if !p.mu.LockContext(ctx) {
		return
	}
	defer p.unlock()
	p.dropNotice(ctx, key)
}

// showNotice shows a notice not yet shown, when a server is there and
// the container's rate limit lets it.
func (p *Popups) showNotice(ctx context.Context, key string, n *notice, now time.Time) {
	if n.shown || p.offline || !p.take(n.container, now) {
		return
	}
	id := p.show(ctx, n.popup, 0)
	if id == 0 {
		return
	}
	n.id, n.shown = id, true
	p.byID[id] = ref{kind: refNotice, key: key}
}

func (p *Popups) dropNotice(ctx context.Context, key string) {
	n, ok := p.notices[key]
	if !ok {
		return
	}
	delete(p.notices, key)
	if n.id != 0 {
		delete(p.byID, n.id)
		p.closeID(ctx, n.id)
	}
}

// pendingNotices shows the notices waiting for the rate limit or a
// server, in key order.
func (p *Popups) pendingNotices(ctx context.Context, now time.Time) {
	var keys []string
	for k, n := range p.notices {
		if !n.shown {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		p.showNotice(ctx, k, p.notices[k], now)
	}
}

func (p *Popups) enabled(cat string) bool { return p.categories[cat] }

// ShowBlocked shows a connection_blocked event as a prompt, or updates
// the prompt already shown for the same (container, target) with the new
// request id and the repeat count. An event naming neither domain nor
// destination is dropped.
func (p *Popups) ShowBlocked(ctx context.Context, ev event.Event) {
	target := render.Target(ev)
	if target == "" {
		p.log.Warn("dropping connection_blocked with empty dest and domain", "container", ev.Container, "request_id", ev.RequestID)
		return
	}
	if !p.mu.LockContext(ctx) {
		return
	}
	defer p.unlock()
	p.ensureCaps(ctx)
	now := p.now()
	key := promptKey{ev.Container, target}
	pr := p.prompts[key]
	if pr == nil {
		p.seq++
		pr = &prompt{key: key, seq: p.seq, firstSeen: now, state: stateHidden}
		p.prompts[key] = pr
	}
	// New, or a new block after the operator decided and the popup went
	// away: (re)queue it.
	queue := pr.count == 0 || pr.state == stateDetached
	pr.count++
	pr.ev = ev
	if pr.requestID != ev.RequestID {
		pr.decided = false
	}
	pr.requestID = ev.RequestID
	if !slices.Contains(pr.aliases, ev.RequestID) {
		if len(pr.aliases) == maxAliases { // bounded: forget the oldest
			if p.byRequest[pr.aliases[0]] == pr {
				delete(p.byRequest, pr.aliases[0])
			}
			pr.aliases = slices.Delete(pr.aliases, 0, 1)
		}
		pr.aliases = append(pr.aliases, ev.RequestID)
	}
	p.byRequest[ev.RequestID] = pr
	pr.stale = true
	p.log.Info("blocked", "container", ev.Container, "request_id", ev.RequestID, "dest", target,
		"port", ev.Port, "proto", event.ProtoName(ev.Proto), "count", pr.count)

	switch {
	case pr.state == stateVisible:
		if !p.offline && p.take(ev.Container, now) {
			p.post(ctx, pr)
		}
	case queue:
		p.hide(pr)
		p.promote(ctx, now)
		p.flushSummary(ctx, now, false)
	default: // hidden, updated
		p.summaryStale = true
		p.flushSummary(ctx, now, false)
	}
}

// ShowVerdict replaces the prompt a verdict_applied event resolves with
// the outcome ("Allowed: x", "Deny failed: x", ...), rendered with the
// dossier captured when the block was shown. A verdict for a request no
// prompt stands for is ignored; with the verdict category disabled the
// prompt is closed instead.
func (p *Popups) ShowVerdict(ctx context.Context, ev event.Event) {
	if !p.mu.LockContext(ctx) {
		return
	}
	defer p.unlock()
	pr := p.byRequest[ev.RequestID]
	if pr == nil {
		return
	}
	if pr.key.container != ev.Container {
		p.log.Warn("verdict_applied container mismatch", "request_id", ev.RequestID,
			"event_container", ev.Container, "pending_container", pr.key.container)
	}
	oldID, wasShown := pr.id, pr.state == stateVisible || pr.state == stateDetached
	p.resolve(pr)
	now := p.now()
	switch {
	case !p.enabled(CategoryVerdict):
		if oldID != 0 {
			p.closeID(ctx, oldID)
		}
	case wasShown && !p.offline:
		out := render.Verdict(ev.Action, ev.OK, pr.key.target, pr.ev.Dossier, pr.key.container, ev.Reason)
		cctx, cancel := context.WithTimeout(ctx, p.timeout)
		_, err := p.n.Notify(cctx, FromPopup(out, oldID, nil))
		cancel()
		if err != nil && !p.noServer(err) {
			p.log.Warn("show verdict", "container", pr.key.container, "request_id", ev.RequestID, "err", err)
		}
	}
	p.promote(ctx, now)
	p.flushSummary(ctx, now, false)
}

// Forget is for a container that is gone (it exited, or its hub went away
// with its directory): its prompts and its shield-down alert are closed
// and everything kept for it, its rate limit included, is dropped.
func (p *Popups) Forget(ctx context.Context, container string) {
	p.CloseContainer(ctx, container)
	p.closeShieldDown(ctx, container)
	if !p.mu.LockContext(ctx) {
		return
	}
	for k, n := range p.notices {
		if n.container == container {
			p.dropNotice(ctx, k)
		}
	}
	delete(p.buckets, container)
	p.unlock()
}

// PopupsStats counts what a [Popups] keeps track of.
type PopupsStats struct {
	Prompts    int // pending prompts, shown or not
	Requests   int // request ids that resolve a prompt (its aliases)
	IDs        int // popup ids of the current server that mean something
	Queued     int // entries of the held-back queue, stale ones included
	Containers int // containers with a rate-limit bucket
	ShieldDown int // shield-down alerts
	Notices    int // notices (Notice) not yet cleared
}

// Stats returns what Popups tracks right now: each count is bounded by
// the pending prompts and the containers that have not gone away, so a
// long run that ends with nothing pending and every container gone ends
// with zeros (a leak check in tests, and a diagnostic).
func (p *Popups) Stats() PopupsStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PopupsStats{Prompts: len(p.prompts), Requests: len(p.byRequest), IDs: len(p.byID),
		Queued: len(p.hidden), Containers: len(p.buckets), ShieldDown: len(p.shieldDown),
		Notices: len(p.notices)}
}

// CloseContainer closes every prompt of container (CloseNotification for
// those shown) and forgets them; the hub still holds them as pending.
func (p *Popups) CloseContainer(ctx context.Context, container string) {
	if !p.mu.LockContext(ctx) {
		return
	}
	defer p.unlock()
	var ids []uint32
	for key, pr := range p.prompts {
		if key.container != container {
			continue
		}
		if pr.id != 0 {
			ids = append(ids, pr.id)
		}
		p.resolve(pr)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p.closeID(ctx, id)
	}
	now := p.now()
	p.promote(ctx, now)
	p.flushSummary(ctx, now, false)
}

// HandleSignal applies an event of [Client.Events]: an action on a prompt
// reaches the [Popups.OnAction] function (once; "default" and unknown
// keys are ignored), a closed prompt frees its slot, a server leaving
// stops every call, and a new server gets every pending prompt again.
func (p *Popups) HandleSignal(ctx context.Context, e Event) {
	switch e := e.(type) {
	case ActionInvoked:
		p.action(e)
	case Closed:
		p.closed(ctx, e)
	case DaemonGone:
		if p.mu.LockContext(ctx) {
			p.goneLocked()
			p.unlock()
		}
	case DaemonRestarted:
		p.repost(ctx)
	}
}

// Reattach switches to a new notifier (after the bus connection was lost
// and dialled again) and re-posts every pending prompt on it.
func (p *Popups) Reattach(ctx context.Context, n Notifier) {
	p.mu.Lock()
	p.n = n
	p.unlock()
	p.repost(ctx)
}

// Flush shows what the rate limit held back: stale counts on visible
// prompts, prompts waiting for a free slot, and the summary. Call it
// about once a second.
func (p *Popups) Flush(ctx context.Context) {
	if !p.mu.LockContext(ctx) {
		return
	}
	defer p.unlock()
	now := p.now()
	for _, pr := range p.sortedPrompts() {
		if pr.state == stateVisible && pr.stale && !p.offline && p.take(pr.key.container, now) {
			p.post(ctx, pr)
		}
	}
	p.pendingNotices(ctx, now)
	p.promote(ctx, now)
	p.flushSummary(ctx, now, false)
}

// Pending returns the number of prompts awaiting a verdict and how many
// of them are shown (none while no notification server is there).
func (p *Popups) Pending() (pending, visible int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.offline {
		return len(p.prompts), 0
	}
	return len(p.prompts), p.nVisible
}

func (p *Popups) action(e ActionInvoked) {
	p.mu.Lock()
	r, ok := p.byID[e.ID]
	if !ok || r.kind != refPrompt {
		p.mu.Unlock()
		p.log.Info("action on a popup that is not a prompt", "id", e.ID, "action", e.Key)
		return
	}
	pr := r.prompt
	valid := e.Key == render.KeyAllow || e.Key == render.KeyDeny ||
		(e.Key == render.KeyAllowFor && p.allowFor != "")
	if !valid {
		p.mu.Unlock()
		p.log.Info("ignoring popup action", "id", e.ID, "action", e.Key, "container", pr.key.container)
		return
	}
	if pr.decided {
		p.mu.Unlock()
		p.log.Info("ignoring repeated popup action", "id", e.ID, "action", e.Key, "request_id", pr.requestID)
		return
	}
	pr.decided = true
	cb := p.onAction
	container, requestID, target := pr.key.container, pr.requestID, pr.key.target
	p.mu.Unlock()
	p.log.Info("popup action", "container", container, "request_id", requestID, "dest", target, "action", e.Key)
	if cb != nil {
		cb(container, requestID, target, e.Key)
	}
}

func (p *Popups) closed(ctx context.Context, e Closed) {
	if !p.mu.LockContext(ctx) {
		return
	}
	defer p.unlock()
	r, ok := p.byID[e.ID]
	if !ok {
		return
	}
	delete(p.byID, e.ID)
	switch r.kind {
	case refSummary:
		p.summaryID = 0
	case refShieldDown:
		if sp, ok := p.shieldDown[r.container]; ok && sp.id == e.ID {
			delete(p.shieldDown, r.container)
		}
	case refNotice:
		if n, ok := p.notices[r.key]; ok && n.id == e.ID {
			n.id = 0 // read and closed: kept, so it is not shown again
		}
	case refPrompt:
		pr := r.prompt
		if pr.id != e.ID || pr.state != stateVisible {
			return
		}
		pr.id = 0
		if pr.decided {
			p.nVisible--
			pr.state = stateDetached // the outcome still gets a popup
		} else {
			// Dismissed or expired: no lasting decision; the hub still
			// has it pending (clearancectl pending), and a later block
			// of the same destination asks again.
			p.log.Info("prompt closed without a decision", "container", pr.key.container,
				"request_id", pr.requestID, "reason", e.Reason)
			p.resolve(pr)
		}
		now := p.now()
		p.promote(ctx, now)
		p.flushSummary(ctx, now, false)
	}
}

// repost forgets every popup id of the previous server and shows the
// pending prompts (within the visible cap), shield-down alerts and the
// summary again, each once. When there is no server (the attached
// notifier says [ErrNoServer]) it only forgets the ids: the next server
// gets them.
func (p *Popups) repost(ctx context.Context) {
	if !p.mu.LockContext(ctx) {
		return
	}
	defer p.unlock()
	p.offline = false
	p.capsKnown = false
	p.ensureCaps(ctx)
	clear(p.byID)
	p.summaryID = 0
	var show []*prompt
	for _, pr := range p.sortedPrompts() {
		pr.id = 0
		if pr.state != stateVisible {
			continue
		}
		if pr.decided {
			p.nVisible--
			pr.state = stateDetached
			continue
		}
		show = append(show, pr)
	}
	for _, n := range p.notices {
		n.id = 0 // gone with the old server; shown ones are not repeated
	}
	containers := make([]string, 0, len(p.shieldDown))
	for c, sp := range p.shieldDown {
		sp.id = 0
		p.shieldDown[c] = sp
		containers = append(containers, c)
	}
	if p.offline {
		return // shown when a server appears
	}
	for _, pr := range show {
		if p.actions {
			p.post(ctx, pr) // visible, id 0: a fresh popup
		} else {
			p.nVisible--
			p.hide(pr)
		}
	}
	slices.Sort(containers)
	for _, c := range containers {
		sp := p.shieldDown[c]
		sp.id = p.show(ctx, sp.popup, 0)
		p.shieldDown[c] = sp
		if sp.id != 0 {
			p.byID[sp.id] = ref{kind: refShieldDown, container: c}
		}
	}
	now := p.now()
	p.pendingNotices(ctx, now)
	p.promote(ctx, now)
	p.flushSummary(ctx, now, true)
}

func (p *Popups) lifecycle(ctx context.Context, ev event.Event, cat string) {
	if !p.enabled(cat) {
		return
	}
	popup, ok := render.Lifecycle(ev)
	if !ok {
		return
	}
	if !p.mu.LockContext(ctx) {
		return
	}
	defer p.unlock()
	if ev.Type != event.ShieldDown && ev.Type != event.ShieldDisengaged {
		p.show(ctx, popup, 0)
		return
	}
	old := p.shieldDown[ev.Container]
	delete(p.byID, old.id)
	id := p.show(ctx, popup, old.id)
	p.shieldDown[ev.Container] = shieldPopup{id: id, popup: popup}
	if id != 0 {
		p.byID[id] = ref{kind: refShieldDown, container: ev.Container}
	}
}

func (p *Popups) closeShieldDown(ctx context.Context, container string) {
	if !p.mu.LockContext(ctx) {
		return
	}
	defer p.unlock()
	sp, ok := p.shieldDown[container]
	if !ok {
		return
	}
	delete(p.shieldDown, container)
	if sp.id != 0 {
		delete(p.byID, sp.id)
		p.closeID(ctx, sp.id)
	}
}

// The helpers below run with p.mu held.

// goneLocked notes that no notification server is there: calls stop until
// [DaemonRestarted] or [Popups.Reattach] (repost). Prompts keep their
// state; repost shows the visible ones again on the next server.
func (p *Popups) goneLocked() {
	if p.offline {
		return
	}
	p.offline = true
	p.capsKnown = false
	p.log.Info("no notification server; prompts wait for one", "pending", len(p.prompts))
}

// noServer reports whether err says there is no notification server, and
// notes it.
func (p *Popups) noServer(err error) bool {
	if !errors.Is(err, ErrNoServer) {
		return false
	}
	p.goneLocked()
	return true
}

func (p *Popups) ensureCaps(ctx context.Context) {
	if p.capsKnown || p.offline {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	caps, err := p.n.Capabilities(cctx)
	cancel()
	if p.noServer(err) {
		return
	}
	if err != nil {
		// No server (yet): prompts stay pending and are shown when one
		// appears (DaemonRestarted).
		p.log.Debug("notification capabilities unknown", "err", err)
		p.actions = p.maxButtons >= 2
		return
	}
	p.capsKnown = true
	p.actions = slices.Contains(caps, CapActions) && p.maxButtons >= 2
	if !p.actions {
		p.log.Info("notification server shows no action buttons; pointing the operator at clearancectl", "capabilities", caps)
	}
}

func (p *Popups) buttons() []render.Action {
	b := []render.Action{render.ActionAllowButton, render.ActionDenyButton}
	if p.allowFor != "" && p.maxButtons >= 3 {
		b = append(b, render.Action{Key: render.KeyAllowFor, Label: p.allowFor})
	}
	return b
}

// post shows or updates a visible prompt. Without a server it stays
// visible (stale), for repost to show on the next one.
func (p *Popups) post(ctx context.Context, pr *prompt) {
	if p.offline {
		return
	}
	popup := render.Blocked(pr.ev, pr.count, pr.firstSeen)
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	id, err := p.n.Notify(cctx, FromPopup(popup, pr.id, p.buttons()))
	cancel()
	if p.noServer(err) {
		return
	}
	if err != nil {
		p.log.Warn("show prompt", "container", pr.key.container, "request_id", pr.requestID, "err", err)
		if pr.id == 0 { // never shown: wait behind the summary instead
			p.nVisible--
			p.hide(pr)
		}
		return
	}
	if pr.id != 0 && pr.id != id {
		delete(p.byID, pr.id)
	}
	pr.id = id
	pr.stale = false
	p.byID[id] = ref{kind: refPrompt, prompt: pr}
}

// hide puts a prompt at the back of the held-back queue.
func (p *Popups) hide(pr *prompt) {
	pr.state = stateHidden
	p.hidden = append(p.hidden, pr)
	p.nHidden++
	p.summaryStale = true
}

// promote shows held-back prompts while slots and rate allow (and a
// server is there).
func (p *Popups) promote(ctx context.Context, now time.Time) {
	if !p.actions || p.offline {
		return
	}
	const scan = 64 // bounded: a flooding container must not make this quadratic
	for i, seen := 0, 0; i < len(p.hidden) && p.nVisible < p.maxVisible && seen < scan; {
		pr := p.hidden[i]
		if pr.state != stateHidden {
			p.hidden = slices.Delete(p.hidden, i, i+1)
			continue
		}
		seen++
		if !p.take(pr.key.container, now) {
			i++
			continue
		}
		p.hidden = slices.Delete(p.hidden, i, i+1)
		p.nHidden--
		p.summaryStale = true
		pr.state = stateVisible
		p.nVisible++
		p.post(ctx, pr)
		if pr.state == stateHidden || p.offline { // Notify failed; the server is gone
			return
		}
	}
	if len(p.hidden) > 2*p.nHidden+64 {
		p.hidden = slices.DeleteFunc(p.hidden, func(pr *prompt) bool { return pr.state != stateHidden })
	}
}

// flushSummary shows, updates or closes the summary popup. Updates are
// limited to one a second unless force is set; Flush shows the rest.
func (p *Popups) flushSummary(ctx context.Context, now time.Time, force bool) {
	if p.nHidden == 0 {
		p.summaryStale = false
		if p.summaryID != 0 {
			id := p.summaryID
			p.summaryID = 0
			delete(p.byID, id)
			p.closeID(ctx, id)
		}
		return
	}
	if p.offline {
		return // stale until repost shows it
	}
	if !p.summaryStale && !force {
		return // unchanged (or dismissed by the operator: shown again on the next change)
	}
	if !force && p.summaryID != 0 && now.Sub(p.summaryLast) < time.Second {
		return
	}
	var popup render.Popup
	latest := p.latestHidden(3)
	if p.actions {
		lines := make([]string, len(latest))
		for i, pr := range latest {
			lines[i] = render.BlockedLine(pr.ev)
		}
		popup = render.Waiting(p.nHidden, lines)
	} else {
		var line, id string
		if len(latest) > 0 {
			line, id = render.BlockedLine(latest[0].ev), latest[0].requestID
		}
		popup = render.NoActions(p.nHidden, line, id)
	}
	old := p.summaryID
	id := p.show(ctx, popup, old)
	p.summaryLast = now
	if id == 0 {
		return
	}
	p.summaryStale = false
	if old != 0 && old != id {
		delete(p.byID, old)
	}
	p.summaryID = id
	p.byID[id] = ref{kind: refSummary}
}

func (p *Popups) latestHidden(n int) []*prompt {
	var out []*prompt
	for i := len(p.hidden) - 1; i >= 0 && len(out) < n; i-- {
		if pr := p.hidden[i]; pr.state == stateHidden {
			out = append(out, pr)
		}
	}
	return out
}

// resolve forgets a prompt: verdict applied, closed, or container gone.
func (p *Popups) resolve(pr *prompt) {
	switch pr.state {
	case stateVisible:
		p.nVisible--
	case stateHidden:
		p.nHidden--
		p.summaryStale = true
	}
	pr.state = stateGone
	if pr.id != 0 {
		delete(p.byID, pr.id)
	}
	for _, rid := range pr.aliases {
		if p.byRequest[rid] == pr {
			delete(p.byRequest, rid)
		}
	}
	if p.prompts[pr.key] == pr {
		delete(p.prompts, pr.key)
	}
}

// show posts a popup without actions and returns its id, 0 on failure.
func (p *Popups) show(ctx context.Context, popup render.Popup, replaces uint32) uint32 {
	if p.offline {
		return 0
	}
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	id, err := p.n.Notify(cctx, FromPopup(popup, replaces, nil))
	if p.noServer(err) {
		return 0
	}
	if err != nil {
		p.log.Warn("show popup", "summary", popup.Summary, "err", err)
		return 0
	}
	return id
}

func (p *Popups) closeID(ctx context.Context, id uint32) {
	if p.offline {
		return // its popup went with the server
	}
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if err := p.n.Close(cctx, id); err != nil && !p.noServer(err) {
		p.log.Warn("close popup", "id", id, "err", err)
	}
}

// sortedPrompts returns the prompts in arrival order (stable output for
// re-posting and flushing).
func (p *Popups) sortedPrompts() []*prompt {
	out := make([]*prompt, 0, len(p.prompts))
	for _, pr := range p.prompts {
		out = append(out, pr)
	}
	slices.SortFunc(out, func(a, b *prompt) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

// take spends one token of container's rate-limit bucket.
func (p *Popups) take(container string, now time.Time) bool {
	b := p.buckets[container]
	if b == nil {
		b = &bucket{tokens: p.rate, last: now}
		p.buckets[container] = b
	}
	b.tokens = min(p.rate, b.tokens+now.Sub(b.last).Minutes()*p.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

type bucket struct {
	tokens float64
	last   time.Time
}

// unlock releases p.mu and reports a possible change (Changed).
func (p *Popups) unlock() {
	p.mu.Unlock()
	p.changed()
}

// chanMutex is a mutex whose Lock can give up when a context ends, so an
// event for a notifier stuck on a hung server does not pile up forever.
type chanMutex chan struct{}

func newChanMutex() chanMutex { return make(chanMutex, 1) }

func (m chanMutex) Lock() { m <- struct{}{} }

func (m chanMutex) LockContext(ctx context.Context) bool {
	select {
	case m <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (m chanMutex) Unlock() { <-m }
