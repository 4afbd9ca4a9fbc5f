// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/testenv/hubtest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// session is a running "clearancectl watch".
type session struct {
	t    *testing.T
	out  *syncBuffer
	in   io.Writer
	done chan struct{} // closed when watch has returned
	code int           // its exit code, valid after done
}

// waitOut waits until the output contains s.
func (s *session) waitOut(what string) {
	s.t.Helper()
	s.waitOutAfter(0, what)
}

// waitOutAfter waits until s appears after position from.
func (s *session) waitOutAfter(from int, what string) {
	s.t.Helper()
	timeout := time.After(20 * time.Second)
	changed := s.out.Changed()
	for {
		o := s.out.String()
		if from <= len(o) && strings.Contains(o[from:], what) {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			s.t.Fatalf("timed out waiting for %q; output:\n%s", what, o)
		}
	}
}

func (s *session) mark() int { return len(s.out.String()) }

func (s *session) typeLine(line string) {
	s.t.Helper()
	if _, err := io.WriteString(s.in, line+"\n"); err != nil {
		s.t.Fatalf("type %q: %v", line, err)
	}
}

func (s *session) wait() int {
	s.t.Helper()
	select {
	case <-s.done:
		return s.code
	case <-time.After(20 * time.Second):
		var stacks strings.Builder
		pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		s.t.Fatalf("watch did not exit; output:\n%s\ngoroutines:\n%s", s.out.String(), stacks.String())
	}
	return -1
}

// startPTYWatch runs watch in-process on a pseudo-terminal, as an
// operator over ssh would.
func startPTYWatch(t *testing.T, rt string, env map[string]string, args ...string) *session {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		testutil.Unavailable(t, "no pseudo-terminal: %v", err)
	}
	out := &syncBuffer{}
	copied := make(chan struct{})
	go func() {
		io.Copy(out, ptmx)
		close(copied)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	e := map[string]string{"XDG_RUNTIME_DIR": rt, "TERM": "xterm"}
	for k, v := range env {
		e[k] = v
	}
	s := &session{t: t, out: out, in: ptmx, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.code = Command(ctx, append([]string{"watch"}, args...), cli.Stdio{In: tty, Out: tty, Err: tty, Getenv: envMap(e)})
	}()
	t.Cleanup(func() {
		cancel()
		defer func() { t.Logf("watch output:\n%s", truncateForLog(out.String())) }()
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			t.Errorf("watch did not stop after cancel")
		}
		// Closing the terminal side ends the copy with EIO.
		tty.Close()
		select {
		case <-copied:
		case <-time.After(20 * time.Second):
			t.Errorf("pty reader did not stop")
		}
		ptmx.Close()
	})
	return s
}

