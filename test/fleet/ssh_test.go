// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package fleet

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/sshlab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// sshFleet is two hosts behind real sshds, each with one hub and one
// pending request.
type sshFleet struct {
	lab         *sshlab.Lab
	alpha, beta *host
	local       string // the operator's own XDG_RUNTIME_DIR (no hubs)
	args        []string
}

func newSSHFleet(t *testing.T) *sshFleet {
	t.Helper()
	lab := sshlab.New(t)
	f := &sshFleet{lab: lab, alpha: newHost(t), beta: newHost(t), local: testutil.ShortDir(t)}
	for _, h := range []*sshlab.Host{lab.AddHost("alpha", f.alpha.rt), lab.AddHost("beta", f.beta.rt)} {
		if os.Geteuid() != 0 {
			continue
		}
		// As root every host is its own network namespace, reached over
		// its veth only.
		ours, _ := os.Readlink("/proc/self/ns/net")
		theirs, err := os.Readlink("/proc/" + strconv.Itoa(h.Pid()) + "/ns/net")
		if err != nil || theirs == ours || h.Addr == "127.0.0.1" {
			t.Fatalf("host %s shares our network namespace (%s, %v) or loopback (%s)", h.Alias, theirs, err, h.Addr)
		}
	}
	f.args = []string{"--ssh-command", lab.SSHCommand(), "--remote-command", bin(t, "clearancectl")}
	return f
}

func (f *sshFleet) ctl(t *testing.T, args ...string) ctlResult {
	t.Helper()
	return ctl(t, f.local, nil, append(append([]string{}, f.args...), args...)...)
}

type pendingRow struct {
	Hub       string `json:"hub"`
	Container string `json:"container"`
	RequestID string `json:"request_id"`
	Dest      string `json:"dest"`
	Port      int    `json:"port"`
}

func TestSSHOperatorAcrossTwoHosts(t *testing.T) {
	f := newSSHFleet(t)
	a := f.alpha.startHub(t, "ctra00000001")
	b := f.beta.startHub(t, "ctrb00000001")
	a.block(t, "ctra00000001", "ctra:1", "198.51.100.7", 443)
	b.block(t, "ctrb00000001", "ctrb:1", "203.0.113.9", 8443)

	res := f.ctl(t, "--host", "alpha", "--host", "beta", "pending", "--json")
	if res.code != 0 {
		t.Fatalf("pending: exit %d\n%s", res.code, res.stderr)
	}
	var rows []pendingRow
	if err := json.Unmarshal([]byte(res.stdout), &rows); err != nil {
		t.Fatalf("pending --json: %v\n%s", err, res.stdout)
	}
	got := map[string]string{}
	for _, r := range rows {
		got[r.Hub] = r.RequestID
	}
	if got["alpha/ctra00000001"] != "ctra:1" || got["beta/ctrb00000001"] != "ctrb:1" || len(got) != 2 {
		t.Fatalf("pending over ssh: %v\n%s", got, res.stdout)
	}

	// The table names the host on every row.
	res = f.ctl(t, "--host", "alpha", "--host", "beta", "pending")
	for _, want := range []string{"alpha/ctra00000001", "beta/ctrb00000001", "203.0.113.9:8443/tcp"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("pending table lacks %q:\n%s", want, res.stdout)
		}
	}

	// A verdict by request id goes to the host that holds it, through
	// the real hub's checks: the far side's stand-in firewall applies it.
	res = f.ctl(t, "--host", "alpha", "--host", "beta", "allow", "ctrb:1")
	if res.code != 0 || !strings.Contains(res.stdout, "allowed 203.0.113.9:8443/tcp (beta/ctrb00000001)") {
		t.Fatalf("allow over ssh: exit %d\nstdout %s\nstderr %s", res.code, res.stdout, res.stderr)
	}
	if log := f.beta.shieldLog(); !strings.Contains(log, "allow -- ctrb00000001 203.0.113.9") {
		t.Errorf("beta's firewall got %q", log)
	}
	if log := f.alpha.shieldLog(); log != "" {
		t.Errorf("alpha's firewall got %q", log)
	}
	// It is no longer pending anywhere.
	res = f.ctl(t, "--host", "beta", "deny", "ctrb:1")
	if res.code != 3 || !strings.Contains(res.stderr, "not pending") {
		t.Errorf("second verdict: exit %d, stderr %s", res.code, res.stderr)
	}

	// status lists both hosts' hubs.
	res = f.ctl(t, "--host", "alpha", "--host", "beta", "status")
	if res.code != 0 || !strings.Contains(res.stdout, "alpha/ctra00000001") || !strings.Contains(res.stdout, "beta/ctrb00000001") {
		t.Errorf("status: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}

	// explain runs on the far side (its verdict service, which this lab
	// has none of: the far side's own error comes back, named).
	res = f.ctl(t, "--host", "alpha", "explain", "alpha/ctra00000001", "198.51.100.7:443")
	if res.code != 1 || !strings.Contains(res.stderr, "alpha: clearancectl: verdict service not reachable") {
		t.Errorf("explain over ssh: exit %d, stderr %s", res.code, res.stderr)
	}
}

func TestSSHWatchFollowsRemoteHubs(t *testing.T) {
	f := newSSHFleet(t)
	a := f.alpha.startHub(t, "ctra00000002")
	cmd := exec.Command(bin(t, "clearancectl"), append(append([]string{}, f.args...), "--host", "alpha", "--host", "beta", "watch")...)
	cmd.Env = append(cmd.Environ(), "XDG_RUNTIME_DIR="+f.local, "NO_COLOR=1")
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	errp, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := newLineReader(out)
	go io.Copy(io.Discard, errp)
	lines.waitFor(t, 30*time.Second, "alpha/ctra00000002")

	a.block(t, "ctra00000002", "w:1", "198.51.100.20", 443)
	l := lines.waitFor(t, 20*time.Second, "BLOCKED", "198.51.100.20:443")
	if !strings.Contains(l, "[1 alpha]") {
		t.Errorf("prompt line does not name the host: %q", l)
	}
	// A hub that appears later on the other host is picked up.
	b := f.beta.startHub(t, "ctrb00000002")
	lines.waitFor(t, 30*time.Second, "beta/ctrb00000002")
	b.block(t, "ctrb00000002", "w:2", "203.0.113.20", 80)
	lines.waitFor(t, 20*time.Second, "[2 beta]", "BLOCKED", "203.0.113.20:80")

	io.WriteString(stdin, "a 2\ny\n")
	lines.waitFor(t, 20*time.Second, "allowed", "203.0.113.20")
	if log := f.beta.shieldLog(); !strings.Contains(log, "allow -- ctrb00000002 203.0.113.20") {
		t.Errorf("beta's firewall got %q", log)
	}
	io.WriteString(stdin, "q\n")
	stdin.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("watch did not quit")
	}
}

