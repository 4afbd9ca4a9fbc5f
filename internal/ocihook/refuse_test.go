// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestAttackRefusesFirewallCapabilities: a container holding
// CAP_NET_ADMIN or CAP_NET_RAW (or --privileged) could take its firewall
// down itself; the hook refuses it before anything is written or engaged,
// unless the system configuration allows the capability (issue 9, item 4).
func TestAttackRefusesFirewallCapabilities(t *testing.T) {
	all := append(slices.Clone(defaultCaps), "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE")
	tests := []struct {
		name     string
		caps     []string
		allow    []string
		engage   EngageMode
		noBundle bool
		want     string // "" = allowed; else a substring of the error
	}{
		{name: "podman's defaults", caps: defaultCaps},
		{name: "--cap-add NET_RAW", caps: append(slices.Clone(defaultCaps), "CAP_NET_RAW"), want: "CAP_NET_RAW"},
		{name: "--cap-add NET_ADMIN", caps: append(slices.Clone(defaultCaps), "CAP_NET_ADMIN"), want: "CAP_NET_ADMIN"},
		{name: "--privileged", caps: all, want: "--privileged"},
		{name: "lower-case names", caps: []string{"net_raw"}, want: "CAP_NET_RAW"},
		{name: "NET_RAW allowed by the administrator", caps: append(slices.Clone(defaultCaps), "CAP_NET_RAW"), allow: []string{"net_raw"}},
		{name: "one of two allowed", caps: all, allow: []string{"CAP_NET_RAW"}, want: "CAP_NET_ADMIN"},
		{name: "refused with -engage optional too", caps: all, engage: EngageOptional, want: "CAP_NET_ADMIN"},
		{name: "-engage off asks nothing", caps: all, engage: EngageOff},
		{name: "no bundle: fail closed", noBundle: true, want: "capabilities"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, "0 0 4294967295\n")
			e.bus(t, 0)
			writeBundle(t, e.bundle, tt.caps, "")
			e.hook.AllowCapabilities = tt.allow
			if tt.engage != "" {
				e.hook.Engage = tt.engage
			}
			st := e.state()
			if tt.noBundle {
				st.Bundle = ""
			}
			err := e.hook.CreateRuntime(testutil.Context(t), st)
			_, rerr := os.Stat(record.Locate(e.hook.RuntimeRoot, 0, "e8aec775a124"))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CreateRuntime: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CreateRuntime = %v, want an error naming %q", err, tt.want)
			}
			if !tt.noBundle && !errors.Is(err, ErrFirewallCapability) {
				t.Errorf("error does not wrap ErrFirewallCapability: %v", err)
			}
			if rerr == nil {
				t.Error("a refused container left a runtime record")
			}
			if e.eng.engages != 0 {
				t.Error("a refused container was engaged")
			}
		})
	}
}

// TestAttackHostNetns: a container in the runtime's own network
// namespace (--network host) is never engaged, which would put "policy
// drop" on the host; required mode refuses it, optional lets it run
// without (issue 9, item 5).
func TestAttackHostNetns(t *testing.T) {
	for _, mode := range []EngageMode{EngageRequired, EngageOptional} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, "0 0 4294967295\n")
			e.bus(t, 0)
			e.hook.Engage = mode
			e.hook.SelfNetns = &e.nsID // the "container" is in the hook's own namespace
			err := e.hook.CreateRuntime(testutil.Context(t), e.state())
			if mode == EngageRequired && (err == nil || !strings.Contains(err.Error(), "network namespace of its runtime")) {
				t.Errorf("CreateRuntime = %v, want the host namespace refused", err)
			}
			if mode == EngageOptional && err != nil {
				t.Errorf("CreateRuntime = %v, want the container to run unfirewalled", err)
			}
			if e.eng.engages != 0 {
				t.Error("Engage was called for the host's network namespace")
			}
		})
	}
}

// TestAttackPoststopDisengagesJoinedNamespace: a container that joined an
// existing network namespace (a pod's) leaves no ruleset behind in it
// after the last clearance container there ends; while another one runs,
// the ruleset stays, and that container takes the duty over (issue 9,
// item 5).
func TestAttackPoststopDisengagesJoinedNamespace(t *testing.T) {
	e := newEnv(t, "0 0 4294967295\n")
	e.bus(t, 0)
	ctx := testutil.Context(t)
	// The joined namespace: the test's own, by a path that outlives the
	// container.
	writeBundle(t, e.bundle, defaultCaps, "/proc/self/ns/net")

	// A second container in the same namespace, started later (its
	// Engage finds the table).
	const id2 = "f00dfeed0001aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	pid2 := e.pid + 1
	proc2 := filepath.Join(e.hook.ProcRoot, strconv.Itoa(pid2), "ns")
	os.MkdirAll(proc2, 0o755)
	os.Symlink("/proc/self/ns/net", filepath.Join(proc2, "net"))

	if err := e.hook.CreateRuntime(ctx, e.state()); err != nil {
		t.Fatalf("CreateRuntime: %v", err)
	}
	rec, err := record.Read(record.Locate(e.hook.RuntimeRoot, 0, "e8aec775a124"))
	if err != nil || !rec.Engaged || rec.NetnsPath != "/proc/self/ns/net" {
		t.Fatalf("record after engaging a joined namespace = %+v, %v; want engaged with its path", rec, err)
	}
	e.eng.existed = true
	st2 := e.state()
	st2.ID, st2.Pid = id2, pid2
	if err := e.hook.CreateRuntime(ctx, st2); err != nil {
		t.Fatalf("CreateRuntime of the second: %v", err)
	}

	// The first ends while the second runs: the ruleset stays.
	if err := e.hook.Poststop(ctx, State{ID: testID}); err != nil {
		t.Fatalf("Poststop: %v", err)
	}
	if len(e.eng.disengaged) != 0 {
		t.Fatal("disengaged while another container still uses the namespace")
	}
	// The second ends: now it goes.
	os.Remove(filepath.Join(proc2, "net")) // its process is gone
	if err := e.hook.Poststop(ctx, State{ID: id2}); err != nil {
		t.Fatalf("Poststop of the second: %v", err)
	}
	if diff := cmp.Diff([]netns.ID{e.nsID}, e.eng.disengaged); diff != "" {
		t.Errorf("disengaged namespaces (-want +got):\n%s", diff)
	}
}

