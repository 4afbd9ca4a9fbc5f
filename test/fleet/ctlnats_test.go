// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package fleet

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/relay"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// clearancectl --nats: the fleet view, pending and verdicts through the
// relays.
func TestCtlNATS(t *testing.T) {
	s := fleetServer(t)
	alpha, beta := newHost(t), newHost(t)
	a := alpha.startHub(t, "ctra00000014")
	b := beta.startHub(t, "ctrb00000014")
	startRelay(t, alpha, "alpha", s.URL("relay-alpha"), "--no-adopt").lines.waitFor(t, 20*time.Second, "NATS connected")
	startRelay(t, beta, "beta", s.URL("relay-beta"), "--no-adopt").lines.waitFor(t, 20*time.Second, "NATS connected")
	op := testutil.ShortDir(t)
	nctl := func(user string, args ...string) ctlResult {
		t.Helper()
		return ctl(t, op, nil, append([]string{"--nats", s.URL(user), "--nats-operator", user}, args...)...)
	}

	lines, errLines := natsWatch(t, op, "--nats", s.URL("alice"), "--nats-operator", "alice")

	a.block(t, "ctra00000014", "n:1", "198.51.100.80", 443)
	b.block(t, "ctrb00000014", "n:2", "203.0.113.80", 8080)
	lines.waitFor(t, 20*time.Second, "BLOCKED", "alpha/ctra00000014", "198.51.100.80:443/tcp", "n:1")
	lines.waitFor(t, 20*time.Second, "BLOCKED", "beta/ctrb00000014", "203.0.113.80:8080/tcp", "n:2")

	res := nctl("alice", "pending", "--json")
	var bs []relay.Blocked
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &bs) != nil || len(bs) != 2 {
		t.Fatalf("pending --json: %d %s %s", res.code, res.stdout, res.stderr)
	}
	res = nctl("alice", "pending")
	if !strings.Contains(res.stdout, "alpha/ctra00000014") || !strings.Contains(res.stdout, "beta/ctrb00000014") {
		t.Errorf("pending:\n%s", res.stdout)
	}
	res = nctl("bob", "status", "--json")
	var ps []relay.Presence
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &ps) != nil || len(ps) != 2 || ps[0].Host != "alpha" ||
		len(ps[0].Containers) != 1 || ps[0].Containers[0].ID != "ctra00000014" || ps[0].Containers[0].Pending != 1 || !ps[0].Containers[0].Up {
		t.Errorf("status --json: %d %s %s", res.code, res.stdout, res.stderr)
	}
	res = nctl("alice", "status")
	if res.code != 0 || !strings.Contains(res.stdout, "beta/ctrb00000014") {
		t.Errorf("status:\n%s%s", res.stdout, res.stderr)
	}

	// bob may not answer for alpha.
	res = nctl("bob", "allow", "n:1")
	if res.code != 1 || !strings.Contains(res.stderr, "refused") {
		t.Errorf("bob on alpha: %d %s", res.code, res.stderr)
	}
	res = nctl("bob", "deny", "n:2", "--until-exit")
	if res.code != 0 || !strings.Contains(res.stdout, "denied 203.0.113.80:8080/tcp (beta/ctrb00000014), until the container exits") {
		t.Fatalf("bob on beta: %d %s %s", res.code, res.stdout, res.stderr)
	}
	lines.waitFor(t, 20*time.Second, "DENIED", "beta/ctrb00000014", "n:2", "via nats.bob")
	res = nctl("alice", "allow", "n:1", "--container", "alpha/ctra00000014")
	if res.code != 0 || !strings.Contains(res.stdout, "allowed 198.51.100.80:443/tcp (alpha/ctra00000014)") {
		t.Fatalf("alice on alpha: %d %s %s", res.code, res.stdout, res.stderr)
	}
	res = nctl("alice", "deny", "n:1", "--container", "alpha/ctra00000014")
	if res.code != 3 || !strings.Contains(res.stderr, "already decided") || !strings.Contains(res.stderr, "via nats.alice") {
		t.Errorf("second verdict: %d %s", res.code, res.stderr)
	}
	res = nctl("alice", "allow", "nosuch")
	if res.code != 3 || !strings.Contains(res.stderr, "not pending on any host") {
		t.Errorf("unknown request: %d %s", res.code, res.stderr)
	}
	if !strings.Contains(alpha.shieldLog(), "allow -- ctra00000014 198.51.100.80") || strings.Count(alpha.shieldLog(), "\n") != 1 {
		t.Errorf("alpha's firewall: %q", alpha.shieldLog())
	}

	// Usage errors.
	for _, args := range [][]string{
		{"--nats", s.URL("alice"), "--host", "alpha", "pending"},
		{"--nats", s.URL("alice"), "log"},
		{"--nats-operator", "alice", "pending"},
		{"--nats", s.URL("alice"), "--nats-operator", "Alice!", "pending"},
		{"--nats", s.URL("alice"), "allow", "x", "--container", "alpha"},
	} {
		res := ctl(t, op, nil, args...)
		if res.code == 0 || res.stderr == "" {
			t.Errorf("%v: exit %d, stderr %q", args, res.code, res.stderr)
		}
	}
	// The server goes away and comes back: watch says so and goes on.
	s.Stop()
	errLines.waitFor(t, 20*time.Second, "NATS connection lost", "reconnecting")
	s.Restart()
	errLines.waitFor(t, 30*time.Second, "NATS reconnected")
	a.block(t, "ctra00000014", "n:3", "198.51.100.81", 443)
	lines.waitFor(t, 30*time.Second, "BLOCKED", "alpha/ctra00000014", "n:3")

	// A server that is not there.
	res = ctl(t, op, nil, "--nats", "nats://127.0.0.1:1", "pending")
	if res.code != 1 || !strings.Contains(res.stderr, "NATS") {
		t.Errorf("no server: %d %s", res.code, res.stderr)
	}
}

// natsWatch runs "clearancectl GLOBAL... watch" with XDG_RUNTIME_DIR=rt
// until the test ends, and returns its stdout and stderr lines once it
// watches.
func natsWatch(t *testing.T, rt string, global ...string) (stdout, stderr *lineReader) {
	t.Helper()
	watch := exec.Command(bin(t, "clearancectl"), append(global, "watch")...)
	watch.Env = append(watch.Environ(), "XDG_RUNTIME_DIR="+rt, "NO_COLOR=1")
	out, _ := watch.StdoutPipe()
	errp, _ := watch.StderrPipe()
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Process.Kill(); watch.Wait() })
	stdout, stderr = newLineReader(out), newLineReader(errp)
	stderr.waitFor(t, 20*time.Second, "watching the fleet")
	return stdout, stderr
}
