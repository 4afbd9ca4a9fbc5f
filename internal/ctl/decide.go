// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hubclient"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// Verdict scopes of org.terok.ClearanceHub1.Decide.
const (
	scopeOnce      = "once"
	scopeContainer = "container"
	scopeAlways    = "always"
)

// maxTTL is the longest --for accepted (the hub refuses more than 100 years).
const maxTTL = 10 * 365 * 24 * time.Hour

// parseDuration parses a verdict lifetime: Go durations ("90s", "1h30m")
// plus the units d (days) and w (weeks), e.g. "2d", "1w". It must be at
// least one second and at most ten years; it is rounded up to whole
// seconds.
func parseDuration(s string) (time.Duration, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("empty duration")
	}
	var total time.Duration
	rest := in
	// Peel off leading "<n>w" / "<n>d" components, then hand the rest to
	// time.ParseDuration.
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i == len(rest) || (rest[i] != 'd' && rest[i] != 'w') {
			break
		}
		n, err := strconv.ParseInt(rest[:i], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", in)
		}
		unit := 24 * time.Hour
		if rest[i] == 'w' {
			unit *= 7
		}
		total += time.Duration(n) * unit
		rest = rest[i+1:]
		if total > maxTTL {
			return 0, fmt.Errorf("duration %q is longer than 10 years", in)
		}
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q (examples: 30s, 15m, 1h, 12h, 2d, 1w)", in)
		}
		total += d
	}
	if total < time.Second {
		return 0, fmt.Errorf("duration %q must be at least 1s", in)
	}
	if total > maxTTL {
		return 0, fmt.Errorf("duration %q is longer than 10 years", in)
	}
	return ((total + time.Second - 1) / time.Second) * time.Second, nil
}

// durationFlag is a --for value.
type durationFlag struct {
	d   time.Duration
	set bool
}

func (f *durationFlag) String() string {
	if !f.set {
		return ""
	}
	return f.d.String()
}

func (f *durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	f.d, f.set = d, true
	return nil
}

// verdictSpec is a parsed allow/deny command line.
type verdictSpec struct {
	action    string
	requestID string
	scope     string
	ttl       time.Duration
	anyPort   bool
	hub       hubFlags
}

// parseVerdict parses "allow|deny REQUEST_ID [options]".
func (r *runner) parseVerdict(action string, args []string) (verdictSpec, int, bool) {
	verb := "Allows"
	if action == event.ActionDeny {
		verb = "Denies"
	}
	fs := r.newFlags(action, "REQUEST_ID [--container ID] [--for DURATION | --until-exit | --always] [--any-port]",
		verb+` the pending request REQUEST_ID (see "clearancectl pending"). The hub
holding it is found by asking every hub. The verdict covers what the
request shows: its destination (the name, with all its current and future
addresses, when it has one), port and protocol; --any-port widens it to
every port. Without a scope option the verdict is "once": it expires after
the hub's default lifetime.`)
	spec := verdictSpec{action: action, scope: scopeOnce}
	spec.hub.register(fs, true)
	var forDur durationFlag
	fs.Var(&forDur, "for", "the verdict expires after `DURATION` (30s, 15m, 1h, 12h, 2d, 1w)")
	untilExit := fs.Bool("until-exit", false, "the verdict lasts until the container exits")
	always := fs.Bool("always", false, "the verdict lasts, and is written to the container's policy file")
	fs.BoolVar(&spec.anyPort, "any-port", false, "cover every port and protocol of the destination, not only the request's")
	pos, err := r.parse(fs, args)
	if err != nil {
		return spec, parseExit(err), false
	}
	if len(pos) != 1 {
		return spec, r.usageErr(fs, "%s needs exactly one REQUEST_ID", action), false
	}
	spec.requestID = pos[0]
	n := 0
	for _, b := range []bool{forDur.set, *untilExit, *always} {
		if b {
			n++
		}
	}
	if n > 1 {
		return spec, r.usageErr(fs, "--for, --until-exit and --always exclude each other"), false
	}
	switch {
	case forDur.set:
		spec.ttl = forDur.d
	case *untilExit:
		spec.scope = scopeContainer
	case *always:
		spec.scope = scopeAlways
	}
	return spec, ExitOK, true
}

