// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/terok-ai/clearance/internal/bridge"
	"github.com/terok-ai/clearance/internal/config"
)

// Remote operation over SSH.
//
// "clearancectl --host [user@]host[:port] COMMAND" runs "ssh host
// clearancectl bridge" and gives every hub of the far side a local socket
// in a private directory, <dir>/<label>/<id>/hub.sock, found by discover
// with the hub name "<label>/<id>": watch, pending, allow, deny and
// status then work unchanged and show the host in every line. log reads
// the far side's journal and explain and policy ask its verdict service,
// by running the same command there through the bridge.

// remoteMarker, in a host's proxy directory, holds the host's label.
const remoteMarker = ".clearance-host"

// envSSHCommand overrides the transport, like GIT_SSH_COMMAND (split at
// white space, no shell quoting).
const envSSHCommand = "CLEARANCE_SSH_COMMAND"

// remoteExecCommands are the commands the bridge runs on the far side.
var remoteExecCommands = []string{"log", "explain", "policy"}

// remoteHost is one --host.
type remoteHost struct {
	arg   string // as the operator gave it
	dest  string // user@host for ssh
	port  string
	label string // host[:port], how lines name it
	dir   string // proxy sockets: <dir>/<id>/hub.sock

	mu     sync.Mutex
	client *bridge.Client
}

// parseHost splits "[user@]host[:port]" (host may be "[v6addr]"). The
// label, which names the host in every line and in the hub names, is
// host[:port]; it may hold letters, digits, '.', '-', '_', ':' and the
// brackets of an IPv6 address, and must not start with '-' (it would be
// an option to ssh).
func parseHost(arg string) (*remoteHost, error) {
	h := &remoteHost{arg: arg}
	rest := arg
	user := ""
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		user, rest = rest[:i], rest[i+1:]
		if user == "" || strings.HasPrefix(user, "-") || strings.ContainsAny(user, " \t/\\'\"`$;&|") {
			return nil, fmt.Errorf("host %q: bad user name", arg)
		}
	}
	host := rest
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]")
		if end < 0 {
			return nil, fmt.Errorf("host %q: missing ]", arg)
		}
		host = rest[1:end]
		if _, err := netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("host %q: %q is not an IPv6 address", arg, host)
		}
		switch tail := rest[end+1:]; {
		case tail == "":
		case strings.HasPrefix(tail, ":"):
			h.port = tail[1:]
		default:
			return nil, fmt.Errorf("host %q: unexpected %q after ]", arg, tail)
		}
	} else if i := strings.LastIndex(rest, ":"); i >= 0 {
		host, h.port = rest[:i], rest[i+1:]
	}
	if h.port != "" {
		n, err := strconv.Atoi(h.port)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("host %q: port must be 1-65535", arg)
		}
	}
	if host == "" || strings.HasPrefix(host, "-") {
		return nil, fmt.Errorf("host %q: empty or starting with '-'", arg)
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-_:", c)) {
			return nil, fmt.Errorf("host %q: %q is not a host name or address", arg, host)
		}
	}
	h.dest = host
	h.label = host
	if strings.Contains(host, ":") {
		h.label = "[" + host + "]"
	}
	if user != "" {
		h.dest = user + "@" + host
	}
	if h.port != "" {
		h.label += ":" + h.port
	}
	return h, nil
}

// globalOptions are the options before the command.
type globalOptions struct {
	hosts      []string
	sshCommand string
	remoteCmd  string
	local      bool
	// nats, natsCreds and natsOperator: the fleet view (nats.go).
	nats, natsCreds, natsOperator string
}

// splitGlobal takes the global options off the front of args.
func splitGlobal(args []string) (globalOptions, []string, error) {
	var g globalOptions
	for len(args) > 0 {
		a := args[0]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "--") {
			break
		}
		var dst *string
		switch name {
		case "host":
		case "ssh-command":
			dst = &g.sshCommand
		case "remote-command":
			dst = &g.remoteCmd
		case "nats":
			dst = &g.nats
		case "nats-credentials":
			dst = &g.natsCreds
		case "nats-operator":
			dst = &g.natsOperator
		case "local":
			if hasVal {
				return g, nil, fmt.Errorf("--local takes no value")
			}
			g.local = true
			args = args[1:]
			continue
		default:
			return g, args, nil
		}
		if !hasVal {
			if len(args) < 2 {
				return g, nil, fmt.Errorf("--%s needs a value", name)
			}
			val, args = args[1], args[2:]
		} else {
			args = args[1:]
		}
		if dst != nil {
			*dst = val
		} else {
			g.hosts = append(g.hosts, val)
		}
	}
	return g, args, nil
}