func TestSSHFailures(t *testing.T) {
	f := newSSHFleet(t)
	f.alpha.startHub(t, "ctra00000003")

	// An argument that would be an ssh option is refused before ssh runs.
	res := f.ctl(t, "--host", "-oProxyCommand=touch /tmp/x", "pending")
	if res.code != 2 || !strings.Contains(res.stderr, "--host") {
		t.Errorf("option as host: exit %d, stderr %s", res.code, res.stderr)
	}
	// An unknown host: ssh's own explanation, exit 1, the reachable host
	// still listed.
	res = f.ctl(t, "--host", "alpha", "--host", "nosuch.invalid", "pending", "--json")
	if res.code != 1 || !strings.Contains(res.stderr, "host nosuch.invalid: unreachable") {
		t.Errorf("unknown host: exit %d, stderr %s", res.code, res.stderr)
	}
	if !strings.Contains(res.stdout, "[]") && !strings.Contains(res.stdout, "alpha/") {
		t.Errorf("unknown host: stdout %s", res.stdout)
	}
	// A user the far side does not accept.
	res = ctl(t, f.local, nil, "--ssh-command", "ssh -F "+f.lab.ConfigPath()+" -o User=nobody",
		"--remote-command", bin(t, "clearancectl"), "--host", "alpha", "pending")
	if res.code != 1 || !strings.Contains(res.stderr, "Permission denied") {
		t.Errorf("refused key: exit %d, stderr %s", res.code, res.stderr)
	}
	// A far side without the bridge (an old clearancectl).
	res = ctl(t, f.local, nil, "--ssh-command", f.lab.SSHCommand(), "--remote-command", "/bin/false", "--host", "alpha", "pending")
	if res.code != 1 || !strings.Contains(res.stderr, "host alpha: unreachable") {
		t.Errorf("no bridge: exit %d, stderr %s", res.code, res.stderr)
	}
}
