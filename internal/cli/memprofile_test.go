// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMemProfileSignals: SIGUSR1 writes the runtime metrics only, SIGUSR2
// the metrics and a heap profile, numbered by the signals received.
func TestMemProfileSignals(t *testing.T) {
	dir := t.TempDir()
	errs := make(chan error, 4)
	stop := watchMemProfile(dir, func(err error) { errs <- err })
	defer stop()
	base := func(n int) string {
		return filepath.Join(dir, fmt.Sprintf("%s-%d-%d", filepath.Base(os.Args[0]), os.Getpid(), n))
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	m := waitFile(t, base(1)+".metrics", errs)
	if _, err := os.Stat(base(1) + ".heap.pprof"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SIGUSR1 wrote a heap profile (stat: %v)", err)
	}
	// Live bytes are 0 until the first collection; the others are not.
	if _, ok := metricValue(m, "/gc/heap/live:bytes"); !ok {
		t.Errorf("metrics lack /gc/heap/live:bytes:\n%s", m)
	}
	for _, name := range []string{"/memory/classes/heap/objects:bytes", "/sched/goroutines:goroutines", "/memory/classes/total:bytes"} {
		v, ok := metricValue(m, name)
		if !ok || v <= 0 {
			t.Errorf("metrics: %s = %v (present %v), want a positive value", name, v, ok)
		}
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	waitFile(t, base(2)+".metrics", errs)
	prof, err := os.ReadFile(base(2) + ".heap.pprof")
	if err != nil {
		t.Fatal(err)
	}
	// A pprof profile is gzip-compressed protobuf.
	if len(prof) < 2 || prof[0] != 0x1f || prof[1] != 0x8b {
		t.Errorf("heap profile is not gzip data: % x", prof[:min(len(prof), 8)])
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestMemProfileBadDir: a directory that cannot be written is reported,
// and the process goes on (the next signal is served).
func TestMemProfileBadDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	errs := make(chan error, 4)
	stop := watchMemProfile(dir, func(err error) { errs <- err })
	defer stop()
	for range 2 {
		if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs:
			if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "write runtime metrics: ") {
				t.Errorf("err = %v, want a clear ENOENT", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no error reported")
		}
	}
}

func waitFile(t *testing.T, path string, errs <-chan error) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil {
			return string(b)
		}
		select {
		case err := <-errs:
			t.Fatal(err)
		case <-deadline:
			t.Fatalf("%s not written", path)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func metricValue(m, name string) (float64, bool) {
	for _, line := range strings.Split(m, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}
