// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package ctl implements clearancectl, the terminal channel of clearance:
// live prompts (watch), the pending queue, batch review (review), verdicts
// by request id, hub status, the audit trail from the journal, and the
// firewall's own view (explain, policy).
//
// # Hubs
//
// Every container has its own hub, listening at
// $XDG_RUNTIME_DIR/clearance/<id>/hub.sock. Commands find hubs by glob:
// that layout and the seed's two, $XDG_RUNTIME_DIR/terok/clearance/*.sock
// and */hub.sock (config.DefaultHubGlobs), plus any given with --glob; and
// talk to each over varlink:
// org.terok.Clearance1 for the event stream and seed-compatible verdicts,
// org.terok.ClearanceHub1 for Pending, Stats and Decide.
//
// # Untrusted strings
//
// Everything a hub reports (domains, dossier values, container names,
// error texts) came from a container at some point. Tables and watch
// lines pass every such string through [render.Terminal]; JSON output
// keeps values exact but escapes every non-ASCII character, so no output
// of clearancectl can carry a terminal escape sequence or a bidi override.
//
// # Exit codes
//
// 0 success, 1 failure (a hub or the journal could not be reached), 2
// usage error, 3 not found (unknown or no longer pending request id,
// unknown container), 4 refused by the firewall (the verdict could not be
// applied; the request stays pending).
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/config"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// Exit codes of clearancectl.
const (
	ExitOK       = 0
	ExitFailure  = 1
	ExitUsage    = 2
	ExitNotFound = 3
	ExitRefused  = 4
)

// DefaultVerdictSocket is where the privileged verdict service listens.
const DefaultVerdictSocket = verdictclient.DefaultSocket

// runner holds one invocation's streams, environment and seams. Tests
// build one directly to inject the journal and the firewall.
type runner struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	env            func(string) string

	// color is true when stdout may carry colour (a terminal, NO_COLOR
	// unset, TERM not "dumb").
	color bool

	// journal runs journalctl with args and returns its standard output.
	journal func(ctx context.Context, args []string) ([]byte, error)

	// dialFirewall connects to the verdict service.
	dialFirewall func(ctx context.Context, path string) (Firewall, error)

	// lookupHost resolves a domain for explain.
	lookupHost func(ctx context.Context, host string) ([]string, error)

	// now is the clock (ages, relative times).
	now func() time.Time

	// rescan is how often watch looks for new hubs.
	rescan time.Duration

	// recordRoot is where root's runtime records are found
	// (<recordRoot>/clearance/containers); "" skips them.
	recordRoot string

	// systemHubs is where the system instances of the hub listen
	// (<systemHubs>/<id12>/hub.sock, 0660 root:clearance, for rootful
	// containers when root has no user manager); "" skips them.
	systemHubs string
	// remotes are the --host hosts (see remote.go); noRemote keeps a
	// runner from connecting any (the bridge's own commands).
	remotes      []*remoteHost
	noRemote     bool
	outMu        sync.Mutex
	remoteFailed bool
}

// Command runs clearancectl with args (without the program name) and
// returns the process exit code. It returns when the command is done or
// ctx ends; it is not meant to be called concurrently on the same
// streams.
func Command(ctx context.Context, args []string, stdio cli.Stdio) int {
	r := newRunner(stdio.In, stdio.Out, stdio.Err, stdio.Getenv)
	return r.run(ctx, args)
}

func newRunner(stdin io.Reader, stdout, stderr io.Writer, env func(string) string) *runner {
	if env == nil {
		env = func(string) string { return "" }
	}
	r := &runner{
		stdin: stdin, stdout: stdout, stderr: stderr, env: env,
		journal:      execJournal,
		dialFirewall: dialFirewall,
		lookupHost:   defaultLookupHost,
		now:          time.Now,
		rescan:       time.Second,
		recordRoot:   record.DefaultRuntimeRoot,
		systemHubs:   filepath.Join(record.DefaultRuntimeRoot, "clearance"),
	}
	r.color = colorEnabled(stdout, env)
	return r
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(r *runner, ctx context.Context, args []string) int
}

