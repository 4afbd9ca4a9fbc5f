// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package attack

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/managerlab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestAttackVerdictSocketUnderManager (item 2, under a real manager):
// the packaged clearance-verdict.socket and clearance-verdict@.service,
// unchanged but for the binary's path, attacked by a user:
//
//   - a tight connect loop once put the socket past systemd's trigger
//     limit into a failed state, which (with the fail-closed hook) stops
//     every container start until an administrator acts;
//   - connections held open from many of the user's subordinate uids
//     filled MaxConnections= (systemd counts per uid), so nobody else's
//     Engage got through.
//
// Both run for a few seconds while another user's Engage must keep
// working, and the socket must be active afterwards.
func TestAttackVerdictSocketUnderManager(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "unshare", "/usr/lib/systemd/systemd", "systemctl", "/lib/systemd/systemd-journald")
	bin := build(t, "clearance-verdict")
	managerlab.RunInner(t, "TestInnerVerdictSocketUnderManager", "CLEARANCE_ATTACK_BIN="+bin)
}

// maxVictimWait bounds the victim's Engage during an attack: it must
// finish well within the OCI hook's 25 s, or the victim's container would
// not start. Without an attack it takes about 0.1 s; under the flooders,
// which spin on every CPU, 0.1-0.7 s, and a few seconds when other tests
// load the machine too (the victim's own process then gets its share of
// what is left; once it sent its call later than the 5 s idle timeout and
// the client dialled again). With one process per connection
// (Accept=yes) and a far weaker flood, it took 8-10 s or was dropped, and
// the release's units failed the socket.
const maxVictimWait = 10 * time.Second

