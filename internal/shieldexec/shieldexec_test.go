// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package shieldexec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// script writes an executable /bin/sh script with body to dir and returns
// its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApply(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantOK     bool
		wantStderr string
	}{
		{"exit 0", "exit 0", true, ""},
		{"exit 0 with a note", "echo ' applied ' >&2", true, "applied"},
		{"exit 1 with boom", "printf 'boom\\n' >&2; exit 1", false, "boom"},
		{"arguments are action -- container dest", `echo "$# $1 $2 $3 $4" >&2; exit 1`, false, "4 allow -- web-1 1.2.3.4"},
		{"stdin is /dev/null", "readlink /proc/self/fd/0 >&2; exit 1", false, "/dev/null"},
		{"stdout is discarded", "echo to-stdout; seq 1 100000; exit 0", true, ""},
		{"silent failure reports the exit status", "exit 3", false, "exit status 3"},
		{"10 KiB stderr is capped at 512 bytes", "head -c 10240 /dev/zero | tr '\\0' x >&2; exit 1", false, strings.Repeat("x", 512)},
		{"10 MiB stderr is drained and capped", "head -c 10485760 /dev/zero | tr '\\0' y >&2; exit 1", false, strings.Repeat("y", 512)},
		{"invalid UTF-8 is replaced", "printf '\\377ok\\n' >&2; exit 1", false, "\uFFFDok"},
		{"valid UTF-8 is kept", "printf 'zu gro\\303\\237\\n' >&2; exit 1", false, "zu groß"},
		{"character cut at the cap is dropped", "head -c 511 /dev/zero | tr '\\0' z >&2; printf '\\303\\251 more' >&2; exit 1", false, strings.Repeat("z", 511)},
		{"killed by a signal", "kill -TERM $$", false, "signal: terminated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Exec{Binary: script(t, t.TempDir(), "terok-shield", tt.body), Log: testutil.Logger(t)}
			ok, stderr := e.Apply(testutil.Context(t), "web-1", "1.2.3.4", "allow")
			if ok != tt.wantOK || stderr != tt.wantStderr {
				t.Fatalf("Apply = (%v, %q), want (%v, %q)", ok, stderr, tt.wantOK, tt.wantStderr)
			}
		})
	}
}

// TestAttackShieldOptionLikeArguments: a container or destination that looks
// like an option (issue 9: --state-dir=/tmp/x reached the shield) stays a
// positional argument, because "--" ends the options first.
func TestAttackShieldOptionLikeArguments(t *testing.T) {
	// A stand-in with getopt-style parsing: an option before "--" fails.
	body := `for a in "$@"; do case "$a" in --) echo "positional: $*" >&2; exit 0;; -*) echo "option $a" >&2; exit 9;; esac; done; exit 8`
	e := &Exec{Binary: script(t, t.TempDir(), "terok-shield", body), Log: testutil.Logger(t)}
	ok, stderr := e.Apply(testutil.Context(t), "--state-dir=/tmp/x", "--help", "allow")
	if !ok || stderr != "positional: allow -- --state-dir=/tmp/x --help" {
		t.Fatalf("Apply = (%v, %q), want the option-like strings after --", ok, stderr)
	}
}

func TestApplyMissingBinary(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-exec")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		binary string
		want   string // prefix
	}{
		{"no binary", "", "terok-shield not found on PATH"},
		{"binary path does not exist", filepath.Join(dir, "nope"), "spawn failed: "},
		{"binary not executable", notExec, "spawn failed: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Exec{Binary: tt.binary, Log: testutil.Logger(t)}
			ok, stderr := e.Apply(testutil.Context(t), "c", "d", "deny")
			if ok || !strings.HasPrefix(stderr, tt.want) {
				t.Fatalf("Apply = (%v, %q), want (false, %q…)", ok, stderr, tt.want)
			}
		})
	}
}