func commands() []command {
	return []command{
		{"watch", "live prompts from every hub; answer them from the terminal", (*runner).cmdWatch},
		{"pending", "list the requests waiting for a verdict", (*runner).cmdPending},
		{"review", "review many pending requests at once and decide them together", (*runner).cmdReview},
		{"allow", "allow a pending request by id", (*runner).cmdAllow},
		{"deny", "deny a pending request by id", (*runner).cmdDeny},
		{"status", "hubs, their containers, pending requests and counters", (*runner).cmdStatus},
		{"log", "the audit trail from the journal", (*runner).cmdLog},
		{"explain", "what the firewall does with a destination, and why", (*runner).cmdExplain},
		{"policy", "show or export a container's sets, or propose a policy from the journal", (*runner).cmdPolicy},
		{"bridge", "the far side of --host, for ssh to run (not interactive)", (*runner).cmdBridge},
	}
}

func (r *runner) usage(w io.Writer) {
	fmt.Fprint(w, `Usage: clearancectl [--host [USER@]HOST[:PORT]]... COMMAND [OPTIONS] [ARGS]

Operator tool for clearance: live allow/deny prompts for per-container
egress firewalls.

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Global options (before the command):
  --host [USER@]HOST[:PORT]  also the hubs of HOST, over "ssh HOST clearancectl
                             bridge" (repeatable; default: remote.hosts of the
                             configuration); hubs are named HOST/ID
  --local                    only this host, whatever remote.hosts says
  --ssh-command CMD          the ssh to run (default $CLEARANCE_SSH_COMMAND,
                             remote.ssh_command, "ssh")
  --remote-command CMD       clearancectl on the far side (default
                             remote.command, "clearancectl")
  --nats URL                 the fleet through NATS and clearance-relay
                             instead of local hubs: watch, pending, allow,
                             deny, status (docs/fleet.md)
  --nats-credentials FILE    NATS credentials (default nats.credentials; TLS
                             from nats.tls_*; --nats - uses nats.url)
  --nats-operator NAME       your name on the decide subjects (default the
                             credentials' user, else the login name); the
                             NATS server's permissions must bind it to you

Run "clearancectl COMMAND --help" for a command's options.

Exit status: 0 ok, 1 failure, 2 usage error, 3 not found (unknown request
or container), 4 refused by the firewall.
See clearancectl(1).
`)
}

func (r *runner) run(ctx context.Context, args []string) int {
	g, args, err := splitGlobal(args)
	if err != nil {
		fmt.Fprintf(r.stderr, "clearancectl: %s\n", err)
		return ExitUsage
	}
	if g.nats != "" {
		if len(g.hosts) > 0 {
			fmt.Fprintln(r.stderr, "clearancectl: --nats and --host exclude each other")
			return ExitUsage
		}
		return r.runNATS(ctx, g, args)
	}
	if (g.natsCreds != "" || g.natsOperator != "") && g.nats == "" {
		fmt.Fprintln(r.stderr, "clearancectl: --nats-credentials and --nats-operator need --nats URL")
		return ExitUsage
	}
	if len(args) > 0 && !r.noRemote && args[0] != "bridge" && !isHelp(args) {
		cleanup, code, ok := r.connectRemotes(ctx, g)
		if !ok {
			return code
		}
		defer cleanup()
		if code := r.runCommand(ctx, args); code != ExitOK || !r.remoteFailed {
			return code
		}
		return ExitFailure
	}
	return r.runCommand(ctx, args)
}

// isHelp reports whether args ask for help only.
func isHelp(args []string) bool {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" || a == "help" {
			return true
		}
	}
	return false
}

func (r *runner) runCommand(ctx context.Context, args []string) int {
	if len(args) == 0 {
		r.usage(r.stderr)
		return ExitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			return r.runCommand(ctx, []string{args[1], "--help"})
		}
		r.usage(r.stdout)
		return ExitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			if code, ok := r.remoteCommand(ctx, c.name, args[1:]); ok {
				return code
			}
			return c.run(r, ctx, args[1:])
		}
	}
	fmt.Fprintf(r.stderr, "clearancectl: unknown command %q\n", args[0])
	r.usage(r.stderr)
	return ExitUsage
}

// errUsage marks a usage error already explained to the operator.
var errUsage = errors.New("usage")

// newFlags returns a flag set for a subcommand whose errors and help go
// where the caller decides (see parse).
func (r *runner) newFlags(name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet("clearancectl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: clearancectl %s %s\n\n%s\n", name, synopsis, description)
		var n int
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(w, "\nOptions:")
			fs.VisitAll(func(f *flag.Flag) {
				arg, usage := flag.UnquoteUsage(f)
				name := "--" + f.Name
				if arg != "" {
					name += " " + arg
				}
				usage = strings.ReplaceAll(usage, "\n", "\n"+strings.Repeat(" ", 27))
				fmt.Fprintf(w, "  %-24s %s\n", name, usage)
			})
		}
	}
	return fs
}

