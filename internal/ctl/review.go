// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"fmt"
	"io"
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
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// Groupings of the review list.
const (
	groupByName      = "name"
	groupByContainer = "container"
)

// reviewItem is one pending request in a review: what one hub's Pending
// returned, with the labels the views print (all inert).
type reviewItem struct {
	hub hubRef
	req orgterokclearancehub1.PendingRequest

	key       string // hub socket + request id: unique across hubs
	name      string // the domain, else the address: what a name group shows
	container string // the container label (name, else the hub's id)
	who       string // the identity label from the dossier
	portProto string // "443/tcp"
	addr      string // the address, when the name is a domain
	first     time.Time

	// The item's line under a name group and under a container group,
	// and their widths in columns (computed once: a refresh draws them
	// all).
	underName, underContainer   string
	underNameW, underContainerW int
}

// reviewGroup is a group of items: one name, or one container.
type reviewGroup struct {
	id    string // the name, or the hub's socket and the container
	label string // inert
	items []*reviewItem
	hits  int64
	first time.Time
	// containers counts the distinct containers (a name group).
	containers int
}

// reviewModel is the pending set of one refresh, grouped and ordered:
// groups by label, items by container then name then port. It is the
// same for both views.
type reviewModel struct {
	items  []*reviewItem
	groups []*reviewGroup
	group  string // groupByName or groupByContainer
	hubs   int
	// problems are the hubs that did not answer, one inert line each.
	problems []string
}

// newReviewItem labels one pending request.
func newReviewItem(h hubRef, p orgterokclearancehub1.PendingRequest) *reviewItem {
	name := p.Domain
	if name == "" {
		name = p.Target
	}
	if name == "" {
		name = p.Dest
	}
	it := &reviewItem{
		hub: h, req: p, key: h.Path + "\x00" + p.Request_id,
		name:      clean(name),
		container: clean(containerLabel(p.Container, h.ID)),
		who:       render.IdentityLabel(p.Dossier, ""),
		first:     usecTime(p.First_seen_usec),
	}
	if it.name == "" {
		it.name = "?"
	}
	if p.Port > 0 {
		it.portProto = strconv.FormatInt(p.Port, 10)
	}
	if p.Proto > 0 {
		it.portProto += "/" + protoName(p.Proto)
	}
	if p.Domain != "" && p.Dest != "" && p.Dest != p.Domain {
		it.addr = clean(p.Dest)
	}
	it.underName = it.container
	if it.who != "" && it.who != it.container {
		it.underName += " (" + it.who + ")"
	}
	it.underName += "  " + it.portProto
	if it.addr != "" {
		it.underName += "  " + it.addr
	}
	it.underContainer = it.target()
	it.underNameW = columns(it.underName)
	it.underContainerW = columns(it.underContainer)
	return it
}

// short is "name:port/proto" with the name cut to 40 runes: how a batch
// question or outcome names one request among others.
func (it *reviewItem) short() string {
	return endpoint(fit(it.name, 40), it.req.Port, it.req.Proto)
}

// target is "name:port/proto (address)", as a verdict line shows it.
func (it *reviewItem) target() string {
	s := endpoint(it.name, it.req.Port, it.req.Proto)
	if it.addr != "" {
		s += " (" + it.addr + ")"
	}
	return s
}

// buildReview turns the hubs' answers into a model grouped by group
// (groupByName or groupByContainer), keeping only filter's container.
func buildReview(answers []hubPending, filter, group string) *reviewModel {
	m := &reviewModel{hubs: len(answers)}
	for _, hp := range answers {
		if hp.err != nil {
			if filter == "" || filter == hp.hub.ID {
				m.problems = append(m.problems, "hub "+clean(hp.hub.ID)+": "+describeErr(hp.err))
			}
			continue
		}
		for _, p := range hp.reqs {
			if p.Request_id == "" || !matches(filter, hp.hub.ID, p.Container) {
				continue
			}
			m.items = append(m.items, newReviewItem(hp.hub, p))
		}
	}
	m.regroup(group)
	return m
}

