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
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/cli"
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
// $CLEARANCE_SOAK_DURATION, else 25 minutes (12 of warm-up, 13 measured).
var soakDuration = flag.Duration("soak-duration", envDuration("CLEARANCE_SOAK_DURATION", 25*time.Minute),
	"how long the soak group drives blocks and verdicts (env CLEARANCE_SOAK_DURATION)")

// soakTrace prints every RSS sample (VmRSS, RssAnon, RssFile of both
// processes) to stderr.
var soakTrace = flag.Bool("soak-trace", os.Getenv("CLEARANCE_SOAK_TRACE") != "",
	"print every RSS sample of the soak to stderr (env CLEARANCE_SOAK_TRACE)")

// soakProfile keeps the processes' heap profiles and runtime metrics
// snapshots (one per sample) in a directory, for go tool pprof -base.
var soakProfile = flag.String("soak-profile", os.Getenv("CLEARANCE_SOAK_PROFILE"),
	"keep the soak's heap profiles and runtime metrics of both processes in this directory (env CLEARANCE_SOAK_PROFILE)")

// Soak timing: one block a second, RSS every few seconds, and the timed
// verdicts short enough to expire many times within the run.
const (
	soakBlockEvery  = time.Second
	soakSampleEvery = 5 * time.Second
	soakOnceTTL     = 30 * time.Second // Allow and Deny: scope once, expiring
	soakAllowFor    = 20 * time.Second // the third button: Decide with this TTL
	// soakWarmup covers the longest window of state the processes keep
	// by design: the hub remembers decided requests for 10 minutes
	// (AlreadyDecided, docs/varlink.md), so at one block a second its heap
	// grows for the first 10 minutes and then holds ~600 of them.
	soakWarmup = 12 * time.Minute
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
// Every 5 s both processes are sampled: VmRSS from /proc, and their Go
// runtime's view through CLEARANCE_DEBUG_MEMPROFILE (SIGUSR1 writes a
// runtime/metrics snapshot; internal/cli): the live heap as of the last
// collection, the goroutines, and the open fds from /proc. Reported after
// a warm-up of 12 minutes (half of a shorter run), which covers the
// hub's 10-minute memory of decided requests: the least-squares slopes of
// RSS and of the live heap, how much the RSS peak of the second half of
// the measured samples exceeds that of the first half (about 0 when RSS
// is bounded), the same two for the memory the Go runtime holds from the
// OS (mapped less released: its anonymous RSS cannot exceed it),
// goroutines and fds at the warm-up's end and at the end;
// also RSS at the start and end, and what the run lost (blocks without a
// prompt, prompts without a verdict).
//
// -soak-profile DIR (or $CLEARANCE_SOAK_PROFILE) keeps the snapshots and
// adds a heap profile to each (SIGUSR2, sampled every 4 KiB with
// GODEBUG=memprofilerate=4096), and prints the go tool pprof -base line
// that diffs the warm-up's end against the end. Profiling costs memory of
// its own (profile buckets, the writer's buffers): take RSS numbers from
// runs without it.
//
// The duration is -soak-duration or $CLEARANCE_SOAK_DURATION (default
// 25m). Needs root (namespaces). Everything started is stopped, also on
// SIGINT/SIGTERM, which end the run early.
func (b *bench) soak() (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root")
	}
	dur := *soakDuration
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	l := lab.New()
	defer l.Close()
	// The hub and the notifier inherit CLEARANCE_DEBUG_MEMPROFILE: every
	// sample asks both for their runtime metrics (SIGUSR1), with a heap
	// profile when -soak-profile asks (SIGUSR2), written there.
	profDir := *soakProfile
	if profDir == "" {
		if profDir, err = l.TempDir(); err != nil {
			return err
		}
	} else if err := os.MkdirAll(profDir, 0o755); err != nil {
		return err
	}
	if profDir, err = filepath.Abs(profDir); err != nil {
		return err
	}
	os.Setenv(cli.EnvMemProfile, profDir)
	defer os.Unsetenv(cli.EnvMemProfile)
	if *soakProfile != "" {
		// Heap profiles that mean something for heaps of a few MiB.
		godebug := os.Getenv("GODEBUG")
		os.Setenv("GODEBUG", strings.TrimPrefix(godebug+",memprofilerate=4096", ","))
		defer os.Setenv("GODEBUG", godebug)
	}
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

	// Both processes, sampled alike: the notifier first, then the hub.
	names := [2]string{"notifier", "hub"}
	procs := [2]*profiled{
		{pid: notifier, prog: "clearance-notifier", dir: profDir, heap: *soakProfile != ""},
		{pid: s.HubPID(), prog: "clearance-hub", dir: profDir, heap: *soakProfile != ""},
	}
	type sample struct {
		at  time.Duration
		rss [2]float64 // VmRSS, KiB
		rt  [2]runtimeSample
	}
	var samples []sample
	start := time.Now()
	blocks := time.NewTicker(soakBlockEvery)
	defer blocks.Stop()
	sampler := time.NewTicker(soakSampleEvery)
	defer sampler.Stop()
	end := time.NewTimer(dur)
	defer end.Stop()
	take := func() error {
		sm := sample{at: time.Since(start)}
		line := fmt.Sprintf("soak %4.0fs", sm.at.Seconds())
		for i, p := range procs {
			sm.rss[i] = rssMiB(p.pid) * 1024
			rt, err := p.sample()
			if err != nil {
				return err
			}
			sm.rt[i] = rt
			line += fmt.Sprintf("  %s %s %s", names[i], memLine(p.pid), rt)
		}
		samples = append(samples, sm)
		if *soakTrace {
			fmt.Fprintln(os.Stderr, line)
		}
		return nil
	}
	if err := take(); err != nil {
		return err
	}
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
			if err := take(); err != nil {
				return err
			}
			if !alive(notifier) || !alive(s.HubPID()) {
				return fmt.Errorf("a process died during the soak (notifier alive %v, hub alive %v; hub log: %s)",
					alive(notifier), alive(s.HubPID()), s.Tail("hub"))
			}
		}
	}
	if err := take(); err != nil {
		return err
	}
	// The last block's prompt and answer are a few milliseconds behind.
	for settle := time.Now(); time.Since(settle) < 3*time.Second; time.Sleep(10 * time.Millisecond) {
		if counts.blocked.Load() >= int64(sent) && counts.applied.Load() >= counts.blocked.Load() {
			break
		}
	}

	warm := soakWarmup
	if dur < 2*soakWarmup {
		warm = dur / 2
		fmt.Fprintf(os.Stderr, "soak: a %v run has only %v of warm-up, less than the hub's 10-minute memory of decided requests: its slopes include that filling (run 25m or more)\n", dur, warm)
	}
	var xs []float64
	var rss, heap, retained [2][]float64
	var afterWarm *sample
	for i, sm := range samples {
		if sm.at < warm {
			continue
		}
		if afterWarm == nil {
			afterWarm = &samples[i]
		}
		xs = append(xs, sm.at.Hours())
		for p := range procs {
			rss[p] = append(rss[p], sm.rss[p])
			heap[p] = append(heap[p], sm.rt[p].heapLive/1024)
			retained[p] = append(retained[p], sm.rt[p].retained/1024)
		}
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
	for p, name := range names {
		if *soakProfile != "" {
			fmt.Fprintf(os.Stderr, "soak: %s heap growth after warm-up: go tool pprof -base %s %s\n",
				name, afterWarm.rt[p].profile, last.rt[p].profile)
		}
		report(name+"_rss_start_mib", first.rss[p]/1024, "MiB")
		report(name+"_rss_end_mib", last.rss[p]/1024, "MiB")
		report(name+"_rss_slope_kib_per_h", slope(xs, rss[p]), "KiB/h")
		report(name+"_rss_peak_growth_kib", peakGrowth(rss[p]), "KiB")
		report(name+"_heap_live_slope_kib_per_h", slope(xs, heap[p]), "KiB/h")
		report(name+"_heap_live_end_kib", last.rt[p].heapLive/1024, "KiB")
		report(name+"_go_retained_slope_kib_per_h", slope(xs, retained[p]), "KiB/h")
		report(name+"_go_retained_peak_growth_kib", peakGrowth(retained[p]), "KiB")
		report(name+"_go_retained_end_mib", last.rt[p].retained/1024/1024, "MiB")
		report(name+"_goroutines_warm_end", afterWarm.rt[p].goroutines, "goroutines")
		report(name+"_goroutines_end", last.rt[p].goroutines, "goroutines")
		report(name+"_fds_warm_end", afterWarm.rt[p].fds, "fds")
		report(name+"_fds_end", last.rt[p].fds, "fds")
	}
	return nil
}