// remoteConfig is what clearancectl reads from the configuration files:
// the hosts to include by default and how to reach them. A configuration
// that does not load is reported once and left out.
func (r *runner) remoteConfig() config.Remote {
	var paths []string
	if p := r.env(config.EnvConfig); p != "" {
		paths = []string{p}
	}
	cfg, err := config.Load(paths...)
	if err != nil {
		fmt.Fprintf(r.stderr, "clearancectl: %s (remote hosts from it are not used)\n", cleanLong(err.Error()))
		return config.Remote{}
	}
	return cfg.Remote
}

// connectRemotes starts a bridge to every host of g (or of the
// configuration), waits for each first answer, and keeps reconnecting
// lost ones until ctx ends. It returns a cleanup function, and false when
// a host argument is unusable (reported as a usage error).
func (r *runner) connectRemotes(ctx context.Context, g globalOptions) (func(), int, bool) {
	var rc config.Remote
	if len(g.hosts) == 0 && !g.local || g.sshCommand == "" || g.remoteCmd == "" {
		rc = r.remoteConfig()
	}
	hosts := g.hosts
	if len(hosts) == 0 && !g.local {
		hosts = rc.Hosts
	}
	if len(hosts) == 0 {
		return func() {}, ExitOK, true
	}
	ssh := strings.Fields(g.sshCommand)
	if len(ssh) == 0 {
		ssh = strings.Fields(r.env(envSSHCommand))
	}
	if len(ssh) == 0 {
		ssh = strings.Fields(rc.SSHCommand)
	}
	if len(ssh) == 0 {
		ssh = []string{"ssh"}
	}
	remoteCmd := g.remoteCmd
	if remoteCmd == "" {
		remoteCmd = rc.Command
	}
	if remoteCmd == "" {
		remoteCmd = "clearancectl"
	}
	base, err := os.MkdirTemp(r.remoteBase(), "clearance-remote-")
	if err != nil {
		return nil, r.fail(ExitFailure, "create a directory for the remote hubs: %v", err), false
	}
	seen := map[string]bool{}
	for _, arg := range hosts {
		h, err := parseHost(arg)
		if err == nil && seen[h.label] {
			err = fmt.Errorf("host %s given twice", h.label)
		}
		if err != nil {
			os.RemoveAll(base)
			fmt.Fprintf(r.stderr, "clearancectl: --host: %s\n", clean(err.Error()))
			return nil, ExitUsage, false
		}
		seen[h.label] = true
		h.dir = filepath.Join(base, h.label)
		err = os.MkdirAll(h.dir, 0o700)
		if err == nil {
			err = os.WriteFile(filepath.Join(h.dir, remoteMarker), []byte(h.label), 0o600)
		}
		if err != nil {
			os.RemoveAll(base)
			return nil, r.fail(ExitFailure, "%v", err), false
		}
		r.remotes = append(r.remotes, h)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	first := make(chan struct{}, len(r.remotes))
	for _, h := range r.remotes {
		cmd := append(append([]string{}, ssh...), "-T")
		if h.port != "" {
			cmd = append(cmd, "-p", h.port)
		}
		cmd = append(cmd, "--", h.dest, remoteCmd+" bridge")
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.keepRemote(ctx, h, cmd, first)
		}()
	}
	for range r.remotes {
		select {
		case <-first:
		case <-ctx.Done():
		}
	}
	return func() {
		cancel()
		wg.Wait()
		os.RemoveAll(base)
	}, ExitOK, true
}

// remoteBase is where the private proxy directories go: the runtime
// directory when it exists, else the temporary directory.
func (r *runner) remoteBase() string {
	if d := r.env("XDG_RUNTIME_DIR"); d != "" {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d
		}
	}
	return os.TempDir()
}

// remoteDialTimeout bounds one connection attempt (ssh's own connect,
// authentication and the far side's first answer).
const remoteDialTimeout = 30 * time.Second

