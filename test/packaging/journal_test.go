// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package packaging

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/sd"
	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// TestAuditInJournal runs the built verdict service and hub of a lab
// stack against a real systemd-journald (in a private mount namespace),
// causes a blocked connection and an allow verdict, and reads the audit
// records back with journalctl, as an operator would:
// "journalctl MESSAGE_ID=<verdict> CLEARANCE_CONTAINER=<id>" says who
// allowed what, when. It also installs the journal catalog there and
// checks that "journalctl -x" explains the verdict record.
func TestAuditInJournal(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "unshare", "nsenter", "ip", "journalctl", "/lib/systemd/systemd-journald")
	bin := binaries(t, "clearance-hub", "clearance-verdict")
	runInner(t, "TestInnerAuditInJournal", "CLEARANCE_PKGTEST_BIN="+bin)
}

// TestInnerAuditInJournal is TestAuditInJournal's body, run only in the
// private mount namespace.
func TestInnerAuditInJournal(t *testing.T) {
	if !inner(t.Name()) {
		return
	}
	ns := newPrivateRun(t)
	installCatalog(t)
	ns.startJournald(t)
	// The services' stderr is a log file here, not a journal stream:
	// force the journal handler (docs/audit.md).
	os.Setenv(sd.EnvLog, "journal")

	l := lab.New()
	t.Cleanup(l.Close)
	s, err := l.NewStack(testutil.Context(t), lab.StackOptions{Bin: os.Getenv("CLEARANCE_PKGTEST_BIN")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hub log:\n%s\nverdict log:\n%s", s.Tail("hub"), s.Tail("verdict"))
		}
	})
	ctx := testutil.Context(t)
	c, err := varlinkapi.Dial(ctx, s.HubSock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	recv, err := orgterokclearance1.Subscribe().Send(ctx, c, varlink.More)
	if err != nil {
		t.Fatal(err)
	}
	rpc, err := varlinkapi.Dial(ctx, s.HubSock)
	if err != nil {
		t.Fatal(err)
	}
	defer rpc.Close()
	testutil.Eventually(t, 20*time.Second, "subscriber counted", func() bool {
		st, err := orgterokclearancehub1.Stats().Call(ctx, rpc)
		return err == nil && st.Subscribers >= 1
	})
	next := func(typ string) orgterokclearance1.ClearanceEvent {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		for {
			ev, _, err := recv(ctx)
			if err != nil {
				t.Fatalf("waiting for %s: %v", typ, err)
			}
			if ev.Type == typ {
				return ev
			}
		}
	}

	if err := s.Connect(ctx, lab.EchoPort, 5*time.Second); err == nil {
		t.Fatal("first connect passed; want it blocked")
	}
	ev := next("connection_blocked")
	before := time.Now()
	if ok, err := orgterokclearance1.Verdict().Call(ctx, rpc, ev.Container, ev.Request_id, ev.Dest, "allow"); err != nil || !ok {
		t.Fatalf("verdict: %v %v", ok, err)
	}
	next("verdict_applied")

	dest := lab.HostAddr.String()
	verdict := ns.waitEntry(t, audit.MsgVerdict, s.ID)
	want := map[string]string{
		"MESSAGE_ID":             audit.MsgVerdict,
		"PRIORITY":               "6",
		"SYSLOG_IDENTIFIER":      "clearance-hub",
		"CLEARANCE_CONTAINER":    s.ID,
		"CLEARANCE_REQUEST_ID":   ev.Request_id,
		"CLEARANCE_DEST":         dest,
		"CLEARANCE_PORT":         strconv.Itoa(lab.EchoPort),
		"CLEARANCE_PROTO":        "TCP",
		"CLEARANCE_ACTION":       "allow",
		"CLEARANCE_SCOPE":        "once",
		"CLEARANCE_OPERATOR_UID": "0",
	}
	checkFields(t, "verdict", verdict, want)
	if verdict["CLEARANCE_CHANNEL"] == "" {
		t.Errorf("verdict entry has no CLEARANCE_CHANNEL: %v", verdict)
	}
	// "when": the entry's own timestamp, and the expiry of a once verdict
	// (TTL 1h in the lab's configuration).
	exp, err := strconv.ParseInt(verdict["CLEARANCE_EXPIRES_USEC"], 10, 64)
	if err != nil || time.UnixMicro(exp).Before(before.Add(50*time.Minute)) {
		t.Errorf("CLEARANCE_EXPIRES_USEC = %q, want about an hour from now", verdict["CLEARANCE_EXPIRES_USEC"])
	}
	if ts, _ := strconv.ParseInt(verdict["__REALTIME_TIMESTAMP"], 10, 64); time.UnixMicro(ts).Before(before.Add(-time.Second)) {
		t.Errorf("verdict entry time %v is before the verdict (%v)", time.UnixMicro(ts), before)
	}

	blocked := ns.waitEntry(t, audit.MsgBlocked, s.ID)
	checkFields(t, "blocked", blocked, map[string]string{
		"MESSAGE_ID":           audit.MsgBlocked,
		"PRIORITY":             "6",
		"SYSLOG_IDENTIFIER":    "clearance-hub",
		"CLEARANCE_CONTAINER":  s.ID,
		"CLEARANCE_REQUEST_ID": ev.Request_id,
		"CLEARANCE_DEST":       dest,
		"CLEARANCE_PORT":       strconv.Itoa(lab.EchoPort),
		"CLEARANCE_PROTO":      "TCP",
	})
	engaged := ns.waitEntry(t, audit.MsgEngaged, s.ID)
	checkFields(t, "engaged", engaged, map[string]string{
		"MESSAGE_ID":             audit.MsgEngaged,
		"PRIORITY":               "6",
		"SYSLOG_IDENTIFIER":      "clearance-verdict",
		"CLEARANCE_CONTAINER":    s.ID,
		"CLEARANCE_OPERATOR_UID": "0",
	})

	// The catalog explains the entry, with its fields filled in.
	x := ns.journal(t, "-x", "MESSAGE_ID="+audit.MsgVerdict, "CLEARANCE_CONTAINER="+s.ID)
	for _, want := range []string{
		"Subject: Verdict allow for " + dest + " in container " + s.ID,
		"The operator with uid 0 answered request",
		"Documentation: man:clearancectl(1)",
	} {
		if !strings.Contains(x, want) {
			t.Errorf("journalctl -x lacks %q:\n%s", want, x)
		}
	}
}

