// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hubclient"
	"github.com/terok-ai/clearance/internal/render"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// Reconnect backoff of a hub's stream (the seed's is 1 s → 10 s).
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// confirmWindow is how long a verdict waits for its confirmation.
const confirmWindow = 2 * time.Minute

// maxInputLine bounds one line of operator input.
const maxInputLine = 4096

const watchHelp = `Commands (each verdict asks for confirmation: type y and Enter):
  a N [DURATION]  allow request N once (for DURATION, e.g. 1h, when given)
  A N             allow request N until its container exits
  d N [DURATION]  deny request N once (for DURATION when given)
  l               list pending requests
  h               this help
  q               quit (also Ctrl-D)`

// msgKind is what a hub worker reports.
type msgKind int

const (
	msgConnected msgKind = iota // subscribed; pending holds the hub's queue
	msgEvent                    // one event from the stream
	msgLost                     // the connection broke; retrying
	msgGone                     // the socket is gone; the worker has stopped
)

// hubMsg is one report of a hub worker to the watch loop.
type hubMsg struct {
	w       *hubWorker
	kind    msgKind
	pending []orgterokclearancehub1.PendingRequest
	compat  bool // the hub has no org.terok.ClearanceHub1 (a seed hub)
	ev      orgterokclearance1.ClearanceEvent
	err     error
}

// hubWorker follows one hub: a Subscribe stream, reconnected with
// backoff, and a second connection for Pending and verdicts. The worker
// goroutine only reads ref and rpc; the remaining fields belong to the
// watch loop.
type hubWorker struct {
	ref  hubRef
	rpc  *hubclient.Caller
	done chan struct{}

	// Owned by the watch loop.
	up     bool
	wasUp  bool
	compat bool
}

func send(ctx context.Context, out chan<- hubMsg, m hubMsg) bool {
	select {
	case out <- m:
		return true
	case <-ctx.Done():
		return false
	}
}

// run follows the hub until ctx ends or its socket disappears
// (hubclient.Follow), telling the watch loop when the stream is lost.
func (hw *hubWorker) run(ctx context.Context, out chan<- hubMsg) {
	defer close(hw.done)
	defer hw.rpc.Close()
	hubclient.Follow(ctx, hw.ref.Path, hw.rpc, hubclient.FollowOptions{
		BackoffMin: minBackoff,
		BackoffMax: maxBackoff,
		Handler:    func(bool) hubclient.Handler { return &workerHandler{hw: hw, out: out} },
		Ended: func(connected bool, err error, _ time.Duration) hubclient.Next {
			if _, serr := os.Stat(hw.ref.Path); errors.Is(serr, fs.ErrNotExist) {
				send(ctx, out, hubMsg{w: hw, kind: msgGone})
				return hubclient.Stop
			}
			if !send(ctx, out, hubMsg{w: hw, kind: msgLost, err: err}) {
				return hubclient.Stop
			}
			return hubclient.Retry
		},
	})
}

// workerHandler relays one subscription to the watch loop.
type workerHandler struct {
	hw  *hubWorker
	out chan<- hubMsg
}

func (h *workerHandler) Connected(ctx context.Context, reqs []orgterokclearancehub1.PendingRequest, hub1 bool) error {
	if !send(ctx, h.out, hubMsg{w: h.hw, kind: msgConnected, pending: reqs, compat: !hub1}) {
		return ctx.Err()
	}
	return nil
}

func (h *workerHandler) Event(ctx context.Context, ev orgterokclearance1.ClearanceEvent) error {
	if !send(ctx, h.out, hubMsg{w: h.hw, kind: msgEvent, ev: ev}) {
		return ctx.Err()
	}
	return nil
}

// prompt is one destination waiting for the operator, numbered for the
// session. Owned by the watch loop.
type prompt struct {
	n         int
	w         *hubWorker
	container string
	requestID string   // the newest request id for this destination
	ids       []string // every request id folded into this prompt
	dest      string
	domain    string
	target    string
	port      int64
	proto     int64
	dossier   map[string]string
	reason    string // the container's own reason, when it asked
	count     int64
	first     time.Time
	open      bool
	inflight  bool
}

type idKey struct {
	w  *hubWorker
	id string
}

type targetKey struct {
	w                 *hubWorker
	container, target string
}

// confirmation is a verdict typed but not yet confirmed.
type confirmation struct {
	p      *prompt
	action string
	scope  string
	ttl    time.Duration
	at     time.Time
}

