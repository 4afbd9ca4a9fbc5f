// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podman

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testenv/podmanlab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// container is one container created with the project's hook enabled
// (podmanlab.Container), bound to its env's test.
type container struct {
	*podmanlab.Container
	e    *env
	name string
	id   string
	id12 string
	pid  int
}

// createInit runs podman create and podman init: the createRuntime hook
// runs, and the container's process has not started.
func (e *env) createInit(name string) *container {
	t := e.t
	pc, err := e.CreateInit(name, "dossier.project=e2e", "dossier.task="+name)
	if err != nil {
		t.Fatal(err)
	}
	return &container{Container: pc, e: e, name: pc.Name, id: pc.ID, id12: pc.ID12, pid: pc.Pid}
}

// wire connects the container's netns to a new test host serving
// "hello" on echoPort (no default route, no NAT: the test host is all the
// container can reach).
func (c *container) wire() {
	if err := c.Wire(); err != nil {
		c.e.t.Fatal(err)
	}
}

// touch creates a file in the container's root.
func (c *container) touch(name string) {
	if err := c.Touch(name); err != nil {
		c.e.t.Fatal(err)
	}
}

// assertHookRan checks what createRuntime must have left: the record, the
// engaged ruleset and a running hub.
func (c *container) assertHookRan() {
	t := c.e.t
	// record.Read refuses the /proc/<pid>/root magic link: read it in the
	// namespace instead.
	b, err := c.e.nsCmd(nil, "cat", record.Locate("/run", c.e.uid(), c.id12)).Output()
	if err != nil {
		t.Fatalf("runtime record: %v", err)
	}
	rec, err := record.Decode(b)
	if err != nil {
		t.Fatalf("runtime record: %v", err)
	}
	if rec.ID != c.id || rec.PID != c.pid || int(rec.OwnerUID) != c.e.uid() || rec.Policy != "e2e" || rec.Dossier["task"] != c.name {
		t.Errorf("record = %+v", rec)
	}
	if s := c.e.systemctl("is-active", "clearance-hub@"+c.id12+".service"); s != "active" {
		t.Fatalf("hub service is %q after podman init, want active", s)
	}
	if s := c.e.systemctl("is-active", "clearance-hub-ingest@"+c.id12+".socket"); s != "active" {
		t.Errorf("ingest socket is %q, want active", s)
	}
	out, err := exec.Command("nsenter", "-n", "-t", strconv.Itoa(c.pid), "nft", "list", "table", "inet", "clearance").CombinedOutput()
	if err != nil {
		t.Fatalf("ruleset not engaged in the container: %v: %s", err, out)
	}
}

// assertPoststopRan waits until poststop stopped the hub's units and
// removed the record.
func (c *container) assertPoststopRan() {
	t := c.e.t
	err := testutil.Poll(testutil.Context(t), 30*time.Second, "poststop cleanup", func() (bool, string) {
		var states []string
		for _, u := range []string{"clearance-hub@" + c.id12 + ".service", "clearance-hub@" + c.id12 + ".socket",
			"clearance-hub-ingest@" + c.id12 + ".socket"} {
			states = append(states, c.e.systemctl("is-active", u))
		}
		_, rerr := os.Stat(c.e.recordPath(c.id12))
		_, serr := os.Stat(filepath.Dir(c.e.hubSock(c.id12)))
		ok := os.IsNotExist(rerr) && os.IsNotExist(serr) && strings.Join(states, ",") == "inactive,inactive,inactive"
		return ok, fmt.Sprintf("units %v, record %v, hub dir %v", states, rerr, serr)
	})
	if err != nil {
		t.Fatal(err)
	}
	if failed := c.e.systemctl("list-units", "--failed", "--plain", "--no-legend", "clearance-*"); failed != "" {
		t.Errorf("failed units left: %s", failed)
	}
}

// subscription is a Subscribe stream plus an RPC connection to a hub.
type subscription struct {
	t    *testing.T
	recv func(context.Context) (orgterokclearance1.ClearanceEvent, uint64, error)
	rpc  *varlink.Connection
}

