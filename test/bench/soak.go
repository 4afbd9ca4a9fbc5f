// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/testenv/notifytest"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
)

func init() {
	measurements = append(measurements, struct {
		group string
		run   func(*bench) error
	}{"soak", (*bench).soak})
}

// soakDuration is how long the soak drives traffic: -soak-duration, else
// $CLEARANCE_SOAK_DURATION, else 10 minutes.
var soakDuration = flag.Duration("soak-duration", envDuration("CLEARANCE_SOAK_DURATION", 10*time.Minute),
	"how long the soak group drives blocks and verdicts (env CLEARANCE_SOAK_DURATION)")

// soakTrace prints every RSS sample (VmRSS, RssAnon, RssFile of both
// processes) to stderr.
var soakTrace = flag.Bool("soak-trace", os.Getenv("CLEARANCE_SOAK_TRACE") != "",
	"print every RSS sample of the soak to stderr (env CLEARANCE_SOAK_TRACE)")

// Soak timing: one block a second, RSS every few seconds, and the timed
// verdicts short enough to expire many times within the run.
const (
	soakBlockEvery  = time.Second
	soakSampleEvery = 5 * time.Second
	soakOnceTTL     = 30 * time.Second // Allow and Deny: scope once, expiring
	soakAllowFor    = 20 * time.Second // the third button: Decide with this TTL
	soakWarmupMax   = 2 * time.Minute
)

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
		fmt.Fprintf(os.Stderr, "bench: ignoring %s=%q (want a duration such as 10m)\n", name, v)
	}
	return def
}

// soak: memory of the hub and of clearance-notifier over a long steady
// run. A lab container (real namespaces, the verdict service and the hub,
// internal/testenv/lab) sends one blocked datagram a second, each to a new
// destination; the built clearance-notifier follows the hub on a private
// dbus-daemon with the recording fake notification server, which answers
// every prompt in turn with Allow, Deny and "Allow 20 s" (the notifier's
// allow_for button). Allow and Deny are scope once with a 30 s TTL, so
// verdicts keep expiring (verdict_expired) all through the run.
//
// VmRSS of both processes is sampled every 5 s; the reported slopes are
// the least-squares fit over the samples after a warm-up (the first 2
// minutes, or the first 20 % of a shorter run). Also reported: RSS at the
// start (first sample) and end, and what the run lost (blocks without a
// prompt, prompts without a verdict).
//
// The duration is -soak-duration or $CLEARANCE_SOAK_DURATION (default
// 10m). Needs root (namespaces). Everything started is stopped, also on
// SIGINT/SIGTERM, which end the run early.
func (b *bench) soak() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root")
	}
	dur := *soakDuration
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	l := lab.New()
	defer l.Close()
	s, err := l.NewStack(ctx, lab.StackOptions{Bin: b.bin, ID: "soakctr00001", OnceTTL: soakOnceTTL})
	if err != nil {
		return err
	}
	if err := s.Container.OnLink(netip.MustParsePrefix("10.254.78.1/24")); err != nil {
		return err
	}

	dir, err := l.TempDir()
	if err != nil {
		return err
	}
	bus, err := notifytest.LaunchBus(dir)
	if bus != nil {
		defer bus.Stop()
	}
	if err != nil {
		return err
	}
	srv, err := notifytest.StartServer(bus.Addr, []string{"actions", "body", "body-markup", "persistence"})
	if err != nil {
		return err
	}
	defer srv.Close()

	notifier, err := b.startSoakNotifier(ctx, l, s, dir, bus.Addr)
	if err != nil {
		return err
	}

	// Count what the hub announces, from a subscriber of our own.
	counts, err := countEvents(ctx, s.HubSock)
	if err != nil {
		return err
	}
	answers := answerPrompts(ctx, srv)

	pc, err := s.Container.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return err
	}
	defer pc.Close()

	type sample struct {
		at            time.Duration
		notifier, hub float64 // KiB
	}
	var samples []sample
	rss := func(pid int) float64 { return rssMiB(pid) * 1024 }
	start := time.Now()
	blocks := time.NewTicker(soakBlockEvery)
	defer blocks.Stop()
	sampler := time.NewTicker(soakSampleEvery)
	defer sampler.Stop()
	end := time.NewTimer(dur)
	defer end.Stop()
	take := func() {
		samples = append(samples, sample{time.Since(start), rss(notifier), rss(s.HubPID())})
		if *soakTrace {
			fmt.Fprintf(os.Stderr, "soak %4.0fs  notifier %s  hub %s\n", time.Since(start).Seconds(),
				memLine(notifier), memLine(s.HubPID()))
		}
	}
	take()
	sent := 0
	fmt.Fprintf(os.Stderr, "soak: %v of one block a second (CLEARANCE_SOAK_DURATION or -soak-duration to change)\n", dur)