func TestInnerVerdictSocketUnderManager(t *testing.T) {
	if !managerlab.Inner(t.Name()) {
		return
	}
	ns := managerlab.New(t)
	bin := "/run/attack-bin"
	os.MkdirAll(bin, 0o755)
	managerlab.CopyFile(t, filepath.Join(os.Getenv("CLEARANCE_ATTACK_BIN"), "clearance-verdict"), filepath.Join(bin, "clearance-verdict"), 0o755)
	// This test binary, for the flooders (other users' processes); /tmp,
	// where go test keeps it, is about to be covered.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	flooder := filepath.Join(bin, "attack.test")
	managerlab.CopyFile(t, self, flooder, 0o755)
	var units []string
	// $CLEARANCE_ATTACK_UNITS may name another directory of unit files,
	// to measure the attacks against other units (an older release's).
	unitDir := filepath.Join(repoRoot, "units", "system")
	if d := os.Getenv("CLEARANCE_ATTACK_UNITS"); d != "" {
		unitDir = d
	}
	files, _ := filepath.Glob(filepath.Join(unitDir, "clearance-verdict*"))
	for _, f := range files {
		u := filepath.Base(f)
		dst := filepath.Join(bin, u)
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = []byte(strings.ReplaceAll(string(b), "/usr/bin/clearance-verdict", filepath.Join(bin, "clearance-verdict")))
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, dst)
	}
	managerlab.Mount(t, "tmpfs", "/tmp", "tmpfs", "mode=1777")
	managerlab.Mount(t, "tmpfs", "/var/tmp", "tmpfs", "mode=1777")
	ns.Overlay(t, "/etc")
	os.MkdirAll("/etc/clearance/policy.d", 0o755)
	if err := os.WriteFile("/etc/subuid", []byte(subUIDLine), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.StartJournald(t)
	os.MkdirAll("/run/systemd/user", 0o755)
	for _, u := range units {
		managerlab.CopyFile(t, u, filepath.Join("/run/systemd/user", filepath.Base(u)), 0o644)
	}
	m := ns.StartUserManager(t)
	m.Systemctl(t, "start", "clearance-verdict.socket")
	const sock = "/run/clearance/verdict.sock"
	victim := newUserContainer(t, victimUID)

	var servicePID string
	engage := func(what string) time.Duration {
		t.Helper()
		t0 := time.Now()
		vc, err := clientAs(t, victimUID, sock)
		if err != nil {
			t.Fatalf("%s: the victim cannot connect: %v", what, err)
		}
		ctx, cancel := context.WithTimeout(testutil.Context(t), 15*time.Second)
		defer cancel()
		if _, _, err := vc.Engage(ctx, "victim000001", victim.ns); err != nil {
			t.Logf("socket: %s (%s); service pid %s (was %s), restarts %s", m.Show(t, "clearance-verdict.socket", "ActiveState"),
				m.Show(t, "clearance-verdict.socket", "Result"), m.Show(t, "clearance-verdict.service", "MainPID"), servicePID,
				m.Show(t, "clearance-verdict.service", "NRestarts"))
			t.Logf("journal:\n%s", ns.Journal(t, "-o", "short-monotonic", "-n", "40"))
			t.Fatalf("%s: the victim's Engage: %v", what, err)
		}
		vc.Close()
		return time.Since(t0)
	}
	managerCPU := func() time.Duration {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(m.Pid) + "/stat")
		if err != nil {
			return 0
		}
		f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
		ut, _ := strconv.Atoi(f[11])
		st, _ := strconv.Atoi(f[12])
		return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
	}
	t.Logf("victim's Engage before any attack: %v", engage("before"))
	servicePID = m.Show(t, "clearance-verdict.service", "MainPID")

	// The attacks run for a few seconds, each flooder a process of its
	// own as one of the attacker's uids, while the victim engages.
	attack := func(name string, d time.Duration, uids []int, hold bool) {
		t.Helper()
		cpu0 := managerCPU()
		var procs []*exec.Cmd
		var outs []*strings.Builder
		for _, uid := range uids {
			cmd := exec.Command(flooder)
			cmd.Env = []string{envFlood + "=" + sock, "CLEARANCE_ATTACK_FOR=" + d.String()}
			if hold {
				cmd.Env = append(cmd.Env, "CLEARANCE_ATTACK_HOLD=1")
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
			out := &strings.Builder{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatalf("start a flooder as uid %d: %v", uid, err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			procs, outs = append(procs, cmd), append(outs, out)
		}
		end := time.Now().Add(d)
		var worst time.Duration
		for time.Now().Before(end) {
			took := engage(name)
			worst = max(worst, took)
			if took > maxVictimWait {
				t.Errorf("%s: the victim's Engage took %v, want at most %v", name, took, maxVictimWait)
			}
			time.Sleep(200 * time.Millisecond) // the victim engages every so often; the flood goes on meanwhile
		}
		total := 0
		for i, p := range procs {
			p.Wait()
			n, err := strconv.Atoi(strings.TrimSpace(outs[i].String()))
			if err != nil {
				t.Errorf("flooder: %q", outs[i].String())
			}
			total += n
		}
		if s := m.Show(t, "clearance-verdict.socket", "ActiveState"); s != "active" {
			t.Fatalf("after %s the socket is %q (result %s), want active", name, s, m.Show(t, "clearance-verdict.socket", "Result"))
		}
		t.Logf("%s: %d connections in %v from %d processes; the victim's slowest Engage %v; the manager spent %v of CPU",
			name, total, d, len(uids), worst, managerCPU()-cpu0)
	}
	subuids := func(n int) []int {
		var out []int
		for i := 0; i < n; i++ {
			out = append(out, subUIDStart+i*(subUIDCount/n))
		}
		return out
	}
	attack("a connect loop from one uid", 3*time.Second, []int{attackerUID, attackerUID}, false)
	attack("a connect loop from subordinate uids", 3*time.Second, subuids(8), false)
	// Held connections outlast the 5 s idle timeout once.
	attack("connections held from subordinate uids", 7*time.Second, subuids(8), true)

	t.Logf("victim's Engage after the attacks: %v", engage("after"))
	if n := m.Show(t, "clearance-verdict.service", "NRestarts"); n != "0" {
		t.Errorf("the service restarted %s times", n)
	}
	refusals := ns.Journal(t, "-o", "cat", "--grep", "too many connections")
	t.Logf("journal lines about refused connections: %d", strings.Count(refusals, "\n"))
}
