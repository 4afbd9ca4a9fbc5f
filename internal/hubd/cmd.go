// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/terok-ai/clearance/internal/ask"
	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/config"
	"github.com/terok-ai/clearance/internal/dnsfwd"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/sanitize"
	"github.com/terok-ai/clearance/internal/sd"
	"github.com/terok-ai/clearance/internal/shieldexec"
	"github.com/terok-ai/clearance/internal/sockets"
)

const usage = `Usage: clearance-hub [options] CONTAINER_ID

Serves one container's clearance hub: blocked connections become
connection_blocked events for subscribers (clearance-notifier,
clearancectl), and operator verdicts are applied to the container's
firewall.

Sockets: from systemd socket activation (LISTEN_FDS, names "varlink" and
"ingest", see clearance-hub@.socket), or else bound here as
$XDG_RUNTIME_DIR/clearance/CONTAINER_ID/hub.sock and ingest.sock
(directory 0700, sockets 0600), removed on exit.

Verdicts go to the privileged clearance-verdict service
(/run/clearance/verdict.sock), or with verdict.mode "exec" to
"terok-shield allow|deny CONTAINER DEST" as the seed did. With the built-in
ruleset the hub also watches the container's NFLOG group through the
verdict service.

Options:
`

// Command runs clearance-hub with the given arguments and returns its exit
// status: 0 after a clean shutdown, 1 on failure, 2 on a usage error. It
// writes to stdio.Err only (its log goes to the journal when stderr is
// the journal); SIGPIPE is ignored, so a lost log stream cannot kill it.
func Command(ctx context.Context, args []string, stdio cli.Stdio) int {
	sd.IgnoreSIGPIPE()
	stderr := stdio.Err
	fs := flag.NewFlagSet("clearance-hub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	cfgPath := fs.String("config", "", "read only this configuration file (default: /etc/clearance/clearance.yaml, then $XDG_CONFIG_HOME/clearance/clearance.yaml)")
	runtimeDir := fs.String("runtime-dir", "", "base directory of the hub sockets when not socket-activated (default: hub.runtime_dir, $XDG_RUNTIME_DIR/clearance)")
	verdictMode := fs.String("verdict-mode", "", `"service" or "exec" (default: verdict.mode)`)
	watch := fs.String("watch", "auto", `NFLOG watch through the verdict service: "auto" (with the built-in ruleset in service mode), "on" or "off"`)
	runtimeRoot := fs.String("runtime-root", record.DefaultRuntimeRoot, "where the OCI hook writes runtime records (the container's dossier is read from its record)")
	debug := fs.Bool("debug", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	id := fs.Arg(0)
	if err := sockets.ValidContainerID(id); err != nil {
		fmt.Fprintf(stderr, "clearance-hub: %v\n", err)
		return 2
	}

	level := new(slog.LevelVar)
	if *debug {
		level.Set(slog.LevelDebug)
	}
	log := sd.NewLogger(level, "clearance-hub")

	var paths []string
	if *cfgPath != "" {
		paths = []string{*cfgPath}
	}
	// A broken configuration must not leave the container without
	// prompts: the hub starts on the defaults and reports the error (in
	// its log, in Stats, which clearancectl status shows, and once to
	// its subscribers as a hub_notice event).
	var configErr string
	cfg, err := config.Load(paths...)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		log.Error("configuration is invalid; running on the defaults", "err", err)
		configErr = err.Error()
		cfg = config.Default()
	}
	if *verdictMode != "" {
		cfg.Verdict.Mode = *verdictMode
	}
	if *runtimeDir != "" {
		cfg.Hub.RuntimeDir = *runtimeDir
	}
	if err := cfg.Validate(); err != nil {
		log.Error("configuration", "err", err)
		return 2
	}

	files := sockets.ActivatedFiles()
	stored := takeStored(files)
	varlinkLns, ingestLns, err := listeners(files, cfg.Hub.Dir(), id)
	if err != nil {
		stored.close()
		log.Error("listen", "container", id, "err", err)
		return 1
	}

	rec, recErr := readRecord(*runtimeRoot, id)
	if recErr != nil {
		log.Info("no runtime record; prompts carry no dossier and the verdict service resolves the container itself",
			"container", id, "err", recErr)
	}
	fw := &Firewall{Socket: cfg.Verdict.Socket, Container: id, OnceTTL: cfg.Verdict.OnceTTL, Policy: rec.Policy}
	if recErr == nil {
		ns, err := rec.OpenNetns()
		if err != nil {
			log.Warn("cannot open the container's network namespace; the verdict service resolves it from the record",
				"container", id, "err", err)
		} else {
			defer ns.Close()
			fw.NS = ns
		}
	}
	var applier hub.Applier = fw
	if cfg.Verdict.Mode == config.VerdictModeExec {
		bin := cfg.Verdict.ShieldBinary
		if bin == "" {
			bin = shieldexec.FindShieldBinary()
		}
		applier = ExecApplier{Exec: &shieldexec.Exec{Binary: bin, Timeout: cfg.Verdict.Timeout, Log: log}}
	}
	var watcher *Watcher
	switch *watch {
	case "on":
		watcher = &Watcher{}
	case "auto":
		if cfg.Verdict.Mode == config.VerdictModeService && cfg.Ruleset.Mode == config.RulesetModeBuiltin {
			watcher = &Watcher{}
		}
	case "off":
	default:
		fmt.Fprintf(stderr, "clearance-hub: -watch must be auto, on or off\n")
		return 2
	}
	if watcher != nil {
		watcher.Dossier = sanitize.Map(rec.Dossier, sanitize.DefaultMax)
		watcher.Firewall = fw
		watcher.BlockPrefix = cfg.Ruleset.BlockPrefix
		watcher.DNSPrefix = cfg.Ruleset.DNSPrefix
		if cfg.Ruleset.Mode != config.RulesetModeBuiltin {
			watcher.GuardEvery = -1 // the shield's table is terok-shield's to guard
		}
		if cfg.Ruleset.Mode == config.RulesetModeBuiltin {
			mode, err := dnsfwd.ParseDenyMode(cfg.DNS.Denied)
			if err != nil {
				fmt.Fprintf(stderr, "clearance-hub: %v\n", err)
				return 1
			}
			watcher.DNS = &DNS{Firewall: fw, HoldMax: cfg.DNS.HoldMax, NoHold: !cfg.DNS.Hold, MinTTL: cfg.DNS.MinTTL, DenyMode: mode,
				MaxNames: cfg.DNS.MaxNames, Rate: float64(cfg.DNS.QueriesPerSecond), CacheSize: cfg.DNS.CacheSize}
			fw.DNS = watcher.DNS
		}
	}
	var askEP *AskEndpoint
	if watcher != nil && cfg.Ruleset.Mode == config.RulesetModeBuiltin && cfg.Ask.Port != 0 {
		askEP = &AskEndpoint{Firewall: fw, Dossier: watcher.Dossier, DNS: watcher.DNS,
			Server: &ask.Server{RatePerMinute: cfg.Ask.RatePerMinute, Burst: cfg.Ask.Burst, MaxWait: cfg.Ask.MaxWait,
				MaxConnections: cfg.Ask.MaxConnections}}
	}

	end := &Ending{Record: rec, Log: log.With("container", id)}
	if watcher != nil && cfg.Ruleset.Mode == config.RulesetModeBuiltin && recErr == nil {
		end.Firewall = fw
	}
	err = Run(ctx, Options{
		Container: id,
		Varlink:   varlinkLns,
		Ingest:    ingestLns,
		Hub: hub.Config{
			QueueDepth:   cfg.Hub.QueueDepth,
			PendingTTL:   cfg.Hub.PendingTTL,
			MaxPending:   cfg.Hub.MaxPending,
			ApplyTimeout: cfg.Verdict.Timeout + cfg.Verdict.Timeout/2,
			ContainerID:  rec.ID,
			Policy:       rec.Policy,
			Project:      rec.Dossier[event.DossierProject],
			Applier:      applier,
		},
		MaxMessage:  cfg.Hub.MaxMessageBytes,
		MaxLine:     cfg.Hub.MaxLineBytes,
		Watcher:     watcher,
		Ask:         askEP,
		Stored:      stored,
		ConfigError: configErr,
		Level:       level,
		Log:         log,
		SD:          sd.NewNotifier(log),
	})
	end.Run(ctx)
	if err != nil {
		log.Error("hub failed", "container", id, "err", err)
		return 1
	}
	return 0
}

// takeStored takes the descriptors the hub's previous process left in
// systemd's file descriptor store out of files.
func takeStored(files map[string][]*os.File) Stored {
	var st Stored
	one := func(name string) *os.File {
		fs := files[name]
		delete(files, name)
		for _, f := range fs[min(1, len(fs)):] {
			f.Close() // one of each is all the hub ever stores
		}
		if len(fs) == 0 {
			return nil
		}
		return fs[0]
	}
	st.State = one(fdState)
	st.NFLOG = one(fdNFLOG)
	for name := range files {
		if sock, ok := strings.CutPrefix(name, fdDNS); ok {
			if st.DNS == nil {
				st.DNS = map[string]*os.File{}
			}
			st.DNS[sock] = one(name)
		}
		if sock, ok := strings.CutPrefix(name, fdAsk); ok {
			if st.Ask == nil {
				st.Ask = map[string]*os.File{}
			}
			st.Ask[sock] = one(name)
		}
	}
	return st
}

// listeners returns the activated sockets named "varlink" and "ingest"
// (closing any other passed descriptor), or binds both under dir/id when
// the hub was not socket-activated.
func listeners(files map[string][]*os.File, dir, id string) (varlinkLns, ingestLns []net.Listener, err error) {
	activated := len(files) > 0
	act, err := sockets.Listeners(files, "varlink", "ingest")
	for name, fs := range files {
		for _, f := range fs {
			f.Close()
		}
		delete(files, name)
	}
	if err != nil {
		return nil, nil, err
	}
	if activated {
		varlinkLns, ingestLns = act["varlink"], act["ingest"]
		if len(varlinkLns) == 0 {
			names := make([]string, 0, len(act))
			for name := range act {
				names = append(names, name)
			}
			return nil, nil, fmt.Errorf("no activated socket named \"varlink\" (got %q; set FileDescriptorName=varlink)", names)
		}
		return varlinkLns, ingestLns, nil
	}
	hubDir := filepath.Join(dir, id)
	v, err := sockets.BindHardened(filepath.Join(hubDir, "hub.sock"), "hub")
	if err != nil {
		return nil, nil, err
	}
	in, err := sockets.BindHardened(filepath.Join(hubDir, "ingest.sock"), "ingest")
	if err != nil {
		v.Close()
		sockets.RemoveDirIfEmpty(hubDir)
		return nil, nil, err
	}
	return []net.Listener{sockets.RemoveDirOnClose(v, hubDir)}, []net.Listener{sockets.RemoveDirOnClose(in, hubDir)}, nil
}

// readRecord reads the container's runtime record, written by the OCI
// hook for our uid.
func readRecord(root, id string) (record.Record, error) {
	return record.ReadOwned(record.Locate(root, os.Getuid(), id), uint32(os.Getuid()))
}

// ExecApplier applies verdicts by running terok-shield, as the seed did.
type ExecApplier struct{ Exec *shieldexec.Exec }

// Apply implements [hub.Applier].
func (a ExecApplier) Apply(ctx context.Context, req hub.ApplyRequest) (hub.ApplyResult, error) {
	ok, stderr := a.Exec.Apply(ctx, req.Container, req.Dest, req.Action)
	return hub.ApplyResult{OK: ok, Stderr: stderr}, nil
}
