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

// askScript asks the container's ask endpoint as soon as the container
// starts (no network of its own: the endpoint is on its loopback), waits
// for the verdict and prints the answer. It speaks HTTP through busybox
// nc, which half-closes after sending (Debian's static busybox wget
// crashes).
const askScript = `until [ -e /ready ]; do sleep 0.05; done
body='dest=api.example.com&port=443&reason=the build needs its API'
out=$(printf 'POST /ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %s\r\n\r\n%s' "${#body}" "$body" | nc -w 90 127.0.0.1 25452)
echo "ask rc=$? $out"
until [ -e /done ]; do sleep 0.05; done`

// TestRootfulAsk and TestRootlessAsk run askFlow with rootful and
// rootless podman.
func TestRootfulAsk(t *testing.T) { askFlow(t, newEnv(t), "clr-ask") }

func TestRootlessAsk(t *testing.T) { askFlow(t, newEnvFor(t, true), "clr-rl-ask") }

// askFlow: a real container states its reason on its ask endpoint
// before connecting; the operator sees it in the prompt and allows; the
// container's call returns the verdict.
func askFlow(t *testing.T, e *env, name string) {
	pc, err := e.CreateInitWith(name, podmanlab.CreateOptions{
		Annotations: []string{"dossier.project=e2e", "dossier.task=ask"},
		Script:      askScript,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &container{Container: pc, e: e, name: pc.Name, id: pc.ID, id12: pc.ID12, pid: pc.Pid}
	sub := subscribe(t, e.hubSock(c.id12))
	e.mustPodman("start", c.name)
	c.touch("ready")

	ev := sub.next("connection_blocked")
	if ev.Reason != "the build needs its API" || ev.Domain != "api.example.com" || ev.Port != 443 || ev.Dossier["task"] != "ask" {
		t.Fatalf("prompt %+v, want the container's reason", ev)
	}
	channel := "clearancectl"
	ok, _, err := orgterokclearancehub1.Decide().Call(testutil.Context(t), sub.rpc, ev.Request_id, "allow", "once", 0, nil, &channel)
	if err != nil || !ok {
		t.Fatalf("Decide: %v %v", ok, err)
	}
	logs := c.waitLog("ask rc=")
	if !strings.Contains(logs, "ask rc=0 HTTP/1.1 200 OK") || !strings.Contains(logs, `"status":"allowed"`) ||
		!strings.Contains(logs, `"request_id":"`+ev.Request_id+`"`) || !strings.Contains(logs, "via clearancectl") {
		t.Fatalf("the container's call did not return the verdict:\n%s", logs)
	}
	c.touch("done")
	e.mustPodman("wait", c.name)
	e.mustPodman("rm", c.name)
	c.assertPoststopRan()
}