// keepRemote keeps a bridge session to h until ctx ends, reconnecting
// with backoff (1 s doubling to 30 s). first gets one value after the
// first attempt, whatever its outcome.
func (r *runner) keepRemote(ctx context.Context, h *remoteHost, cmd []string, first chan<- struct{}) {
	backoff := time.Second
	attempt := 0
	for {
		attempt++
		dctx, cancel := context.WithTimeout(ctx, remoteDialTimeout)
		c, err := bridge.Dial(dctx, bridge.Config{Command: cmd, Dir: h.dir})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				r.remoteSay(h, "unreachable: "+cleanLong(err.Error())+retryNote(attempt))
				h.mu.Lock()
				h.client = nil
				h.mu.Unlock()
				r.noteRemoteFailure()
			}
		} else {
			h.mu.Lock()
			h.client = c
			h.mu.Unlock()
			if attempt > 1 {
				r.remoteSay(h, "reconnected")
			}
			backoff = time.Second
		}
		if attempt == 1 {
			first <- struct{}{}
		}
		if c != nil {
			select {
			case <-ctx.Done():
				c.Close()
				return
			case <-c.Done():
				msg := "connection lost"
				if err := c.Err(); err != nil {
					msg += ": " + cleanLong(err.Error())
				}
				r.remoteSay(h, msg+"; reconnecting")
				h.mu.Lock()
				h.client = nil
				h.mu.Unlock()
				c.Close()
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func retryNote(attempt int) string {
	if attempt == 1 {
		return ""
	}
	return " (still retrying)"
}

// remoteSay reports a host's connection state on stderr.
func (r *runner) remoteSay(h *remoteHost, msg string) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	fmt.Fprintf(r.stderr, "clearancectl: host %s: %s\n", clean(h.label), msg)
}

func (r *runner) noteRemoteFailure() {
	r.outMu.Lock()
	r.remoteFailed = true
	r.outMu.Unlock()
}

// remoteGlobs are the patterns of the remote hubs' local sockets.
func (r *runner) remoteGlobs() []string {
	var out []string
	for _, h := range r.remotes {
		out = append(out, filepath.Join(h.dir, "*", "hub.sock"))
	}
	return out
}

// remoteLabel returns the host label of a remote hub's local socket
// path, "" for a local hub.
func remoteLabel(sock string) string {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(sock)), remoteMarker))
	if err != nil || len(b) > 300 {
		return ""
	}
	return string(b)
}

// hostOf is the host part of a hub name "<label>/<id>", "" for a local
// hub.
func hostOf(hubID string) string {
	if i := strings.LastIndex(hubID, "/"); i >= 0 {
		return hubID[:i]
	}
	return ""
}

// remoteFor returns the remote host a "<label>/<rest>" argument names,
// and rest; nil when arg names no remote host.
func (r *runner) remoteFor(arg string) (*remoteHost, string) {
	for _, h := range r.remotes {
		if rest, ok := strings.CutPrefix(arg, h.label+"/"); ok && rest != "" {
			return h, rest
		}
	}
	return nil, ""
}

// client returns h's running bridge session, or an error saying why
// there is none.
func (h *remoteHost) session() (*bridge.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.client == nil {
		return nil, fmt.Errorf("host %s is not connected", h.label)
	}
	return h.client, nil
}

// remoteCommand runs explain, policy and log for remote hosts (they need
// the far side's verdict service and journal). It reports false when the
// command is not one of them or names no remote host: the local command
// runs then.
func (r *runner) remoteCommand(ctx context.Context, name string, args []string) (int, bool) {
	if len(r.remotes) == 0 {
		return 0, false
	}
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			return 0, false
		}
		if a == "--" {
			break
		}
	}
	switch name {
	case "explain", "policy":
		for i, a := range args {
			h, rest := r.remoteFor(a)
			if h == nil {
				if v, ok := strings.CutPrefix(a, "--container="); ok {
					if h, rest = r.remoteFor(v); h != nil {
						rest = "--container=" + rest
					}
				}
			}
			if h == nil {
				continue
			}
			rargs := append(append([]string{name}, args[:i]...), rest)
			rargs = append(rargs, args[i+1:]...)
			return r.execRemote(ctx, h, rargs, r.stdout), true
		}
		return 0, false
	case "log":
		return r.remoteLog(ctx, args), true
	}
	return 0, false
}

// execRemote runs args on h's far side, its standard error prefixed with
// the host.
func (r *runner) execRemote(ctx context.Context, h *remoteHost, args []string, stdout io.Writer) int {
	c, err := h.session()
	if err != nil {
		return r.fail(ExitFailure, "%s", clean(err.Error()))
	}
	var errb bytes.Buffer
	code, err := c.Exec(ctx, args, stdout, &errb)
	for _, line := range strings.Split(strings.TrimRight(errb.String(), "\n"), "\n") {
		if line != "" {
			fmt.Fprintf(r.stderr, "%s: %s\n", clean(h.label), cleanLong(line))
		}
	}
	if err != nil {
		return r.fail(ExitFailure, "host %s: %s", clean(h.label), cleanLong(err.Error()))
	}
	return code
}

// remoteLogEntry is an audit record with the host it came from.
type remoteLogEntry struct {
	Host string `json:"host"`
	auditEntry
}

