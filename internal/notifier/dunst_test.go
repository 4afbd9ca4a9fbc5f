// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/notify"
	"github.com/terok-ai/clearance/internal/testenv/desktoplab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestDunstEndToEnd runs the daemon against a real notification daemon:
// Xvfb, a private dbus-daemon and dunst, all started here (desktoplab).
// A block at a real hub becomes a dunst popup (screenshot saved as a test
// artifact in $CLEARANCE_ARTIFACTS, else in a temp dir), "dunstctl
// context" makes dunst invoke the Allow action through its dmenu picker
// (a script that picks the allow line), the hub receives the verdict and
// the popup is replaced by "Allowed: …".
func TestDunstEndToEnd(t *testing.T) {
	testutil.RequireTool(t, desktoplab.Tools...)
	desk, err := desktoplab.Start(t.Context(), desktoplab.Options{Dir: t.TempDir(), Pick: "allow", Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		desk.Close()
		if t.Failed() {
			t.Logf("dunst output:\n%s", desk.Log("dunst"))
		}
	})
	ctx := t.Context()

	// The daemon's bus, recording what it asks dunst to show.
	rec := &recordingBus{added: make(chan struct{})}
	dial := func(ctx context.Context) (Bus, error) {
		c, err := notify.Dial(ctx, desk.BusAddr, &notify.Config{Logger: testutil.Logger(t)})
		if err != nil {
			return nil, err
		}
		rec.mu.Lock()
		rec.Client = c
		rec.mu.Unlock()
		return rec, nil
	}
	base := filepath.Join(testutil.ShortDir(t), "clearance")
	th := startHubAt(t, filepath.Join(base, "0123456789ab", "hub.sock"), "0123456789ab")
	startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dial})
	th.WaitSubscribers(t, 1)
	th.Hub.Blocked(blockedEvent("0123456789ab", "192.0.2.80", "api.example.com",
		map[string]string{"project": "webshop", "task": "build-42", "name": "builder"}))

	prompt := rec.waitFor(t, "Blocked: api.example.com:443")
	if err := desk.WaitDisplayed(ctx, 1, 20*time.Second); err != nil {
		t.Fatalf("popup displayed: %v", err)
	}

	artifacts := os.Getenv("CLEARANCE_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	}
	shot := filepath.Join(artifacts, "notifier-dunst-prompt.png")
	if err := desk.Screenshot(ctx, shot); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the prompt: %s", shot)

	// Invoke Allow without a mouse: dunst runs the picker and emits
	// ActionInvoked(id, "allow").
	if err := desk.Context(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("dunst context menu offered:\n%s", desk.PickerInput())
	got := th.Applier.WaitCalls(t, 1)[0]
	if got.Container != "0123456789ab" || got.Dest != "api.example.com" || got.Action != "allow" {
		t.Errorf("hub applied %+v, want allow api.example.com for 0123456789ab", got)
	}
	outcome := rec.waitFor(t, "Allowed: api.example.com")
	t.Logf("prompt id %d; outcome Notify replaces %d -> id %d", prompt.id, outcome.n.ReplacesID, outcome.id)
	if err := desk.WaitDisplayed(ctx, 1, 20*time.Second); err != nil {
		t.Fatalf("outcome displayed: %v", err)
	}
	if err := desk.Screenshot(ctx, filepath.Join(artifacts, "notifier-dunst-allowed.png")); err != nil {
		t.Fatal(err)
	}

	// Whatever dunst shows now goes to its history when closed: the
	// outcome must be there, and the prompt's Allow/Deny must not.
	if err := desk.CloseAll(ctx); err != nil {
		t.Fatal(err)
	}
	hist, err := desk.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
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
