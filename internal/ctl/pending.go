// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/terok-ai/clearance/internal/render"
)

// pendingJSON is one row of "pending --json".
type pendingJSON struct {
	Hub           string            `json:"hub"`
	Socket        string            `json:"socket"`
	Container     string            `json:"container"`
	RequestID     string            `json:"request_id"`
	Dest          string            `json:"dest"`
	Port          int64             `json:"port"`
	Proto         int64             `json:"proto"`
	Domain        string            `json:"domain"`
	Target        string            `json:"target"`
	Dossier       map[string]string `json:"dossier"`
	Count         int64             `json:"count"`
	FirstSeenUsec int64             `json:"first_seen_usec"`
	LastSeenUsec  int64             `json:"last_seen_usec"`
	// Reason is the container's own reason, when it asked for the
	// destination through its ask endpoint (its unverified claim).
	Reason string `json:"reason,omitempty"`
}

func (r *runner) cmdPending(ctx context.Context, args []string) int {
	fs := r.newFlags("pending", "[--container ID] [--json]",
		"Lists every request waiting for a verdict, across all hubs, oldest first.")
	hubs, hf, asJSON, code, ok := r.listing(fs, args)
	if !ok {
		return code
	}
	var rows []pendingJSON
	for _, hp := range collectPending(ctx, hubs) {
		if hp.err != nil {
			if unsupported(hp.err) {
				// A seed hub (found by the default globs) has no Pending:
				// nothing is wrong, its requests show in watch.
				if hf.container == "" || hf.container == hp.hub.ID {
					fmt.Fprintf(r.stderr, "clearancectl: hub %s: a seed hub (no org.terok.ClearanceHub1), its requests show in clearancectl watch\n", clean(hp.hub.ID))
				}
				continue
			}
			if hf.container == "" || hf.container == hp.hub.ID {
				fmt.Fprintf(r.stderr, "clearancectl: hub %s: %s\n", clean(hp.hub.ID), describeErr(hp.err))
				code = ExitFailure
			}
			continue
		}
		for _, p := range hp.reqs {
			if !matches(hf.container, hp.hub.ID, p.Container) {
				continue
			}
			d := p.Dossier
			if d == nil {
				d = map[string]string{}
			}
			row := pendingJSON{
				Hub: hp.hub.ID, Socket: hp.hub.Path, Container: p.Container, RequestID: p.Request_id,
				Dest: p.Dest, Port: p.Port, Proto: p.Proto, Domain: p.Domain, Target: p.Target,
				Dossier: d, Count: p.Count, FirstSeenUsec: p.First_seen_usec, LastSeenUsec: p.Last_seen_usec,
			}
			if p.Reason != nil {
				row.Reason = *p.Reason
			}
			rows = append(rows, row)
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].FirstSeenUsec < rows[j].FirstSeenUsec })
	if asJSON {
		if rows == nil {
			rows = []pendingJSON{}
		}
		if err := writeJSON(r.stdout, rows); err != nil {
			return r.fail(ExitFailure, "%v", err)
		}
		return code
	}
	if len(rows) == 0 {
		if len(hubs) == 0 {
			fmt.Fprintf(r.stderr, "clearancectl: no hubs found (looked for %s)\n", clean(r.lookedFor()))
		}
		fmt.Fprintln(r.stdout, "no pending requests")
		return code
	}
	r.pendingTable(rows).write(r.stdout, r)
	return code
}

func (r *runner) pendingTable(rows []pendingJSON) *table {
	t := &table{head: []string{"CONTAINER", "ID", "DESTINATION", "COUNT", "AGE", "WHO"}}
	reasons := false // a REASON column when a container asked itself
	for _, p := range rows {
		reasons = reasons || p.Reason != ""
	}
	if reasons {
		t.head = append(t.head, "REASON (THE CONTAINER'S CLAIM)")
	}
	now := r.now()
	for _, p := range rows {
		target := p.Target
		if target == "" {
			target = p.Dest
		}
		dest := endpoint(target, p.Port, p.Proto)
		if p.Domain != "" && p.Dest != "" {
			dest += " (" + clean(p.Dest) + ")"
		}
		first := usecTime(p.FirstSeenUsec)
		ago := "?"
		if !first.IsZero() {
			ago = age(now.Sub(first))
		}
		cells := []string{clean(containerLabel(p.Container, p.Hub)), clean(p.RequestID), dest,
			strconv.FormatInt(p.Count, 10), ago, render.IdentityLabel(p.Dossier, "-")}
		if reasons {
			reason := "-"
			if p.Reason != "" {
				reason = strconv.Quote(clean(p.Reason))
			}
			cells = append(cells, reason)
		}
		t.add(cells...)
	}
	return t
}

// containerLabel is the event's container name, or the hub's id.
func containerLabel(container, hub string) string {
	if container != "" {
		if h := hostOf(hub); h != "" {
			return h + "/" + container
		}
		return container
	}
	return hub
}

// errNotFound marks "nothing holds that request id" (exit 3).
var errNotFound = errors.New("not found")

// notFound is an errNotFound with an operator-facing message.
type notFound struct{ msg string }

func (e *notFound) Error() string        { return e.msg }
func (e *notFound) Is(target error) bool { return target == errNotFound }

// locate finds the hub holding request id. It returns errNotFound when
// every hub answered and none holds it; another error when the id was not
// found but some hub did not answer, or when it is ambiguous.
func (r *runner) locate(ctx context.Context, hf *hubFlags, id string) (hubRef, error) {
	hubs, err := discover(r.globs(hf))
	if err != nil {
		return hubRef{}, err
	}
	var found []hubRef
	var silent []string
	for _, hp := range collectPending(ctx, hubs) {
		if hp.err != nil {
			if unsupported(hp.err) {
				// A seed hub (found by the default globs) has no Pending:
				// nothing is wrong, its requests show in watch.
				if hf.container == "" || hf.container == hp.hub.ID {
					fmt.Fprintf(r.stderr, "clearancectl: hub %s: a seed hub (no org.terok.ClearanceHub1), its requests show in clearancectl watch\n", clean(hp.hub.ID))
				}
				continue
			}
			if hf.container == "" || hf.container == hp.hub.ID {
				silent = append(silent, clean(hp.hub.ID)+": "+describeErr(hp.err))
			}
			continue
		}
		for _, p := range hp.reqs {
			if p.Request_id == id && matches(hf.container, hp.hub.ID, p.Container) {
				found = append(found, hp.hub)
				break
			}
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return hubRef{}, fmt.Errorf("request %s is pending on %d hubs; name one with --container", clean(id), len(found))
	case len(silent) > 0:
		return hubRef{}, fmt.Errorf("request %s not found, and %d hub(s) did not answer: %s",
			clean(id), len(silent), silent[0])
	case len(hubs) == 0:
		return hubRef{}, &notFound{"no hubs found (looked for " + clean(r.lookedFor()) + ")"}
	}
	return hubRef{}, &notFound{"request " + clean(id) + " is not pending on any hub"}
}

// sinceUsec renders how long ago a microsecond timestamp was.
func (r *runner) sinceUsec(us int64) string {
	t := usecTime(us)
	if t.IsZero() {
		return "?"
	}
	return age(r.now().Sub(t))
}