// remoteLog merges "log --json" of the local journal and every remote
// host's, newest last, with a HOST column. --container HOST/ID asks only
// that host.
func (r *runner) remoteLog(ctx context.Context, args []string) int {
	asJSON := false
	only := (*remoteHost)(nil)
	local := true
	rargs := []string{"log"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--json" || a == "-json":
			asJSON = true
			continue
		case a == "--container" || a == "-container":
			if i+1 < len(args) {
				if h, rest := r.remoteFor(args[i+1]); h != nil {
					only, local = h, false
					rargs = append(rargs, a, rest)
					i++
					continue
				}
			}
		case strings.HasPrefix(a, "--container=") || strings.HasPrefix(a, "-container="):
			_, v, _ := strings.Cut(a, "=")
			if h, rest := r.remoteFor(v); h != nil {
				only, local = h, false
				rargs = append(rargs, "--container="+rest)
				continue
			}
		}
		rargs = append(rargs, a)
	}
	rargs = append(rargs, "--json")
	type result struct {
		host    string
		entries []auditEntry
		code    int
	}
	var targets []*remoteHost
	for _, h := range r.remotes {
		if only == nil || only == h {
			targets = append(targets, h)
		}
	}
	results := make([]result, len(targets)+1)
	var wg sync.WaitGroup
	for i, h := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			code := r.execRemote(ctx, h, rargs, &out)
			var es []auditEntry
			if code == ExitOK {
				if err := json.Unmarshal(out.Bytes(), &es); err != nil {
					code = r.fail(ExitFailure, "host %s: unreadable log: %v", clean(h.label), err)
				}
			}
			results[i] = result{host: h.label, entries: es, code: code}
		}()
	}
	if local {
		var out, errb bytes.Buffer
		sub := newRunner(nil, &out, &errb, r.env)
		sub.noRemote = true
		sub.journal, sub.now = r.journal, r.now
		code := sub.cmdLog(ctx, rargs[1:])
		var es []auditEntry
		if code == ExitOK {
			json.Unmarshal(out.Bytes(), &es)
		} else if !strings.Contains(errb.String(), "journalctl not found") {
			r.stderr.Write(errb.Bytes())
		} else {
			code = ExitOK // no journal here: only the remote hosts have one
		}
		results[len(targets)] = result{host: "", entries: es, code: code}
	}
	wg.Wait()
	var all []remoteLogEntry
	code := ExitOK
	for _, res := range results {
		if res.code != ExitOK && code == ExitOK {
			code = res.code
		}
		for _, e := range res.entries {
			all = append(all, remoteLogEntry{Host: res.host, auditEntry: e})
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].TimeUsec < all[j].TimeUsec })
	if asJSON {
		if all == nil {
			all = []remoteLogEntry{}
		}
		if err := writeJSON(r.stdout, all); err != nil {
			return r.fail(ExitFailure, "%v", err)
		}
		return code
	}
	if len(all) == 0 {
		fmt.Fprintln(r.stdout, "no audit records")
		return code
	}
	entries := make([]auditEntry, len(all))
	for i, e := range all {
		entries[i] = e.auditEntry
	}
	t := r.auditTable(entries, false)
	t.head = append([]string{"HOST"}, t.head...)
	for i := range t.rows {
		t.rows[i] = append([]string{orDash(clean(all[i].Host))}, t.rows[i]...)
	}
	t.write(r.stdout, r)
	return code
}

// cmdBridge is the far side of "clearancectl --host": frames on stdin
// and stdout (see package bridge), for ssh to run.
func (r *runner) cmdBridge(ctx context.Context, args []string) int {
	fs := r.newFlags("bridge", "[--glob PATTERN]",
		`The far side of "clearancectl --host": carries this user's hubs and the
commands log, explain and policy over standard input and output, for
ssh to run ("ssh host clearancectl bridge"). Not for interactive use.
Nothing listens on the network; the hubs see this process's uid.`)
	var hf hubFlags
	hf.register(fs, false)
	pos, err := r.parse(fs, args)
	if err != nil {
		return parseExit(err)
	}
	if len(pos) > 0 {
		return r.usageErr(fs, "bridge takes no arguments")
	}
	globs := r.globs(&hf)
	err = bridge.Serve(ctx, r.stdin, r.stdout, bridge.ServerConfig{
		Hubs: func() ([]bridge.Hub, error) {
			refs, err := discover(globs)
			if err != nil {
				return nil, err
			}
			out := make([]bridge.Hub, 0, len(refs))
			for _, h := range refs {
				out = append(out, bridge.Hub{ID: h.ID, Path: h.Path})
			}
			return out, nil
		},
		Exec: func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
			sub := newRunner(nil, stdout, stderr, r.env)
			sub.noRemote = true
			sub.journal, sub.dialFirewall, sub.lookupHost = r.journal, r.dialFirewall, r.lookupHost
			return sub.run(ctx, args)
		},
		Allowed: remoteExecCommands,
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		return r.fail(ExitFailure, "bridge: %v", err)
	}
	return ExitOK
}