func (r *runner) cmdAllow(ctx context.Context, args []string) int {
	return r.verdictCmd(ctx, event.ActionAllow, args)
}

func (r *runner) cmdDeny(ctx context.Context, args []string) int {
	return r.verdictCmd(ctx, event.ActionDeny, args)
}

func (r *runner) verdictCmd(ctx context.Context, action string, args []string) int {
	spec, code, ok := r.parseVerdict(action, args)
	if !ok {
		return code
	}
	h, err := r.locate(ctx, &spec.hub, spec.requestID)
	if errors.Is(err, errNotFound) {
		return r.fail(ExitNotFound, "%v", err)
	}
	if err != nil {
		return r.fail(ExitFailure, "%v", err)
	}
	// Describe the request before deciding: the hub forgets it after.
	var target string
	if reqs, err := pendingOf(ctx, h.Path); err == nil {
		for _, p := range reqs {
			if p.Request_id == spec.requestID {
				target = endpoint(p.Target, p.Port, p.Proto) + " (" + clean(containerLabel(p.Container, h.ID)) + ")"
			}
		}
	}
	if target == "" {
		target = clean(spec.requestID)
	}
	p := &hubclient.Caller{Path: h.Path, Timeout: callTimeout}
	defer p.Close()
	var expires int64
	err = p.Call(ctx, func(ctx context.Context, c *varlink.Connection) error {
		var err error
		var anyPort *bool
		if spec.anyPort {
			anyPort = &spec.anyPort
		}
		_, expires, err = orgterokclearancehub1.Decide().Call(ctx, c, spec.requestID, spec.action,
			spec.scope, int64(spec.ttl/time.Second), anyPort, &channelCtl)
		return err
	})
	if err != nil {
		return r.decideFailure(err, spec, target)
	}
	if spec.anyPort {
		target += ", every port"
	}
	fmt.Fprintf(r.stdout, "%s %s, %s\n", pastTense(spec.action), target, r.scopeText(spec.scope, expires))
	return ExitOK
}

// decideFailure maps a Decide error to a message and exit code.
func (r *runner) decideFailure(err error, spec verdictSpec, target string) int {
	switch varlinkapi.ErrorName(err) {
	case errUnknownRequest:
		return r.fail(ExitNotFound, "request %s is no longer pending (decided, expired or purged meanwhile)", clean(spec.requestID))
	case errAlreadyDecided:
		return r.fail(ExitNotFound, "request %s was %s; nothing applied", clean(spec.requestID), alreadyDecided(err))
	case errShieldFailed:
		msg := "the firewall refused to " + spec.action + " " + target
		if s := shieldStderr(err); s != "" {
			msg += ": " + cleanLong(s)
		}
		return r.fail(ExitRefused, "%s; the request is still pending", msg)
	case errInvalidScope:
		return r.fail(ExitFailure, "the hub refused scope %q", spec.scope)
	case errIfaceNotFound, errMethodNotFound:
		return r.fail(ExitFailure, "this hub does not offer org.terok.ClearanceHub1 (a seed hub?); answer its prompts with \"clearancectl watch\"")
	case "":
		return r.fail(ExitFailure, "%s %s: %s", spec.action, target, cleanLong(err.Error()))
	}
	return r.fail(ExitFailure, "%s %s: %s", spec.action, target, describeErr(err))
}

// pastTense is "allowed" / "denied".
func pastTense(action string) string {
	if action == event.ActionDeny {
		return "denied"
	}
	return "allowed"
}

// scopeText describes how long a verdict lasts.
func (r *runner) scopeText(scope string, expiresUsec int64) string {
	switch scope {
	case scopeContainer:
		return "until the container exits"
	case scopeAlways:
		return "always (written to the container's policy)"
	}
	if t := usecTime(expiresUsec); !t.IsZero() {
		return "once, until " + clock(t, r.now())
	}
	return "once"
}

// channelCtl is how clearancectl names itself to a hub (audited).
var channelCtl = "clearancectl"
