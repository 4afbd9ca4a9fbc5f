// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package fleet

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/relay"
	"github.com/terok-ai/clearance/internal/testenv/natslab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// jwtFleetUsers are the users of the JWT tests: the same permissions as
// the password configuration (fleetServer), carried by user JWTs.
func jwtFleetUsers() []natslab.User {
	return []natslab.User{natslab.RelayUser("alpha"), natslab.RelayUser("beta"),
		natslab.OperatorUser("alice", "*"), natslab.OperatorUser("bob", "beta")}
}

// The production setup of docs/fleet.md: nats-server in operator mode
// (an operator, an account with JetStream, users signed by the account),
// relays and operators authenticated by credentials files. The relays
// connect with theirs; alice (every host) sees and answers through
// clearancectl with hers, and the hub audits the name her credentials
// bind; bob (beta only) is refused for alpha by the server, and cannot
// answer under alice's name; "always" verdicts cross the fleet through the
// account's JetStream bucket.
func TestFleetWithJWTCredentials(t *testing.T) {
	s := natslab.StartJWT(t, jwtFleetUsers()...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nats-server:\n%s", s.Log())
		}
	})
	alpha, beta := newHost(t), newHost(t)
	va, vb := startVerdict(t, alpha), startVerdict(t, beta)
	writeRecord(t, alpha, "ctra00000030", "webapp")
	writeRecord(t, beta, "ctrb00000030", "webapp")
	a := alpha.startHub(t, "ctra00000030")
	b := beta.startHub(t, "ctrb00000030")
	ra := startRelay(t, alpha, "alpha", s.URL(""), "--credentials", s.Creds("relay-alpha"), "--verdict-socket", va.sock)
	rb := startRelay(t, beta, "beta", s.URL(""), "--credentials", s.Creds("relay-beta"), "--verdict-socket", vb.sock)
	ra.lines.waitFor(t, 20*time.Second, "NATS connected")
	rb.lines.waitFor(t, 20*time.Second, "NATS connected")
	ra.lines.waitFor(t, time.Second, "relay starting", "nats_user=relay-alpha")

	op := testutil.ShortDir(t)
	// No --nats-operator: the name is the one alice's credentials carry.
	nctl := func(user string, args ...string) ctlResult {
		t.Helper()
		return ctl(t, op, nil, append([]string{"--nats", s.URL(""), "--nats-credentials", s.Creds(user)}, args...)...)
	}
	lines, _ := natsWatch(t, op, "--nats", s.URL(""), "--nats-credentials", s.Creds("alice"))

	// A blocked request on alpha reaches alice's watch and pending.
	a.block(t, "ctra00000030", "j:1", "198.51.100.90", 443)
	lines.waitFor(t, 20*time.Second, "BLOCKED", "alpha/ctra00000030", "198.51.100.90:443/tcp", "j:1")
	res := nctl("alice", "pending", "--json")
	var bs []relay.Blocked
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &bs) != nil || len(bs) != 1 || bs[0].RequestID != "j:1" {
		t.Fatalf("alice's pending: %d %s %s", res.code, res.stdout, res.stderr)
	}

	// bob may not answer for alpha, under his name or under alice's: the
	// server refuses both before any relay sees them.
	res = nctl("bob", "allow", "j:1")
	if res.code != 1 || !strings.Contains(res.stderr, "the NATS server refused") || !strings.Contains(res.stderr, "decide.bob") {
		t.Errorf("bob on alpha: %d %s", res.code, res.stderr)
	}
	res = ctl(t, op, nil, "--nats", s.URL(""), "--nats-credentials", s.Creds("bob"), "--nats-operator", "alice", "allow", "j:1")
	if res.code != 1 || !strings.Contains(res.stderr, "the NATS server refused") || !strings.Contains(res.stderr, "decide.alice") {
		t.Errorf("bob under alice's name: %d %s", res.code, res.stderr)
	}
	if log := alpha.shieldLog(); log != "" {
		t.Fatalf("alpha applied %q for bob", log)
	}

	// alice allows always: applied on alpha, audited as nats.alice, and
	// mirrored through the account's JetStream bucket into beta's policy.
	res = nctl("alice", "allow", "j:1", "--always")
	if res.code != 0 || !strings.Contains(res.stdout, "allowed 198.51.100.90:443/tcp (alpha/ctra00000030)") {
		t.Fatalf("alice on alpha: %d %s %s", res.code, res.stdout, res.stderr)
	}
	lines.waitFor(t, 20*time.Second, "ALLOWED", "alpha/ctra00000030", "j:1", "via nats.alice")
	if !strings.Contains(alpha.shieldLog(), "ctra00000030 198.51.100.90") {
		t.Errorf("alpha's firewall: %q", alpha.shieldLog())
	}
	hubLog, _ := os.ReadFile(filepath.Join(alpha.rt, "ctra00000030.log"))
	if !strings.Contains(string(hubLog), "CLEARANCE_CHANNEL=nats.alice") {
		t.Errorf("alpha's hub did not audit nats.alice:\n%s", hubLog)
	}
	p := vb.waitPolicy(t, "webapp", 20*time.Second, "198.51.100.90:443/tcp")
	if !strings.Contains(p, "fleet: nats.alice on alpha") {
		t.Errorf("beta adopted without who gave it:\n%s", p)
	}

	// bob answers for beta, his host.
	b.block(t, "ctrb00000030", "j:2", "203.0.113.90", 8080)
	lines.waitFor(t, 20*time.Second, "BLOCKED", "beta/ctrb00000030", "j:2")
	res = nctl("bob", "deny", "j:2")
	if res.code != 0 || !strings.Contains(res.stdout, "denied 203.0.113.90:8080/tcp (beta/ctrb00000030)") {
		t.Fatalf("bob on beta: %d %s %s", res.code, res.stdout, res.stderr)
	}
	lines.waitFor(t, 20*time.Second, "DENIED", "beta/ctrb00000030", "j:2", "via nats.bob")
	if strings.Contains(va.policy("webapp"), "203.0.113.90") {
		t.Errorf("a once verdict crossed the fleet:\n%s", va.policy("webapp"))
	}
}

