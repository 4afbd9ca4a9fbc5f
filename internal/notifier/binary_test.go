// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/notifytest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// daemonProcess is the built clearance-notifier running "run" against a
// private bus and a temporary $XDG_RUNTIME_DIR, with $NOTIFY_SOCKET
// pointing at a datagram socket the test reads.
type daemonProcess struct {
	cmd    *exec.Cmd
	out    *testutil.Buffer
	notify *net.UnixConn
	exited chan error
}

// startBinaryDaemon starts the built binary with the configuration
// rt/clearance.yaml (empty unless the test wrote it); env entries
// (NAME=value) are added to its environment, which has no GOGC or GODEBUG
// of the caller.
func startBinaryDaemon(tb testing.TB, busAddr, rt string, env ...string) *daemonProcess {
	tb.Helper()
	bin := binary(tb)
	cfg := filepath.Join(rt, "clearance.yaml")
	if _, err := os.Stat(cfg); err != nil { // none of the test's own: all defaults
		if err := os.WriteFile(cfg, nil, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	nsPath := filepath.Join(rt, "notify.sock")
	ns, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsPath, Net: "unixgram"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ns.Close() })
	cmd := exec.Command(bin, "run")
	cmd.Env = append(envWithout("DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "CLEARANCE_CONFIG", "NOTIFY_SOCKET", "JOURNAL_STREAM",
		"GOGC", "GODEBUG"),
		"DBUS_SESSION_BUS_ADDRESS="+busAddr, "XDG_RUNTIME_DIR="+rt, "CLEARANCE_CONFIG="+cfg, "NOTIFY_SOCKET="+nsPath)
	cmd.Env = append(cmd.Env, env...)
	out := &testutil.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &daemonProcess{cmd: cmd, out: out, notify: ns, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
		if tb.Failed() {
			tb.Logf("clearance-notifier output:\n%s", out.String())
		}
	})
	return p
}

// waitState reads sd_notify datagrams until one contains want.
func (p *daemonProcess) waitState(tb testing.TB, want string) string {
	tb.Helper()
	buf := make([]byte, 4096)
	p.notify.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		n, err := p.notify.Read(buf)
		if err != nil {
			tb.Fatalf("no sd_notify state containing %q: %v", want, err)
		}
		if s := string(buf[:n]); strings.Contains(s, want) {
			return s
		}
	}
}

// terminate sends SIGTERM and returns how long the process took to exit
// and its exit status.
func (p *daemonProcess) terminate(tb testing.TB) (time.Duration, int) {
	tb.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		tb.Fatal(err)
	}
	select {
	case err := <-p.exited:
		p.exited <- err // for Cleanup
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return time.Since(start), code
	case <-time.After(15 * time.Second):
		tb.Fatal("clearance-notifier did not exit after SIGTERM")
	}
	return 0, -1
}

// TestBinaryDaemon runs the built binary as a user service would: it
// reports READY=1 and its status over $NOTIFY_SOCKET, shows a prompt for
// a hub found through the default glob under $XDG_RUNTIME_DIR, and on
// SIGTERM closes the prompt and exits 0.
func TestBinaryDaemon(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	rt := testutil.ShortDir(t)
	th := startHubAt(t, filepath.Join(rt, "clearance", "abcdef012345", "hub.sock"), "abcdef012345")
	p := startBinaryDaemon(t, bus.Addr, rt)
	ready := p.waitState(t, "READY=1")
	t.Logf("ready: %q", ready)
	th.WaitSubscribers(t, 1)
	p.waitState(t, "1 hubs (1 connected)")
	th.Hub.Blocked(blockedEvent("abcdef012345", "192.0.2.90", "bin.example", nil))
	prompt := waitNotify(t, srv, "Blocked: bin.example:443")
	p.waitState(t, "1 pending (1 shown)")

	took, code := p.terminate(t)
	t.Logf("exited %d after SIGTERM in %v", code, took)
	if code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	closed := false
	for _, c := range srv.Calls() {
		closed = closed || (c.Method == "CloseNotification" && c.ID == prompt.ID)
	}
	if !closed {
		t.Errorf("prompt %d not closed on SIGTERM", prompt.ID)
	}
}

