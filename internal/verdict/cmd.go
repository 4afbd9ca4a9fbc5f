// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/config"
	"github.com/terok-ai/clearance/internal/sd"
	"github.com/terok-ai/clearance/internal/shieldexec"
)

const usage = `Usage: clearance-verdict [--config FILE] [--socket PATH] [--runtime-root DIR] [--policy-dir DIR]
                         [--shield-apply sets|exec] [--idle DURATION] [--idle-timeout DURATION]
                         [--max-connections N] [--subuid-file FILE]

The privileged half of clearance: checks that the caller owns a container's
network namespace, installs and inspects its nftables ruleset, applies
verdicts, and hands the container's bound NFLOG socket to the caller.
Serves org.terok.ClearanceVerdict1 (the seed's Apply), org.terok.ClearanceFirewall1
(Engage, Watch, Apply with scope, Revoke, List, Explain, Disengage, ...),
org.varlink.service and io.systemd.service.

How it is started decides how long it lives:
  * socket unit with Accept=no (the packaged clearance-verdict.socket): the
    passed fd is the listening socket; served until no connection has been
    open for --idle.
  * systemd socket unit with Accept=yes: the passed fd is one connected
    socket; the instance serves that connection and exits when the caller
    hangs up.
  * no LISTEN_FDS: binds --socket itself (directory 0755 owned by root, socket
    0666: any local user may connect, because every call is authorized on its
    own from the caller's kernel-verified uid, SO_PEERCRED) and serves until
    SIGTERM or SIGINT.

Connections: one user, with its subordinate uids (--subuid-file), holds at
most verdict.max_connections_per_owner at once (a connection beyond is
answered PermissionDenied before it is read); a connection without a complete
request for --idle-timeout is closed; root is not limited.

Authorization: the caller's uid must own the container's network namespace
(owner of the user namespace owning it) or be 0. The caller passes the
namespace as a file descriptor with every call; a runtime record under the
caller's uid (<runtime-root>/user/<uid>/clearance/<id>/container.json, or
<runtime-root>/clearance/containers/<id>/container.json for root) must then
name the same namespace. Without a passed namespace only root's calls are
resolved through the record's pid (which needs CAP_SYS_PTRACE).

Options:
`

// Command runs clearance-verdict with args (without the program name) and
// returns its exit status: 0 after a clean shutdown (or idle exit), 1 on
// failure, 2 on a usage error.
func Command(ctx context.Context, args []string, stdio cli.Stdio) int {
	sd.IgnoreSIGPIPE()
	fs := flag.NewFlagSet("clearance-verdict", flag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	cfgPath := fs.String("config", "", "configuration `file` (default: "+config.SystemPath+", or $"+config.EnvConfig+")")
	socket := fs.String("socket", DefaultSocket, "socket `path` to bind without socket activation")
	runtimeRoot := fs.String("runtime-root", "/run", "`dir` under which runtime records are found")
	policyDir := fs.String("policy-dir", "", "YAML policy `dir` (default: ruleset.policy_dir of the configuration)")
	shieldApply := fs.String("shield-apply", ShieldApplySets, "in terok-shield mode, write into the shield's sets (`sets`) or run terok-shield allow|deny (exec)")
	shieldBinary := fs.String("shield-binary", "", "terok-shield `executable` for --shield-apply exec (default: verdict.shield_binary, next to this binary, then $PATH)")
	idle := fs.Duration("idle", 30*time.Second, "with a listening activated socket, exit after this `duration` without connections")
	idleTimeout := fs.Duration("idle-timeout", 0, "close a connection after this `duration` without a complete request (default: verdict.idle_timeout, 5s)")
	subUIDs := fs.String("subuid-file", DefaultSubUIDFile, "subordinate uid ranges: a user's subuids count as that user for connection limits (`file`)")
	maxConns := fs.Int("max-connections", 256, "with a listening socket, serve at most `n` connections at once")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stdio.Err, "clearance-verdict: unexpected argument %q\n", fs.Arg(0))
		return 2
	}

	level := new(slog.LevelVar)
	log := sd.NewLogger(level, "clearance-verdict")
	var paths []string
	if *cfgPath != "" {
		paths = []string{*cfgPath}
	}
	if stdio.Env(config.EnvConfig) == "" && *cfgPath == "" {
		paths = []string{config.SystemPath} // a root service reads no user config
	}
	cfg, err := config.Load(paths...)
	if err != nil {
		log.Error("load configuration", "err", err)
		return 1
	}
	vc, err := FromConfig(cfg)
	if err != nil {
		log.Error("load configuration", "err", err)
		return 1
	}
	vc.RuntimeRoot, vc.ShieldApply, vc.Level, vc.Log = *runtimeRoot, *shieldApply, level, log
	vc.SubUIDFile = *subUIDs
	if *idleTimeout <= 0 {
		*idleTimeout = cfg.Verdict.IdleTimeout
	}
	if *policyDir != "" {
		vc.PolicyDir = *policyDir
	}
	if *shieldApply == ShieldApplyExec {
		bin := *shieldBinary
		if bin == "" {
			bin = cfg.Verdict.ShieldBinary
		}
		vc.Shield = shieldRunner(bin, cfg.Verdict.Timeout, log)
	}
	svc, err := New(vc)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}

	sock, activated, err := Activated()
	if err != nil {
		log.Error("socket activation", "err", err)
		return 1
	}
	if !activated {
		ln, err := Listen(*socket)
		if err != nil {
			log.Error("listen", "err", err)
			return 1
		}
		sock = Socket{Listener: ln}
		*idle = 0
		log.Info("verdict service listening", "socket", *socket)
	}
	// Run with Accept=yes and a RuntimeDirectory=, the per-connection
	// instances count each user's connections there.
	opt := RunOptions{Idle: *idle, IdleTimeout: *idleTimeout, MaxConns: *maxConns,
		SlotDir: stdio.Env("RUNTIME_DIRECTORY"), Log: log}
	if err := Run(ctx, svc, sock, opt); err != nil {
		log.Error("serve", "err", err)
		return 1
	}
	return 0
}

// shieldRunner runs terok-shield as the seed did; binary "" means next to
// this executable, then $PATH.
func shieldRunner(binary string, timeout time.Duration, log *slog.Logger) ShieldRunner {
	if binary == "" {
		binary = shieldexec.FindShieldBinary()
	}
	return &shieldexec.Exec{Binary: binary, Timeout: timeout, Log: log}
}
