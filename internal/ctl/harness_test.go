// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/testenv/hubtest"
)

// startHub serves a hub for container id on
// <runtimeDir>/clearance/<id>/hub.sock until the test ends or Stop is
// called. Stop leaves the socket file in place (a stale socket, refusing
// connections), as a crashed hub would.
func startHub(t *testing.T, runtimeDir, id string) *hubtest.Hub {
	t.Helper()
	return startHubWith(t, runtimeDir, id, nil, nil)
}

// startHubWith is startHub with a given applier and hub (nil for new
// ones).
func startHubWith(t *testing.T, runtimeDir, id string, fa *hubtest.Applier, h *hub.Hub) *hubtest.Hub {
	t.Helper()
	path := filepath.Join(runtimeDir, "clearance", id, "hub.sock")
	return hubtest.Serve(t, path, hubtest.Options{Container: id, Applier: fa, Hub: h, KeepSocket: true})
}

// serveHub serves h on a new socket at path, leaving the socket file in
// place on Stop.
func serveHub(t *testing.T, path string, fa *hubtest.Applier, h *hub.Hub) *hubtest.Hub {
	t.Helper()
	return hubtest.Serve(t, path, hubtest.Options{Container: "x", Applier: fa, Hub: h, KeepSocket: true})
}

// blockedEv is a blocked connection of container c.
func blockedEv(c, dest, domain string, port int64) event.Event {
	return event.Event{Type: event.ConnectionBlocked, Container: c, Dest: dest, Port: port, Proto: 6,
		Domain: domain, Dossier: map[string]string{}}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // receives a value after each write (see Changed)
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	n, err := s.b.Write(p)
	ch := s.changed()
	s.mu.Unlock()
	select {
	case ch <- struct{}{}:
	default:
	}
	return n, err
}

func (s *syncBuffer) changed() chan struct{} {
	if s.written == nil {
		s.written = make(chan struct{}, 1)
	}
	return s.written
}

// Changed returns a channel that receives a value after a write.
func (s *syncBuffer) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// envMap turns a map into an env lookup function.
func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// ctlResult is the outcome of one clearancectl run.
type ctlResult struct {
	code           int
	stdout, stderr string
}

// runCtl runs clearancectl in-process with XDG_RUNTIME_DIR=runtimeDir.
func runCtl(t *testing.T, runtimeDir string, args ...string) ctlResult {
	t.Helper()
	return runWith(t, nil, runtimeDir, args...)
}

// runWith is runCtl with a hook to adjust the runner (fakes).
func runWith(t *testing.T, adjust func(*runner), runtimeDir string, args ...string) ctlResult {
	t.Helper()
	var out, errb bytes.Buffer
	r := newRunner(strings.NewReader(""), &out, &errb, envMap(map[string]string{"XDG_RUNTIME_DIR": runtimeDir}))
	r.recordRoot = "" // root's records on this machine are not the test's
	r.systemHubs = "" // nor its rootful containers' hubs
	if adjust != nil {
		adjust(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := r.run(ctx, args)
	res := ctlResult{code: code, stdout: out.String(), stderr: errb.String()}
	t.Logf("clearancectl %s → %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code,
		truncateForLog(res.stdout), truncateForLog(res.stderr))
	return res
}

func truncateForLog(s string) string {
	if len(s) > 4000 {
		return s[:4000] + "…"
	}
	return s
}

// hostile is a domain an attacker controls: an ANSI colour, an OSC title
// change, a cursor move, an RTL override and 10 KiB of name.
var hostile = "\x1b[31mevil\x1b]0;owned\x07\x1b[2J\u202egnp.exe\u009b" + strings.Repeat("A", 10<<10) + ".example"

// assertInert fails when s carries an escape byte, a C1 CSI or a bidi
// override.
func assertInert(t *testing.T, where, s string) {
	t.Helper()
	for _, bad := range []string{"\x1b", "\u202e", "\u009b", "\x07"} {
		if strings.Contains(s, bad) {
			t.Errorf("%s contains %q", where, bad)
		}
	}
}
