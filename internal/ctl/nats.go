// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"os/user"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/terok-ai/clearance/internal/config"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/relay"
)

// The fleet view over NATS.
//
// "clearancectl --nats URL COMMAND" talks to the clearance-relay of every
// host through a NATS server instead of to local hubs: watch (a live,
// read-only view of every host), pending, allow, deny and status. Who may answer
// for which host is the NATS server's decision; the operator's name on
// the subjects is --nats-operator (default: the user of the credentials
// file, else the login name).

// natsCommands are the commands that work with --nats.
var natsCommands = []string{"watch", "pending", "allow", "deny", "status"}

// natsGather is how long pending waits for the relays' answers.
const natsGather = time.Second

func (r *runner) runNATS(ctx context.Context, g globalOptions, args []string) int {
	if len(args) == 0 || isHelp(args[:1]) {
		r.usage(r.stderr)
		return ExitUsage
	}
	known := false
	for _, c := range natsCommands {
		known = known || c == args[0]
	}
	if !known {
		fmt.Fprintf(r.stderr, "clearancectl: %q does not work with --nats (only %s)\n", clean(args[0]), strings.Join(natsCommands, ", "))
		return ExitUsage
	}
	var rc config.Relay
	var nc config.NATS
	var paths []string
	if p := r.env(config.EnvConfig); p != "" {
		paths = []string{p}
	}
	if cfg, err := config.Load(paths...); err == nil {
		rc, nc = cfg.Relay, cfg.NATS
	} else {
		fmt.Fprintf(r.stderr, "clearancectl: %s (its nats and relay sections are not used)\n", cleanLong(err.Error()))
	}
	if g.natsCreds != "" {
		nc.Credentials = g.natsCreds
	}
	if isHelp(args) {
		return r.natsCommand(ctx, nil, args)
	}
	// The name on the decide subjects: --nats-operator, else the user
	// the credentials file names (the one its permissions bind), else
	// the login name.
	name := g.natsOperator
	if nc.Credentials != "" {
		creds, err := relay.LoadCredentials(nc.Credentials)
		if err != nil {
			return r.fail(ExitFailure, "%s", cleanLong(err.Error()))
		}
		if name == "" && relay.ValidOperator(creds.Name) {
			name = creds.Name
		}
	}
	if name == "" {
		name = r.env("USER")
		if name == "" {
			if u, err := user.Current(); err == nil {
				name = u.Username
			}
		}
	}
	opts := relay.NATSOptions(nc)
	url := g.nats
	if url == "-" {
		url = nc.URL // "--nats -": the configuration's nats.url
	}
	o, err := relay.DialOperator(url, rc.SubjectPrefix, name, opts...)
	if err != nil {
		return r.fail(ExitFailure, "%s", cleanLong(relay.ExplainRefusal(err, nc.Credentials)))
	}
	o.Credentials = nc.Credentials
	defer o.Close()
	return r.natsCommand(ctx, o, args)
}

func (r *runner) natsCommand(ctx context.Context, o *relay.Operator, args []string) int {
	switch args[0] {
	case "watch":
		return r.natsWatch(ctx, o, args[1:])
	case "pending":
		return r.natsPending(ctx, o, args[1:])
	case "status":
		return r.natsStatus(ctx, o, args[1:])
	case "allow":
		return r.natsDecide(ctx, o, event.ActionAllow, args[1:])
	}
	return r.natsDecide(ctx, o, event.ActionDeny, args[1:])
}

func (r *runner) natsPending(ctx context.Context, o *relay.Operator, args []string) int {
	fs := r.newFlags("pending", "[--json]", "With --nats: every host's requests waiting for a verdict, as their relays answer within a second, oldest first.")
	asJSON := fs.Bool("json", false, "JSON output")
	pos, err := r.parse(fs, args)
	if err != nil {
		return parseExit(err)
	}
	if len(pos) != 0 {
		return r.usageErr(fs, "pending takes no arguments")
	}
	bs, err := o.Pending(ctx, natsGather)
	if err != nil {
		return r.fail(ExitFailure, "%s", cleanLong(err.Error()))
	}
	if *asJSON {
		if err := writeJSON(r.stdout, bs); err != nil {
			return r.fail(ExitFailure, "%v", err)
		}
		return ExitOK
	}
	if len(bs) == 0 {
		fmt.Fprintln(r.stdout, "nothing pending")
		return ExitOK
	}
	fmt.Fprintf(r.stdout, "%-32s %-20s %-32s %s\n", "HOST/CONTAINER", "REQUEST", "DESTINATION", "SEEN")
	for _, b := range bs {
		fmt.Fprintf(r.stdout, "%-32s %-20s %-32s %s\n", clean(b.Host+"/"+b.Container), clean(b.RequestID),
			endpoint(b.Target(), b.Port, b.Proto), r.sinceUsec(b.FirstUsec))
	}
	return ExitOK
}