// decideResult is the hub's answer to a verdict.
type decideResult struct {
	p       *prompt
	action  string
	scope   string
	expires int64
	err     error
}

// watch is the state of one "clearancectl watch" session. Everything but
// the channels is owned by the loop goroutine (run).
type watch struct {
	r      *runner
	ctx    context.Context
	filter string
	globs  []string

	prompts  map[int]*prompt
	byID     map[idKey]*prompt
	byTarget map[targetKey]*prompt
	next     int
	confirm  *confirmation
	workers  map[string]*hubWorker

	msgs    chan hubMsg
	results chan decideResult
	wg      sync.WaitGroup
}

func (r *runner) cmdWatch(ctx context.Context, args []string) int {
	fs := r.newFlags("watch", "[--container ID]",
		`Shows blocked connections of every container as numbered prompts, live,
and sends your verdicts. New hubs are picked up as they appear; a hub that
restarts is reconnected. Input is line based (works over ssh, no raw mode):

`+watchHelp)
	var hf hubFlags
	hf.register(fs, true)
	pos, err := r.parse(fs, args)
	if err != nil {
		return parseExit(err)
	}
	if len(pos) > 0 {
		return r.usageErr(fs, "watch takes no arguments")
	}
	if _, err := discover(r.globs(&hf)); err != nil {
		return r.fail(ExitUsage, "%v", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := &watch{
		r: r, ctx: ctx, filter: hf.container, globs: r.globs(&hf),
		prompts: map[int]*prompt{}, byID: map[idKey]*prompt{}, byTarget: map[targetKey]*prompt{},
		next: 1, workers: map[string]*hubWorker{},
		msgs: make(chan hubMsg, 64), results: make(chan decideResult, 8),
	}
	return w.run(ctx, cancel)
}

func (w *watch) run(ctx context.Context, cancel context.CancelFunc) int {
	lines := readLines(ctx, w.r.stdin)
	defer func() {
		cancel()
		for _, hw := range w.workers {
			<-hw.done
		}
		w.wg.Wait()
	}()
	n := w.scan()
	if n == 0 {
		w.say("", "No hubs yet; waiting for containers (hubs appear under "+clean(w.r.lookedFor())+").")
	} else {
		w.say("", fmt.Sprintf("Watching %d hub(s); new hubs are picked up as they appear.", n))
	}
	w.say(colDim, "Type h for help. a N allows, d N denies, A N allows until the container exits; each asks you to confirm with y.")
	tick := time.NewTicker(w.r.rescan)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ExitOK
		case line, ok := <-lines:
			if !ok {
				return ExitOK
			}
			if w.input(line) {
				return ExitOK
			}
		case m := <-w.msgs:
			w.hubMsg(m)
		case res := <-w.results:
			w.result(res)
		case <-tick.C:
			w.scan()
		}
	}
}

// readLines delivers operator input line by line until EOF or ctx ends.
// Overlong lines are cut at maxInputLine. When ctx ends, a reader that
// supports deadlines (a terminal or pipe opened by os) is unblocked; any
// other reader is left to the process exit.
func readLines(ctx context.Context, in io.Reader) <-chan string {
	out := make(chan string)
	if in == nil {
		close(out)
		return out
	}
	stop := releaseRead(ctx, in)
	go func() {
		defer close(out)
		defer stop()
		br := bufio.NewReaderSize(in, maxInputLine)
		for {
			line, err := br.ReadSlice('\n')
			s := string(line)
			if errors.Is(err, bufio.ErrBufferFull) {
				// Drop the rest of an overlong line.
				for errors.Is(err, bufio.ErrBufferFull) {
					_, err = br.ReadSlice('\n')
				}
			}
			if len(s) > 0 {
				select {
				case out <- s:
				case <-ctx.Done():
					return
				}
			}
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return
			}
		}
	}()
	return out
}

// releaseRead arranges for a read blocked on in to return when ctx ends,
// when in supports deadlines (a terminal or pipe opened by os); any other
// reader is left to the process exit. Call stop when reading is done.
func releaseRead(ctx context.Context, in io.Reader) (stop func() bool) {
	return context.AfterFunc(ctx, func() {
		if d, ok := in.(interface{ SetReadDeadline(time.Time) error }); ok {
			d.SetReadDeadline(time.Unix(1, 0))
		}
	})
}