// TestPoststopLeavesOwnNamespaceAlone: a namespace made for the container
// dies with it; poststop asks nothing.
func TestPoststopLeavesOwnNamespaceAlone(t *testing.T) {
	e := newEnv(t, "0 0 4294967295\n")
	e.bus(t, 0)
	ctx := testutil.Context(t)
	if err := e.hook.CreateRuntime(ctx, e.state()); err != nil {
		t.Fatalf("CreateRuntime: %v", err)
	}
	if err := e.hook.Poststop(ctx, State{ID: testID}); err != nil {
		t.Fatalf("Poststop: %v", err)
	}
	if len(e.eng.disengaged) != 0 {
		t.Errorf("Disengage called for a namespace of the container's own")
	}
}

// TestAttackRefusalReachesJournal: why a container was refused is written to
// the journal as well as to stderr (the runtime may drop the hook's
// stderr), with MESSAGE_ID audit.MsgRefused; info lines stay off the journal.
func TestAttackRefusalReachesJournal(t *testing.T) {
	type entry struct {
		msg    string
		fields map[string]string
	}
	var got []entry
	send := func(msg string, _ journal.Priority, fields map[string]string) error {
		got = append(got, entry{msg, fields})
		return nil
	}
	var stderr strings.Builder
	log := slog.New(hookHandler(&stderr, slog.LevelInfo, send))
	log.Info("ruleset engaged")
	log.Error("container refused: it holds CAP_NET_RAW", "MESSAGE_ID", audit.MsgRefused, "container", "e8aec775a124")
	if len(got) != 1 || got[0].msg != "container refused: it holds CAP_NET_RAW" || got[0].fields["MESSAGE_ID"] != audit.MsgRefused ||
		got[0].fields["CLEARANCE_CONTAINER"] != "e8aec775a124" || got[0].fields["SYSLOG_IDENTIFIER"] != "clearance-oci-hook" {
		t.Errorf("journal entries = %+v, want only the refusal with its MESSAGE_ID", got)
	}
	if !strings.Contains(stderr.String(), "ruleset engaged") || !strings.Contains(stderr.String(), "CAP_NET_RAW") {
		t.Errorf("stderr lacks a line:\n%s", stderr.String())
	}
}

// TestRefusesWithoutUserManager: a rootless container whose owner has no
// running systemd --user (su, sudo -u, cron) would be blocked with nobody
// to ask; the hook refuses it with a message saying what to do, and
// journals why, unless the system configuration lets it run (issue 10,
// item 10).
func TestRefusesWithoutUserManager(t *testing.T) {
	const rootless = "0 1001 1\n1 100000 65536\n"
	tests := []struct {
		name    string
		uidMap  string
		manager bool
		relax   bool
		engage  EngageMode
		refused bool
	}{
		{name: "rootless, no user manager", uidMap: rootless, refused: true},
		{name: "rootless, no user manager, -engage optional", uidMap: rootless, engage: EngageOptional, refused: true},
		{name: "rootless, user manager running", uidMap: rootless, manager: true},
		{name: "rootless, no user manager, allowed to run", uidMap: rootless, relax: true},
		{name: "rootless, no user manager, -engage off", uidMap: rootless, engage: EngageOff},
		{name: "rootful without root's user manager: the system manager", uidMap: "0 0 4294967295\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.uidMap)
			if tt.manager {
				e.bus(t, 1001)
			}
			e.hook.RunWithoutUserManager = tt.relax
			if tt.engage != "" {
				e.hook.Engage = tt.engage
			}
			log, rec := testutil.NewRecorder()
			e.hook.Log = log
			err := e.hook.CreateRuntime(testutil.Context(t), e.state())
			if !tt.refused {
				if err != nil {
					t.Fatalf("CreateRuntime: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrNoUserManager) {
				t.Fatalf("CreateRuntime = %v, want ErrNoUserManager", err)
			}
			for _, want := range []string{"no systemd --user for uid 1001", "loginctl enable-linger 1001", "hook.without_user_manager"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if got := rec.With("MESSAGE_ID", audit.MsgRefused); len(got) != 1 || got[0].Level != slog.LevelError {
				t.Errorf("refusal records = %+v, want one error with MESSAGE_ID %s", got, audit.MsgRefused)
			}
			if e.eng.engages != 0 {
				t.Error("a refused container was engaged")
			}
			if _, err := os.Stat(filepath.Join(e.hook.RuntimeRoot, "user", "1001", "clearance", "e8aec775a124")); err == nil {
				t.Error("a refused container left a runtime record")
			}
		})
	}
}