func subscribe(t *testing.T, sock string) *subscription {
	t.Helper()
	ctx := testutil.Context(t)
	c, err := varlinkapi.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	recv, err := orgterokclearance1.Subscribe().Send(ctx, c, varlink.More)
	if err != nil {
		t.Fatal(err)
	}
	rpc, err := varlinkapi.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rpc.Close() })
	err = testutil.Poll(ctx, 10*time.Second, "subscriber counted", func() (bool, string) {
		st, err := orgterokclearancehub1.Stats().Call(ctx, rpc)
		return err == nil && st.Subscribers >= 1, fmt.Sprint(err)
	})
	if err != nil {
		t.Fatal(err)
	}
	return &subscription{t: t, recv: recv, rpc: rpc}
}

func (s *subscription) next(typ string) orgterokclearance1.ClearanceEvent {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		ev, _, err := s.recv(ctx)
		if err != nil {
			s.t.Fatalf("waiting for %s: %v", typ, err)
		}
		if ev.Type == typ {
			return ev
		}
		s.t.Logf("event %s (skipped): %+v", ev.Type, ev)
	}
}

func (c *container) waitLog(marker string) string {
	logs, err := c.WaitLog(testutil.Context(c.e.t), marker, 30*time.Second)
	if err != nil {
		c.e.t.Fatal(err)
	}
	return logs
}

// TestRootful is the whole flow with a rootful container: podman init →
// the hook writes the record, engages the ruleset, starts the hub's socket
// in root's user manager and activates the hub → the container's
// connection is refused → connection_blocked reaches a subscriber → a
// verdict → the retry's result → podman rm → poststop stopped the units
// and removed the record.
func TestRootful(t *testing.T) {
	e := newEnv(t)

	t.Run("allow", func(t *testing.T) {
		e.t = t
		allowFlow(t, e, "clr-allow", nil)
	})
	t.Run("deny", func(t *testing.T) {
		e.t = t
		denyFlow(t, e, "clr-deny")
	})
}

// allowFlow runs a container whose first connection is refused and
// allowed, and whose retry connects; afterHook (may be nil) checks more
// once the hook ran.
func allowFlow(t *testing.T, e *env, name string, afterHook func(*container)) *container {
	start := time.Now()
	c := e.createInit(name)
	t.Logf("podman create + init (hook): %v", time.Since(start).Round(time.Millisecond))
	c.assertHookRan()
	if afterHook != nil {
		afterHook(c)
	}
	c.wire()
	sub := subscribe(t, e.hubSock(c.id12))
	e.mustPodman("start", c.name)
	c.touch("ready")

	ev := sub.next("connection_blocked")
	t.Logf("connection_blocked: %+v", ev)
	if ev.Dest != hostAddr.String() || ev.Port != echoPort || ev.Container != c.id12 || ev.Dossier["project"] != "e2e" {
		t.Fatalf("connection_blocked = %+v", ev)
	}
	logs := c.waitLog("attempt1 rc=")
	if !strings.Contains(logs, "attempt1 rc=1") {
		t.Fatalf("first attempt not refused:\n%s", logs)
	}
	ok, err := orgterokclearance1.Verdict().Call(testutil.Context(t), sub.rpc, ev.Container, ev.Request_id, ev.Dest, "allow")
	if err != nil || !ok {
		t.Fatalf("Verdict allow: %v %v", ok, err)
	}
	if applied := sub.next("verdict_applied"); !applied.Ok || applied.Request_id != ev.Request_id {
		t.Fatalf("verdict_applied = %+v", applied)
	}
	assertAudited(t, e, c.id12, ev.Request_id)
	c.touch("go2")
	logs = c.waitLog("attempt2 rc=")
	if !strings.Contains(logs, "hello") || !strings.Contains(logs, "attempt2 rc=0") {
		t.Fatalf("retry after allow did not connect:\n%s", logs)
	}
	c.touch("done")
	e.mustPodman("wait", c.name)
	start = time.Now()
	e.mustPodman("rm", c.name)
	c.assertPoststopRan()
	t.Logf("podman rm until the hub's units are gone: %v", time.Since(start).Round(time.Millisecond))
	assertLifeRecorded(t, e, c.id12)
	return c
}