// statesUntil reads sd_notify datagrams until one contains want, and
// returns every one read, that one last.
func (p *daemonProcess) statesUntil(tb testing.TB, want string) []string {
	tb.Helper()
	buf := make([]byte, 4096)
	p.notify.SetReadDeadline(time.Now().Add(15 * time.Second))
	var states []string
	for {
		n, err := p.notify.Read(buf)
		if err != nil {
			tb.Fatalf("no sd_notify state containing %q (read %q): %v", want, states, err)
		}
		states = append(states, string(buf[:n]))
		if strings.Contains(states[len(states)-1], want) {
			return states
		}
	}
}

// TestBinaryStatusFollowsBus runs the built binary with $NOTIFY_SOCKET
// through a lost session bus that comes back before the notification
// server: every STATUS= line it sends is true when sent (no "ok" and
// nothing "shown" while no server is there, no prompt shown while the
// hub is not connected), no call reaches the unowned name, and the
// prompt is shown again exactly once when the server takes its name.
func TestBinaryStatusFollowsBus(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	rt := testutil.ShortDir(t)
	th := startHubAt(t, filepath.Join(rt, "clearance", "5a7a5a7a5a7a", "hub.sock"), "5a7a5a7a5a7a")
	th.Hub.Blocked(blockedEvent("5a7a5a7a5a7a", "192.0.2.91", "status.example", nil))
	p := startBinaryDaemon(t, bus.Addr, rt)
	before := p.statesUntil(t, "1 hubs (1 connected), 1 pending (1 shown), notifications: ok")
	waitNotify(t, srv, "Blocked: status.example:443")

	if err := bus.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	mon := notifytest.NewMonitor(t, bus.Addr)
	gone := p.statesUntil(t, "1 hubs (1 connected), 1 pending (0 shown), notifications: unavailable (no notification server")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	back := p.statesUntil(t, "1 hubs (1 connected), 1 pending (1 shown), notifications: ok")
	waitNotify(t, srv, "Blocked: status.example:443")

	for _, s := range append(append(before, gone...), back...) {
		if strings.Contains(s, "(0 connected)") && !strings.Contains(s, "(0 shown)") {
			t.Errorf("state %q: a prompt shown while the hub is not connected", s)
		}
	}
	for _, s := range gone {
		if strings.Contains(s, "notifications: ok") || strings.Contains(s, "(1 shown)") {
			t.Errorf("state %q while no notification server was there", s)
		}
	}
	if err := mon.Sync(); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, s := range mon.Seen() {
		kinds = append(kinds, s.Kind)
	}
	// Nothing while nobody owned the name; then the owner, and the
	// prompt shown once (its capabilities asked first).
	if want := []string{"Owner", "GetCapabilities", "Notify"}; !slices.Equal(kinds, want) {
		t.Errorf("calls on the restarted bus %q, want %q:%s", kinds, want, notifytest.DescribeSeen(mon.Seen()))
	}
}

// gcGoal matches the runtime's line per collection (GODEBUG=gctrace=1):
// "gc 3 @61.2s 0%: …, 3->3->0 MB, 4 MB goal, …".
var gcGoal = regexp.MustCompile(`(?m)^gc \d+ @.* (\d+) MB goal`)

