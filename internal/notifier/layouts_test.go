// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"path/filepath"
	"testing"

	"github.com/terok-ai/clearance/internal/config"
	"github.com/terok-ai/clearance/internal/testenv/notifytest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestDefaultGlobsFindEveryLayout runs the daemon on the configuration's
// default globs (config.DefaultHubGlobs) and starts, after it, a hub in
// each layout they name: clearance's, the seed terok-clearance's own
// ($XDG_RUNTIME_DIR/terok/clearance/<id>.sock) and terok-sandbox's
// ($XDG_RUNTIME_DIR/terok/clearance/<id>/hub.sock). Each one's blocked
// request becomes a prompt, with no configuration.
func TestDefaultGlobsFindEveryLayout(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	rt := testutil.ShortDir(t)
	t.Setenv("XDG_RUNTIME_DIR", rt)
	opts := FromConfig(config.Default().Notifier)
	opts.DialBus = dialBus(t, bus.Addr)
	startDaemon(t, opts)

	for _, l := range []struct{ name, path, domain string }{
		{"clearance", filepath.Join(rt, "clearance", "aaaa00000001", "hub.sock"), "clearance.example"},
		{"terok-clearance", filepath.Join(rt, "terok", "clearance", "bbbb00000002.sock"), "seed.example"},
		{"terok-sandbox", filepath.Join(rt, "terok", "clearance", "cccc00000003", "hub.sock"), "sandbox.example"},
	} {
		t.Run(l.name, func(t *testing.T) {
			h := startHubAt(t, l.path, "ctr-"+l.name)
			h.WaitSubscribers(t, 1)
			h.Hub.Blocked(blockedEvent("ctr-"+l.name, "192.0.2.1", l.domain, nil))
			waitNotify(t, srv, "Blocked: "+l.domain+":443")
		})
	}
}