// regroup (re)builds the groups.
func (m *reviewModel) regroup(group string) {
	byID := map[string]*reviewGroup{}
	m.group = group
	m.groups = m.groups[:0]
	for _, it := range m.items {
		// A container group is one hub's container, labelled with its
		// name and the identity its dossier gives.
		id, label := it.name, it.name
		if group == groupByContainer {
			id, label = it.hub.Path+"\x00"+it.container, it.container
		}
		g := byID[id]
		if g == nil {
			g = &reviewGroup{id: id, label: label}
			byID[id] = g
			m.groups = append(m.groups, g)
		}
		if group == groupByContainer && g.label == it.container && it.who != "" && it.who != it.container {
			g.label += "  " + it.who
		}
		g.items = append(g.items, it)
		g.hits += it.req.Count
		if !it.first.IsZero() && (g.first.IsZero() || it.first.Before(g.first)) {
			g.first = it.first
		}
	}
	sort.Slice(m.groups, func(i, j int) bool {
		if m.groups[i].label != m.groups[j].label {
			return m.groups[i].label < m.groups[j].label
		}
		return m.groups[i].id < m.groups[j].id
	})
	for _, g := range m.groups {
		sort.SliceStable(g.items, func(i, j int) bool {
			a, b := g.items[i], g.items[j]
			switch {
			case a.container != b.container:
				return a.container < b.container
			case a.name != b.name:
				return a.name < b.name
			case a.req.Port != b.req.Port:
				return a.req.Port < b.req.Port
			}
			return a.key < b.key
		})
		seen := map[string]bool{}
		for _, it := range g.items {
			seen[it.hub.Path+"\x00"+it.container] = true
		}
		g.containers = len(seen)
	}
	// The items in display order, so numbers follow the screen.
	m.items = m.items[:0]
	for _, g := range m.groups {
		m.items = append(m.items, g.items...)
	}
}

// groupSummary is "3 containers, 12 hits, oldest 5m" (a name group) or
// "4 requests, 9 hits, oldest 5m" (a container group).
func groupSummary(g *reviewGroup, group string, now time.Time) string {
	var parts []string
	if group == groupByName {
		parts = append(parts, plural(g.containers, "container"))
	} else {
		parts = append(parts, plural(len(g.items), "request"))
	}
	parts = append(parts, plural(int(g.hits), "hit"))
	if !g.first.IsZero() {
		parts = append(parts, "oldest "+age(now.Sub(g.first)))
	}
	return strings.Join(parts, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// reviewDecision is a verdict for a batch of requests.
type reviewDecision struct {
	action  string
	scope   string
	ttl     time.Duration
	anyPort bool
}

// how is "once", "for 1h0m0s", "until the container exits", "always".
func (d reviewDecision) how() string {
	s := "once"
	switch {
	case d.scope == scopeContainer:
		s = "until the container exits"
	case d.scope == scopeAlways:
		s = "always (written to the container's policy)"
	case d.ttl > 0:
		s = "for " + d.ttl.String()
	}
	if d.anyPort {
		s += ", every port"
	}
	return s
}

// question is the one confirmation a batch asks: "Allow 3 requests in 2
// containers (a.example:443/tcp in c1, ...), for 1h0m0s?".
func (d reviewDecision) question(items []*reviewItem, maxList int) string {
	verb := "Allow"
	if d.action == event.ActionDeny {
		verb = "Deny"
	}
	containers := map[string]bool{}
	for _, it := range items {
		containers[it.hub.Path+"\x00"+it.container] = true
	}
	var list []string
	for i, it := range items {
		if i == maxList {
			list = append(list, "and "+strconv.Itoa(len(items)-maxList)+" more")
			break
		}
		list = append(list, it.short()+" in "+fit(it.container, 40))
	}
	return fmt.Sprintf("%s %s in %s (%s), %s?", verb, plural(len(items), "request"),
		plural(len(containers), "container"), strings.Join(list, ", "), d.how())
}

// reviewResult is the hub's answer for one request of a batch.
type reviewResult struct {
	it      *reviewItem
	expires int64
	err     error
}

// gone reports whether the request was no longer there to decide: it was
// decided elsewhere, expired or purged (not a failure of this verdict).
func (res reviewResult) gone() bool {
	switch varlinkapi.ErrorName(res.err) {
	case errUnknownRequest, errAlreadyDecided:
		return true
	}
	return false
}

// decideBatch sends d for every item: one connection per hub, the hubs
// concurrently, a hub's requests in order. Results keep the items' order.
func decideBatch(ctx context.Context, items []*reviewItem, d reviewDecision) []reviewResult {
	out := make([]reviewResult, len(items))
	byHub := map[string][]int{}
	var order []string
	for i, it := range items {
		if _, ok := byHub[it.hub.Path]; !ok {
			order = append(order, it.hub.Path)
		}
		byHub[it.hub.Path] = append(byHub[it.hub.Path], i)
	}
	var wg sync.WaitGroup
	for _, path := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &hubclient.Caller{Path: path, Timeout: callTimeout}
			defer p.Close()
			for _, i := range byHub[path] {
				it := items[i]
				res := reviewResult{it: it}
				res.err = p.Call(ctx, func(ctx context.Context, c *varlink.Connection) error {
					var anyPort *bool
					if d.anyPort {
						anyPort = &d.anyPort
					}
					var err error
					_, res.expires, err = orgterokclearancehub1.Decide().Call(ctx, c, it.req.Request_id, d.action,
						d.scope, int64(d.ttl/time.Second), anyPort, &channelCtl)
					return err
				})
				out[i] = res
			}
		}()
	}
	wg.Wait()
	return out
}