loop:
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("soak interrupted after %v", time.Since(start).Round(time.Second))
		case <-end.C:
			break loop
		case <-blocks.C:
			// A new destination every time: 250 addresses × ports.
			dst := &net.UDPAddr{IP: net.IPv4(10, 254, 78, byte(2+sent%250)), Port: 20000 + sent/250}
			if err := send(pc, dst); err != nil {
				return err
			}
			sent++
		case <-sampler.C:
			take()
			if !alive(notifier) || !alive(s.HubPID()) {
				return fmt.Errorf("a process died during the soak (notifier alive %v, hub alive %v; hub log: %s)",
					alive(notifier), alive(s.HubPID()), s.Tail("hub"))
			}
		}
	}
	take()
	// The last block's prompt and answer are a few milliseconds behind.
	for settle := time.Now(); time.Since(settle) < 3*time.Second; time.Sleep(10 * time.Millisecond) {
		if counts.blocked.Load() >= int64(sent) && counts.applied.Load() >= counts.blocked.Load() {
			break
		}
	}

	warm := min(soakWarmupMax, dur/5)
	var xs, ns, hs []float64
	for _, sm := range samples {
		if sm.at < warm {
			continue
		}
		xs = append(xs, sm.at.Hours())
		ns = append(ns, sm.notifier)
		hs = append(hs, sm.hub)
	}
	if len(xs) < 3 {
		return fmt.Errorf("only %d samples after the %v warm-up: run longer", len(xs), warm)
	}
	first, last := samples[0], samples[len(samples)-1]
	report("soak_duration_s", dur.Seconds(), "s")
	report("soak_blocks_sent", float64(sent), "blocks")
	report("soak_prompts", float64(counts.blocked.Load()), "connection_blocked")
	report("soak_verdicts_given", float64(answers.given.Load()), "clicks")
	report("soak_verdicts_applied", float64(counts.applied.Load()), "verdict_applied")
	report("soak_verdicts_expired", float64(counts.expired.Load()), "verdict_expired")
	report("soak_blocks_without_prompt", float64(max(0, int64(sent)-counts.blocked.Load())), "blocks")
	report("soak_prompts_unanswered", float64(max(0, counts.blocked.Load()-answers.given.Load())), "prompts")
	report("notifier_rss_start_mib", first.notifier/1024, "MiB")
	report("notifier_rss_end_mib", last.notifier/1024, "MiB")
	report("notifier_rss_slope_kib_per_h", slope(xs, ns), "KiB/h")
	report("hub_rss_start_mib", first.hub/1024, "MiB")
	report("hub_rss_end_mib", last.hub/1024, "MiB")
	report("hub_rss_slope_kib_per_h", slope(xs, hs), "KiB/h")
	return nil
}