func (r *runner) natsStatus(ctx context.Context, o *relay.Operator, args []string) int {
	fs := r.newFlags("status", "[--json]", "With --nats: every host whose relay answers within a second, its containers (hubs), their policy and pending requests.")
	asJSON := fs.Bool("json", false, "JSON output")
	pos, err := r.parse(fs, args)
	if err != nil {
		return parseExit(err)
	}
	if len(pos) != 0 {
		return r.usageErr(fs, "status takes no arguments")
	}
	ps, err := o.Presence(ctx, natsGather)
	if err != nil {
		return r.fail(ExitFailure, "%s", cleanLong(err.Error()))
	}
	if *asJSON {
		if err := writeJSON(r.stdout, ps); err != nil {
			return r.fail(ExitFailure, "%v", err)
		}
		return ExitOK
	}
	if len(ps) == 0 {
		fmt.Fprintln(r.stdout, "no relay answered")
		return ExitOK
	}
	fmt.Fprintf(r.stdout, "%-32s %-20s %-8s %-8s %s\n", "HOST/CONTAINER", "POLICY", "PENDING", "HUB", "HUB STARTED")
	for _, p := range ps {
		if len(p.Containers) == 0 {
			fmt.Fprintf(r.stdout, "%-32s %-20s %-8s %-8s %s\n", clean(p.Host)+"/-", "-", "-", "-", "-")
		}
		for _, c := range p.Containers {
			up := "up"
			if !c.Up {
				up = "down"
			}
			fmt.Fprintf(r.stdout, "%-32s %-20s %-8d %-8s %s\n", clean(p.Host+"/"+c.ID), orDash(clean(c.Policy)), c.Pending, up,
				r.sinceUsec(c.HubStarted))
		}
	}
	return ExitOK
}

func (r *runner) natsDecide(ctx context.Context, o *relay.Operator, action string, args []string) int {
	fs := r.newFlags(action, "REQUEST_ID [--container HOST/CONTAINER] [--for DURATION | --until-exit | --always] [--any-port]",
		`With --nats: sends the verdict to the relay of the host that holds
REQUEST_ID (found by asking every relay, or named with --container), which
passes it to the container's hub: the hub's checks apply and the first
verdict wins; a later one is told who decided. --always also mirrors the
verdict to every host of the fleet (a deny wins over an allow).`)
	where := fs.String("container", "", "the request's `HOST/CONTAINER` (default: found by asking every relay)")
	var forDur durationFlag
	fs.Var(&forDur, "for", "the verdict expires after `DURATION` (30s, 15m, 1h, 12h, 2d, 1w)")
	untilExit := fs.Bool("until-exit", false, "the verdict lasts until the container exits")
	always := fs.Bool("always", false, "the verdict lasts, is written to the container's policy and mirrored to the fleet")
	anyPort := fs.Bool("any-port", false, "cover every port and protocol of the destination")
	pos, err := r.parse(fs, args)
	if err != nil {
		return parseExit(err)
	}
	if len(pos) != 1 {
		return r.usageErr(fs, "%s needs exactly one REQUEST_ID", action)
	}
	req := relay.DecideRequest{RequestID: pos[0], Action: action, Scope: scopeOnce, AnyPort: *anyPort}
	n := 0
	for _, b := range []bool{forDur.set, *untilExit, *always} {
		if b {
			n++
		}
	}
	switch {
	case n > 1:
		return r.usageErr(fs, "--for, --until-exit and --always exclude each other")
	case forDur.set:
		req.TTLSec = int64(forDur.d / time.Second)
	case *untilExit:
		req.Scope = scopeContainer
	case *always:
		req.Scope = scopeAlways
	}
	host, container, ok := strings.Cut(*where, "/")
	if *where != "" && (!ok || !relay.ValidToken(host) || !relay.ValidToken(container)) {
		return r.usageErr(fs, "--container %q: HOST/CONTAINER", clean(*where))
	}
	target := clean(req.RequestID)
	{
		bs, err := o.Pending(ctx, natsGather)
		if err != nil {
			return r.fail(ExitFailure, "%s", cleanLong(err.Error()))
		}
		var hits []relay.Blocked
		for _, b := range bs {
			if b.RequestID == req.RequestID && (*where == "" || b.Host == host && b.Container == container) {
				hits = append(hits, b)
			}
		}
		switch {
		case len(hits) > 1:
			return r.fail(ExitFailure, "request %s is pending on %d hosts; name one with --container HOST/CONTAINER", clean(req.RequestID), len(hits))
		case len(hits) == 0 && *where == "":
			return r.fail(ExitNotFound, "request %s is not pending on any host that answered", clean(req.RequestID))
		case len(hits) == 1:
			host, container = hits[0].Host, hits[0].Container
			req.HubStarted = hits[0].HubStarted
			target = endpoint(hits[0].Target(), hits[0].Port, hits[0].Proto)
		}
	}
	target += " (" + clean(host+"/"+container) + ")"
	rep, err := o.Decide(ctx, host, container, req)
	if err != nil {
		return r.fail(ExitFailure, "%s", cleanLong(err.Error()))
	}
	if !rep.OK {
		code := ExitFailure
		switch rep.Error {
		case relay.ErrAlreadyDecided, relay.ErrUnknownRequest, relay.ErrRestarted, relay.ErrNoContainer:
			code = ExitNotFound
		case relay.ErrRefused:
			code = ExitRefused
		}
		return r.fail(code, "%s %s: %s", action, target, cleanLong(rep.Message))
	}
	fmt.Fprintf(r.stdout, "%s %s, %s\n", pastTense(action), target, r.scopeText(req.Scope, rep.ExpiresUsec))
	if rep.Message != "" {
		fmt.Fprintf(r.stderr, "clearancectl: %s\n", cleanLong(rep.Message))
	}
	return ExitOK
}

