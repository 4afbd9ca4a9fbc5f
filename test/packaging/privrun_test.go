// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package packaging

import (
	"os"
	"testing"

	"github.com/terok-ai/clearance/internal/testenv/managerlab"
)

// The private-mount-namespace world of these tests lives in
// internal/testenv/managerlab (test/attack uses it too); these are its local
// names.

// journalDir is where the namespace's journald keeps its (volatile) files.
const journalDir = managerlab.JournalDir

// privateRun is the inside of a private mount namespace.
type privateRun struct{ *managerlab.Run }

// newPrivateRun mounts the namespace's file systems. It must only be
// called in a process started by runInner.
func newPrivateRun(t *testing.T) *privateRun { return &privateRun{managerlab.New(t)} }

func mustMount(t *testing.T, src, dst, fstype, data string) {
	t.Helper()
	managerlab.Mount(t, src, dst, fstype, data)
}

func (p *privateRun) overlay(t *testing.T, dir string) { t.Helper(); p.Overlay(t, dir) }
func (p *privateRun) startJournald(t *testing.T)       { t.Helper(); p.StartJournald(t) }
func (p *privateRun) journal(t *testing.T, args ...string) string {
	t.Helper()
	return p.Journal(t, args...)
}
func (p *privateRun) startUserManager(t *testing.T) *userManager {
	t.Helper()
	return &userManager{p.StartUserManager(t)}
}
func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	managerlab.CopyFile(t, from, to, mode)
}

// userManager is a `systemd --user` run as root in the namespace.
type userManager struct{ *managerlab.Manager }

func (m *userManager) systemctl(t *testing.T, args ...string) { t.Helper(); m.Systemctl(t, args...) }
func (m *userManager) show(t *testing.T, unit, prop string) string {
	t.Helper()
	return m.Show(t, unit, prop)
}
