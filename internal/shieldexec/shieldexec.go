// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package shieldexec applies a verdict the way the seed did: by running
// terok-shield allow|deny -- CONTAINER DEST and reporting its exit status
// and the start of its stderr.
//
// Compared with the seed's run_shield it reads stdin from /dev/null instead
// of inheriting it, keeps only the first 512 bytes of stderr instead of
// buffering all of it, and on timeout kills the whole process group, so a
// helper the shield started cannot outlive it.
package shieldexec

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// ShieldName is the executable FindShieldBinary looks for.
const ShieldName = "terok-shield"

// DefaultTimeout bounds one run when Exec.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// StderrCap is how many bytes of stderr are kept; the rest is discarded as
// it arrives.
const StderrCap = 512

// ioGrace is how long to wait for stderr to reach EOF after the shield has
// exited, in case something it started still holds the pipe.
const ioGrace = time.Second

// Exec runs the shield CLI for each verdict. The zero value reports every
// verdict as failed ("terok-shield not found on PATH"); set Binary, usually
// from [FindShieldBinary] or configuration. An Exec is safe for concurrent
// use; its fields must not change after first use.
type Exec struct {
	// Binary is the shield executable. Empty means none was found.
	Binary string

	// Timeout bounds one run; when it expires the run's whole process
	// group is killed. Zero means DefaultTimeout (10s).
	Timeout time.Duration

	// Log receives a line per failure. Nil discards them.
	Log *slog.Logger
}

// Apply runs Binary with the arguments action, "--", container and dest
// (terok-shield allow -- CONTAINER DEST; "--" keeps a container or dest
// that starts with "-" from being taken for an option), with stdin from
// /dev/null and stdout
// discarded, and reports whether it exited 0 together with the first 512
// bytes of its stderr (trimmed, invalid UTF-8 replaced by U+FFFD; an
// incomplete character cut off at the cap is dropped).
//
// Failures are reported in stderr rather than as an error, as the seed's
// verdict helper did:
//
//	(false, "terok-shield not found on PATH")   Binary is empty
//	(false, "spawn failed: …")                  the process could not start
//	(false, "timed out after 10s")              Timeout expired; the process group was killed
//	(false, "cancelled: context canceled")      ctx ended first; the process group was killed
//	(false, <stderr or exit status>)            non-zero exit
//
// The process runs in its own process group (Setpgid). Apply returns once
// it has exited and its stderr is drained (or after a short grace period
// when something it started keeps stderr open).
func (e *Exec) Apply(ctx context.Context, container, dest, action string) (ok bool, stderr string) {
	log := e.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	attrs := []any{"action", action, "container", container, "dest", dest}
	if e.Binary == "" {
		log.Warn("verdict not applied: no shield binary", attrs...)
		return false, ShieldName + " not found on PATH"
	}
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	runCtx, cancel := context.WithTimeoutCause(ctx, timeout, errTimeout)
	defer cancel()

	errBuf := &capWriter{max: StderrCap}
	// "--" ends the options: whatever container and dest hold, they stay
	// positional arguments (terok-shield takes --state-dir=… and friends).
	cmd := exec.CommandContext(runCtx, e.Binary, action, "--", container, dest)
	cmd.Stdin = nil  // /dev/null
	cmd.Stdout = nil // /dev/null
	cmd.Stderr = errBuf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The child is not reaped yet, so its pid still names its group.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = ioGrace

	if err := cmd.Start(); err != nil {
		log.Error("spawn shield", append(attrs, "binary", e.Binary, "err", err)...)
		return false, "spawn failed: " + err.Error()
	}
	err := cmd.Wait()
	snippet := errBuf.String()

	if cause := context.Cause(runCtx); cause != nil && !exitedOK(cmd) {
		if errors.Is(cause, errTimeout) {
			log.Warn("shield timed out", append(attrs, "timeout", timeout)...)
			return false, "timed out after " + timeout.String()
		}
		log.Warn("shield run cancelled", append(attrs, "err", cause)...)
		return false, "cancelled: " + cause.Error()
	}
	if exitedOK(cmd) {
		if err != nil { // exec.ErrWaitDelay: a leftover process held stderr
			log.Warn("shield left a process holding stderr", append(attrs, "err", err)...)
		}
		return true, snippet
	}
	msg := snippet
	if msg == "" && err != nil {
		msg = err.Error() // e.g. "exit status 3"
	}
	log.Warn("shield failed", append(attrs, "err", err, "stderr", snippet)...)
	return false, msg
}

var errTimeout = errors.New("shield timeout")

func exitedOK(cmd *exec.Cmd) bool {
	return cmd.ProcessState != nil && cmd.ProcessState.Success()
}

// capWriter keeps the first max bytes written and discards the rest, so a
// chatty child cannot make us buffer without bound. Only exec's copying
// goroutine writes; String is called after Wait.
type capWriter struct {
	buf       []byte
	max       int
	truncated bool
}

func (w *capWriter) Write(p []byte) (int, error) {
	if room := w.max - len(w.buf); room > 0 {
		if len(p) > room {
			w.buf = append(w.buf, p[:room]...)
			w.truncated = true
		} else {
			w.buf = append(w.buf, p...)
		}
	} else if len(p) > 0 {
		w.truncated = true
	}
	return len(p), nil
}

// String returns the kept bytes as trimmed, valid UTF-8.
func (w *capWriter) String() string {
	b := w.buf
	if w.truncated {
		b = dropPartialRune(b)
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(b), "\uFFFD"))
}

// dropPartialRune removes an incomplete UTF-8 sequence at the end of b,
// left by cutting it at the cap.
func dropPartialRune(b []byte) []byte {
	for i := 1; i < utf8.UTFMax && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < utf8.RuneSelf {
			return b // ASCII: nothing cut
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			return b
		}
	}
	return b
}

// FindShieldBinary returns the terok-shield executable: the one next to
// the running executable if that is a regular, executable file, else the
// one on $PATH, else "".
func FindShieldBinary() string {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), ShieldName)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && unix.Access(p, unix.X_OK) == nil {
			return p
		}
	}
	if p, err := exec.LookPath(ShieldName); err == nil {
		return p
	}
	return ""
}
