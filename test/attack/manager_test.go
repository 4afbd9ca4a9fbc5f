package attack

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/managerlab"
	"github.com/terok-ai/clearance/internal/testutil"
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

// maxVictimWait bounds the victim's Engage during an attack (it takes
// about 0.1 s without one, mostly the test's own process start-up; with
// one process per connection it took 8-10 s).
const maxVictimWait = 2 * time.Second

func TestInnerVerdictSocketUnderManager(t *testing.T) {
	if !managerlab.Inner(t.Name()) {
		return
	}
	ns := managerlab.New(t)
	bin := "/run/attack-bin"
	os.MkdirAll(bin, 0o755)
	managerlab.CopyFile(t, filepath.Join(os.Getenv("CLEARANCE_ATTACK_BIN"), "clearance-verdict"), filepath.Join(bin, "clearance-verdict"), 0o755)
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
			t.Logf("socket: %s (%s)", m.Show(t, "clearance-verdict.socket", "ActiveState"), m.Show(t, "clearance-verdict.socket", "Result"))
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

	// The attacks run for a few seconds while the victim engages.
	attack := func(name string, d time.Duration, loops int, uidOf func(i int) int, hold bool) {
		t.Helper()
		cpu0 := managerCPU()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var wg sync.WaitGroup
		var mu sync.Mutex
		total := 0
		for j := 0; j < loops; j++ {
			wg.Go(func() {
				n := flood(ctx, func(i int) int { return uidOf(i*loops + j) }, sock, hold)
				mu.Lock()
				total += n
				mu.Unlock()
			})
		}
		var worst time.Duration
		for ctx.Err() == nil {
			worst = max(worst, engage(name))
			if worst > maxVictimWait {
				t.Errorf("%s: the victim's Engage took %v, want at most %v", name, worst, maxVictimWait)
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
		wg.Wait()
		if s := m.Show(t, "clearance-verdict.socket", "ActiveState"); s != "active" {
			t.Fatalf("after %s the socket is %q (result %s), want active", name, s, m.Show(t, "clearance-verdict.socket", "Result"))
		}
		t.Logf("%s: %d connections in %v; the victim's slowest Engage %v; the manager spent %v of CPU", name, total, d,
			worst, managerCPU()-cpu0)
	}
	attack("a connect loop from one uid", 3*time.Second, 2, func(int) int { return attackerUID }, false)
	attack("a connect loop from subordinate uids", 3*time.Second, 2, func(i int) int { return subUIDStart + i%4096 }, false)
	// Held connections outlast the 5 s idle timeout once.
	attack("connections held from subordinate uids", 7*time.Second, 1, func(i int) int { return subUIDStart + i%4096 }, true)

	t.Logf("victim's Engage after the attacks: %v", engage("after"))
	if n := m.Show(t, "clearance-verdict.service", "NRestarts"); n != "0" {
		t.Errorf("the service restarted %s times", n)
	}
	refusals := ns.Journal(t, "-o", "cat", "--grep", "too many connections")
	t.Logf("journal lines about refused connections: %d", strings.Count(refusals, "\n"))
}