// startSoakNotifier starts the built clearance-notifier for the stack's
// hub on the bus at busAddr, stopped when the lab closes, and waits for
// its READY=1. It returns its pid.
func (b *bench) startSoakNotifier(ctx context.Context, l *lab.Lab, s *lab.Stack, dir, busAddr string) (int, error) {
	cfg := filepath.Join(dir, "notifier.yaml")
	yaml := fmt.Sprintf("notifier:\n  allow_for: %s\n  rate_per_minute: 600\n", soakAllowFor)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		return 0, err
	}
	nsPath := filepath.Join(dir, "notifier-notify.sock")
	ns, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsPath, Net: "unixgram"})
	if err != nil {
		return 0, err
	}
	defer ns.Close() // READY is all we read
	bin, err := filepath.Abs(filepath.Join(b.bin, "clearance-notifier"))
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(bin, "run")
	cmd.Env = append(withoutEnv("DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "CLEARANCE_CONFIG", "NOTIFY_SOCKET", "JOURNAL_STREAM"),
		"DBUS_SESSION_BUS_ADDRESS="+busAddr, "XDG_RUNTIME_DIR="+filepath.Dir(filepath.Dir(filepath.Dir(s.HubSock))),
		"CLEARANCE_CONFIG="+cfg, "NOTIFY_SOCKET="+nsPath)
	log := filepath.Join(s.Logs, "notifier.log")
	if err := l.Start(cmd, log); err != nil {
		return 0, err
	}
	buf := make([]byte, 4096)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ns.SetReadDeadline(deadline)
		n, err := ns.Read(buf)
		if err != nil {
			return 0, fmt.Errorf("clearance-notifier not ready: %w (log: %s)", err, s.Tail("notifier"))
		}
		if strings.Contains(string(buf[:n]), "READY=1") {
			return cmd.Process.Pid, ctx.Err()
		}
	}
}

// memLine is VmRSS, RssAnon and RssFile of pid, in KiB.
func memLine(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, k := range []string{"VmRSS:", "RssAnon:", "RssFile:"} {
			if v, ok := strings.CutPrefix(line, k); ok {
				out = append(out, strings.TrimSuffix(k, ":")+"="+strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			}
		}
	}
	return strings.Join(out, " ")
}

func withoutEnv(names ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, n := range names {
			keep = keep && k != n
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// hubCounts counts the events a subscriber of the hub received.
type hubCounts struct{ blocked, applied, expired atomic.Int64 }

// countEvents subscribes to the hub at sock until ctx ends (or the lab
// stops the hub) and counts new prompts, applied verdicts and expiries.
func countEvents(ctx context.Context, sock string) (*hubCounts, error) {
	c, err := varlinkapi.Dial(ctx, sock)
	if err != nil {
		return nil, err
	}
	recv, err := orgterokclearance1.Subscribe().Send(ctx, c, varlink.More)
	if err != nil {
		c.Close()
		return nil, err
	}
	n := &hubCounts{}
	go func() {
		defer c.Close()
		seen := map[string]bool{}
		for {
			ev, _, err := recv(ctx)
			if err != nil {
				return
			}
			switch ev.Type {
			case "connection_blocked":
				if !seen[ev.Request_id] {
					seen[ev.Request_id] = true
					n.blocked.Add(1)
				}
			case "verdict_applied":
				n.applied.Add(1)
				delete(seen, ev.Request_id)
			case "verdict_expired":
				n.expired.Add(1)
			}
		}
	}()
	return n, nil
}

// promptAnswers counts the clicks answerPrompts made.
type promptAnswers struct{ given atomic.Int64 }

// answerPrompts plays the operator: every prompt the fake server is asked
// to show gets one click, in turn Allow, Deny and the allow_for button,
// until ctx ends.
func answerPrompts(ctx context.Context, srv *notifytest.Server) *promptAnswers {
	a := &promptAnswers{}
	keys := []string{"allow", "deny", "allow_for"}
	answered := map[uint32]bool{}
	go func() {
		for ctx.Err() == nil {
			if _, err := srv.WaitFor(func(c []notifytest.Call) bool { return len(c) > 0 }, time.Second); err != nil {
				continue
			}
			// Take, not Calls: the record would be the bench's own growth.
			for _, c := range srv.Take() {
				if c.Method != "Notify" {
					continue
				}
				if !strings.HasPrefix(c.Summary, "Blocked: ") {
					delete(answered, c.ID) // an outcome replaced the prompt
					continue
				}
				if answered[c.ID] { // an update of a prompt already answered
					continue
				}
				answered[c.ID] = true
				if err := srv.Invoke(c.ID, keys[a.given.Load()%int64(len(keys))]); err == nil {
					a.given.Add(1)
				}
			}
		}
	}()
	return a
}

// slope is the least-squares slope of ys over xs.
func slope(xs, ys []float64) float64 {
	var sx, sy, sxx, sxy float64
	n := float64(len(xs))
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}
