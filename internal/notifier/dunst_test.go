package notifier

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/notify"
	"github.com/terok-ai/clearance/internal/notify/notifytest"
	"github.com/terok-ai/clearance/internal/testutil"
)

// TestDunstEndToEnd runs the daemon against a real notification daemon:
// Xvfb, a private dbus-daemon and dunst, all started here. A block at a
// real hub becomes a dunst popup (screenshot saved as a test artifact in
// $CLEARANCE_ARTIFACTS, else in a temp dir), "dunstctl context" makes
// dunst invoke the Allow action through its dmenu picker (a script that
// picks the allow line), the hub receives the verdict and the popup is
// replaced by "Allowed: …".
func TestDunstEndToEnd(t *testing.T) {
	testutil.RequireTool(t, "Xvfb", "dunst", "dunstctl", "import", "dbus-daemon")
	dir := t.TempDir()
	display := startXvfb(t)
	bus := notifytest.NewBus(t)
	env := append(envWithout("DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "HOME", "XDG_CONFIG_HOME"),
		"DISPLAY="+display, "DBUS_SESSION_BUS_ADDRESS="+bus.Addr, "HOME="+dir)

	picker := filepath.Join(dir, "picker.sh")
	pickerLog := filepath.Join(dir, "picker-input.txt")
	// dunst writes one line per action, "#Allow (Blocked: host:443) [ID,allow]",
	// and runs the action of the line the picker prints.
	writeFile(t, picker, 0o755, "#!/bin/sh\ntee "+pickerLog+" | grep -m1 ',allow\\]$'\n")
	rc := filepath.Join(dir, ".config", "dunst", "dunstrc")
	writeFile(t, rc, 0o644, `[global]
    dmenu = `+picker+`
    font = DejaVu Sans 11
    width = 460
    origin = top-right
    offset = 24x24
    frame_width = 2
    padding = 10
    horizontal_padding = 12
    show_indicators = yes
[urgency_critical]
    background = "#2b2b2b"
    foreground = "#ffffff"
    frame_color = "#e0a000"
    timeout = 0
`)
	startDunst(t, rc, env, bus.Addr)

	// The daemon's bus, recording what it asks dunst to show.
	rec := &recordingBus{added: make(chan struct{})}
	dial := func(ctx context.Context) (Bus, error) {
		c, err := notify.Dial(ctx, bus.Addr, &notify.Config{Logger: testutil.Logger(t)})
		if err != nil {
			return nil, err
		}
		rec.mu.Lock()
		rec.Client = c
		rec.mu.Unlock()
		return rec, nil
	}
	base := filepath.Join(runtimeDir(t), "clearance")
	th := startHubAt(t, filepath.Join(base, "0123456789ab", "hub.sock"), "0123456789ab")
	startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dial})
	th.WaitSubscribers(t, 1)
	th.Hub.Blocked(blockedEvent("0123456789ab", "192.0.2.80", "api.example.com",
		map[string]string{"project": "webshop", "task": "build-42", "name": "builder"}))

	prompt := rec.waitFor(t, "Blocked: api.example.com:443")
	waitDunst(t, env, "popup displayed", func() bool { return dunstCount(t, env, "displayed") >= 1 })

	artifacts := os.Getenv("CLEARANCE_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(artifacts, "notifier-dunst-prompt.png")
	run(t, env, "import", "-window", "root", shot)
	t.Logf("screenshot of the prompt: %s", shot)

	// Invoke Allow without a mouse: dunst runs the picker and emits
	// ActionInvoked(id, "allow").
	run(t, env, "dunstctl", "context")
	if in, err := os.ReadFile(pickerLog); err == nil {
		t.Logf("dunst context menu offered:\n%s", in)
	}
	got := th.Applier.WaitCalls(t, 1)[0]
	if got.Container != "0123456789ab" || got.Dest != "api.example.com" || got.Action != "allow" {
		t.Errorf("hub applied %+v, want allow api.example.com for 0123456789ab", got)
	}
	outcome := rec.waitFor(t, "Allowed: api.example.com")
	t.Logf("prompt id %d; outcome Notify replaces %d -> id %d", prompt.id, outcome.n.ReplacesID, outcome.id)
	waitDunst(t, env, "outcome displayed", func() bool { return dunstCount(t, env, "displayed") >= 1 })
	run(t, env, "import", "-window", "root", filepath.Join(artifacts, "notifier-dunst-allowed.png"))

	// Whatever dunst shows now goes to its history when closed: the
	// outcome must be there, and the prompt's Allow/Deny must not.
	run(t, env, "dunstctl", "close-all")
	hist := dunstHistory(t, env)
	if !slices.Contains(hist, "Allowed: api.example.com") {
		t.Errorf("dunst history %q lacks the outcome", hist)
	}
}