func (r *runner) natsWatch(ctx context.Context, o *relay.Operator, args []string) int {
	fs := r.newFlags("watch", "[--json]", `With --nats: a live view of every host's blocked requests and outcomes,
one line each, named HOST/CONTAINER; what is pending when it starts is
shown first. Answer with "clearancectl --nats URL allow|deny REQUEST_ID".
Runs until interrupted.`)
	asJSON := fs.Bool("json", false, "one JSON object a line: {\"subject\":…,\"data\":…}")
	pos, err := r.parse(fs, args)
	if err != nil {
		return parseExit(err)
	}
	if len(pos) != 0 {
		return r.usageErr(fs, "watch takes no arguments")
	}
	msgs := make(chan *nats.Msg, 1024)
	for _, subj := range o.Subjects().View() {
		sub, err := o.Conn().ChanSubscribe(subj, msgs)
		if err != nil {
			return r.fail(ExitFailure, "subscribe: %v", err)
		}
		defer sub.Unsubscribe()
	}
	if err := o.Conn().Flush(); err != nil {
		return r.fail(ExitFailure, "NATS: %v", err)
	}
	bs, err := o.Pending(ctx, natsGather)
	if err != nil {
		return r.fail(ExitFailure, "%s", cleanLong(err.Error()))
	}
	for _, b := range bs {
		r.natsLine(*asJSON, o.Subjects().Blocked(b.Host, b.Container), mustJSON(b))
	}
	fmt.Fprintln(r.stderr, "clearancectl: watching the fleet; Ctrl-C ends")
	for {
		select {
		case <-ctx.Done():
			return ExitOK
		case <-o.Closed():
			// nats.go gives up only when the server refuses the
			// credentials twice (e.g. the JWT expired meanwhile).
			if err := o.Conn().LastError(); err != nil {
				return r.fail(ExitFailure, "the NATS connection closed: %s", cleanLong(relay.ExplainRefusal(err, o.Credentials)))
			}
			return r.fail(ExitFailure, "the NATS connection closed")
		case n := <-o.Notes:
			fmt.Fprintf(r.stderr, "clearancectl: %s\n", cleanLong(n))
		case m := <-msgs:
			r.natsLine(*asJSON, m.Subject, m.Data)
		}
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// natsLine prints one message of the fleet.
func (r *runner) natsLine(asJSON bool, subject string, data []byte) {
	if asJSON {
		var v any
		if json.Unmarshal(data, &v) != nil {
			return
		}
		b, err := json.Marshal(map[string]any{"subject": subject, "data": v})
		if err == nil {
			r.stdout.Write(append(asciiJSON(b), '\n'))
		}
		return
	}
	ts := r.now().Format(time.TimeOnly)
	switch {
	case strings.HasSuffix(subject, ".blocked"):
		var b relay.Blocked
		if json.Unmarshal(data, &b) != nil {
			return
		}
		replay := ""
		if b.Replay {
			replay = " (again, after a reconnect)"
		}
		fmt.Fprintf(r.stdout, "%s BLOCKED %s %s request %s%s\n", ts, clean(b.Host+"/"+b.Container),
			endpoint(b.Target(), b.Port, b.Proto), clean(b.RequestID), replay)
	case strings.HasSuffix(subject, ".outcome"):
		var oc relay.Outcome
		if json.Unmarshal(data, &oc) != nil {
			return
		}
		if oc.Event == event.ContainerExited {
			fmt.Fprintf(r.stdout, "%s EXITED %s\n", ts, clean(oc.Host+"/"+oc.Container))
			return
		}
		what := pastTense(clean(oc.Action))
		if !oc.OK {
			what = "FAILED to " + clean(oc.Action)
		}
		fmt.Fprintf(r.stdout, "%s %s %s request %s %s\n", ts, strings.ToUpper(what), clean(oc.Host+"/"+oc.Container),
			clean(oc.RequestID), clean(oc.By))
	}
}
