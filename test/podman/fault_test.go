// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podman

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/testenv/podmanlab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// hubPID is the main pid of a container's hub service, 0 when it has
// none.
func (e *env) hubPID(id12 string) int {
	pid, _ := strconv.Atoi(e.systemctl("show", "-p", "MainPID", "--value", "clearance-hub@"+id12+".service"))
	return pid
}

// TestHubOutlivesJournald: a hub started while journald is stopped, that
// logs while it is stopped (its stderr stream and the native socket both
// gone), neither dies nor stops auditing: once journald is back, its next
// records are in the journal. Before, the first log line killed it with
// SIGPIPE, which systemd counts as a clean exit.
func TestHubOutlivesJournald(t *testing.T) {
	e := newEnv(t)
	t.Run("stopped while the hub runs", func(t *testing.T) {
		e.t = t
		journaldFault(t, e, "clr-jstop", false)
	})
	t.Run("stopped before the hub starts", func(t *testing.T) {
		e.t = t
		journaldFault(t, e, "clr-nojournal", true)
	})
}

func journaldFault(t *testing.T, e *env, name string, before bool) {
	if before {
		e.StopJournald()
	}
	c := e.createInit(name)
	c.assertHookRan()
	pid := e.hubPID(c.id12)
	c.wire()
	sub := subscribe(t, e.hubSock(c.id12))
	if !before {
		e.StopJournald()
	}
	e.mustPodman("start", c.name)
	c.touch("ready")
	ev := sub.next("connection_blocked") // logged ("blocked …") with journald down
	c.waitLog("attempt1 rc=")
	if got := e.hubPID(c.id12); got != pid || e.systemctl("is-active", "clearance-hub@"+c.id12+".service") != "active" {
		t.Fatalf("hub pid %d → %d (%s) after logging without journald", pid, got, e.systemctl("is-active", "clearance-hub@"+c.id12+".service"))
	}
	if err := e.StartJournald(testutil.Context(t)); err != nil {
		t.Fatal(err)
	}
	ok, err := orgterokclearance1.Verdict().Call(testutil.Context(t), sub.rpc, ev.Container, ev.Request_id, ev.Dest, "allow")
	if err != nil || !ok {
		t.Fatalf("Verdict: %v %v", ok, err)
	}
	assertAudited(t, e, c.id12, ev.Request_id)
	if got := e.hubPID(c.id12); got != pid {
		t.Errorf("hub restarted (pid %d → %d)", pid, got)
	}
	c.touch("go2")
	logs := c.waitLog("attempt2 rc=")
	if !strings.Contains(logs, "attempt2 rc=0") {
		t.Errorf("retry after allow:\n%s", logs)
	}
	c.touch("done")
	e.mustPodman("wait", c.name)
	e.mustPodman("rm", c.name)
	c.assertPoststopRan()
}

// restartScript blocks three destinations: 8080 and 8081 at once, 8082
// when the test touches /burst (while the hub is down).
const restartScript = `until [ -e /ready ]; do sleep 0.05; done
nc -w 2 10.254.77.1 8080 </dev/null; echo "a rc=$?"
nc -w 2 10.254.77.1 8081 </dev/null; echo "b rc=$?"
until [ -e /burst ]; do sleep 0.05; done
nc -w 2 10.254.77.1 8082 </dev/null; echo "c rc=$?"
until [ -e /done ]; do sleep 0.05; done`