func TestWatchPTYPromptConfirmVerdict(t *testing.T) {
	rt := testutil.ShortDir(t)
	fa := &hubtest.Applier{}
	h := hub.New(hub.Config{Container: "c1", Applier: fa, Log: testutil.Logger(t), Reemit: time.Nanosecond})
	th := startHubWith(t, rt, "c1", fa, h)
	th.Hub.Blocked(blockedEv("c1", "192.0.2.1", "early.example", 80))

	s := startPTYWatch(t, rt, map[string]string{"NO_COLOR": "1"})
	s.waitOut("hub c1: connected")
	// Requests waiting before watch started are shown too.
	s.waitOut("[1] BLOCKED  early.example:80/tcp (192.0.2.1)  Container: c1")
	testutil.Eventually(t, 0, "subscriber", func() bool { return th.Hub.Stats().Subscribers >= 1 })

	ev := blockedEv("c1", "198.51.100.7", "api.example.com", 443)
	ev.Dossier = map[string]string{"project": "proj", "task": "t1", "name": "builder"}
	id := th.Hub.Blocked(ev)
	s.waitOut("[2] BLOCKED  api.example.com:443/tcp (198.51.100.7)  Task: proj/t1 · builder")
	th.Hub.Blocked(ev)
	th.Hub.Blocked(ev)
	s.waitOut("[2] blocked again  api.example.com:443/tcp (198.51.100.7)  ×3")

	// A verdict needs an explicit confirmation; anything else cancels.
	m := s.mark()
	s.typeLine("a 2")
	s.waitOutAfter(m, "Type y and Enter to confirm")
	s.typeLine("x")
	s.waitOutAfter(m, "Cancelled [2].")
	s.waitOutAfter(m, `Unknown command "x"`)
	s.typeLine("y")
	s.waitOutAfter(m, "Nothing to confirm.")
	if n := len(fa.Calls()); n != 0 {
		t.Fatalf("%d verdicts sent without confirmation", n)
	}

	m = s.mark()
	s.typeLine("a 2")
	s.waitOutAfter(m, "Allow api.example.com:443/tcp (198.51.100.7) for proj/t1 · builder, once?")
	s.typeLine("y")
	s.waitOutAfter(m, "[2] allowed  api.example.com:443/tcp (198.51.100.7)  (proj/t1 · builder)")
	want := []hub.ApplyRequest{{Container: "c1", Dest: "api.example.com", IP: "198.51.100.7", Port: 443,
		Proto: 6, Action: "allow", Scope: hub.ScopeOnce}}
	if diff := cmp.Diff(want, fa.Calls()); diff != "" {
		t.Errorf("applier calls (-want +got):\n%s", diff)
	}
	if _, still := pendingIDs(th.Hub)[id]; still {
		t.Errorf("request %s still pending after the verdict", id)
	}

	// A allows until the container exits.
	m = s.mark()
	s.typeLine("A 1")
	s.waitOutAfter(m, "until the container exits?")
	s.typeLine("yes")
	s.waitOutAfter(m, "[1] allowed  early.example:80/tcp")
	s.waitOutAfter(m, "[1] allow until the container exits")
	if calls := fa.Calls(); len(calls) != 2 || calls[1].Scope != hub.ScopeContainer || calls[1].Dest != "early.example" {
		t.Errorf("A 1 sent %+v", calls)
	}
	calls := len(fa.Calls())

	// Another channel decides: watch says who, instead of closing silently.
	m = s.mark()
	other := th.Hub.Blocked(blockedEv("c1", "203.0.113.9", "other.example", 443))
	s.waitOutAfter(m, "[3] BLOCKED  other.example:443/tcp")
	alice := hub.WithOperator(context.Background(), hub.Operator{UID: 1000, User: "alice", Channel: "notifier"})
	if _, err := th.Hub.Decide(alice, other, "deny", hub.ScopeOnce, 0, false); err != nil {
		t.Fatal(err)
	}
	s.waitOutAfter(m, "[3] denied  other.example:443/tcp (203.0.113.9)  (c1)  by alice (uid 1000) via notifier")

	m = s.mark()
	s.typeLine("l")
	s.waitOutAfter(m, "(no pending requests)")
	s.typeLine("d 2")
	s.waitOutAfter(m, "No pending request [2].")
	if n := len(fa.Calls()); n != calls+1 {
		t.Errorf("%d verdicts applied after alice's, want exactly hers", n-calls)
	}
	s.typeLine("q")
	if code := s.wait(); code != ExitOK {
		t.Errorf("exit %d", code)
	}
	assertInert(t, "watch output (NO_COLOR)", s.out.String())
}

func pendingIDs(h *hub.Hub) map[string]bool {
	out := map[string]bool{}
	for _, p := range h.Pending() {
		out[p.Event.RequestID] = true
	}
	return out
}

func TestWatchPTYHostileStringsAndFailure(t *testing.T) {
	rt := testutil.ShortDir(t)
	th := startHub(t, rt, "c1")
	s := startPTYWatch(t, rt, map[string]string{"NO_COLOR": "1"})
	s.waitOut("hub c1: connected")
	testutil.Eventually(t, 0, "subscriber", func() bool { return th.Hub.Stats().Subscribers >= 1 })

	ev := blockedEv("c1", "198.51.100.7", hostile, 443)
	ev.RequestID = "c1:1"
	ev.Dossier = map[string]string{"project": "\x1b[1mp\u202e", "task": hostile, "name": "n\x1b]8;;http://x\x07"}
	th.Hub.Publish(ev)
	s.waitOut("[1] BLOCKED")
	s.waitOut("evil")

	// The firewall refuses: the prompt stays, and says so.
	th.Applier.Set(false, "nft: \x1b[31mtable missing\u202e", nil)
	m := s.mark()
	s.typeLine("d 1")
	s.waitOutAfter(m, "Type y and Enter")
	s.typeLine("y")
	s.waitOutAfter(m, "[1] FAILED  deny")
	s.waitOutAfter(m, "the firewall refused: nft:")
	s.typeLine("l")
	s.waitOutAfter(m, "  [1] ")

	// The container exits: its prompt goes away.
	exited := blockedEv("c1", "", "", 0)
	exited.Type = "container_exited"
	exited.Reason = "stopped\x1b[2J"
	th.Hub.Publish(exited)
	s.waitOut("container c1 exited (stopped [2J); dropped [1]")

	s.typeLine("q")
	s.wait()
	out := s.out.String()
	assertInert(t, "watch output with hostile strings", out)
	for _, line := range strings.Split(out, "\n") {
		if len(line) > 2048 {
			t.Errorf("a %d-byte line: 10 KiB names must be capped", len(line))
		}
	}
}

