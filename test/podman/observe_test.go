// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podman

import (
	"strings"
	"testing"

	"github.com/terok-ai/clearance/internal/testenv/podmanlab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// TestRootfulObserve: a real container annotated io.clearance.mode=observe
// whose project the system configuration lists connects where it would
// have been blocked, through the real OCI hook and verdict service; its
// subscriber is told it is not enforced and sees the destination as
// "observed", never as a prompt. The same annotation on a project the
// configuration does not list runs enforced: its connection is refused.
func TestRootfulObserve(t *testing.T) {
	e := newEnv(t)
	run := func(name, project string) (*container, *subscription) {
		pc, err := e.CreateInitWith(name, podmanlab.CreateOptions{
			Annotations: []string{"dossier.project=" + project, "dossier.task=" + name, "io.clearance.mode=observe"}})
		if err != nil {
			t.Fatal(err)
		}
		c := &container{Container: pc, e: e, name: pc.Name, id: pc.ID, id12: pc.ID12, pid: pc.Pid}
		c.wire()
		sub := subscribe(t, e.hubSock(c.id12))
		e.mustPodman("start", c.name)
		c.touch("ready")
		return c, sub
	}
	finish := func(c *container) {
		c.touch("go2")
		c.touch("done")
		e.mustPodman("wait", c.name)
		e.mustPodman("rm", c.name)
		c.assertPoststopRan()
	}

	c, sub := run("clr-observe", podmanlab.ObserveProject)
	if ev := sub.next("hub_notice"); !strings.Contains(ev.Reason, "NOT ENFORCED") {
		t.Fatalf("notice %+v", ev)
	}
	logs := c.waitLog("attempt1 rc=")
	if !strings.Contains(logs, "attempt1 rc=0") || !strings.Contains(logs, "hello") {
		t.Fatalf("the observed container's connection did not pass:\n%s", logs)
	}
	if ev := sub.next("observed"); ev.Dest != hostAddr.String() || ev.Port != echoPort || ev.Request_id != "" {
		t.Fatalf("observed = %+v", ev)
	}
	st, err := orgterokclearancehub1.Stats().Call(testutil.Context(t), sub.rpc)
	if err != nil || st.Mode == nil || *st.Mode != "observe" || st.Pending != 0 {
		t.Fatalf("stats %+v %v", st, err)
	}
	finish(c)

	c, sub = run("clr-observe-no", "e2e")
	if ev := sub.next("connection_blocked"); ev.Port != echoPort {
		t.Fatalf("enforced container: %+v", ev)
	}
	if logs := c.waitLog("attempt1 rc="); !strings.Contains(logs, "attempt1 rc=1") {
		t.Fatalf("a container of an unlisted project connected:\n%s", logs)
	}
	finish(c)
}