// summarise is the one-line outcome of a batch ("allowed 3 of 4 ...")
// and a line per request that was not decided, all inert. failed counts
// the verdicts that were refused or not answered.
func (r *runner) summarise(d reviewDecision, results []reviewResult) (summary string, details []string, failed int) {
	ok, gone := 0, 0
	var lastExpiry int64
	for _, res := range results {
		switch {
		case res.err == nil:
			ok++
			lastExpiry = max(lastExpiry, res.expires)
		case res.gone():
			gone++
			details = append(details, res.it.short()+" in "+fit(res.it.container, 40)+": "+describeErr(res.err))
		default:
			failed++
			details = append(details, res.it.short()+" in "+fit(res.it.container, 40)+": "+describeErr(res.err))
		}
	}
	summary = fmt.Sprintf("%s %d of %d", pastTense(d.action), ok, len(results))
	if ok > 0 {
		how := r.scopeText(d.scope, lastExpiry)
		if d.anyPort {
			how += ", every port"
		}
		summary += ", " + how
	}
	if gone > 0 {
		summary += fmt.Sprintf("; %d no longer pending", gone)
	}
	if failed > 0 {
		summary += fmt.Sprintf("; %d failed", failed)
	}
	return summary, details, failed
}

const reviewSynopsis = "[--container ID] [--group name|container] [--line-mode]"

const reviewDescription = `Reviews the requests pending on every hub at once: grouped by name (or
by container), with counts and ages. Select several, allow or deny them
with one scope and duration, and confirm once.

On a terminal it is a full-screen view (plain ANSI, works over ssh):
  up/down, k/j     move          PgUp/PgDn, Home/End  page, first, last
  space            select the request (on a group: the whole group)
  *                select every request; again: none
  a / d            allow / deny the selection (or the request or group
                   under the cursor), then choose the scope:
                   o once, t for a time (type it: 30s, 15m, 1h, 2d, 1w),
                   c until the container exits, A always (written to the
                   policy); p widens it to every port; then y confirms
  tab              group by name / by container
  r                refresh now (it refreshes every second anyway)
  q, Ctrl-C        quit

When standard input or output is not a terminal (or with --line-mode) it
reads commands line by line instead:
  list                       list the pending requests, numbered
  allow|deny SEL [SCOPE] [any-port]
                             SEL: numbers and ranges (1,3-5), or all;
                             SCOPE: once (default), for DURATION,
                             until-exit or always; then y confirms
  group name|container       regroup (and list again)
  quit                       (also end of input)`

func (r *runner) cmdReview(ctx context.Context, args []string) int {
	fs := r.newFlags("review", reviewSynopsis, reviewDescription)
	var hf hubFlags
	hf.register(fs, true)
	group := fs.String("group", groupByName, "group the requests by `WHAT`: name (the default) or container")
	lines := fs.Bool("line-mode", false, "read numbered commands line by line, even on a terminal")
	pos, err := r.parse(fs, args)
	if err != nil {
		return parseExit(err)
	}
	if len(pos) > 0 {
		return r.usageErr(fs, "review takes no arguments")
	}
	if *group != groupByName && *group != groupByContainer {
		return r.usageErr(fs, "--group is name or container, not %q", clean(*group))
	}
	if _, err := discover(r.globs(&hf)); err != nil {
		return r.fail(ExitUsage, "%v", err)
	}
	rv := &review{r: r, globs: r.globs(&hf), filter: hf.container, group: *group}
	if !*lines && isTerminal(r.stdin) && isTerminal(r.stdout) && r.env("TERM") != "dumb" {
		return rv.screen(ctx)
	}
	return rv.lineMode(ctx)
}

