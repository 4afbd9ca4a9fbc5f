// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"

	"github.com/terok-ai/clearance/internal/record"
)

// statusJSON is one hub in "status --json".
type statusJSON struct {
	Hub            string `json:"hub"`
	Socket         string `json:"socket"`
	Answers        bool   `json:"answers"`
	Error          string `json:"error,omitempty"`
	Container      string `json:"container"`
	Pending        int64  `json:"pending"`
	Subscribers    int64  `json:"subscribers"`
	EventsIn       int64  `json:"events_in"`
	EventsOut      int64  `json:"events_out"`
	Dropped        int64  `json:"dropped"`
	Malformed      int64  `json:"malformed"`
	VerdictsOK     int64  `json:"verdicts_ok"`
	VerdictsFailed int64  `json:"verdicts_failed"`
	NflogEnobufs   int64  `json:"nflog_enobufs"`
	StartedUsec    int64  `json:"started_usec"`
	Ruleset        string `json:"ruleset"`
	// Mode is "observe" while the container's ruleset runs in observe
	// mode (not enforced), "enforce" otherwise ("" from an older hub).
	Mode string `json:"mode,omitempty"`
	// Ask is the container's ask endpoint, when it has one.
	Ask *askJSON `json:"ask,omitempty"`
	// DNS is the container's DNS forwarder, when it has one.
	DNS *dnsJSON `json:"dns,omitempty"`
	// ConfigError says why the hub runs on its default configuration.
	ConfigError string `json:"config_error,omitempty"`
	// Down is true for a container with a runtime record but no hub.
	Down bool `json:"down,omitempty"`
	// Seed is true for a hub that answers without
	// org.terok.ClearanceHub1 (the Python seed's): it has no counters.
	Seed bool `json:"seed,omitempty"`
}

// askJSON is a hub's ask endpoint in "status --json".
type askJSON struct {
	Serving     bool  `json:"serving"`
	Requests    int64 `json:"requests"`
	Asked       int64 `json:"asked"`
	Answered    int64 `json:"answered"`
	BadRequests int64 `json:"bad_requests"`
	TimedOut    int64 `json:"timed_out"`
	RateLimited int64 `json:"rate_limited"`
	Refused     int64 `json:"refused"`
	Waiting     int64 `json:"waiting"`
}

// dnsJSON is a hub's DNS forwarder in "status --json".
type dnsJSON struct {
	Queries          int64 `json:"queries"`
	Answers          int64 `json:"answers"`
	Held             int64 `json:"held"`
	HoldTimeouts     int64 `json:"hold_timeouts"`
	LearnErrors      int64 `json:"learn_errors"`
	Learned          int64 `json:"learned"`
	Denied           int64 `json:"denied"`
	RefusedOverload  int64 `json:"refused_overload"`
	Spoofed          int64 `json:"spoofed"`
	Malformed        int64 `json:"malformed"`
	UpstreamFailures int64 `json:"upstream_failures"`
	CacheHits        int64 `json:"cache_hits"`
}

