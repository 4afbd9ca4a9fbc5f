// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Command bench is clearance's end-to-end measurement harness, run by
// `make bench`. It starts the real binaries from ./bin and prints one line
// per measurement, "name: value unit", for docs/benchmarks.md.
//
// Nothing here asserts a limit: it measures and reports.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
)

func main() {
	bin := flag.String("bin", "bin", "directory of the built binaries")
	only := flag.String("only", "", "comma-separated measurement names to run (default all)")
	flag.Parse()
	b := &bench{bin: *bin, only: map[string]bool{}}
	for _, n := range strings.Split(*only, ",") {
		if n != "" {
			b.only[n] = true
		}
	}
	fmt.Printf("# clearance bench — %s, %d CPU, kernel %s\n", time.Now().UTC().Format(time.RFC3339), numCPU(), kernel())
	for _, m := range measurements {
		if len(b.only) > 0 && !b.only[m.group] {
			continue
		}
		if err := m.run(b); err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", m.group, err)
			b.failed = true
		}
	}
	if b.failed {
		os.Exit(1)
	}
}

type bench struct {
	bin    string
	only   map[string]bool
	failed bool
}

var measurements = []struct {
	group string
	run   func(*bench) error
}{
	{"hub_cold_start", (*bench).coldStart},
	{"hub_latency", (*bench).latency},
	{"fanout", (*bench).fanout},
}

func report(name string, value float64, unit string) {
	switch {
	case value >= 100:
		fmt.Printf("%s: %.0f %s\n", name, value, unit)
	default:
		fmt.Printf("%s: %.3g %s\n", name, value, unit)
	}
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p / 100 * float64(len(s)-1))
	return s[i]
}

func rssMiB(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return -1
}

// emptyConfig writes an empty configuration file so measurements do not
// depend on the machine's /etc/clearance.
func emptyConfig(dir string) string {
	p := filepath.Join(dir, "clearance.yaml")
	os.WriteFile(p, nil, 0o600)
	return p
}

// coldStart: socket activation → first reply, the way systemd starts a
// hub on the first connection. Also the idle RSS of a hub with one
// subscriber.
func (b *bench) coldStart() error {
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		return err
	}
	hubBin, _ := filepath.Abs(filepath.Join(b.bin, "clearance-hub"))
	var samples []time.Duration
	var rss float64
	for i := 0; i < 15; i++ {
		dir, _ := os.MkdirTemp("", "clearance-bench-")
		sock := filepath.Join(dir, "hub.sock")
		cmd := exec.Command(sa, "-l", sock, "--fdname=varlink", hubBin, "-config", emptyConfig(dir), "-watch", "off", "bench")
		if err := cmd.Start(); err != nil {
			return err
		}
		for j := 0; j < 2000; j++ {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // let systemd-socket-activate reach accept()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := varlinkapi.Dial(ctx, sock)
		if err == nil {
			var v, p, ver, u string
			var ifs []string
			err = c.GetInfo(ctx, &v, &p, &ver, &u, &ifs)
		}
		d := time.Since(start)
		if err == nil && i == 0 {
			// Idle RSS with one subscriber connected.
			s, serr := varlinkapi.Dial(ctx, sock)
			if serr == nil {
				orgterokclearance1.Subscribe().Send(ctx, s, varlink.More)
				time.Sleep(500 * time.Millisecond)
				rss = rssMiB(childPID(cmd.Process.Pid))
				s.Close()
			}
		}
		cancel()
		if c != nil {
			c.Close()
		}
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		os.RemoveAll(dir)
		if err != nil {
			return err
		}
		samples = append(samples, d)
	}
	report("hub_cold_start_ms", float64(percentile(samples, 50))/1e6, "ms")
	report("hub_cold_start_p90_ms", float64(percentile(samples, 90))/1e6, "ms")
	report("hub_idle_rss_mib", rss, "MiB")
	return nil
}

// childPID returns pid itself: systemd-socket-activate execs the service
// in place, keeping its pid.
func childPID(pid int) int { return pid }

type runningHub struct {
	cmd    *exec.Cmd
	dir    string
	sock   string
	ingest string
}

func (b *bench) startHub(id string) (*runningHub, error) { return b.startHubDepth(id, 0) }

// startHubDepth starts a hub with the given subscriber queue depth (0:
// the default).
func (b *bench) startHubDepth(id string, depth int) (*runningHub, error) {
	dir, _ := os.MkdirTemp("", "clearance-bench-")
	os.Chmod(dir, 0o700)
	cfg := emptyConfig(dir)
	if depth > 0 {
		os.WriteFile(cfg, []byte(fmt.Sprintf("hub:\n  queue_depth: %d\n", depth)), 0o600)
	}
	cmd := exec.Command(filepath.Join(b.bin, "clearance-hub"), "-config", cfg, "-watch", "off", id)
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+dir)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &runningHub{cmd: cmd, dir: dir, sock: filepath.Join(dir, "clearance", id, "hub.sock"),
		ingest: filepath.Join(dir, "clearance", id, "ingest.sock")}
	for i := 0; i < 5000; i++ {
		if _, err := os.Stat(h.ingest); err == nil {
			return h, nil
		}
		time.Sleep(time.Millisecond)
	}
	h.stop()
	return nil, errors.New("hub did not come up")
}

func (h *runningHub) stop() {
	h.cmd.Process.Signal(syscall.SIGTERM)
	h.cmd.Wait()
	os.RemoveAll(h.dir)
}

