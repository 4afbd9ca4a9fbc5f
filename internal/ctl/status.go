package ctl

import (
	"context"
	"fmt"
	"strconv"
	"sync"
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
	// DNS is the container's DNS forwarder, when it has one.
	DNS *dnsJSON `json:"dns,omitempty"`
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
}

func (r *runner) cmdStatus(ctx context.Context, args []string) int {
	fs := r.newFlags("status", "[--container ID] [--json]",
		"Shows every hub found: its container, whether it answers, whether its ruleset\nis engaged (NFLOG watched), pending requests, subscribers and event counters.")
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
			if err != nil {
				row.Error = describeErr(err)
			} else {
				row.Answers = true
				row.Container = st.Container
				row.Pending, row.Subscribers = st.Pending, st.Subscribers
				row.EventsIn, row.EventsOut, row.Dropped = st.Events_in, st.Events_out, st.Dropped
				row.Malformed, row.VerdictsOK, row.VerdictsFailed = st.Malformed, st.Verdicts_ok, st.Verdicts_failed
				row.NflogEnobufs, row.StartedUsec = st.Nflog_enobufs, st.Started_usec
				row.Ruleset = st.Ruleset
				if d := st.Dns; d != nil {
					row.DNS = &dnsJSON{Queries: d.Queries, Answers: d.Answers, Held: d.Held, HoldTimeouts: d.Hold_timeouts,
						LearnErrors: d.Learn_errors, Learned: d.Learned, Denied: d.Denied, RefusedOverload: d.Refused_overload,
						Spoofed: d.Spoofed, Malformed: d.Malformed, UpstreamFailures: d.Upstream_failures}
				}
			}
			rows[i] = row
		}()
	}
	wg.Wait()
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
		fmt.Fprintf(r.stdout, "no hubs found (looked for %s)\n", clean(r.defaultGlob()))
		return code
	}
	t := &table{head: []string{"HUB", "CONTAINER", "STATE", "RULESET", "PENDING", "SUBSCRIBERS", "IN", "OUT", "DROPPED", "VERDICTS", "DNS", "UP"}}
	for _, s := range out {
		if !s.Answers {
			t.add(clean(s.Hub), "-", r.paint(colRed, "not answering: "+s.Error), "-", "-", "-", "-", "-", "-", "-", "-", "-")
			continue
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
		t.add(clean(s.Hub), clean(s.Container), r.paint(colGreen, "ok"), clean(s.Ruleset), strconv.FormatInt(s.Pending, 10),
			strconv.FormatInt(s.Subscribers, 10), strconv.FormatInt(s.EventsIn, 10),
			strconv.FormatInt(s.EventsOut, 10), strconv.FormatInt(s.Dropped, 10), verdicts, dns,
			r.sinceUsec(s.StartedUsec))
	}
	t.write(r.stdout, r)
	return code
}
