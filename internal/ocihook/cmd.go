// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/config"
	"github.com/terok-ai/clearance/internal/sd"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// Journal returns the journal's send function when the journal is
// reachable (also from a rootless user namespace), else nil.
func Journal() func(string, journal.Priority, map[string]string) error {
	if !journal.Enabled() {
		return nil
	}
	return journal.Send
}

// hookHandler logs text to stderr (the runtime shows it when the hook
// fails) and, with send, warnings and errors also to the journal, where
// an administrator finds why a container was refused (the runtime may not
// keep the hook's stderr).
func hookHandler(stderr io.Writer, level slog.Level, send func(string, journal.Priority, map[string]string) error) slog.Handler {
	text := slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	if send == nil {
		return text
	}
	return slog.NewMultiHandler(text, sd.NewJournalHandler(&sd.JournalOptions{
		Level: slog.LevelWarn, Identifier: "clearance-oci-hook", Send: send, Fallback: io.Discard}))
}

const usage = `Usage: clearance-oci-hook [options] [createRuntime|poststop]

OCI runtime hook for clearance, run by podman/runc from a hooks.d file
(see clearance-oci-hook(1) and docs/oci-hook.md). Reads the OCI state
JSON on stdin. Without a stage argument the stage follows from the
state's status: "creating" is createRuntime, "stopped" is poststop (one
hooks.d file can then name both stages).

  createRuntime  write the container's runtime record, engage its ruleset
                 through the verdict service, start
                 clearance-hub@<id12>.socket in the owner's systemd manager
                 and wait until the hub is ready
  poststop       stop the hub's units and remove the runtime record

Exit status: 0 on success or a tolerated failure, 1 when the container
must not start (createRuntime could not write the record or engage the
ruleset), 2 on a usage error or an invalid state document.

Options:
`

// Command runs the hook with args (without the program name), the OCI
// state on stdin and logs on stderr, and returns the exit status.
func Command(ctx context.Context, args []string, stdio cli.Stdio) int {
	sd.IgnoreSIGPIPE()
	stdin, stderr := stdio.In, stdio.Err
	fs := flag.NewFlagSet("clearance-oci-hook", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var h Hook
	fs.StringVar(&h.RuntimeRoot, "runtime-root", "/run", "where runtime records are written (record.Locate)")
	fs.StringVar(&h.UserRuntimeBase, "user-runtime-base", "/run/user", "parent of the users' runtime directories (their systemd managers and hub sockets)")
	fs.StringVar(&h.VerdictSocket, "verdict-socket", verdictclient.DefaultSocket, "the verdict service's socket")
	engage := fs.String("engage", string(EngageRequired), `ruleset failure policy: "required" (abort the container), "optional" (log and run) or "off"`)
	manager := fs.String("manager", string(ManagerAuto), `service manager: "auto" (the owner's user manager; for root, root's user manager if running, else the system manager), "user" or "system"`)
	cfgPath := fs.String("config", config.SystemPath, "the system configuration `file` (hook.allow_capabilities, hook.without_user_manager); never a user's")
	timeout := fs.Duration("timeout", 25*time.Second, "bound for the whole hook (keep below the hooks.d timeout)")
	fs.DurationVar(&h.HubWait, "hub-wait", 10*time.Second, "bound for the hub to become ready; exceeding it is logged, not fatal")
	debug := fs.Bool("debug", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return 2
	}
	switch EngageMode(*engage) {
	case EngageRequired, EngageOptional, EngageOff:
		h.Engage = EngageMode(*engage)
	default:
		fmt.Fprintf(stderr, "clearance-oci-hook: -engage must be required, optional or off\n")
		return 2
	}
	switch ManagerMode(*manager) {
	case ManagerAuto, ManagerUser, ManagerSystem:
		h.Manager = ManagerMode(*manager)
	default:
		fmt.Fprintf(stderr, "clearance-oci-hook: -manager must be auto, user or system\n")
		return 2
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	h.Log = slog.New(hookHandler(stderr, level, Journal())).With("prog", "clearance-oci-hook")
	// Only the system configuration counts: whoever runs the container
	// must not be able to allow what the hook refuses.
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		h.Log.Error("read configuration; allowing no capability that defeats the firewall", "err", err)
		cfg = config.Default()
	}
	h.AllowCapabilities = cfg.Hook.AllowCapabilities
	h.RunWithoutUserManager = cfg.Hook.WithoutUserManager == config.WithoutUserManagerRun

	stage := fs.Arg(0)
	if stage != "" && stage != "createRuntime" && stage != "poststop" {
		fmt.Fprintf(stderr, "clearance-oci-hook: unknown stage %q (want createRuntime or poststop)\n", stage)
		return 2
	}
	st, err := ParseState(stdin)
	if err != nil {
		h.Log.Error("read OCI state", "stage", stage, "err", err)
		return 2
	}
	if stage == "" {
		if stage = StageOf(st.Status); stage == "" {
			h.Log.Error("cannot tell the stage from the state's status; name it as an argument", "status", st.Status)
			return 2
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if stage == "createRuntime" {
		if err := h.CreateRuntime(ctx, st); err != nil {
			h.Log.Error("container must not start", "container", st.ID12(), "stage", stage, "err", err)
			return 1
		}
		return 0
	}
	if err := h.Poststop(ctx, st); err != nil {
		// Nothing to abort any more: report and succeed.
		h.Log.Warn("cleanup incomplete", "container", st.ID12(), "stage", stage, "err", err)
	}
	return 0
}

// StageOf maps an OCI state status to the hook stage clearance runs in it:
// "creating" → "createRuntime", "stopped" → "poststop", else "".
func StageOf(status string) string {
	switch status {
	case "creating":
		return "createRuntime"
	case "stopped":
		return "poststop"
	}
	return ""
}