func (h *runningHub) subscribe(ctx context.Context) (func(context.Context) (orgterokclearance1.ClearanceEvent, uint64, error), func(), error) {
	c, err := varlinkapi.Dial(ctx, h.sock)
	if err != nil {
		return nil, nil, err
	}
	recv, err := orgterokclearance1.Subscribe().Send(ctx, c, varlink.More)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return recv, func() { c.Close() }, nil
}

func pendingLine(i int) string {
	return fmt.Sprintf(`{"type":"pending","container":"bench","id":"bench:%d","dest":"198.51.100.%d","port":443,"proto":6,"domain":""}`+"\n", i, i%250+1)
}

// latency: one event at a time from the ingest socket to a subscriber.
func (b *bench) latency() error {
	h, err := b.startHub("bench")
	if err != nil {
		return err
	}
	defer h.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	recv, closeSub, err := h.subscribe(ctx)
	if err != nil {
		return err
	}
	defer closeSub()
	in, err := net.Dial("unix", h.ingest)
	if err != nil {
		return err
	}
	defer in.Close()
	time.Sleep(100 * time.Millisecond)
	var samples []time.Duration
	for i := 0; i < 5000; i++ {
		line := pendingLine(i)
		start := time.Now()
		if _, err := in.Write([]byte(line)); err != nil {
			return err
		}
		if _, _, err := recv(ctx); err != nil {
			return err
		}
		if i >= 200 { // warm-up
			samples = append(samples, time.Since(start))
		}
	}
	report("ingest_to_subscriber_p50_us", float64(percentile(samples, 50))/1e3, "us")
	report("ingest_to_subscriber_p99_us", float64(percentile(samples, 99))/1e3, "us")

	// The same with a subscriber that reads raw frames instead of decoding
	// them with varlink/go: the hub's share of the latency.
	raw, err := net.Dial("unix", h.sock)
	if err != nil {
		return err
	}
	defer raw.Close()
	raw.Write([]byte(`{"method":"org.terok.Clearance1.Subscribe","more":true}` + "\x00"))
	time.Sleep(100 * time.Millisecond)
	buf := make([]byte, 4096)
	samples = samples[:0]
	for i := 0; i < 5000; i++ {
		line := pendingLine(10000 + i)
		start := time.Now()
		if _, err := in.Write([]byte(line)); err != nil {
			return err
		}
		// One event per write; read until its NUL.
		for done := false; !done; {
			raw.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := raw.Read(buf)
			if err != nil {
				return err
			}
			done = bytes.IndexByte(buf[:n], 0) >= 0
		}
		took := time.Since(start)
		if _, _, err := recv(ctx); err != nil { // keep the decoding subscriber drained
			return err
		}
		if i >= 200 {
			samples = append(samples, took)
		}
	}
	report("ingest_to_raw_subscriber_p50_us", float64(percentile(samples, 50))/1e3, "us")
	report("ingest_to_raw_subscriber_p99_us", float64(percentile(samples, 99))/1e3, "us")
	return nil
}

// fanout: events paced into the ingest socket at a given rate while ten
// subscribers read; reports the highest rate at which every subscriber
// received every event (no drops from the bounded queues). Subscribers
// count raw frames, so the measurement is the hub's, not a JSON decoder's.
func (b *bench) fanout() error {
	for _, depth := range []int{0, 1024} {
		best := 0.0
		for _, rate := range []int{10000, 25000, 50000, 75000, 100000, 150000} {
			min, err := b.fanoutAt(rate, depth, 2*time.Second)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "fanout at %d events/s, queue depth %d: slowest subscriber got %.1f%%\n", rate, depth, min)
			if min < 100 {
				break
			}
			best = float64(rate)
		}
		if depth == 0 {
			report("fanout_events_per_s_10subs", best, "events/s")
		} else {
			report(fmt.Sprintf("fanout_events_per_s_10subs_depth%d", depth), best, "events/s")
		}
	}
	return nil
}

func (b *bench) fanoutAt(rate, depth int, dur time.Duration) (float64, error) {
	h, err := b.startHubDepth("bench", depth)
	if err != nil {
		return 0, err
	}
	defer h.stop()
	const subs = 10
	n := int(float64(rate) * dur.Seconds())
	counts := make([]int, subs)
	var wg sync.WaitGroup
	var conns []net.Conn
	for s := 0; s < subs; s++ {
		c, err := net.Dial("unix", h.sock)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		c.Write([]byte(`{"method":"org.terok.Clearance1.Subscribe","more":true}` + "\x00"))
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<16)
			for counts[s] < n {
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				m, err := c.Read(buf)
				if err != nil {
					return
				}
				for _, x := range buf[:m] {
					if x == 0 {
						counts[s]++
					}
				}
			}
		}()
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond)
	in, err := net.Dial("unix", h.ingest)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	const tick = time.Millisecond
	per := max(1, rate*int(tick)/int(time.Second))
	next := time.Now()
	for i := 0; i < n; {
		var buf strings.Builder
		for j := 0; j < per && i < n; j++ {
			buf.WriteString(pendingLine(i))
			i++
		}
		if _, err := in.Write([]byte(buf.String())); err != nil {
			return 0, err
		}
		next = next.Add(tick)
		time.Sleep(time.Until(next))
	}
	wg.Wait()
	min := n
	for _, c := range counts {
		if c < min {
			min = c
		}
	}
	return 100 * float64(min) / float64(n), nil
}
