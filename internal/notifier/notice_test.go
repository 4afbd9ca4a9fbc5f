// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testenv/hubtest"
	"github.com/terok-ai/clearance/internal/testenv/notifytest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// countNotify counts the Notify calls with summary.
func countNotify(calls []notifytest.Call, summary string) int {
	n := 0
	for _, c := range calls {
		if c.Method == "Notify" && c.Summary == summary {
			n++
		}
	}
	return n
}

// closedID returns a WaitFor predicate for a CloseNotification of id.
func closedID(id uint32) func([]notifytest.Call) bool {
	return func(calls []notifytest.Call) bool {
		return slices.ContainsFunc(calls, func(c notifytest.Call) bool { return c.Method == "CloseNotification" && c.ID == id })
	}
}

// TestDaemonHubNoticeOnce: a hub running on its defaults because the
// configuration is invalid sends hub_notice to every subscriber; the
// notifier shows it once as a desktop notice, made inert, and not again
// when the hub restarts and sends it again.
func TestDaemonHubNoticeOnce(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	base := filepath.Join(testutil.ShortDir(t), "clearance")
	path := filepath.Join(base, "eeee00000005", "hub.sock")
	const reason = "clearance-hub runs on its default configuration: /home/a/.config/clearance/clearance.yaml:7: \x1b[31munknown key \"hubb\""
	serve := func() *hubtest.Hub {
		h := hub.New(hub.Config{Container: "ctr-e", Notice: reason, Log: logFor(t)})
		return hubtest.Serve(t, path, hubtest.Options{Hub: h, Log: logFor(t)})
	}
	th := serve()
	startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dialBus(t, bus.Addr)})

	n := waitNotify(t, srv, "clearance hub: ctr-e")
	if want := "clearance-hub runs on its default configuration: /home/a/.config/clearance/clearance.yaml:7:  [31munknown key \"hubb\""; n.Body != want {
		t.Errorf("notice body %q, want %q", n.Body, want)
	}
	if len(n.Actions) != 0 {
		t.Errorf("notice has actions %q", n.Actions)
	}

	// The hub restarts (same socket): it sends the notice again; a prompt
	// from the new process shows that the notifier has subscribed again.
	th.Stop()
	th = serve()
	th.WaitSubscribers(t, 1)
	th.Hub.Blocked(blockedEvent("ctr-e", "192.0.2.10", "after.example", nil))
	waitNotify(t, srv, "Blocked: after.example:443")
	if got := countNotify(srv.Calls(), "clearance hub: ctr-e"); got != 1 {
		t.Errorf("the notice was shown %d times, want once:%s", got, notifytest.Describe(srv.Calls()))
	}
}

// writeRecord writes a runtime record for id into dir, as the OCI hook
// does beside the hub's socket.
func writeRecord(t *testing.T, dir, id, name string) {
	t.Helper()
	rec := record.Record{ID: id, ID12: id, Name: name, PID: os.Getpid(), NetnsInode: 1, NetnsDev: 1,
		Dossier: map[string]string{}, CreatedUsec: time.Now().UnixMicro()}
	if err := record.Write(dir, rec); err != nil {
		t.Fatal(err)
	}
}

// TestDaemonHubDownNotice: a container of the user whose runtime record
// is there while its hub is not (socket missing, or a stale socket that
// refuses) gets one notice naming the unit to look at; it is not repeated
// while the hub stays down and is closed when the hub answers again.
func TestDaemonHubDownNotice(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	base := filepath.Join(testutil.ShortDir(t), "clearance")
	const id = "ffff00000006"
	dir := filepath.Join(base, id)
	writeRecord(t, dir, id, "web")
	flush := make(chan time.Time)
	startDaemon(t, Options{Globs: []string{filepath.Join(base, "*", "hub.sock")}, DialBus: dialBus(t, bus.Addr),
		DownAfter: 300 * time.Millisecond, flushTick: flush})

	const summary = "No prompts for web (" + id + "): its clearance hub is down"
	n := waitNotify(t, srv, summary)
	if !strings.Contains(n.Body, "systemctl --user status clearance-hub@"+id+".service") {
		t.Errorf("notice body %q names no unit", n.Body)
	}
	// Down it stays: more checks (flush cycles, a rescan after a change
	// in the directory) show nothing new.
	for range 3 {
		flush <- time.Now()
	}
	os.WriteFile(filepath.Join(dir, "unrelated"), nil, 0o600)
	time.Sleep(500 * time.Millisecond)
	if got := countNotify(srv.Calls(), summary); got != 1 {
		t.Fatalf("the notice was shown %d times while the hub stayed down, want once:%s", got, notifytest.Describe(srv.Calls()))
	}

	// The hub comes back: the notice goes.
	th := hubtest.Serve(t, filepath.Join(dir, "hub.sock"), hubtest.Options{Container: id, Log: logFor(t), KeepSocket: true})
	if _, err := srv.WaitFor(closedID(n.ID), 15*time.Second); err != nil {
		t.Fatalf("the notice was not closed when the hub came back: %v", err)
	}

	// It crashes, leaving a socket that refuses: down again, one new
	// notice.
	th.Stop()
	if _, err := srv.WaitFor(func(calls []notifytest.Call) bool { return countNotify(calls, summary) == 2 }, 15*time.Second); err != nil {
		t.Fatalf("no notice for a hub whose socket refuses: %v", err)
	}

	// The container ends (its record goes): the notice goes with it.
	n2, _ := findNotify(srv.Calls(), summary)
	os.Remove(filepath.Join(dir, record.FileName))
	if _, err := srv.WaitFor(closedID(n2.ID), 15*time.Second); err != nil {
		t.Fatalf("the notice was not closed when the record went: %v", err)
	}
}