// scan starts a worker for every new hub socket and returns how many hubs
// are followed.
func (w *watch) scan() int {
	hubs, err := discover(w.globs)
	if err != nil {
		return len(w.workers)
	}
	for _, h := range hubs {
		if _, ok := w.workers[h.Path]; ok {
			continue
		}
		hw := &hubWorker{ref: h, rpc: &hubclient.Caller{Path: h.Path, Timeout: callTimeout}, done: make(chan struct{})}
		w.workers[h.Path] = hw
		go hw.run(w.ctx, w.msgs)
	}
	return len(w.workers)
}

// say prints one line, coloured when colour is on. s must be inert.
func (w *watch) say(col, s string) {
	fmt.Fprintln(w.r.stdout, w.r.paint(col, s))
}

// showHub reports whether lines about hub hw are of interest.
func (w *watch) showHub(hw *hubWorker) bool {
	return w.filter == "" || w.filter == hw.ref.ID
}

func (w *watch) hubMsg(m hubMsg) {
	hw := m.w
	name := clean(hw.ref.ID)
	switch m.kind {
	case msgConnected:
		hw.compat = m.compat
		if w.showHub(hw) || len(m.pending) > 0 {
			word := "connected"
			if hw.wasUp {
				word = "reconnected"
			}
			extra := ""
			if m.compat {
				extra = " (seed hub: plain allow/deny only)"
			}
			w.say(colDim, "hub "+name+": "+word+extra)
		}
		hw.up, hw.wasUp = true, true
		if !m.compat {
			w.reconcile(hw, m.pending)
		}
	case msgLost:
		if hw.up && w.showHub(hw) {
			w.say(colDim, "hub "+name+": connection lost ("+describeErr(m.err)+"); reconnecting")
		}
		hw.up = false
	case msgGone:
		delete(w.workers, hw.ref.Path)
		var closed []string
		for _, p := range w.sortedOpen() {
			if p.w == hw {
				w.close(p)
				closed = append(closed, "["+strconv.Itoa(p.n)+"]")
			}
		}
		if w.showHub(hw) || len(closed) > 0 {
			msg := "hub " + name + ": gone"
			if len(closed) > 0 {
				msg += "; dropped " + strings.Join(closed, " ")
			}
			w.say(colDim, msg)
		}
	case msgEvent:
		w.event(hw, m.ev)
	}
}

// reconcile merges a hub's pending queue (fetched on connect) into the
// prompts: new requests become prompts, prompts the hub no longer holds
// are closed.
func (w *watch) reconcile(hw *hubWorker, reqs []orgterokclearancehub1.PendingRequest) {
	held := map[string]bool{}
	for _, pr := range reqs {
		held[pr.Request_id] = true
		ev := orgterokclearance1.ClearanceEvent{
			Type: event.ConnectionBlocked, Container: pr.Container, Request_id: pr.Request_id,
			Dest: pr.Dest, Port: pr.Port, Proto: pr.Proto, Domain: pr.Domain, Dossier: pr.Dossier,
		}
		if pr.Reason != nil {
			ev.Reason = *pr.Reason
		}
		w.blocked(hw, ev, pr.Count, usecTime(pr.First_seen_usec), true)
	}
	for _, p := range w.sortedOpen() {
		if p.w != hw || p.inflight {
			continue
		}
		still := false
		for _, id := range p.ids {
			still = still || held[id]
		}
		if !still {
			w.close(p)
			w.say(colDim, w.tag(p)+" no longer pending "+w.what(p))
		}
	}
}