func TestWatchColourOnlyOnTerminal(t *testing.T) {
	rt := testutil.ShortDir(t)
	th := startHub(t, rt, "c1")
	s := startPTYWatch(t, rt, nil)
	s.waitOut("connected")
	testutil.Eventually(t, 0, "subscriber", func() bool { return th.Hub.Stats().Subscribers >= 1 })
	th.Hub.Blocked(blockedEv("c1", "198.51.100.7", "api.example.com", 443))
	s.waitOut("\x1b[33m[1] BLOCKED")
	s.typeLine("q")
	s.wait()
}

// startPipeWatch runs watch with plain pipes (no terminal) and a fast
// rescan.
func startPipeWatch(t *testing.T, rt string) *session {
	t.Helper()
	inR, inW := io.Pipe()
	out := &syncBuffer{}
	r := newRunner(inR, out, out, envMap(map[string]string{"XDG_RUNTIME_DIR": rt}))
	r.systemHubs = "" // the machine's rootful hubs are not the test's
	r.rescan = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{t: t, out: out, in: inW, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.code = r.run(ctx, []string{"watch"})
	}()
	t.Cleanup(func() {
		cancel()
		inW.Close()
		defer func() { t.Logf("watch output:\n%s", truncateForLog(out.String())) }()
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			t.Errorf("watch did not stop after cancel")
		}
	})
	return s
}

func TestWatchDiscoversReconnectsAndForgetsHubs(t *testing.T) {
	rt := testutil.ShortDir(t)
	s := startPipeWatch(t, rt)
	s.waitOut("No hubs yet")

	// A hub appearing later is picked up.
	th := startHub(t, rt, "c1")
	s.waitOut("hub c1: connected")
	testutil.Eventually(t, 0, "subscriber", func() bool { return th.Hub.Stats().Subscribers >= 1 })
	th.Hub.Blocked(blockedEv("c1", "198.51.100.7", "api.example.com", 443))
	s.waitOut("[1] BLOCKED  api.example.com:443/tcp")

	// The hub restarts on the same socket path (atomically replaced, as
	// systemd's socket keeps the path): watch reconnects, sees that [1]
	// is gone with the old hub, and shows the new hub's queue.
	m := s.mark()
	th.Stop()
	s.waitOutAfter(m, "hub c1: connection lost")
	fa2 := &hubtest.Applier{}
	h2 := hub.New(hub.Config{Container: "c1", Applier: fa2, Log: testutil.Logger(t)})
	tmp := filepath.Join(filepath.Dir(th.Path), "new.sock")
	th2 := serveHub(t, tmp, fa2, h2)
	h2.Blocked(blockedEv("c1", "203.0.113.5", "", 22))
	if err := os.Rename(tmp, th.Path); err != nil {
		t.Fatal(err)
	}
	th2.Path = th.Path
	s.waitOutAfter(m, "hub c1: reconnected")
	s.waitOutAfter(m, "[1] no longer pending")
	s.waitOutAfter(m, "[2] BLOCKED  203.0.113.5:22/tcp")
	s.typeLine("d 2")
	s.waitOutAfter(m, "Type y")
	s.typeLine("y")
	s.waitOutAfter(m, "[2] denied  203.0.113.5:22/tcp")
	if calls := fa2.Calls(); len(calls) != 1 || calls[0].Action != "deny" || calls[0].Dest != "203.0.113.5" {
		t.Errorf("verdict after reconnect: %+v", calls)
	}

	// A second hub, then the first one disappears for good.
	tc2 := startHub(t, rt, "c2")
	s.waitOut("hub c2: connected")
	testutil.Eventually(t, 0, "subscriber", func() bool { return tc2.Hub.Stats().Subscribers >= 1 })
	h2.Blocked(blockedEv("c1", "203.0.113.6", "", 22))
	s.waitOut("[3] BLOCKED  203.0.113.6:22/tcp")
	m = s.mark()
	th2.Stop()
	os.RemoveAll(filepath.Dir(th.Path))
	s.waitOutAfter(m, "hub c1: gone; dropped [3]")

	// The other hub is unaffected.
	tc2.Hub.Blocked(blockedEv("c2", "192.0.2.44", "", 8080))
	s.waitOut("[4] BLOCKED  192.0.2.44:8080/tcp")
	s.typeLine("q")
	if code := s.wait(); code != ExitOK {
		t.Errorf("exit %d", code)
	}
}

func TestWatchEOFQuits(t *testing.T) {
	rt := testutil.ShortDir(t)
	s := startPipeWatch(t, rt)
	s.waitOut("No hubs yet")
	s.in.(io.Closer).Close()
	if code := s.wait(); code != ExitOK {
		t.Errorf("exit %d", code)
	}
}