// TestBinaryHeapStaysSmall runs the built daemon through blocks and
// verdicts until the Go runtime has collected three times, and reads the
// heap goal it reports (GODEBUG=gctrace=1). The daemon's live heap is
// under 1 MiB; garbage must not be let pile up to Go's default 4 MiB
// floor, which is what made its resident size climb by ~6 MiB over the
// first minutes of steady traffic (DaemonGCPercent). The runtime's own
// accounting, not time or RSS.
func TestBinaryHeapStaysSmall(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	rt := testutil.ShortDir(t)
	th := startHubAt(t, filepath.Join(rt, "clearance", "9c9c9c9c9c9c", "hub.sock"), "9c9c9c9c9c9c")
	if err := os.WriteFile(filepath.Join(rt, "clearance.yaml"), []byte("notifier:\n  rate_per_minute: 100000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startBinaryDaemon(t, bus.Addr, rt, "GODEBUG=gctrace=1")
	p.waitState(t, "1 hubs (1 connected)")
	var goals [][]string
	for i := 0; ; i++ {
		if goals = gcGoal.FindAllStringSubmatch(p.out.String(), -1); len(goals) >= 3 {
			break
		}
		if i == 3000 {
			t.Fatalf("%d collections after %d blocks and verdicts, want 3", len(goals), i)
		}
		domain := "gc" + strconv.Itoa(i) + ".example"
		th.Hub.Blocked(blockedEvent("9c9c9c9c9c9c", "10.9."+strconv.Itoa(i/250)+"."+strconv.Itoa(i%250+1), domain, nil))
		c := waitNotify(t, srv, "Blocked: "+domain+":443")
		if err := srv.Invoke(c.ID, "allow"); err != nil {
			t.Fatal(err)
		}
		waitNotify(t, srv, "Allowed: "+domain)
		srv.Reset()
	}
	for _, g := range goals {
		t.Logf("heap goal %s MB", g[1])
	}
	if goal, _ := strconv.Atoi(goals[len(goals)-1][1]); goal > 2 {
		t.Errorf("heap goal %d MB, want at most 2 MB", goal)
	}
}

// BenchmarkBlockToNotify measures a connection_blocked event published at
// a real hub until the fake notification server records the Notify (hub
// fan-out, varlink stream, rendering, D-Bus round trip through a private
// dbus-daemon). Reports p50_us and p99_us.
func BenchmarkBlockToNotify(b *testing.B) {
	bus := notifytest.NewBus(b)
	srv := notifytest.NewServer(b, bus.Addr, fullCaps)
	base := filepath.Join(testutil.ShortDir(b), "clearance")
	th := startHubAt(b, filepath.Join(base, "bench0000001", "hub.sock"), "bench0000001")
	startDaemon(b, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dialBus(b, bus.Addr),
		MaxVisible: 1 << 30, RatePerMinute: 1 << 30})
	th.WaitSubscribers(b, 1)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		srv.Reset()
		host := "h" + strconv.Itoa(i) + ".bench.example"
		summary := "Blocked: " + host + ":443"
		start := time.Now()
		th.Hub.Blocked(blockedEvent("bench0000001", "192.0.2.1", host, nil))
		if _, err := srv.WaitFor(notifyWith(summary), 15*time.Second); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50_us")
	b.ReportMetric(pct(0.99), "p99_us")
}

// BenchmarkIdleRSS starts the built daemon with one hub and one prompt
// shown, then reads its resident set size (VmRSS) once it is idle, and
// the time it takes to exit on SIGTERM. Reports idle_rss_MiB and
// sigterm_exit_ms; the loop itself only re-reads VmRSS.
func BenchmarkIdleRSS(b *testing.B) {
	bus := notifytest.NewBus(b)
	srv := notifytest.NewServer(b, bus.Addr, fullCaps)
	rt := testutil.ShortDir(b)
	th := startHubAt(b, filepath.Join(rt, "clearance", "rss000000001", "hub.sock"), "rss000000001")
	p := startBinaryDaemon(b, bus.Addr, rt)
	p.waitState(b, "READY=1")
	th.WaitSubscribers(b, 1)
	th.Hub.Blocked(blockedEvent("rss000000001", "192.0.2.1", "rss.example", nil))
	waitNotify(b, srv, "Blocked: rss.example:443")
	p.waitState(b, "1 pending (1 shown)")
	var rss float64
	b.ResetTimer()
	for range b.N {
		rss = vmRSSMiB(b, p.cmd.Process.Pid)
	}
	b.StopTimer()
	b.ReportMetric(rss, "idle_rss_MiB")
	took, _ := p.terminate(b)
	b.ReportMetric(float64(took.Microseconds())/1e3, "sigterm_exit_ms")
}

// vmRSSMiB reads VmRSS of pid from /proc.
func vmRSSMiB(tb testing.TB, pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb / 1024
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}
