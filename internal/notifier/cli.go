// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/config"
	"github.com/terok-ai/clearance/internal/notify"
	"github.com/terok-ai/clearance/internal/render"
	"github.com/terok-ai/clearance/internal/sd"
)

// Exit codes of the clearance-notifier command (see clearance-notifier(1)).
const (
	ExitOK          = 0   // the daemon ended cleanly; notify: shown, or an action was chosen
	ExitError       = 1   // an error (message on stderr)
	ExitUsage       = 2   // bad command line
	ExitNoAction    = 3   // notify --wait: dismissed, expired or timed out without an action
	ExitNoBus       = 4   // notify --wait: no session bus
	ExitInterrupted = 130 // notify --wait: interrupted (SIGINT/SIGTERM)
)

// Identifier is the program's name in logs (SYSLOG_IDENTIFIER).
const Identifier = "clearance-notifier"

const usage = `Usage:
  clearance-notifier [run] [--config FILE] [--log-level LEVEL]
      Show clearance prompts as desktop notifications (the user service).
  clearance-notifier notify TITLE [BODY] [--actions KEY:LABEL ...] [--wait]
                     [--timeout S] [--urgency low|normal|critical]
      Show one notification; print its id, or with --wait the chosen key.
  clearance-notifier help | --help
  clearance-notifier version | --version

Exit status: 0 ok (or an action was chosen), 1 error, 2 usage,
3 dismissed or expired without an action (--wait), 4 no session bus (--wait).
See clearance-notifier(1).
`

// Version is the program's version, set at link time.
var Version = "0.1.0-dev"

// Command runs the clearance-notifier command line; args exclude the
// program name. ctx ends on SIGTERM/SIGINT. It returns the exit status.
func Command(ctx context.Context, args []string, stdio cli.Stdio) int {
	sd.IgnoreSIGPIPE()
	stdout, stderr := stdio.Out, stdio.Err
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(stdout, usage)
			return ExitOK
		}
		if len(args) > 0 && args[0] == "--version" {
			fmt.Fprintln(stdout, Identifier, Version)
			return ExitOK
		}
		return runDaemon(ctx, args, stderr)
	case "notify":
		return NotifyCommand(ctx, args, stdout, stderr)
	case "help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	case "version":
		fmt.Fprintln(stdout, Identifier, Version)
		return ExitOK
	}
	fmt.Fprintf(stderr, "clearance-notifier: unknown command %q\n\n%s", cmd, usage)
	return ExitUsage
}

func runDaemon(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("clearance-notifier run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	cfgPath := fs.String("config", "", "configuration file (default: $CLEARANCE_CONFIG, /etc/clearance/clearance.yaml, ~/.config/clearance/clearance.yaml)")
	levelName := fs.String("log-level", "info", "debug, info, warning or error")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "clearance-notifier: unexpected argument %q\n", fs.Arg(0))
		return ExitUsage
	}
	level := new(slog.LevelVar)
	if err := level.UnmarshalText([]byte(normalizeLevel(*levelName))); err != nil {
		fmt.Fprintf(stderr, "clearance-notifier: bad --log-level %q\n", *levelName)
		return ExitUsage
	}
	log := sd.NewLogger(level, Identifier)
	var paths []string
	if *cfgPath != "" {
		paths = []string{*cfgPath}
	}
	cfg, err := config.Load(paths...)
	if err != nil {
		log.Error("load configuration", "err", err)
		return ExitError
	}
	boundHeap()
	opts := FromConfig(cfg.Notifier)
	opts.Logger = log
	opts.Status = sd.NewNotifier(log)
	if err := Run(ctx, opts); err != nil {
		log.Error("notifier failed", "err", err)
		return ExitError
	}
	return ExitOK
}

