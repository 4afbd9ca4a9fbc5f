// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podman

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/testenv/podmanlab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// namesFlow runs a container whose DNS goes through its forwarder, with
// the resolver from the container's resolv.conf as its bundle mounts it
// (no resolvers in clearance's configuration). Podman writes and
// bind-mounts a resolv.conf for every container with a network; with
// --network none (all these tests may use: no bridge, no NAT on the
// machine) it writes none and refuses --dns, so the test bind-mounts one
// naming the test host, which the hook reads the same way. And a name
// policy: the allowed name
// connects the first time; an unlisted name prompts with its name; Allow
// on the name (always) admits its next address without a second prompt
// and writes the name, with its port, to the user's policy file.
func namesFlow(t *testing.T, e *env, name string) {
	if err := os.WriteFile(e.path("policy", "names.yaml"), []byte("allow:\n  - allowed.rot.test:8082/tcp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rc := e.path("resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver "+hostAddr.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pc, err := e.CreateInitWith(name, podmanlab.CreateOptions{
		Args:        []string{"--volume", rc + ":/etc/resolv.conf:ro"},
		Annotations: []string{"dossier.project=e2e", "dossier.task=" + name, "io.clearance.policy=names"},
		Script:      podmanlab.NamesScript,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &container{Container: pc, e: e, name: pc.Name, id: pc.ID, id12: pc.ID12, pid: pc.Pid}
	rotor := &lab.Rotor{Zone: "rot.test"}
	if err := c.WireNames(rotor.Answer); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, e.hubSock(c.id12))
	e.mustPodman("start", c.name)
	c.touch("ready")

	logs := c.waitLog("first rc=")
	if !strings.Contains(logs, "first rc=0") || !strings.Contains(logs, "hello") {
		t.Fatalf("the allowed name did not connect the first time:\n%s", logs)
	}
	ev := sub.next("connection_blocked")
	if ev.Domain != "api.rot.test" || ev.Port != lab.RangePort {
		t.Fatalf("connection_blocked = %+v, want api.rot.test port %d", ev, lab.RangePort)
	}
	logs = c.waitLog("prompt rc=")
	if strings.Contains(logs, "prompt rc=0") {
		t.Fatalf("an unlisted name connected:\n%s", logs)
	}
	ok, _, err := orgterokclearancehub1.Decide().Call(testutil.Context(t), sub.rpc, ev.Request_id, "allow", "always", 0, nil, nil)
	if err != nil || !ok {
		t.Fatalf("Decide allow always: %v %v", ok, err)
	}
	sub.next("verdict_applied")
	c.touch("go2")
	logs = c.waitLog("next rc=")
	if !strings.Contains(logs, "next rc=0") {
		t.Fatalf("the next address of the allowed name did not connect:\n%s", logs)
	}
	addrs := regexp.MustCompile(`(prompt|next) addr=(\S+)`).FindAllStringSubmatch(logs, -1)
	if len(addrs) != 2 || addrs[0][2] == addrs[1][2] {
		t.Fatalf("the name's second answer was not a new address: %v\n%s", addrs, logs)
	}
	if reqs, _ := orgterokclearancehub1.Pending().Call(context.Background(), sub.rpc); len(reqs) != 0 {
		t.Errorf("pending after the name was allowed: %+v", reqs)
	}
	policyFile := e.path("policy", "names.yaml")
	if e.uid() != 0 {
		policyFile = e.path("policy", "uid-"+strconv.Itoa(e.uid()), "names.yaml")
	}
	b, err := os.ReadFile(policyFile)
	if err != nil || !strings.Contains(string(b), "api.rot.test:8082/tcp") || strings.Contains(string(b), addrs[0][2]) {
		t.Errorf("%s after always = %q, %v; want the name with its port, not the address", filepath.Base(policyFile), b, err)
	}
	c.touch("done")
	e.mustPodman("wait", c.name)
	e.mustPodman("rm", c.name)
	c.assertPoststopRan()
}

// TestRootfulNames and TestRootlessNames run namesFlow with rootful and
// rootless podman.
func TestRootfulNames(t *testing.T) {
	e := newEnv(t)
	start := time.Now()
	namesFlow(t, e, "clr-names")
	t.Logf("names flow: %v", time.Since(start).Round(time.Millisecond))
}

func TestRootlessNames(t *testing.T) {
	e := newEnvFor(t, true)
	namesFlow(t, e, "clr-rl-names")
}
