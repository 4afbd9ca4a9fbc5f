// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

func init() {
	measurements = append(measurements,
		struct {
			group string
			run   func(*bench) error
		}{"notifier", (*bench).notifier},
		struct {
			group string
			run   func(*bench) error
		}{"container", (*bench).container},
		struct {
			group string
			run   func(*bench) error
		}{"restart", (*bench).restart},
	)
}

// notifier: the notifier's Go benchmarks (a real dbus-daemon and a
// recording notification server; the built binary for RSS), translated
// into bench lines.
func (b *bench) notifier() error {
	metrics, err := goBench("./internal/notifier", "BenchmarkBlockToNotify|BenchmarkIdleRSS", "200x")
	if err != nil {
		return err
	}
	return reportMetrics(metrics, []metric{
		{"BlockToNotify/p50_us", "block_to_notify_p50_us", "us"},
		{"BlockToNotify/p99_us", "block_to_notify_p99_us", "us"},
		{"IdleRSS/idle_rss_MiB", "notifier_idle_rss_mib", "MiB"},
		{"IdleRSS/sigterm_exit_ms", "notifier_sigterm_exit_ms", "ms"},
	})
}

// container: real podman containers with and without the OCI hook, under
// a real systemd --user (test/podman's benchmark; root, podman).
func (b *bench) container() error {
	metrics, err := goBench("./test/podman", "BenchmarkContainerStart", "10x")
	if err != nil {
		return err
	}
	return reportMetrics(metrics, []metric{
		{"ContainerStart/activation_to_first_event_ms", "activation_to_first_event_ms", "ms"},
		{"ContainerStart/container_start_overhead_ms", "container_start_overhead_ms", "ms"},
		{"ContainerStart/with_hook_ms", "container_start_with_hook_ms", "ms"},
		{"ContainerStart/without_hook_ms", "container_start_without_hook_ms", "ms"},
	})
}

// restart: a hub killed with SIGKILL under a real systemd --user, with a
// request pending and connections blocked while it is down (test/podman's
// BenchmarkHubRestart).
func (b *bench) restart() error {
	metrics, err := goBench("./test/podman", "BenchmarkHubRestart", "3x")
	if err != nil {
		return err
	}
	return reportMetrics(metrics, []metric{
		{"HubRestart/recovery_ms", "hub_restart_recovery_ms", "ms"},
		{"HubRestart/lost_events", "hub_restart_lost_events", "of 20"},
	})
}

type metric struct{ key, name, unit string }

func reportMetrics(metrics map[string]float64, want []metric) error {
	for _, m := range want {
		v, ok := metrics[m.key]
		if !ok {
			return fmt.Errorf("benchmark output lacks %s", m.key)
		}
		report(m.name, v, m.unit)
	}
	return nil
}

// goBench runs Go benchmarks matching pattern in pkg and returns their
// custom metrics as "Name/unit".
func goBench(pkg, pattern, benchtime string) (map[string]float64, error) {
	out, err := exec.Command("go", "test", "-run", "^$", "-bench", pattern, "-benchtime", benchtime, pkg).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("benchmarks %s: %v\n%s", pkg, err, out)
	}
	metrics := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := strings.SplitN(strings.TrimPrefix(f[0], "Benchmark"), "-", 2)[0]
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				metrics[name+"/"+f[i+1]] = v
			}
		}
	}
	return metrics, nil
}
