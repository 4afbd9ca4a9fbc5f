// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podman

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/testenv/podmanlab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// BenchmarkContainerStart measures, on one machine in one run, what the
// hook costs a container start and how long the hub takes to come up:
//
//   - with_hook_ms / without_hook_ms: `podman run -d … sleep` until it
//     returns, with the gate annotation (the hook writes the record,
//     engages the ruleset, starts and activates the hub and waits for its
//     READY=1) and without (the hook does not run);
//   - container_start_overhead_ms: their difference;
//   - activation_to_first_event_ms: from `podman run` to the hub
//     service's READY=1 (ActiveEnterTimestampMonotonic of
//     clearance-hub@<id>.service).
//
// Containers are removed after each iteration (poststop stops the hub).
func BenchmarkContainerStart(b *testing.B) {
	e := newEnv(b)
	// One cold run of each first, so the numbers are warm starts.
	for _, gate := range []bool{true, false} {
		id, _ := e.run(gate)
		e.mustPodman("rm", "-f", "-t", "0", id)
	}
	var with, without, activation time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := monotonic()
		id, d := e.run(true)
		with += d
		ready := e.systemctl("show", "-p", "ActiveEnterTimestampMonotonic", "--value", "clearance-hub@"+id[:12]+".service")
		us, err := strconv.ParseInt(ready, 10, 64)
		if err != nil || us == 0 {
			b.Fatalf("hub READY timestamp %q: %v", ready, err)
		}
		activation += time.Duration(us)*time.Microsecond - t0
		e.mustPodman("rm", "-f", "-t", "0", id)

		id, d = e.run(false)
		without += d
		e.mustPodman("rm", "-f", "-t", "0", id)
	}
	b.StopTimer()
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / n }
	b.ReportMetric(ms(with), "with_hook_ms")
	b.ReportMetric(ms(without), "without_hook_ms")
	b.ReportMetric(ms(with-without), "container_start_overhead_ms")
	b.ReportMetric(ms(activation), "activation_to_first_event_ms")
}

// run starts a detached container, with or without the gate annotation,
// and returns its id and how long podman run took.
func (e *env) run(gate bool) (string, time.Duration) {
	args := []string{"run", "-d", "--network", "none"}
	if gate {
		args = append(args, "--annotation", gateAnn)
	}
	args = append(args, image, "sleep", "30")
	start := time.Now()
	out := e.mustPodman(args...)
	d := time.Since(start)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1], d
}

// monotonic is CLOCK_MONOTONIC now, comparable with systemd's *Monotonic
// timestamps.
func monotonic() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// burstScript leaves one request pending (port 8081), then, each time the
// benchmark touches /burst<i>, makes 20 blocked connections to ports
// 9000..9019 (while the hub is down).
const burstScript = `until [ -e /ready ]; do sleep 0.05; done
nc -w 1 10.254.77.1 8081 </dev/null
i=0
while :; do
  until [ -e /burst$i ] || [ -e /done ]; do sleep 0.01; done
  [ -e /done ] && break
  for p in $(seq 9000 9019); do nc -w 1 10.254.77.1 $p </dev/null; done
  echo "burst$i sent"
  i=$((i+1))
done`

// BenchmarkHubRestart kills a container's hub with SIGKILL while a
// request is pending, and measures how long until a reconnecting client
// sees that request again (recovery_ms: Restart=, socket activation, the
// state and sockets from the fd store), and how many of 20 connections
// blocked while the hub was down never became a request (lost_events).
func BenchmarkHubRestart(b *testing.B) {
	e := newEnv(b)
	pc, err := e.CreateInitWith("clr-bench-restart", podmanlab.CreateOptions{Script: burstScript})
	if err != nil {
		b.Fatal(err)
	}
	c := &container{Container: pc, e: e, name: pc.Name, id: pc.ID, id12: pc.ID12, pid: pc.Pid}
	c.wire()
	e.mustPodman("start", c.name)
	c.touch("ready")
	ctx := testutil.Context(b)
	pending := func() []orgterokclearancehub1.PendingRequest {
		conn, err := varlinkapi.Dial(ctx, e.hubSock(c.id12))
		if err != nil {
			return nil
		}
		defer conn.Close()
		reqs, _ := orgterokclearancehub1.Pending().Call(ctx, conn)
		return reqs
	}
	var first string
	testutil.Poll(ctx, 30*time.Second, "request pending", func() (bool, string) {
		for _, r := range pending() {
			if r.Port == 8081 {
				first = r.Request_id
			}
		}
		return first != "", ""
	})
	if first == "" {
		b.Fatal("no pending request")
	}
	time.Sleep(300 * time.Millisecond) // the state is saved at most 100 ms after a change
	var recovery time.Duration
	lost := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pid := e.hubPID(c.id12)
		t0 := time.Now()
		syscall.Kill(pid, syscall.SIGKILL)
		c.touch("burst" + strconv.Itoa(i))
		var back bool
		for !back && time.Since(t0) < 30*time.Second {
			for _, r := range pending() {
				if r.Request_id == first {
					back = true
				}
			}
			if !back {
				time.Sleep(5 * time.Millisecond)
			}
		}
		if !back {
			b.Fatalf("iteration %d: the pending request did not come back", i)
		}
		recovery += time.Since(t0)
		c.WaitLog(ctx, "burst"+strconv.Itoa(i)+" sent", 30*time.Second)
		got := map[int64]bool{}
		testutil.Poll(ctx, 5*time.Second, "burst prompted", func() (bool, string) {
			for _, r := range pending() {
				if r.Port >= 9000 && r.Port < 9020 {
					got[r.Port] = true
				}
			}
			return len(got) == 20, ""
		})
		lost += 20 - len(got)
	}
	b.StopTimer()
	b.ReportMetric(float64(recovery)/float64(time.Millisecond)/float64(b.N), "recovery_ms")
	b.ReportMetric(float64(lost)/float64(b.N), "lost_events")
	c.touch("done")
	e.mustPodman("rm", "-f", "-t", "0", c.name)
}