// parse parses args with fs, allowing options after positional arguments
// ("allow ID --for 1h"); "--" ends the options. It returns the positional
// arguments. On --help it prints the usage to stdout and returns flag.ErrHelp;
// on a bad option it prints the problem and the usage to stderr and returns
// errUsage.
func (r *runner) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(r.stdout)
			fs.Usage()
			return nil, flag.ErrHelp
		}
		if err != nil {
			fmt.Fprintf(r.stderr, "clearancectl: %s\n", clean(err.Error()))
			fmt.Fprintf(r.stderr, "Run \"%s --help\" for usage.\n", fs.Name())
			return nil, errUsage
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageErr reports a usage problem found after parsing.
func (r *runner) usageErr(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(r.stderr, "clearancectl: "+format+"\n", args...)
	fmt.Fprintf(r.stderr, "Run \"%s --help\" for usage.\n", fs.Name())
	return ExitUsage
}

// parseExit maps the error of parse to an exit code.
func parseExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	return ExitUsage
}

// fail prints a failure and returns code.
func (r *runner) fail(code int, format string, args ...any) int {
	fmt.Fprintf(r.stderr, "clearancectl: "+format+"\n", args...)
	return code
}

// multiFlag collects a repeatable string option.
type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }

func (m *multiFlag) Set(s string) error {
	*m = append(*m, s)
	return nil
}

// hubFlags are the options every command that talks to hubs accepts.
type hubFlags struct {
	container string
	globs     multiFlag
}

func (h *hubFlags) register(fs *flag.FlagSet, withContainer bool) {
	if withContainer {
		fs.StringVar(&h.container, "container", "", "only container `ID` (its hub's directory name, or the container name events carry)")
	}
	fs.Var(&h.globs, "glob", "also look for hub sockets matching `PATTERN` (repeatable), e.g.\n"+
		"a root container's /run/clearance/*/hub.sock")
}

// runtimeDir is $XDG_RUNTIME_DIR, or /run/user/<uid>.
func (r *runner) runtimeDir() string {
	if d := r.env("XDG_RUNTIME_DIR"); d != "" {
		return d
	}
	return "/run/user/" + strconv.Itoa(getuid())
}

// defaultGlobs is where hubs listen (config.DefaultHubGlobs): the
// caller's own (user manager), the system instances of rootful
// containers, which only root and members of their group can reach, and
// the seed's two layouts.
func (r *runner) defaultGlobs() []string {
	var out []string
	for _, g := range config.DefaultHubGlobs() {
		if strings.HasPrefix(g, "/run/clearance/") {
			if r.systemHubs == "" {
				continue
			}
			g = filepath.Join(r.systemHubs, "*", "hub.sock")
		}
		out = append(out, strings.Replace(g, "$XDG_RUNTIME_DIR", r.runtimeDir(), 1))
	}
	return out
}

// lookedFor names the default patterns, for "no hubs found" messages.
func (r *runner) lookedFor() string { return strings.Join(r.defaultGlobs(), ", ") }

// globs returns the patterns to search: the default layouts plus --glob.
func (r *runner) globs(h *hubFlags) []string {
	out := append(r.defaultGlobs(), r.remoteGlobs()...)
	if h == nil {
		return out
	}
	return append(out, h.globs...)
}

// execJournal runs journalctl and returns its output. A missing binary is
// reported as errNoJournalctl.
func execJournal(ctx context.Context, args []string) ([]byte, error) {
	path, err := exec.LookPath("journalctl")
	if err != nil {
		return nil, errNoJournalctl
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var stderr strings.Builder
	cmd.Stderr = &limitedWriter{w: &stderr, n: 4096}
	out, err := cmd.Output()
	if err != nil {
		return nil, &journalctlError{err: err, msg: strings.TrimSpace(stderr.String())}
	}
	return out, nil
}

// limitedWriter keeps at most n bytes.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		q := p
		if len(q) > l.n {
			q = q[:l.n]
		}
		l.n -= len(q)
		l.w.Write(q)
	}
	return len(p), nil
}