// TestHubKilledLosesNothing: a hub killed with SIGKILL while a request is
// pending, a timed verdict runs and a subscriber follows it comes back
// (Restart=, socket activation) with its NFLOG socket, its DNS sockets
// and its state from systemd's file descriptor store: the subscriber that
// reconnects sees the same request id again and no second prompt for it,
// a connection blocked while the hub was down is prompted afterwards, and
// the timed verdict still expires and is audited.
func TestHubKilledLosesNothing(t *testing.T) {
	e := newEnv(t)
	pc, err := e.CreateInitWith("clr-kill", podmanlab.CreateOptions{
		Annotations: []string{"dossier.project=e2e", "dossier.task=clr-kill"}, Script: restartScript})
	if err != nil {
		t.Fatal(err)
	}
	c := &container{Container: pc, e: e, name: pc.Name, id: pc.ID, id12: pc.ID12, pid: pc.Pid}
	c.assertHookRan()
	c.wire()
	sub := subscribe(t, e.hubSock(c.id12))
	e.mustPodman("start", c.name)
	c.touch("ready")
	byPort := map[int64]orgterokclearance1.ClearanceEvent{}
	for len(byPort) < 2 {
		ev := sub.next("connection_blocked")
		byPort[ev.Port] = ev
	}
	timed, pending := byPort[8080], byPort[8081]
	ok, _, err := orgterokclearancehub1.Decide().Call(testutil.Context(t), sub.rpc, timed.Request_id, "allow", "once", 8, nil, nil)
	if err != nil || !ok {
		t.Fatalf("Decide once: %v %v", ok, err)
	}
	// Give the state a moment to be saved (debounced, 100 ms).
	time.Sleep(300 * time.Millisecond)

	pid := e.hubPID(c.id12)
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.touch("burst") // blocked while the hub is down
	err = testutil.Poll(testutil.Context(t), 30*time.Second, "hub restarted", func() (bool, string) {
		p := e.hubPID(c.id12)
		return p != 0 && p != pid && e.systemctl("is-active", "clearance-hub@"+c.id12+".service") == "active", strconv.Itoa(p)
	})
	if err != nil {
		t.Fatal(err)
	}
	sub2 := subscribe(t, e.hubSock(c.id12))
	var reqs []orgterokclearancehub1.PendingRequest
	err = testutil.Poll(testutil.Context(t), 20*time.Second, "both requests pending again", func() (bool, string) {
		reqs, err = orgterokclearancehub1.Pending().Call(testutil.Context(t), sub2.rpc)
		return err == nil && len(reqs) >= 2, fmt.Sprintf("%+v %v", reqs, err)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill -9 → both requests pending again: %v", time.Since(killed).Round(time.Millisecond))
	got := map[int64][]string{}
	for _, r := range reqs {
		got[r.Port] = append(got[r.Port], r.Request_id)
	}
	if ids := got[8081]; len(ids) != 1 || ids[0] != pending.Request_id {
		t.Errorf("pending for 8081 after the restart: %v, want the same request %s once", ids, pending.Request_id)
	}
	if len(got[8082]) != 1 {
		t.Errorf("the connection blocked while the hub was down was not prompted: %+v", reqs)
	}
	if len(got[8080]) != 0 {
		t.Errorf("the decided request came back: %+v", reqs)
	}
	exp := sub2.next("verdict_expired")
	if exp.Dest != hostAddr.String() {
		t.Errorf("verdict_expired = %+v", exp)
	}
	err = testutil.Poll(testutil.Context(t), 15*time.Second, "expiry in the journal", func() (bool, string) {
		out, err := e.Journal("MESSAGE_ID="+audit.MsgExpired, "CLEARANCE_CONTAINER="+c.id12)
		return err == nil && strings.Contains(out, hostAddr.String()), out
	})
	if err != nil {
		t.Error(err)
	}
	c.touch("done")
	e.mustPodman("wait", c.name)
	e.mustPodman("rm", c.name)
	c.assertPoststopRan()
}

// TestHubHealsCrashLoopAndBadConfig: six crashes in a few seconds leave
// the hub's socket active and the hub running (before, the fifth put the
// socket into service-start-limit-hit and removed hub.sock); a corrupt
// configuration file makes the hub run on the defaults and say so in
// Stats and to subscribers, instead of leaving the container without
// prompts.
func TestHubHealsCrashLoopAndBadConfig(t *testing.T) {
	e := newEnv(t)
	c := e.createInit("clr-crash")
	c.assertHookRan()
	unit := "clearance-hub@" + c.id12 + ".service"
	for i := 0; i < 6; i++ {
		pid := e.hubPID(c.id12)
		if pid == 0 {
			t.Fatalf("crash %d: no hub", i)
		}
		syscall.Kill(pid, syscall.SIGKILL)
		err := testutil.Poll(testutil.Context(t), 30*time.Second, "hub back", func() (bool, string) {
			p := e.hubPID(c.id12)
			return p != 0 && p != pid && e.systemctl("is-active", unit) == "active", e.systemctl("is-active", unit)
		})
		if err != nil {
			t.Fatalf("after crash %d: %v (socket %s)", i+1, err, e.systemctl("is-active", "clearance-hub@"+c.id12+".socket"))
		}
	}
	if s := e.systemctl("is-active", "clearance-hub@"+c.id12+".socket"); s != "active" {
		t.Fatalf("socket %s after a crash loop", s)
	}

	// A corrupt configuration: the next start runs on the defaults.
	good, err := os.ReadFile(e.path("clearance.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.path("clearance.yaml"), append(append([]byte{}, good...), []byte("hub:\n  queue_dept: [\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	e.systemctl("restart", unit)
	sub := subscribe(t, e.hubSock(c.id12))
	notice := sub.next("hub_notice")
	if !strings.Contains(notice.Reason, "clearance.yaml") || !strings.Contains(notice.Reason, "default configuration") {
		t.Errorf("hub_notice = %+v", notice)
	}
	st, err := orgterokclearancehub1.Stats().Call(testutil.Context(t), sub.rpc)
	if err != nil || st.Config_error == nil || !strings.Contains(*st.Config_error, "clearance.yaml:") {
		t.Errorf("Stats after a bad configuration: %+v %v", st, err)
	}
	// Fixed and restarted: the error is gone.
	os.WriteFile(e.path("clearance.yaml"), good, 0o644)
	e.systemctl("restart", unit)
	sub2 := subscribe(t, e.hubSock(c.id12))
	if st, err := orgterokclearancehub1.Stats().Call(testutil.Context(t), sub2.rpc); err != nil || st.Config_error != nil {
		t.Errorf("Stats after the fix: %+v %v", st, err)
	}
	e.mustPodman("rm", "-f", c.name)
	c.assertPoststopRan()
}
