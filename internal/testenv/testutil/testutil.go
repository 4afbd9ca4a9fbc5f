// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package testutil holds helpers shared by clearance's tests: prerequisite
// checks that skip on a developer's machine but fail in CI, and a slog
// logger that writes to the test log.
package testutil

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Strict reports whether a missing prerequisite must fail the test instead
// of skipping it: in CI (CI=true) or when CLEARANCE_REQUIRE_PRIV_TESTS=1.
func Strict() bool {
	return os.Getenv("CI") == "true" || os.Getenv("CLEARANCE_REQUIRE_PRIV_TESTS") == "1"
}

// Unavailable skips tb with the formatted reason, or fails it when
// [Strict] is true, so a broken prerequisite in CI cannot hide as a skip.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if Strict() {
		tb.Fatalf("prerequisite missing (CI requires it): "+format, args...)
	}
	tb.Skipf("skipping, prerequisite missing: "+format, args...)
}

// RequireRoot stops tb unless it runs as uid 0.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Unavailable(tb, "needs root (euid %d)", os.Geteuid())
	}
}

// RequireTool stops tb unless every named program is on PATH, and returns
// the path of the first.
func RequireTool(tb testing.TB, names ...string) string {
	tb.Helper()
	var first string
	for i, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			Unavailable(tb, "%s not on PATH", n)
			return ""
		}
		if i == 0 {
			first = p
		}
	}
	return first
}

// Logger returns a logger that writes to tb's log at debug level.
// Lines logged after tb has finished are dropped instead of panicking.
func Logger(tb testing.TB) *slog.Logger {
	w := &tbWriter{tb: tb}
	tb.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct {
	tb   testing.TB
	done atomic.Bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Context returns a context cancelled when tb ends.
func Context(tb testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	return ctx
}

// SystemdAnalyze returns a command running systemd-analyze with args in a
// private mount namespace with a tmpfs on /run/systemd, so its
// bookkeeping files (e.g. /run/systemd/systemd-units-load) never land on
// the machine's real /run. Needs root for the mount namespace; without
// root it runs systemd-analyze directly.
func SystemdAnalyze(args ...string) *exec.Cmd {
	if os.Geteuid() != 0 {
		return exec.Command("systemd-analyze", args...)
	}
	return exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o mode=0755 tmpfs /run/systemd && exec systemd-analyze "$@"`, "systemd-analyze"}, args...)...)
}

// ShortDir is a private (0700) temporary directory with a short path,
// removed when tb ends: tb.TempDir's paths are too long for Unix socket
// addresses (108 bytes with the NUL).
func ShortDir(tb testing.TB) string {
	tb.Helper()
	d, err := os.MkdirTemp("", "clt-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// Buffer is a bytes.Buffer safe for one writer and any readers at once:
// a child process's output read by the test while it runs.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