// DaemonGCPercent is the garbage collector's target the daemon runs with
// when $GOGC does not set one.
//
// The daemon's live heap is well under 1 MiB, but every event makes
// garbage (JSON decoding, D-Bus encoding: tens of KiB per blocked
// connection with its verdict and expiry). At Go's default (100) the
// heap may grow to its 4 MiB floor before a collection, so the resident
// size climbs by ~6 MiB over the first minutes of steady traffic (the
// page set then settles slowly towards the scavenger's bound) and only
// then levels off. At 25 the floor is 1 MiB: a collection every ~30 s at
// one block a second, each well under a millisecond of CPU on a heap
// this small, and the resident size levels off about 3 MiB lower within
// the first two minutes.
const DaemonGCPercent = 25

// boundHeap applies DaemonGCPercent unless $GOGC says otherwise.
func boundHeap() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(DaemonGCPercent)
	}
}

func normalizeLevel(s string) string {
	switch strings.ToLower(s) {
	case "warning", "notice":
		return "warn"
	case "err", "critical", "crit":
		return "error"
	}
	return s
}

// notifyArgs is the parsed notify command line.
type notifyArgs struct {
	title, body string
	actions     []render.Action
	wait        bool
	timeoutMS   int32
	urgency     render.Urgency
}

// NotifyCommand is "clearance-notifier notify": the seed's one-off
// notification. Without --wait it prints the notification id (0, with
// nothing on stderr and status 0, when there is no session bus, as the
// seed does). With --wait it prints the chosen action key and exits 0, or
// prints nothing and exits 3 when the popup is dismissed or expires, 4
// without a session bus.
func NotifyCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a, err := parseNotify(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "clearance-notifier notify: %v\n\n%s", err, usage)
		return ExitUsage
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := notify.DialSession(dctx, nil)
	cancel()
	if err != nil {
		if !a.wait {
			// Headless: like the seed's NullNotifier, id 0 and silence.
			fmt.Fprintln(stdout, 0)
			return ExitOK
		}
		fmt.Fprintf(stderr, "clearance-notifier notify: %v\n", err)
		return ExitNoBus
	}
	defer c.Disconnect()
	n := notify.Notification{
		Summary: a.title, Body: a.body, Actions: a.actions,
		Hints: render.Hints{Urgency: a.urgency}, Timeout: a.timeoutMS,
	}
	// Not cancelled by a signal: once sent, the popup's id is needed to
	// close it again.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 25*time.Second)
	id, err := c.Notify(cctx, n)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "clearance-notifier notify: %v\n", err)
		return ExitError
	}
	if !a.wait {
		fmt.Fprintln(stdout, id)
		return ExitOK
	}
	return waitForAction(ctx, c, id, a.timeoutMS, stdout, stderr)
}

// waitForAction waits for the operator's choice on popup id.
func waitForAction(ctx context.Context, c *notify.Client, id uint32, timeoutMS int32, stdout, stderr io.Writer) int {
	var expire <-chan time.Time
	if timeoutMS > 0 {
		t := time.NewTimer(time.Duration(timeoutMS) * time.Millisecond)
		defer t.Stop()
		expire = t.C
	}
	closeIt := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = c.Close(cctx, id)
	}
	for {
		select {
		case <-ctx.Done():
			closeIt()
			return ExitInterrupted
		case <-expire:
			// The server did not expire it (some never expire popups
			// with actions): give up as promised.
			closeIt()
			return ExitNoAction
		case ev, ok := <-c.Events():
			if !ok {
				fmt.Fprintln(stderr, "clearance-notifier notify: lost the session bus")
				return ExitError
			}
			switch e := ev.(type) {
			case notify.ActionInvoked:
				if e.ID != id {
					continue
				}
				fmt.Fprintln(stdout, e.Key)
				closeIt() // resident popups stay after a click
				return ExitOK
			case notify.Closed:
				if e.ID == id {
					return ExitNoAction
				}
			case notify.DaemonRestarted:
				return ExitNoAction // the popup died with the old server
			case notify.Disconnected:
				fmt.Fprintln(stderr, "clearance-notifier notify: lost the session bus")
				return ExitError
			}
		}
	}
}