// A credentials file that cannot work gets a clear error and a non-zero
// exit from the relay and from clearancectl, before anything connects
// when the file itself says what is wrong, and when the server refuses it
// (an account it does not know) as soon as it does; nothing hangs
// reconnecting for ever.
func TestBadJWTCredentials(t *testing.T) {
	s := natslab.StartJWT(t, jwtFleetUsers()...)
	dir := testutil.ShortDir(t)
	relayUser, alice := natslab.RelayUser("alpha"), natslab.OperatorUser("alice", "*")
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, _ := os.ReadFile(s.Creds("relay-alpha"))
	jwtOnly, _, _ := strings.Cut(string(good), "************************* IMPORTANT *************************")
	otherSeed, _ := os.ReadFile(s.Creds("alice"))
	_, aliceSeed, _ := strings.Cut(string(otherSeed), "------END NATS USER JWT------")
	relayJWT, _, _ := strings.Cut(string(good), "------END NATS USER JWT------")
	// Another user's name in the claims, the signature left as it was.
	tampered := tamperJWT(t, string(good), "relay-alpha", "relay-gamma")
	expired := func(u natslab.User) string {
		p := filepath.Join(dir, u.Name+"-expired.creds")
		s.WriteCreds(p, u, time.Now().Add(-time.Minute))
		return p
	}
	stranger := func(u natslab.User) string {
		p := filepath.Join(dir, u.Name+"-stranger.creds")
		s.WriteStrangerCreds(p, u)
		return p
	}
	os.Mkdir(filepath.Join(dir, "adir"), 0o700)
	cases := []struct {
		name       string
		relay, ctl string // the files
		relayErr   string // in the error
		before     bool   // found before connecting
	}{
		{"missing", filepath.Join(dir, "nosuch.creds"), filepath.Join(dir, "nosuch.creds"), "does not exist", true},
		{"directory", filepath.Join(dir, "adir"), filepath.Join(dir, "adir"), "not a regular file", true},
		{"empty", write("empty.creds", ""), write("empty.creds", ""), "no user JWT", true},
		{"garbage", write("garbage.creds", "user=relay password=x\n"), write("garbage.creds", "user=relay password=x\n"), "no user JWT", true},
		{"jwt only", write("jwt-only.creds", jwtOnly), write("jwt-only.creds", jwtOnly), "no user nkey seed", true},
		{"someone else's seed", write("mixed.creds", relayJWT+"------END NATS USER JWT------"+aliceSeed),
			write("mixed.creds", relayJWT+"------END NATS USER JWT------"+aliceSeed), "not the key of its user JWT", true},
		{"tampered", write("tampered.creds", tampered), write("tampered.creds", tampered), "signature", true},
		{"expired", expired(relayUser), expired(alice), "expired at", true},
		{"unknown account", stranger(relayUser), stranger(alice), "authorization violation", false},
	}
	h := newHost(t)
	op := testutil.ShortDir(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := startRelay(t, h, "alpha", s.URL(""), "--credentials", c.relay, "--no-adopt")
			select {
			case <-r.exited:
			case <-time.After(30 * time.Second):
				r.lines.mu.Lock()
				log := strings.Join(r.lines.lines, "\n")
				r.lines.mu.Unlock()
				t.Fatalf("relay still running with %s credentials:\n%s", c.name, log)
			}
			time.Sleep(50 * time.Millisecond)
			r.lines.mu.Lock()
			log := strings.Join(r.lines.lines, "\n")
			r.lines.mu.Unlock()
			if code := r.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(strings.ToLower(log), strings.ToLower(c.relayErr)) ||
				!strings.Contains(log, "credentials") {
				t.Errorf("relay: exit %d, want 1 and %q:\n%s", code, c.relayErr, log)
			}
			if c.before && strings.Contains(log, "relay starting") {
				t.Errorf("relay started before refusing the file:\n%s", log)
			}

			res := ctl(t, op, nil, "--nats", s.URL(""), "--nats-credentials", c.ctl, "pending")
			if res.code != 1 || !strings.Contains(strings.ToLower(res.stderr), strings.ToLower(c.relayErr)) || !strings.Contains(res.stderr, "credentials") {
				t.Errorf("clearancectl: exit %d, want 1 and %q: %s", res.code, c.relayErr, res.stderr)
			}
			t.Logf("relay: %s\nclearancectl: %s", log, res.stderr)
		})
	}
}