// recordingBus is a notify.Client that records the Notify calls made
// through it.
type recordingBus struct {
	*notify.Client
	mu    sync.Mutex
	calls []recorded
	added chan struct{}
}

type recorded struct {
	n  notify.Notification
	id uint32
}

func (r *recordingBus) Notify(ctx context.Context, n notify.Notification) (uint32, error) {
	r.mu.Lock()
	c := r.Client
	r.mu.Unlock()
	id, err := c.Notify(ctx, n)
	if err == nil {
		r.mu.Lock()
		r.calls = append(r.calls, recorded{n, id})
		close(r.added)
		r.added = make(chan struct{})
		r.mu.Unlock()
	}
	return id, err
}

func (r *recordingBus) waitFor(t *testing.T, summary string) recorded {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		added := r.added
		for i := len(r.calls) - 1; i >= 0; i-- {
			if r.calls[i].n.Summary == summary {
				c := r.calls[i]
				r.mu.Unlock()
				return c
			}
		}
		r.mu.Unlock()
		select {
		case <-added:
		case <-deadline:
			t.Fatalf("no Notify %q within 20s", summary)
		}
	}
}

// startXvfb starts a virtual X server on a free display (Xvfb picks it:
// -displayfd) and returns ":N". It is killed in Cleanup.
func startXvfb(t *testing.T) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command("Xvfb", "-displayfd", "3", "-screen", "0", "1280x800x24", "-nolisten", "tcp")
	cmd.ExtraFiles = []*os.File{w}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start Xvfb: %v", err)
	}
	w.Close()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case n := <-line:
		if _, err := strconv.Atoi(n); err != nil {
			t.Fatalf("Xvfb did not report a display (%q): %s", n, stderr.String())
		}
		return ":" + n
	case <-time.After(20 * time.Second):
		t.Fatalf("Xvfb not ready within 20s: %s", stderr.String())
	}
	return ""
}

// startDunst starts dunst with config rc and waits until it owns
// org.freedesktop.Notifications on the bus. It is killed in Cleanup.
func startDunst(t *testing.T, rc string, env []string, addr string) {
	t.Helper()
	c, err := notify.Dial(t.Context(), addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect()
	if c.Owner() != "" {
		t.Fatalf("a notification server already owns the private bus")
	}
	cmd := exec.Command("dunst", "-config", rc)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dunst: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("dunst output:\n%s", out.String())
		}
	})
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatal("bus connection lost")
			}
			if _, up := ev.(notify.DaemonRestarted); up {
				si, err := c.ServerInfo(t.Context())
				t.Logf("notification server: %+v %v", si, err)
				return
			}
		case <-deadline:
			t.Fatalf("dunst did not take the bus name within 20s:\n%s", out.String())
		}
	}
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func dunstCount(t *testing.T, env []string, what string) int {
	n, _ := strconv.Atoi(strings.TrimSpace(run(t, env, "dunstctl", "count", what)))
	return n
}

// waitDunst polls a dunst condition (dunstctl has no change notification).
func waitDunst(t *testing.T, env []string, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("dunst: %s not reached within 20s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dunstHistory returns the summaries in dunst's history.
func dunstHistory(t *testing.T, env []string) []string {
	t.Helper()
	var h struct {
		Data [][]struct {
			Summary struct {
				Data string `json:"data"`
			} `json:"summary"`
		} `json:"data"`
	}
	out := run(t, env, "dunstctl", "history")
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		t.Fatalf("parse dunstctl history: %v\n%s", err, out)
	}
	var s []string
	for _, group := range h.Data {
		for _, n := range group {
			s = append(s, n.Summary.Data)
		}
	}
	return s
}

func writeFile(t *testing.T, path string, mode os.FileMode, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(fmt.Errorf("write %s: %w", path, err))
	}
}