// parseNotify parses TITLE [BODY] and the options, in any order. "--"
// ends the options. --actions takes every following KEY:LABEL word.
func parseNotify(args []string) (notifyArgs, error) {
	a := notifyArgs{timeoutMS: -1, urgency: render.UrgencyNormal}
	var pos []string
	value := func(i *int, name string) (string, error) {
		if *i+1 >= len(args) {
			return "", fmt.Errorf("%s needs a value", name)
		}
		*i++
		return args[*i], nil
	}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		name, val, hasVal := strings.Cut(arg, "=")
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			pos = append(pos, arg)
			continue
		}
		if arg == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		getVal := func() (string, error) {
			if hasVal {
				return val, nil
			}
			return value(&i, name)
		}
		switch name {
		case "-h", "--help", "-help":
			return a, flag.ErrHelp
		case "--wait", "-w":
			a.wait = true
		case "--actions", "-A", "--action":
			var words []string
			if hasVal {
				words = strings.Split(val, ",")
			} else {
				for i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") && strings.Contains(args[i+1], ":") {
					i++
					words = append(words, args[i])
				}
				if len(words) == 0 {
					return a, fmt.Errorf("%s needs KEY:LABEL values", name)
				}
			}
			for _, w := range words {
				key, label, ok := strings.Cut(w, ":")
				if !ok || key == "" || label == "" {
					return a, fmt.Errorf("bad action %q: want KEY:LABEL", w)
				}
				a.actions = append(a.actions, render.Action{Key: key, Label: label})
			}
		case "--timeout":
			v, err := getVal()
			if err != nil {
				return a, err
			}
			ms, err := parseTimeout(v)
			if err != nil {
				return a, err
			}
			a.timeoutMS = ms
		case "-t": // the seed's -t/--timeout, in milliseconds
			v, err := getVal()
			if err != nil {
				return a, err
			}
			ms, err := strconv.ParseInt(v, 10, 32)
			if err != nil || ms < -1 {
				return a, fmt.Errorf("bad -t %q: want milliseconds, -1 for the server default", v)
			}
			a.timeoutMS = int32(ms)
		case "--urgency", "-u":
			v, err := getVal()
			if err != nil {
				return a, err
			}
			switch strings.ToLower(v) {
			case "low":
				a.urgency = render.UrgencyLow
			case "normal":
				a.urgency = render.UrgencyNormal
			case "critical":
				a.urgency = render.UrgencyCritical
			default:
				return a, fmt.Errorf("bad urgency %q: want low, normal or critical", v)
			}
		default:
			return a, fmt.Errorf("unknown option %s", name)
		}
	}
	switch len(pos) {
	case 0:
		return a, errors.New("missing TITLE")
	case 1:
		a.title = pos[0]
	case 2:
		a.title, a.body = pos[0], pos[1]
	default:
		return a, fmt.Errorf("unexpected argument %q", pos[2])
	}
	return a, nil
}

// parseTimeout reads --timeout: seconds ("5", "2.5"), a Go duration
// ("1500ms", "2m"), 0 or "never" for a popup that never expires, -1 or
// "default" for the server's default. It returns milliseconds.
func parseTimeout(s string) (int32, error) {
	switch strings.ToLower(s) {
	case "never":
		return 0, nil
	case "default", "-1":
		return -1, nil
	}
	var d time.Duration
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 || math.IsNaN(f) || f > float64(math.MaxInt32)/1000 {
			return 0, fmt.Errorf("bad --timeout %q: want seconds >= 0, or -1", s)
		}
		d = time.Duration(f * float64(time.Second))
	} else {
		d, err = time.ParseDuration(s)
		if err != nil || d < 0 || d > time.Duration(math.MaxInt32)*time.Millisecond {
			return 0, fmt.Errorf("bad --timeout %q: want seconds (5, 2.5) or a duration (1500ms)", s)
		}
	}
	ms := d.Milliseconds()
	if d > 0 && ms == 0 {
		ms = 1
	}
	return int32(ms), nil
}
