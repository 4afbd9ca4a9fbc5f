package podman

import (
	"strconv"
	"strings"
	"testing"

	"github.com/terok-ai/clearance/internal/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
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