func (r *runner) cmdStatus(ctx context.Context, args []string) int {
	fs := r.newFlags("status", "[--container ID] [--json]",
		"Shows every hub found: its container, whether it answers, whether its ruleset\nis engaged (NFLOG watched) and enforced (\"OBSERVE MODE: NOT ENFORCED\" when it\nonly logs), pending requests, subscribers and event counters, and every\ncontainer of yours with a runtime record whose hub is down. Rootful\ncontainers' hubs under /run/clearance are shown to root and to members of\ngroup clearance. Exits 1 when a hub does not answer or is missing.")
	hubs, hf, asJSON, code, ok := r.listing(fs, args)
	if !ok {
		return code
	}
	rows := make([]statusJSON, len(hubs))
	var wg sync.WaitGroup
	for i, h := range hubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			row := statusJSON{Hub: h.ID, Socket: h.Path}
			st, err := statsOf(ctx, h.Path)
			if unsupported(err) {
				// It answered, without org.terok.ClearanceHub1: a seed hub.
				row.Answers, row.Seed = true, true
			} else if err != nil {
				row.Error = describeErr(err)
			} else {
				row.Answers = true
				row.Container = st.Container
				row.Pending, row.Subscribers = st.Pending, st.Subscribers
				row.EventsIn, row.EventsOut, row.Dropped = st.Events_in, st.Events_out, st.Dropped
				row.Malformed, row.VerdictsOK, row.VerdictsFailed = st.Malformed, st.Verdicts_ok, st.Verdicts_failed
				row.NflogEnobufs, row.StartedUsec = st.Nflog_enobufs, st.Started_usec
				row.Ruleset = st.Ruleset
				if st.Mode != nil {
					row.Mode = *st.Mode
				}
				if a := st.Ask; a != nil {
					row.Ask = &askJSON{Serving: a.Serving, Requests: a.Requests, Asked: a.Asked, Answered: a.Answered,
						BadRequests: a.Bad_requests, TimedOut: a.Timed_out, RateLimited: a.Rate_limited, Refused: a.Refused,
						Waiting: a.Waiting}
				}
				if st.Config_error != nil {
					row.ConfigError = *st.Config_error
				}
				if d := st.Dns; d != nil {
					row.DNS = &dnsJSON{Queries: d.Queries, Answers: d.Answers, Held: d.Held, HoldTimeouts: d.Hold_timeouts,
						LearnErrors: d.Learn_errors, Learned: d.Learned, Denied: d.Denied, RefusedOverload: d.Refused_overload,
						Spoofed: d.Spoofed, Malformed: d.Malformed, UpstreamFailures: d.Upstream_failures}
					if d.Cache_hits != nil {
						row.DNS.CacheHits = *d.Cache_hits
					}
				}
			}
			rows[i] = row
		}()
	}
	wg.Wait()
	rows = append(rows, r.missingHubs(hubs)...)
	if r.systemHubs != "" {
		// Said once, and not a failure: those hubs are not the caller's.
		if n, group := deniedHubs(r.systemHubs); n > 0 {
			fmt.Fprintf(r.stderr, "clearancectl: %d rootful container hub(s) in %s not shown: not a member of group %s "+
				"(an administrator runs: usermod -aG %s USER; then log in again)\n", n, clean(r.systemHubs), clean(group), clean(group))
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Hub < rows[j].Hub })
	var out []statusJSON
	for _, row := range rows {
		if !matches(hf.container, row.Hub, row.Container) {
			continue
		}
		if !row.Answers {
			code = ExitFailure
		}
		out = append(out, row)
	}
	if hf.container != "" && len(out) == 0 {
		if asJSON {
			writeJSON(r.stdout, []statusJSON{})
		}
		return r.fail(ExitNotFound, "no hub for container %s", clean(hf.container))
	}
	if asJSON {
		if out == nil {
			out = []statusJSON{}
		}
		if err := writeJSON(r.stdout, out); err != nil {
			return r.fail(ExitFailure, "%v", err)
		}
		return code
	}
	if len(out) == 0 {
		fmt.Fprintf(r.stdout, "no hubs found (looked for %s)\n", clean(r.lookedFor()))
		return code
	}
	t := &table{head: []string{"HUB", "CONTAINER", "STATE", "RULESET", "PENDING", "SUBSCRIBERS", "IN", "OUT", "DROPPED", "VERDICTS", "DNS", "UP"}}
	for _, s := range out {
		if !s.Answers {
			msg := "not answering: " + s.Error
			if s.Down {
				msg = s.Error
			}
			t.add(clean(s.Hub), "-", r.paint(colRed, clean(msg)), "-", "-", "-", "-", "-", "-", "-", "-", "-")
			continue
		}
		if s.Seed {
			t.add(clean(s.Hub), "-", "seed hub (no stats)", "-", "-", "-", "-", "-", "-", "-", "-", "-")
			continue
		}
		state := r.paint(colGreen, "ok")
		if s.ConfigError != "" {
			state = r.paint(colRed, "default config: "+s.ConfigError)
		}
		dns := "-"
		if d := s.DNS; d != nil {
			dns = strconv.FormatInt(d.Queries, 10) + " queries"
			if d.HoldTimeouts+d.LearnErrors > 0 {
				dns += ", " + r.paint(colRed, strconv.FormatInt(d.HoldTimeouts+d.LearnErrors, 10)+" missed")
			}
			if d.Denied > 0 {
				dns += ", " + strconv.FormatInt(d.Denied, 10) + " denied"
			}
		}
		verdicts := strconv.FormatInt(s.VerdictsOK, 10)
		if s.VerdictsFailed > 0 {
			verdicts += " (" + strconv.FormatInt(s.VerdictsFailed, 10) + " failed)"
		}
		ruleset := clean(s.Ruleset)
		if s.Mode == "observe" {
			ruleset = r.paint(colRed, ruleset+", OBSERVE MODE: NOT ENFORCED")
		}
		t.add(clean(s.Hub), clean(s.Container), clean(state), ruleset, strconv.FormatInt(s.Pending, 10),
			strconv.FormatInt(s.Subscribers, 10), strconv.FormatInt(s.EventsIn, 10),
			strconv.FormatInt(s.EventsOut, 10), strconv.FormatInt(s.Dropped, 10), verdicts, dns,
			r.sinceUsec(s.StartedUsec))
	}
	t.write(r.stdout, r)
	return code
}

// missingHubs returns a row for every container of the caller that has a
// runtime record but no hub socket among hubs: its hub is down or failed,
// and nothing prompts for it.
func (r *runner) missingHubs(hubs []hubRef) []statusJSON {
	have := map[string]bool{}
	for _, h := range hubs {
		have[h.ID] = true
	}
	var out []statusJSON
	for _, p := range r.recordGlobs() {
		matches, _ := filepath.Glob(p)
		for _, m := range matches {
			id := filepath.Base(filepath.Dir(m))
			if have[id] || !record.ValidID(id) {
				continue
			}
			have[id] = true
			out = append(out, statusJSON{Hub: id, Socket: filepath.Join(filepath.Dir(m), "hub.sock"), Container: id, Down: true,
				Error: "hub down: the container has a runtime record, but no hub socket (systemctl --user status clearance-hub@" + id + ".service)"})
		}
	}
	return out
}

// recordGlobs are where the caller's runtime records are: beside the
// hub sockets in $XDG_RUNTIME_DIR/clearance, and for root also under
// <recordRoot>/clearance/containers.
func (r *runner) recordGlobs() []string {
	var out []string
	if rt := r.runtimeDir(); rt != "" {
		out = append(out, filepath.Join(rt, "clearance", "*", record.FileName))
	}
	if os.Getuid() == 0 && r.recordRoot != "" {
		out = append(out, filepath.Join(filepath.Dir(filepath.Dir(record.Locate(r.recordRoot, 0, "x"))), "*", record.FileName))
	}
	return out
}