func (w *watch) event(hw *hubWorker, ev orgterokclearance1.ClearanceEvent) {
	switch ev.Type {
	case event.ConnectionBlocked:
		w.blocked(hw, ev, 0, time.Time{}, false)
	case event.VerdictApplied:
		w.applied(hw, ev)
	case event.ContainerExited, event.ShieldDown, event.ShieldDisengaged:
		if !matches(w.filter, hw.ref.ID, ev.Container) {
			return
		}
		var closed []string
		for _, p := range w.sortedOpen() {
			if p.w == hw && p.container == ev.Container {
				w.close(p)
				closed = append(closed, "["+strconv.Itoa(p.n)+"]")
			}
		}
		who := render.IdentityLabel(ev.Dossier, ev.Container)
		var msg string
		switch ev.Type {
		case event.ContainerExited:
			msg = "container " + who + " exited"
			if ev.Reason != "" {
				msg += " (" + clean(ev.Reason) + ")"
			}
		case event.ShieldDown:
			msg = "shield down for " + who + ": its traffic is not filtered"
		default:
			msg = "shield disengaged for " + who + ": its traffic is not filtered"
		}
		if len(closed) > 0 {
			msg += "; dropped " + strings.Join(closed, " ")
		}
		col := colDim
		if ev.Type != event.ContainerExited {
			col = colRed
		}
		w.say(col, msg)
	case event.ContainerStarted, event.ShieldUp:
		if !matches(w.filter, hw.ref.ID, ev.Container) {
			return
		}
		who := render.IdentityLabel(ev.Dossier, ev.Container)
		if ev.Type == event.ContainerStarted {
			w.say(colDim, "container "+who+" started")
		} else {
			w.say(colDim, "shield up for "+who)
		}
	case event.VerdictExpired:
		if !matches(w.filter, hw.ref.ID, ev.Container) {
			return
		}
		target := ev.Domain // a verdict on a name
		if target == "" {
			target = ev.Dest
		}
		w.say(colDim, "verdict expired for "+clean(target)+" ("+clean(ev.Container)+")")
	case event.HubNotice:
		// The hub runs on its defaults, or the container is in observe
		// mode (not enforced): said once, loudly.
		if matches(w.filter, hw.ref.ID, ev.Container) || ev.Container == "" {
			w.say(colRed, "hub "+clean(hw.ref.ID)+": "+clean(ev.Reason))
		}
	case event.Observed:
		if !matches(w.filter, hw.ref.ID, ev.Container) {
			return
		}
		target := ev.Domain
		if target == "" {
			target = ev.Dest
		}
		w.say(colDim, "observed "+endpoint(target, ev.Port, ev.Proto)+" ("+
			render.IdentityLabel(ev.Dossier, ev.Container)+", observe mode: let through)")
	}
	// Unknown types are ignored, as the seed's clients do.
}

// blocked turns a connection_blocked event (or a pending request fetched
// on connect, quiet=true with the hub's count) into a prompt or a repeat.
func (w *watch) blocked(hw *hubWorker, ev orgterokclearance1.ClearanceEvent, count int64, first time.Time, quiet bool) {
	if !matches(w.filter, hw.ref.ID, ev.Container) || ev.Request_id == "" {
		return
	}
	target := ev.Domain
	if target == "" {
		target = ev.Dest
	}
	if target == "" {
		return
	}
	p := w.byID[idKey{hw, ev.Request_id}]
	if p == nil || !p.open {
		p = w.byTarget[targetKey{hw, ev.Container, target}]
		if p != nil && !p.open {
			p = nil
		}
	}
	if p != nil {
		// A repeat: the same request re-announced, or a newer request for
		// the same destination (a verdict on it decides both).
		if !containsStr(p.ids, ev.Request_id) {
			p.ids = append(p.ids, ev.Request_id)
			w.byID[idKey{hw, ev.Request_id}] = p
		}
		p.requestID = ev.Request_id
		if count > p.count {
			p.count = count
		} else if !quiet {
			p.count++
		}
		p.port, p.proto = ev.Port, ev.Proto
		if ev.Reason != "" && p.reason == "" {
			// The container asked for it after it was blocked.
			p.reason = ev.Reason
			w.say(colYellow, w.tag(p)+" ASKED  "+w.what(p)+"  "+clean(render.ReasonLine(ev.Reason)))
			return
		}
		if !quiet {
			w.say(colYellow, w.tag(p)+" blocked again  "+w.what(p)+w.times(p))
		}
		return
	}
	if first.IsZero() {
		first = w.r.now()
	}
	if count < 1 {
		count = 1
	}
	p = &prompt{
		n: w.next, w: hw, container: ev.Container, requestID: ev.Request_id, ids: []string{ev.Request_id},
		dest: ev.Dest, domain: ev.Domain, target: target, port: ev.Port, proto: ev.Proto,
		dossier: ev.Dossier, reason: ev.Reason, count: count, first: first, open: true,
	}
	w.next++
	w.prompts[p.n] = p
	w.byID[idKey{hw, ev.Request_id}] = p
	w.byTarget[targetKey{hw, ev.Container, target}] = p
	word := " BLOCKED  "
	if p.reason != "" {
		word = " ASKED  " // the container asked before it connected
	}
	line := w.tag(p) + word + w.what(p) + "  " + render.IdentityLine(p.dossier, p.container) + w.times(p)
	if p.reason != "" {
		line += "\n      " + clean(render.ReasonLine(p.reason))
	}
	w.say(colYellow, line)
}