// tamperJWT replaces old with new in the claims of the credentials'
// JWT, leaving its signature as it was.
func tamperJWT(t *testing.T, creds, old, new string) string {
	t.Helper()
	begin := "-----BEGIN NATS USER JWT-----\n"
	i := strings.Index(creds, begin)
	if i < 0 {
		t.Fatal("no JWT in the credentials")
	}
	tok, _, _ := strings.Cut(creds[i+len(begin):], "\n")
	parts := strings.Split(tok, ".")
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || !strings.Contains(string(claims), old) {
		t.Fatalf("claims %s: %v", claims, err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(claims), old, new, 1)))
	return strings.Replace(creds, tok, strings.Join(parts, "."), 1)
}

// Credentials that expire while in use: the server drops the relay and
// the operator's watch, refuses them when they reconnect, and both end
// with the reason instead of reconnecting for ever (systemd restarts the
// relay, which then refuses the file before connecting).
func TestJWTCredentialsExpireWhileConnected(t *testing.T) {
	s := natslab.StartJWT(t, jwtFleetUsers()...)
	dir := testutil.ShortDir(t)
	h := newHost(t)
	h.startHub(t, "ctra00000031")
	// Long enough for both to connect on a loaded machine (a JWT's
	// expiry is in whole seconds, so up to one less).
	until := time.Now().Add(8 * time.Second)
	relayCreds, aliceCreds := filepath.Join(dir, "relay.creds"), filepath.Join(dir, "alice.creds")
	s.WriteCreds(relayCreds, natslab.RelayUser("alpha"), until)
	s.WriteCreds(aliceCreds, natslab.OperatorUser("alice", "*"), until)
	r := startRelay(t, h, "alpha", s.URL(""), "--credentials", relayCreds, "--no-adopt")
	r.lines.waitFor(t, 20*time.Second, "NATS connected")

	op := testutil.ShortDir(t)
	watch := exec.Command(bin(t, "clearancectl"), "--nats", s.URL(""), "--nats-credentials", aliceCreds, "watch")
	watch.Env = append(watch.Environ(), "XDG_RUNTIME_DIR="+op, "NO_COLOR=1")
	var werr strings.Builder
	watch.Stderr = &werr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	watchDone := make(chan error, 1)
	go func() { watchDone <- watch.Wait() }()
	t.Cleanup(func() { watch.Process.Kill(); <-watchDone })

	select {
	case <-r.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("the relay still runs on expired credentials")
	}
	time.Sleep(50 * time.Millisecond)
	r.lines.mu.Lock()
	log := strings.Join(r.lines.lines, "\n")
	r.lines.mu.Unlock()
	if code := r.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(log, "refuses this relay's authentication") ||
		!strings.Contains(log, `the user JWT of "relay-alpha" expired at`) {
		t.Errorf("relay: exit %d:\n%s", code, log)
	}
	select {
	case err := <-watchDone:
		watchDone <- err
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(werr.String(), "the NATS connection closed") ||
			!strings.Contains(werr.String(), `the user JWT of "alice" expired at`) {
			t.Errorf("watch: %v:\n%s", err, werr.String())
		}
	case <-time.After(60 * time.Second):
		t.Errorf("watch still runs on expired credentials:\n%s", werr.String())
	}
}
