// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/record"
)

// Ending is what the hub does when it stops because its container ended
// (the OCI hook's poststop stops it): it asks the verdict service to take
// the ruleset down while the hub's descriptor still holds the namespace,
// so the service's "disengaged" record carries what every allow and deny
// element matched over the container's life (clearancectl policy stale
// reads it). A hub that stops while its container runs (a restart, an
// upgrade) leaves the ruleset alone.
type Ending struct {
	Firewall *Firewall
	Record   record.Record
	Log      *slog.Logger
}

// endTimeout bounds the Disengage call at shutdown.
const endTimeout = 5 * time.Second

// Run disengages when the container is gone and nothing else uses its
// network namespace. It reports whether it did.
func (e *Ending) Run(ctx context.Context) bool {
	if e.Firewall == nil || e.Firewall.NS == nil {
		return false
	}
	if !e.containerGone() {
		return false
	}
	id, err := netns.Identify(e.Firewall.NS)
	if err != nil {
		e.Log.Warn("container ended; cannot tell its network namespace", "err", err)
		return false
	}
	if pid := e.otherUser(id); pid > 0 {
		// Another container joined this namespace: its ruleset is that
		// container's now (the OCI hook hands it over the same way).
		e.Log.Info("container ended; its network namespace is still in use, the ruleset stays", "pid", pid)
		return false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
	defer cancel()
	if err := e.Firewall.Disengage(ctx); err != nil {
		e.Log.Warn("container ended; ruleset not taken down", "err", err)
		return false
	}
	e.Log.Info("container ended; ruleset taken down")
	return true
}

// containerGone reports whether the recorded process has exited or is in
// another network namespace now.
func (e *Ending) containerGone() bool {
	f, err := e.Record.OpenNetns()
	if err == nil {
		f.Close()
	}
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, record.ErrInvalid)
}

// otherUser returns a process in network namespace id, or 0 when none
// that the hub can see is left.
func (e *Ending) otherUser(id netns.ID) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == self {
			continue
		}
		f, err := os.Open(filepath.Join("/proc", ent.Name(), "ns", "net"))
		if err != nil {
			continue
		}
		got, err := netns.Identify(f)
		f.Close()
		if err == nil && got == id {
			return pid
		}
	}
	return 0
}
