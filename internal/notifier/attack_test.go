// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"path/filepath"
	"testing"

	"github.com/terok-ai/clearance/internal/testenv/notifytest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestAttackSecondHubClaimsContainer (issue 9, item 11): the notifier
// sent a verdict to whichever hub had reported the container last, so a
// second socket naming the same container got the operator's answers
// meant for the real hub. Now the first hub that named a container speaks
// for it while it is followed; another hub's events for it are ignored,
// and the verdict goes back to the hub the prompt came from.
func TestAttackSecondHubClaimsContainer(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	base := filepath.Join(testutil.ShortDir(t), "clearance")
	real := startHubAt(t, filepath.Join(base, "aaaa00000001", "hub.sock"), "ctr-a")
	real.Hub.Blocked(blockedEvent("ctr-a", "192.0.2.1", "api.example.com", nil))
	startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dialBus(t, bus.Addr)})
	p := waitNotify(t, srv, "Blocked: api.example.com:443")

	// The second socket: it names ctr-a, with the same target, then its
	// own container (the prompt for that one shows its stream was read).
	fake := startHubAt(t, filepath.Join(base, "ffff00000009", "hub.sock"), "ctr-a")
	fake.WaitSubscribers(t, 1)
	fake.Hub.Blocked(blockedEvent("ctr-a", "192.0.2.1", "api.example.com", nil))
	fake.Hub.Blocked(blockedEvent("ctr-f", "192.0.2.66", "own.example", nil))
	waitNotify(t, srv, "Blocked: own.example:443")

	if err := srv.Invoke(p.ID, "allow"); err != nil {
		t.Fatal(err)
	}
	if calls := real.Applier.WaitCalls(t, 1); calls[0].Container != "ctr-a" || calls[0].Dest != "api.example.com" {
		t.Errorf("the real hub applied %+v", calls[0])
	}
	waitNotify(t, srv, "Allowed: api.example.com")
	if calls := fake.Applier.Calls(); len(calls) != 0 {
		t.Errorf("the second socket got verdicts: %+v", calls)
	}
}