// assertLifeRecorded checks the container's ruleset records: one engaged
// record, and a disengaged record (written when the hub stopped with its
// container) carrying what the allow element matched.
func assertLifeRecorded(t *testing.T, e *env, id12 string) {
	t.Helper()
	var dis map[string]any
	err := testutil.Poll(testutil.Context(t), 15*time.Second, "disengaged record", func() (bool, string) {
		out, err := e.Journal("MESSAGE_ID="+audit.MsgDisengaged, "CLEARANCE_CONTAINER="+id12)
		if err != nil {
			return false, err.Error()
		}
		return json.Unmarshal([]byte(strings.TrimSpace(out)), &dis) == nil, out
	})
	if err != nil {
		tail, _ := e.NSCmd(nil, "journalctl", "--no-pager", "-n", "40", "-o", "short-monotonic").CombinedOutput()
		t.Fatalf("%v; the namespace's journal ends:\n%s", err, tail)
	}
	counters, _ := dis[audit.FieldCounters].(string)
	allowed := false
	for _, l := range strings.Split(counters, "\n") {
		f := strings.Fields(l)
		if len(f) == 7 && f[0] == "allow" && f[1] == hostAddr.String() && f[3] == strconv.Itoa(echoPort) && f[4] != "0" {
			allowed = true
		}
	}
	if !allowed || dis["_UID"] != "0" {
		t.Errorf("disengaged record (uid %v) lacks the used allow of %s:%d:\n%s", dis["_UID"], hostAddr, echoPort, counters)
	}
	out, err := e.Journal("MESSAGE_ID="+audit.MsgEngaged, "CLEARANCE_CONTAINER="+id12)
	if out = strings.TrimSpace(out); err != nil || out == "" || strings.Contains(out, "\n") {
		t.Errorf("engaged records of %s: want exactly one, got:\n%s (%v)", id12, out, err)
	}
	assertStale(t, e)
}