func containsStr(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// applied reports a verdict_applied event (ours or another channel's).
func (w *watch) applied(hw *hubWorker, ev orgterokclearance1.ClearanceEvent) {
	p := w.byID[idKey{hw, ev.Request_id}]
	if p == nil {
		return
	}
	if !ev.Ok {
		w.say(colRed, w.tag(p)+" FAILED  "+clean(ev.Action)+" "+w.what(p)+"; still pending")
		return
	}
	if !p.open {
		return
	}
	w.close(p)
	by := ""
	if !p.inflight {
		// Another channel decided: say who ("by alice (uid 1000) via
		// notifier"); a seed hub leaves reason empty.
		by = clean(ev.Reason)
	}
	w.outcome(p, ev.Action, by)
}

func (w *watch) outcome(p *prompt, action, by string) {
	col := colRed
	if action == event.ActionAllow {
		col = colGreen
	}
	line := w.tag(p) + " " + pastTense(action) + "  " + w.what(p) + "  (" + render.IdentityLabel(p.dossier, p.container) + ")"
	if by != "" {
		line += "  " + by
	}
	w.say(col, line)
}

func (w *watch) close(p *prompt) {
	p.open = false
	k := targetKey{p.w, p.container, p.target}
	if w.byTarget[k] == p {
		delete(w.byTarget, k)
	}
	if w.confirm != nil && w.confirm.p == p {
		w.confirm = nil
	}
}

func (w *watch) result(res decideResult) {
	p := res.p
	p.inflight = false
	if res.err == nil {
		if p.open {
			w.close(p)
			w.outcome(p, res.action, "")
		}
		if s := w.r.scopeText(res.scope, res.expires); s != "once" {
			w.say(colDim, w.tag(p)+" "+res.action+" "+s)
		}
		return
	}
	switch varlinkapi.ErrorName(res.err) {
	case errUnknownRequest:
		if p.open {
			w.close(p)
		}
		w.say(colDim, w.tag(p)+" no longer pending (decided elsewhere, expired or purged)")
	case errAlreadyDecided:
		if p.open {
			w.close(p)
		}
		w.say(colDim, w.tag(p)+" "+describeErr(res.err))
	case errShieldFailed:
		w.say(colRed, w.tag(p)+" "+describeErr(res.err)+"; try again with "+cmdFor(res)+" "+strconv.Itoa(p.n))
	default:
		w.say(colRed, w.tag(p)+" verdict not applied: "+describeErr(res.err))
	}
}

// cmdFor is the watch command that repeats a verdict.
func cmdFor(res decideResult) string {
	switch {
	case res.scope == scopeContainer:
		return "A"
	case res.action == event.ActionDeny:
		return "d"
	}
	return "a"
}

// tag is "[N]".
func (w *watch) tag(p *prompt) string {
	if h := hostOf(p.w.ref.ID); h != "" {
		return "[" + strconv.Itoa(p.n) + " " + clean(h) + "]"
	}
	return "[" + strconv.Itoa(p.n) + "]"
}

// what is "target:port/proto (ip)", inert.
func (w *watch) what(p *prompt) string {
	s := endpoint(p.target, p.port, p.proto)
	if p.domain != "" && p.dest != "" {
		s += " (" + clean(p.dest) + ")"
	}
	return s
}

// times is the coalesced count, " ×N", when above one.
func (w *watch) times(p *prompt) string {
	if p.count > 1 {
		return "  ×" + strconv.FormatInt(p.count, 10)
	}
	return ""
}

func (w *watch) sortedOpen() []*prompt {
	var out []*prompt
	for _, p := range w.prompts {
		if p.open {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].n < out[j].n })
	return out
}