// runtimeSample is what a process said about its Go runtime at one
// sample (runtime/metrics), and its open file descriptors.
type runtimeSample struct {
	heapLive   float64 // /gc/heap/live:bytes: live heap as of the last GC
	heapGoal   float64 // /gc/heap/goal:bytes
	retained   float64 // /memory/classes/total:bytes less heap/released: what the runtime holds from the OS
	goroutines float64 // /sched/goroutines:goroutines
	fds        float64 // entries of /proc/PID/fd
	profile    string  // the heap profile written with it
}

func (r runtimeSample) String() string {
	return fmt.Sprintf("live=%.0f goal=%.0f retained=%.0f g=%.0f fds=%.0f",
		r.heapLive/1024, r.heapGoal/1024, r.retained/1024, r.goroutines, r.fds)
}

// profiled is a process started with CLEARANCE_DEBUG_MEMPROFILE=dir.
type profiled struct {
	pid, n int
	prog   string // its executable's name, which names its files
	dir    string
	heap   bool // ask for heap profiles too
}

// sample asks the process for its runtime metrics (SIGUSR1), and its
// heap profile with them when p.heap (SIGUSR2; see cli.EnvMemProfile),
// and reads the metrics it wrote.
func (p *profiled) sample() (runtimeSample, error) {
	p.n++
	sig := syscall.SIGUSR1
	if p.heap {
		sig = syscall.SIGUSR2
	}
	if err := syscall.Kill(p.pid, sig); err != nil {
		return runtimeSample{}, fmt.Errorf("ask pid %d for its memory profile: %w", p.pid, err)
	}
	base := filepath.Join(p.dir, fmt.Sprintf("%s-%d-%d", p.prog, p.pid, p.n))
	var b []byte
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if b, err = os.ReadFile(base + ".metrics"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return runtimeSample{}, fmt.Errorf("pid %d wrote no %s.metrics within 5 s: %w", p.pid, base, err)
		}
	}
	r := runtimeSample{profile: base + ".heap.pprof"}
	for _, line := range strings.Split(string(b), "\n") {
		name, v, _ := strings.Cut(line, " ")
		f, _ := strconv.ParseFloat(v, 64)
		switch name {
		case "/gc/heap/live:bytes":
			r.heapLive = f
		case "/gc/heap/goal:bytes":
			r.heapGoal = f
		case "/memory/classes/total:bytes":
			r.retained += f
		case "/memory/classes/heap/released:bytes":
			r.retained -= f
		case "/sched/goroutines:goroutines":
			r.goroutines = f
		}
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid))
	r.fds = float64(len(fds))
	return r, nil
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

// peakGrowth is the highest of the second half of ys less the highest of
// the first half: about 0 (or below) when the values are bounded, however
// they swing between collections; what a leak adds in half the run
// otherwise. It complements the slope, which the swings of a small Go
// heap (hundreds of KiB between collections) make noisy on short runs.
func peakGrowth(ys []float64) float64 {
	half := len(ys) / 2
	return slices.Max(ys[half:]) - slices.Max(ys[:half])
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
