package podman

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