// input handles one line from the operator and reports whether to quit.
func (w *watch) input(line string) bool {
	line = strings.TrimSpace(line)
	if line == "" {
		return false
	}
	if c := w.confirm; c != nil {
		w.confirm = nil
		switch strings.ToLower(line) {
		case "y", "yes":
			switch {
			case w.r.now().Sub(c.at) > confirmWindow:
				w.say("", "That confirmation expired; type the command again.")
			case !c.p.open:
				w.say("", w.tag(c.p)+" is no longer pending.")
			default:
				w.dispatch(c)
			}
			return false
		case "n", "no":
			w.say("", "Cancelled.")
			return false
		}
		w.say("", "Cancelled "+w.tag(c.p)+".")
	}
	fields := strings.Fields(line)
	cmd := fields[0]
	if cmd != "A" {
		cmd = strings.ToLower(cmd)
	}
	switch cmd {
	case "q", "quit", "exit":
		return true
	case "l", "list", "ls":
		w.list()
	case "h", "help", "?":
		w.say("", watchHelp)
	case "y", "yes":
		w.say("", "Nothing to confirm.")
	case "a", "allow", "d", "deny", "A":
		w.ask(cmd, fields[1:])
	default:
		w.say("", "Unknown command "+strconv.Quote(clean(fields[0]))+" (type h for help).")
	}
	return false
}

// ask parses a verdict command and asks for confirmation.
func (w *watch) ask(cmd string, args []string) {
	action, scope := event.ActionAllow, scopeOnce
	switch cmd {
	case "d", "deny":
		action = event.ActionDeny
	case "A":
		scope = scopeContainer
	}
	if len(args) == 0 || len(args) > 2 || (scope == scopeContainer && len(args) > 1) {
		if scope == scopeContainer {
			w.say("", "Usage: A N")
		} else {
			w.say("", "Usage: "+cmd+" N [DURATION]")
		}
		return
	}
	num := strings.Trim(args[0], "[]")
	n, err := strconv.Atoi(num)
	if err != nil {
		w.say("", "Invalid request number "+strconv.Quote(clean(args[0]))+".")
		return
	}
	p := w.prompts[n]
	if p == nil || !p.open {
		w.say("", "No pending request ["+strconv.Itoa(n)+"].")
		return
	}
	if p.inflight {
		w.say("", w.tag(p)+": a verdict is already on its way.")
		return
	}
	var ttl time.Duration
	if len(args) == 2 {
		ttl, err = parseDuration(args[1])
		if err != nil {
			w.say("", clean(err.Error())+".")
			return
		}
	}
	if p.w.compat && (scope != scopeOnce || ttl > 0) {
		w.say("", "The hub of "+w.tag(p)+" is a seed hub: only plain a N and d N work there.")
		return
	}
	how := "once"
	switch {
	case scope == scopeContainer:
		how = "until the container exits"
	case ttl > 0:
		how = "for " + ttl.String()
	}
	verb := "Allow"
	if action == event.ActionDeny {
		verb = "Deny"
	}
	w.confirm = &confirmation{p: p, action: action, scope: scope, ttl: ttl, at: w.r.now()}
	w.say(colBold, verb+" "+w.what(p)+" for "+render.IdentityLabel(p.dossier, p.container)+", "+how+
		"? Type y and Enter to confirm (anything else cancels).")
}

// dispatch sends a confirmed verdict on the hub's method connection.
func (w *watch) dispatch(c *confirmation) {
	p := c.p
	p.inflight = true
	hw, id, container, target := p.w, p.requestID, p.container, p.target
	compat := hw.compat
	w.say(colDim, w.tag(p)+" sending "+c.action+"...")
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		res := decideResult{p: p, action: c.action, scope: c.scope}
		res.err = hw.rpc.Call(w.ctx, func(ctx context.Context, conn *varlink.Connection) error {
			if compat {
				_, err := orgterokclearance1.Verdict().Call(ctx, conn, container, id, target, c.action)
				return err
			}
			var err error
			_, res.expires, err = orgterokclearancehub1.Decide().Call(ctx, conn, id, c.action, c.scope,
				int64(c.ttl/time.Second), nil, &channelCtl)
			return err
		})
		select {
		case w.results <- res:
		case <-w.ctx.Done():
		}
	}()
}

func (w *watch) list() {
	open := w.sortedOpen()
	if len(open) == 0 {
		w.say("", "  (no pending requests)")
		return
	}
	now := w.r.now()
	for _, p := range open {
		state := ""
		if p.inflight {
			state = "  (sending)"
		}
		w.say("", "  "+w.tag(p)+" "+w.what(p)+"  "+render.IdentityLine(p.dossier, p.container)+
			w.times(p)+"  "+age(now.Sub(p.first))+" ago"+state)
	}
}
