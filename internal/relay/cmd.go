// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/config"
	"github.com/terok-ai/clearance/internal/sd"
)

const usage = `Usage: clearance-relay [options]

Connects the clearance hubs of this host (this user's) to a NATS server,
for a fleet of hosts operated from anywhere (docs/fleet.md):

  * publishes every blocked request and every outcome on
    <prefix>.<host>.<container>.blocked / .outcome, and the host's
    containers on <prefix>.<host>.presence; answers <prefix>.fleet.pending
    and <prefix>.fleet.presence requests;
  * answers verdict requests on <prefix>.<host>.<container>.decide.<operator>
    by passing them to the hub's Decide (channel "nats.<operator>"): the
    hub's own checks hold, the first verdict wins, a later one is answered
    "already decided by ...";
  * mirrors "always" verdicts through the JetStream key-value bucket
    (deny wins) and applies the other hosts' to this host's policies.

Which operator may answer for which host is the NATS server's decision
(its accounts and permissions). With the server down or unreachable the
local prompts work as before; the relay reconnects and publishes what is
still pending.

Options (they override the relay section of the configuration):
`

// Command runs clearance-relay and returns its exit status: 0 after a
// clean shutdown, 1 on failure, 2 on a usage error.
func Command(ctx context.Context, args []string, stdio cli.Stdio) int {
	sd.IgnoreSIGPIPE()
	stderr := stdio.Err
	fs := flag.NewFlagSet("clearance-relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	cfgPath := fs.String("config", "", "read only this configuration `file` (default: /etc/clearance/clearance.yaml, then $XDG_CONFIG_HOME/clearance/clearance.yaml)")
	url := fs.String("url", "", "NATS server `url` (default: nats.url)")
	host := fs.String("host", "", "this host's `name` on the subjects (default: relay.host, else the host name)")
	creds := fs.String("credentials", "", "NATS credentials `file` (default: nats.credentials)")
	verdictSock := fs.String("verdict-socket", "", "the verdict service `socket` other hosts' always verdicts are adopted through (default: verdict.socket)")
	noAdopt := fs.Bool("no-adopt", false, "do not apply other hosts' always verdicts here (default: relay.adopt)")
	debug := fs.Bool("debug", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	level := new(slog.LevelVar)
	if *debug {
		level.Set(slog.LevelDebug)
	}
	log := sd.NewLogger(level, "clearance-relay")

	var paths []string
	if *cfgPath != "" {
		paths = []string{*cfgPath}
	}
	cfg, err := config.Load(paths...)
	if err != nil {
		fmt.Fprintf(stderr, "clearance-relay: %v\n", err)
		return 1
	}
	rc, nc := cfg.Relay, cfg.NATS
	if *url != "" {
		nc.URL = *url
	}
	if *host != "" {
		rc.Host = *host
	}
	if *creds != "" {
		nc.Credentials = *creds
	}
	if rc.Host == "" {
		h, _ := os.Hostname()
		rc.Host, _, _ = strings.Cut(h, ".")
	}
	if nc.URL == "" {
		fmt.Fprintln(stderr, "clearance-relay: no NATS server: set nats.url in the configuration or pass --url")
		return 2
	}
	user := ""
	if nc.Credentials != "" {
		// Checked now: nats.go reads the file only when it connects, and
		// the relay's endless reconnects would hide what is wrong with it.
		creds, err := LoadCredentials(nc.Credentials)
		if err != nil {
			fmt.Fprintf(stderr, "clearance-relay: %v\n", err)
			return 1
		}
		user = creds.Name
	}
	opts := NATSOptions(nc)
	sock := cfg.Verdict.Socket
	if *verdictSock != "" {
		sock = *verdictSock
	}
	var adopter Adopter
	if rc.Adopt && !*noAdopt {
		adopter = VerdictAdopter{Socket: sock}
	}
	notifier := sd.NewNotifier(log)
	r, err := New(Config{Host: rc.Host, URL: nc.URL, Options: opts, Prefix: rc.SubjectPrefix, Bucket: rc.Bucket,
		HubGlob: []string{cfg.Hub.Dir() + "/*/hub.sock"}, Adopter: adopter, Log: log,
		OnConnected:    func() { notifier.Status("connected to NATS") },
		OnDisconnected: func() { notifier.Status("NATS unreachable, retrying; local prompts unaffected") }})
	if err != nil {
		fmt.Fprintf(stderr, "clearance-relay: %v\n", err)
		return 2
	}
	log.Info("relay starting", "host", rc.Host, "url", redact(nc.URL), "nats_user", user)
	// Ready at once: the relay follows the hubs whether or not NATS is
	// reachable, and keeps trying; a start must not fail for an outage.
	notifier.Ready("waiting for NATS")
	if err := r.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "clearance-relay: %s\n", ExplainRefusal(err, nc.Credentials))
		return 1
	}
	notifier.Stopping()
	return 0
}

// NATSOptions are the nats.go options of the configuration's nats
// section: credentials file, CA, client certificate.
func NATSOptions(n config.NATS) []nats.Option {
	var opts []nats.Option
	if n.Credentials != "" {
		opts = append(opts, nats.UserCredentials(n.Credentials))
	}
	if n.TLSCA != "" {
		opts = append(opts, nats.RootCAs(n.TLSCA))
	}
	if n.TLSCert != "" {
		opts = append(opts, nats.ClientCert(n.TLSCert, n.TLSKey))
	}
	return opts
}

// redact hides a password in a URL for the log.
func redact(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return u
	}
	return u[:scheme+3] + "***" + u[at:]
}
