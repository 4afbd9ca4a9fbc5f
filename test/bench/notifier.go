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
	measurements = append(measurements, struct {
		group string
		run   func(*bench) error
	}{"notifier", (*bench).notifier})
}

// notifier: the notifier's Go benchmarks (a real dbus-daemon and a
// recording notification server; the built binary for RSS), translated
// into bench lines.
func (b *bench) notifier() error {
	out, err := exec.Command("go", "test", "-run", "^$", "-bench", "BenchmarkBlockToNotify|BenchmarkIdleRSS",
		"-benchtime", "200x", "./internal/notifier").CombinedOutput()
	if err != nil {
		return fmt.Errorf("notifier benchmarks: %v\n%s", err, out)
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
	for _, m := range []struct{ key, name, unit string }{
		{"BlockToNotify/p50_us", "block_to_notify_p50_us", "us"},
		{"BlockToNotify/p99_us", "block_to_notify_p99_us", "us"},
		{"IdleRSS/idle_rss_MiB", "notifier_idle_rss_mib", "MiB"},
		{"IdleRSS/sigterm_exit_ms", "notifier_sigterm_exit_ms", "ms"},
	} {
		v, ok := metrics[m.key]
		if !ok {
			return fmt.Errorf("notifier benchmark output lacks %s:\n%s", m.key, out)
		}
		report(m.name, v, m.unit)
	}
	return nil
}