// assertStale runs clearancectl policy stale on the containers' policy
// ("e2e", their dossier.project) with an entry the allowed connection
// used and one nothing used: the counters of the disengaged records tell
// them apart (issue 12, item 4).
func assertStale(t *testing.T, e *env) {
	t.Helper()
	dir := e.path("stale-policy")
	os.MkdirAll(dir, 0o755)
	used := fmt.Sprintf("%s:%d/tcp", hostAddr, echoPort)
	file := filepath.Join(dir, "e2e.yaml")
	if err := os.WriteFile(file, []byte("allow:\n  - "+used+"\n  - 192.0.2.77\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := e.nsCmd(nil, filepath.Join(binDir, "clearancectl"), "policy", "stale", "e2e", "--file", file, "--json").Output()
	if err != nil {
		t.Fatalf("clearancectl policy stale: %v\n%s", err, out)
	}
	var rep struct {
		Containers int
		Entries    []struct {
			Entry   string
			Packets int
			Stale   bool
		}
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("policy stale --json: %v\n%s", err, out)
	}
	got := map[string]bool{}
	for _, x := range rep.Entries {
		got[x.Entry] = x.Stale
	}
	usedStale, listed := got[used]
	if rep.Containers < 1 || !listed || usedStale || !got["192.0.2.77"] {
		t.Errorf("policy stale: want %s used and 192.0.2.77 stale:\n%s", used, out)
	}
}

// denyFlow runs a container whose first connection is refused and
// denied; the retry fails too, without a second prompt.
func denyFlow(t *testing.T, e *env, name string) {
	c := e.createInit(name)
	c.assertHookRan()
	c.wire()
	sub := subscribe(t, e.hubSock(c.id12))
	e.mustPodman("start", c.name)
	c.touch("ready")

	ev := sub.next("connection_blocked")
	c.waitLog("attempt1 rc=")
	ok, err := orgterokclearance1.Verdict().Call(testutil.Context(t), sub.rpc, ev.Container, ev.Request_id, ev.Dest, "deny")
	if err != nil || !ok {
		t.Fatalf("Verdict deny: %v %v", ok, err)
	}
	sub.next("verdict_applied")
	c.touch("go2")
	logs := c.waitLog("attempt2 rc=")
	if strings.Contains(logs, "hello") || strings.Contains(logs, "attempt2 rc=0") {
		t.Fatalf("connection passed after deny:\n%s", logs)
	}
	// No second prompt: the next event is a marker sent afterwards.
	in, err := e.dialIngest(c.id12)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(in, `{"type":"shield_up","container":%q}`+"\n", c.id12)
	in.Close()
	ctx, cancel := context.WithTimeout(testutil.Context(t), 20*time.Second)
	defer cancel()
	if next, _, err := sub.recv(ctx); err != nil || next.Type != "shield_up" {
		b, _ := json.Marshal(next)
		t.Fatalf("after deny the next event is %s (%v), want the shield_up marker", b, err)
	}
	if reqs, _ := orgterokclearancehub1.Pending().Call(testutil.Context(t), sub.rpc); len(reqs) != 0 {
		t.Fatalf("pending after deny: %+v", reqs)
	}
	c.touch("done")
	e.mustPodman("wait", c.name)
	e.mustPodman("rm", c.name)
	c.assertPoststopRan()
}

// dialIngest connects to the hub's ingest socket as the owner (the
// ingest accepts only the hub's own uid).
func (e *env) dialIngest(id12 string) (net.Conn, error) { return e.DialIngest(id12) }

// assertAudited checks the journal of the namespace for the verdict:
// journalctl MESSAGE_ID=<verdict> CLEARANCE_CONTAINER=<id> answers who
// allowed what, when (the hub under systemd --user logs to journald).
func assertAudited(t *testing.T, e *env, id12, requestID string) {
	t.Helper()
	var rec map[string]any
	err := testutil.Poll(testutil.Context(t), 15*time.Second, "verdict in the journal", func() (bool, string) {
		out, err := e.Journal("MESSAGE_ID="+audit.MsgVerdict, "CLEARANCE_CONTAINER="+id12)
		if err != nil {
			return false, err.Error()
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var r map[string]any
			if json.Unmarshal([]byte(line), &r) == nil && r["CLEARANCE_REQUEST_ID"] == requestID {
				rec = r
				return true, ""
			}
		}
		return false, out
	})
	if err != nil {
		tail, _ := e.NSCmd(nil, "journalctl", "--no-pager", "-n", "30", "-o", "short-monotonic").CombinedOutput()
		t.Fatalf("%v; the namespace's journal ends:\n%s", err, tail)
	}
	want := map[string]string{"CLEARANCE_ACTION": "allow", "CLEARANCE_OPERATOR_UID": "0", "CLEARANCE_SCOPE": "once",
		"CLEARANCE_DEST": hostAddr.String(), "CLEARANCE_PORT": strconv.Itoa(echoPort), "PRIORITY": "6"}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("journal %s = %v, want %s (record %v)", k, rec[k], v, rec)
		}
	}
	if exp, _ := rec["CLEARANCE_EXPIRES_USEC"].(string); exp == "" {
		t.Errorf("journal record has no expiry: %v", rec)
	}
	// The verdict service's record of the same verdict: what the kernel
	// got, written by root.
	vid, _ := rec[audit.FieldVerdictID].(string)
	if vid == "" || rec[audit.FieldSide] != audit.SideOperator || rec[audit.FieldOutcome] != audit.OutcomeApplied {
		t.Fatalf("hub record: verdict id %q, side %v, outcome %v", vid, rec[audit.FieldSide], rec[audit.FieldOutcome])
	}
	out, err := e.Journal("MESSAGE_ID="+audit.MsgVerdict, audit.FieldVerdictID+"="+vid, audit.FieldSide+"="+audit.SideKernel)
	var k map[string]any
	if err != nil || json.Unmarshal([]byte(strings.TrimSpace(out)), &k) != nil {
		t.Fatalf("no kernel record of verdict %s: %v\n%s", vid, err, out)
	}
	if k[audit.FieldOutcome] != audit.OutcomeApplied || k["_UID"] != "0" || k["CLEARANCE_DEST"] != hostAddr.String() {
		t.Errorf("kernel record = %v", k)
	}
}