// gone reports whether pid has exited (no longer exists or is a zombie
// waiting for init to reap it).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// "pid (comm) S …": the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL) // don't leak it
			t.Fatalf("process %d still alive", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestApplyTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "grandchild.pid")
	// The script starts a grandchild in its process group and records its
	// pid, then waits: only a process-group kill ends both.
	bin := script(t, dir, "terok-shield",
		"sleep 1000 & echo $! > "+pidFile+".tmp; mv "+pidFile+".tmp "+pidFile+"; echo started >&2; wait")
	// The timeout must outlast the script's start-up; grow it until the
	// grandchild had time to appear (never asserting how long it took).
	for _, timeout := range []time.Duration{300 * time.Millisecond, 2 * time.Second, 10 * time.Second} {
		e := &Exec{Binary: bin, Timeout: timeout, Log: testutil.Logger(t)}
		ok, stderr := e.Apply(testutil.Context(t), "c", "d", "allow")
		if want := "timed out after " + timeout.String(); ok || stderr != want {
			t.Fatalf("Apply = (%v, %q), want (false, %q)", ok, stderr, want)
		}
		b, err := os.ReadFile(pidFile)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		waitGone(t, pid)
		return
	}
	t.Fatal("the script never started its grandchild")
}

func TestApplyDefaultTimeoutMessage(t *testing.T) {
	// Only the message format: a 10s run is not waited for.
	if got := "timed out after " + DefaultTimeout.String(); got != "timed out after 10s" {
		t.Fatalf("default timeout message %q", got)
	}
}

func TestApplyCancelled(t *testing.T) {
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	bin := script(t, dir, "terok-shield", "touch "+started+"; exec sleep 1000")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var ok bool
	var stderr string
	go func() {
		defer close(done)
		ok, stderr = (&Exec{Binary: bin, Timeout: time.Hour}).Apply(ctx, "c", "d", "allow")
	}()
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		select {
		case <-done:
			t.Fatalf("Apply returned early: (%v, %q)", ok, stderr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	<-done
	if ok || stderr != "cancelled: context canceled" {
		t.Fatalf("Apply = (%v, %q), want (false, %q)", ok, stderr, "cancelled: context canceled")
	}
}

func TestCapWriter(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{"under the cap", 8, []string{"ab", "cd"}, "abcd"},
		{"cut inside one write", 4, []string{"abcdef"}, "abcd"},
		{"cut across writes", 4, []string{"ab", "cdef", "gh"}, "abcd"},
		{"trimmed", 16, []string{"\n  x \n"}, "x"},
		{"two-byte rune cut in half", 3, []string{"ab\u00e9"}, "ab"},
		{"three-byte rune cut after two", 4, []string{"ab\u20ac"}, "ab"},
		{"complete rune at the cap kept", 4, []string{"ab\u00e9z"}, "ab\u00e9"},
		{"invalid byte inside replaced", 8, []string{"a\xffb"}, "a\uFFFDb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &capWriter{max: tt.max}
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write(%q) = %d, %v; want %d, nil", s, n, err, len(s))
				}
			}
			if got := w.String(); got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFindShieldBinary(t *testing.T) {
	pathDir := t.TempDir()
	onPath := script(t, pathDir, ShieldName, "exit 0")
	t.Setenv("PATH", pathDir)

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sibling := filepath.Join(filepath.Dir(self), ShieldName)
	if _, err := os.Lstat(sibling); err == nil {
		testutil.Unavailable(t, "%s already exists", sibling)
	}

	if got := FindShieldBinary(); got != onPath {
		t.Fatalf("without a sibling: FindShieldBinary() = %q, want %q", got, onPath)
	}

	// A non-executable sibling is skipped.
	if err := os.WriteFile(sibling, []byte("#!/bin/sh\n"), 0o644); err != nil {
		testutil.Unavailable(t, "cannot write next to the test binary: %v", err)
	}
	t.Cleanup(func() { os.Remove(sibling) })
	if got := FindShieldBinary(); got != onPath {
		t.Fatalf("with a non-executable sibling: FindShieldBinary() = %q, want %q", got, onPath)
	}

	if err := os.Chmod(sibling, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := FindShieldBinary(); got != sibling {
		t.Fatalf("with an executable sibling: FindShieldBinary() = %q, want %q", got, sibling)
	}

	os.Remove(sibling)
	t.Setenv("PATH", t.TempDir())
	if got := FindShieldBinary(); got != "" {
		t.Fatalf("with nothing: FindShieldBinary() = %q, want \"\"", got)
	}
}
