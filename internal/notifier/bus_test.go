// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/notifytest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// flusher drives the daemon's flush cycles (Options.flushTick) in tests.
type flusher chan time.Time

// cycles runs n flush cycles: the main loop takes each value in turn, so
// when the last send returns, the cycles before it have run, Flush
// included.
func (f flusher) cycles(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case f <- time.Now():
		case <-time.After(15 * time.Second):
			t.Fatal("the daemon's main loop does not take flush ticks")
		}
	}
}

// catchUp makes mon catch up with every call the daemon made so far.
func catchUp(t *testing.T, mon *notifytest.Monitor) {
	t.Helper()
	if err := mon.Sync(); err != nil {
		t.Fatal(err)
	}
}

// notifyCalls counts, per summary, the Notify calls among seen, and all of
// them.
func notifyCalls(seen []notifytest.Seen) (bySummary map[string]int, all int) {
	bySummary = map[string]int{}
	for _, s := range seen {
		if s.Kind == "Notify" {
			bySummary[s.Summary]++
			all++
		}
	}
	return bySummary, all
}

// since returns what was seen after the last owner change.
func sinceOwnerChange(seen []notifytest.Seen) (changes int, after []notifytest.Seen) {
	last := -1
	for i, s := range seen {
		if s.Kind == "Owner" {
			changes++
			last = i
		}
	}
	return changes, seen[last+1:]
}

// TestDaemonBusBackBeforeServer: the session bus dies and comes back at
// the same address before the notification server takes its name, the
// server later leaves a live bus and comes back, and once it never comes.
// A D-Bus monitor on the bus counts every call to
// org.freedesktop.Notifications: while the name has no owner, at most one
// Notify per NameOwnerChanged (the one that raced the departure) and none
// at all after a reconnect; each owner change shows every pending prompt
// again exactly once. The status line says what is true in each state.
func TestDaemonBusBackBeforeServer(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	base := filepath.Join(testutil.ShortDir(t), "clearance")
	th := startHubAt(t, filepath.Join(base, "b05b05b05b05", "hub.sock"), "ctr-r")
	th.Hub.Blocked(blockedEvent("ctr-r", "192.0.2.21", "one.example", nil))
	st := &recordStatus{}
	tick := make(flusher)
	startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dialBus(t, bus.Addr),
		Status: st, flushTick: tick})
	waitNotify(t, srv, "Blocked: one.example:443")
	st.wait(t, "1 hubs (1 connected), 1 pending (1 shown), notifications: ok")

	prompts := []string{"Blocked: one.example:443"}
	block := func(n int, domain string) {
		t.Helper()
		th.Hub.Blocked(blockedEvent("ctr-r", "192.0.2."+string(rune('0'+n)), domain, nil))
		prompts = append(prompts, "Blocked: "+domain+":443")
	}
	// reshown waits until every pending prompt was shown after the last
	// owner change, then lets a few flush cycles pass and checks each was
	// shown exactly once.
	reshown := func(t *testing.T, mon *notifytest.Monitor) {
		t.Helper()
		_, err := mon.WaitFor(func(seen []notifytest.Seen) bool {
			_, after := sinceOwnerChange(seen)
			by, _ := notifyCalls(after)
			for _, p := range prompts {
				if by[p] == 0 {
					return false
				}
			}
			return true
		}, 15*time.Second)
		if err != nil {
			t.Fatalf("prompts not shown again after the server came: %v", err)
		}
		tick.cycles(t, 3)
		catchUp(t, mon)
		_, after := sinceOwnerChange(mon.Seen())
		by, all := notifyCalls(after)
		for _, p := range prompts {
			if by[p] != 1 {
				t.Errorf("%q shown %d times after the owner change, want once", p, by[p])
			}
		}
		if all != len(prompts) {
			t.Errorf("%d Notify calls after the owner change, want %d (one per prompt):%s", all, len(prompts),
				notifytest.DescribeSeen(after))
		}
	}

	t.Run("bus back, no server yet: nothing is sent, the status says so", func(t *testing.T) {
		if err := bus.Restart(); err != nil {
			t.Fatal(err)
		}
		if err := srv.Stop(); err != nil { // its connection died with the bus
			t.Fatal(err)
		}
		mon := notifytest.NewMonitor(t, bus.Addr)
		st.wait(t, "1 pending (0 shown), notifications: unavailable (no notification server")
		block(2, "two.example")
		st.wait(t, "1 hubs (1 connected), 2 pending (0 shown), notifications: unavailable (no notification server")
		tick.cycles(t, 3)
		catchUp(t, mon)
		if seen := mon.Seen(); len(seen) != 0 {
			t.Errorf("calls to an unowned org.freedesktop.Notifications, want none:%s", notifytest.DescribeSeen(seen))
		}

		t.Run("the server takes the name: each prompt shown once", func(t *testing.T) {
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			reshown(t, mon)
			st.wait(t, "1 hubs (1 connected), 2 pending (2 shown), notifications: ok")
		})
	})

	t.Run("the server leaves a live bus and comes back", func(t *testing.T) {
		mon := notifytest.NewMonitor(t, bus.Addr)
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
		st.wait(t, "2 pending (0 shown), notifications: unavailable (no notification server")
		block(3, "three.example")
		st.wait(t, "3 pending (0 shown), notifications: unavailable (no notification server")
		tick.cycles(t, 3)
		catchUp(t, mon)
		changes, after := sinceOwnerChange(mon.Seen())
		if _, n := notifyCalls(after); changes != 1 || n > changes {
			t.Errorf("%d Notify calls while no server (after %d owner changes), want at most one per change:%s",
				n, changes, notifytest.DescribeSeen(mon.Seen()))
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		reshown(t, mon)
		st.wait(t, "3 pending (3 shown), notifications: ok")
	})

	t.Run("bus back and the server never comes", func(t *testing.T) {
		if err := bus.Restart(); err != nil {
			t.Fatal(err)
		}
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
		mon := notifytest.NewMonitor(t, bus.Addr)
		st.wait(t, "3 pending (0 shown), notifications: unavailable (no notification server")
		block(4, "four.example")
		st.wait(t, "4 pending (0 shown), notifications: unavailable (no notification server")
		tick.cycles(t, 5)
		catchUp(t, mon)
		if seen := mon.Seen(); len(seen) != 0 {
			t.Errorf("calls to an unowned org.freedesktop.Notifications, want none:%s", notifytest.DescribeSeen(seen))
		}
	})

	for _, line := range st.lines() {
		if strings.Contains(line, "(0 connected)") && !strings.Contains(line, "(0 shown)") {
			t.Errorf("status %q: a prompt shown while no hub is connected", line)
		}
	}
}