// installCatalog makes packaging/clearance.catalog the namespace's only
// catalog and builds the catalog database from it, without touching the
// machine's: tmpfs on /var/lib/systemd/catalog, a directory holding just
// our file bound over /usr/lib/systemd/catalog.
func installCatalog(t *testing.T) {
	t.Helper()
	dir := "/run/pkgtest-catalog"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(repoRoot, "packaging", "clearance.catalog"), filepath.Join(dir, "clearance.catalog"), 0o644)
	for _, d := range []string{"/var/lib/systemd/catalog", "/usr/lib/systemd/catalog"} {
		if _, err := os.Stat(d); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
	}
	mustMount(t, "tmpfs", "/var/lib/systemd/catalog", "tmpfs", "mode=0755")
	if err := unix.Mount(dir, "/usr/lib/systemd/catalog", "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind catalog: %v", err)
	}
	if out, err := exec.Command("journalctl", "--update-catalog").CombinedOutput(); err != nil {
		t.Fatalf("journalctl --update-catalog: %v\n%s", err, out)
	}
}

// waitEntry waits for the newest journal entry with the MESSAGE_ID and
// container and returns its fields.
func (p *privateRun) waitEntry(t *testing.T, msgID, container string) map[string]string {
	t.Helper()
	var got map[string]string
	testutil.Eventually(t, 20*time.Second, "journal entry "+msgID, func() bool {
		out, err := exec.Command("journalctl", "-D", journalDir, "--no-pager", "-o", "json",
			"MESSAGE_ID="+msgID, "CLEARANCE_CONTAINER="+container).Output()
		if err != nil {
			return false
		}
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var raw map[string]json.RawMessage
			if json.Unmarshal(sc.Bytes(), &raw) != nil {
				continue
			}
			m := map[string]string{}
			for k, v := range raw {
				var s string
				if json.Unmarshal(v, &s) == nil {
					m[k] = s
				}
			}
			got = m
		}
		return got != nil
	})
	return got
}

func checkFields(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	bad := false
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s entry: %s = %q, want %q", what, k, got[k], v)
			bad = true
		}
	}
	if bad {
		b, _ := json.MarshalIndent(got, "", "  ")
		t.Logf("%s entry: %s", what, b)
	}
}