// review is one "clearancectl review" session.
type review struct {
	r      *runner
	globs  []string
	filter string
	group  string
}

// fetch asks every hub for its pending requests, grouped by group.
func (rv *review) fetch(ctx context.Context, group string) *reviewModel {
	hubs, err := discover(rv.globs)
	if err != nil {
		return &reviewModel{group: group, problems: []string{clean(err.Error())}}
	}
	return buildReview(collectPending(ctx, hubs), rv.filter, group)
}

// lineMode is the review without a terminal: numbered listings and
// commands read line by line.
func (rv *review) lineMode(ctx context.Context) int {
	r := rv.r
	code := ExitOK
	m := rv.fetch(ctx, rv.group)
	rv.list(m)
	if len(m.problems) > 0 {
		code = ExitFailure
	}
	say := func(s string) { fmt.Fprintln(r.stdout, s) }
	say(`Type "allow 1,3-5 for 1h", "deny all", "list" or "quit" (help: "help").`)
	in := readLines(ctx, r.stdin)
	var pending []*reviewItem // a batch waiting for its confirmation
	var pendingD reviewDecision
	decided := map[string]bool{}
	for {
		var line string
		var ok bool
		select {
		case <-ctx.Done():
			return code
		case line, ok = <-in:
		}
		if !ok {
			if pending != nil {
				say("End of input: nothing sent.")
			}
			return code
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if pending != nil {
			batch, d := pending, pendingD
			pending = nil
			if l := strings.ToLower(line); l == "y" || l == "yes" {
				results := decideBatch(ctx, batch, d)
				summary, details, failed := r.summarise(d, results)
				say(summary)
				for _, s := range details {
					say("  " + s)
				}
				for _, res := range results {
					if res.err == nil || res.gone() {
						decided[res.it.key] = true
					}
				}
				if failed > 0 {
					code = ExitFailure
				}
				continue
			}
			say("Cancelled; nothing sent.")
			if l := strings.ToLower(line); l == "n" || l == "no" {
				continue
			}
		}
		fields := strings.Fields(line)
		switch strings.ToLower(fields[0]) {
		case "q", "quit", "exit":
			return code
		case "h", "help", "?":
			say(reviewDescription)
		case "l", "list", "ls":
			m = rv.fetch(ctx, rv.group)
			rv.list(m)
			clear(decided)
		case "g", "group":
			if len(fields) != 2 || (fields[1] != groupByName && fields[1] != groupByContainer) {
				say("Usage: group name|container")
				continue
			}
			rv.group = fields[1]
			m = rv.fetch(ctx, rv.group)
			rv.list(m)
			clear(decided)
		case "a", "allow", "d", "deny":
			action := event.ActionAllow
			if strings.HasPrefix(strings.ToLower(fields[0]), "d") {
				action = event.ActionDeny
			}
			if len(fields) < 2 {
				say("Usage: " + strings.ToLower(fields[0]) + " SEL [once | for DURATION | until-exit | always] [any-port]")
				continue
			}
			sel, err := parseSelection(fields[1], len(m.items))
			if err != nil {
				say(clean(err.Error()) + ".")
				continue
			}
			d, err := parseScope(action, fields[2:])
			if err != nil {
				say(clean(err.Error()) + ".")
				continue
			}
			var batch []*reviewItem
			var skipped []string
			for _, n := range sel {
				it := m.items[n-1]
				if decided[it.key] {
					skipped = append(skipped, strconv.Itoa(n))
					continue
				}
				batch = append(batch, it)
			}
			if len(skipped) > 0 {
				say("Already decided in this review: " + strings.Join(skipped, ", ") + ".")
			}
			if len(batch) == 0 {
				say("Nothing to decide.")
				continue
			}
			pending, pendingD = batch, d
			say(d.question(batch, 5) + " Type y and Enter to confirm (anything else cancels).")
		default:
			say("Unknown command " + strconv.Quote(clean(fields[0])) + " (type help).")
		}
	}
}

// list prints a model as a numbered, grouped listing.
func (rv *review) list(m *reviewModel) {
	w := rv.r.stdout
	for _, p := range m.problems {
		fmt.Fprintln(rv.r.stderr, "clearancectl: "+p)
	}
	if len(m.items) == 0 {
		if m.hubs == 0 {
			fmt.Fprintf(w, "No hubs found (looked for %s); no pending requests.\n", clean(rv.r.lookedFor()))
		} else {
			fmt.Fprintf(w, "No pending requests on %s.\n", plural(m.hubs, "hub"))
		}
		return
	}
	fmt.Fprintf(w, "%s in %s on %s, grouped by %s:\n", plural(len(m.items), "pending request"),
		plural(len(m.groups), "group"), plural(m.hubs, "hub"), rv.group)
	now := rv.r.now()
	n := 0
	for _, g := range m.groups {
		fmt.Fprintln(w, rv.r.paint(colBold, g.label)+"  ("+groupSummary(g, rv.group, now)+")")
		t := &table{}
		for _, it := range g.items {
			n++
			t.add(rowCells(it, n, rv.group, now)...)
		}
		writeRows(w, t.rows)
	}
}

// rowCells are one item's columns: number, what (the container, port
// and address under a name; the destination under a container), count,
// age.
func rowCells(it *reviewItem, n int, group string, now time.Time) []string {
	cells := []string{"  " + strconv.Itoa(n)}
	if group == groupByName {
		who := it.container
		if it.who != "" && it.who != it.container {
			who += " (" + it.who + ")"
		}
		cells = append(cells, who, it.portProto, it.addr)
	} else {
		cells = append(cells, it.target())
	}
	ago := "?"
	if !it.first.IsZero() {
		ago = age(now.Sub(it.first))
	}
	return append(cells, "x"+strconv.FormatInt(it.req.Count, 10), ago)
}

// writeRows writes aligned rows (cells inert) without a header.
func writeRows(w io.Writer, rows [][]string) {
	width := map[int]int{}
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], visibleLen(c))
		}
	}
	for _, row := range rows {
		var b strings.Builder
		for i, c := range row {
			b.WriteString(c)
			if i < len(row)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-visibleLen(c)+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// parseSelection parses "1,3-5" or "all" against n items, in order,
// without duplicates.
func parseSelection(s string, n int) ([]int, error) {
	if n == 0 {
		return nil, fmt.Errorf("nothing is pending (type list to look again)")
	}
	if strings.EqualFold(s, "all") {
		out := make([]int, n)
		for i := range out {
			out[i] = i + 1
		}
		return out, nil
	}
	seen := map[int]bool{}
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 1 || b < a {
			return nil, fmt.Errorf("invalid selection %q (numbers and ranges, e.g. 1,3-5, or all)", s)
		}
		if b > n {
			return nil, fmt.Errorf("no request %d: the listing has %d (type list to look again)", b, n)
		}
		for i := a; i <= b; i++ {
			if !seen[i] {
				seen[i] = true
				out = append(out, i)
			}
		}
	}
	return out, nil
}

// parseScope parses the words after a line-mode selection: once (the
// default), for DURATION, until-exit, always, and any-port.
func parseScope(action string, words []string) (reviewDecision, error) {
	d := reviewDecision{action: action, scope: scopeOnce}
	set := false
	scope := func() error {
		if set {
			return fmt.Errorf("one scope only: once, for DURATION, until-exit or always")
		}
		set = true
		return nil
	}
	for i := 0; i < len(words); i++ {
		switch strings.ToLower(words[i]) {
		case "once":
			if err := scope(); err != nil {
				return d, err
			}
		case "for":
			if err := scope(); err != nil {
				return d, err
			}
			if i+1 == len(words) {
				return d, fmt.Errorf("for needs a duration (30s, 15m, 1h, 2d, 1w)")
			}
			i++
			ttl, err := parseDuration(words[i])
			if err != nil {
				return d, err
			}
			d.ttl = ttl
		case "until-exit":
			if err := scope(); err != nil {
				return d, err
			}
			d.scope = scopeContainer
		case "always":
			if err := scope(); err != nil {
				return d, err
			}
			d.scope = scopeAlways
		case "any-port":
			d.anyPort = true
		default:
			return d, fmt.Errorf("unknown scope %q (once, for DURATION, until-exit, always, any-port)", words[i])
		}
	}
	return d, nil
}
