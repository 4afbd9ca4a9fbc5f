// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package fleet

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/testenv/managerlab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

const (
	journalRemote = "/lib/systemd/systemd-journal-remote"
	journalUpload = "/lib/systemd/systemd-journal-upload"
)

// exportRecord is one record in the journal export format.
func exportRecord(usec int64, fields ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n", usec, usec/1000)
	for _, f := range fields {
		b.WriteString(f + "\n")
	}
	return b.String() + "\n"
}

// writeJournal writes records into a journal file in dir with
// systemd-journal-remote, as a host's journald would have them.
func writeJournal(t *testing.T, path string, records ...string) {
	t.Helper()
	cmd := exec.Command(journalRemote, "-o", path, "-")
	cmd.Stdin = strings.NewReader(strings.Join(records, ""))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("journal-remote -o %s: %v: %s", path, err, out)
	}
}

// startJournalRemote runs systemd-journal-remote on loopback, writing
// what it receives under dir; it returns its URL.
func startJournalRemote(t *testing.T, dir string) string {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		port := freeTCPPort(t)
		cmd := exec.Command(journalRemote, "--listen-http=127.0.0.1:"+strconv.Itoa(port), "--output="+dir+"/")
		logf, _ := os.Create(filepath.Join(dir, "..", "journal-remote.log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logf.Close()
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		if waitTCP(port, exited) {
			t.Cleanup(func() {
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					cmd.Process.Kill()
					<-exited
				}
			})
			return "http://127.0.0.1:" + strconv.Itoa(port)
		}
		cmd.Process.Kill()
		<-exited
	}
	t.Fatal("systemd-journal-remote did not come up")
	return ""
}

// Central audit: clearance's records, and only those, go from a host's
// journal through the documented pipeline (clearancectl log --export
// --follow | systemd-journal-upload -) to systemd-journal-remote, and
// clearancectl log --journal-dir reads the collected files.
func TestJournalUploadToRemote(t *testing.T) {
	for _, p := range []string{journalRemote, journalUpload} {
		if _, err := os.Stat(p); err != nil {
			testutil.Unavailable(t, "%s (Debian systemd-journal-remote)", p)
		}
	}
	testutil.RequireTool(t, "journalctl", "sh")
	base := testutil.ShortDir(t)
	src, coll := filepath.Join(base, "src"), filepath.Join(base, "coll")
	os.Mkdir(src, 0o700)
	os.Mkdir(coll, 0o700)
	now := time.Now().UnixMicro()
	writeJournal(t, filepath.Join(src, "alpha.journal"),
		exportRecord(now, "_HOSTNAME=alpha", "MESSAGE=blocked 198.51.100.90:443", "MESSAGE_ID="+audit.MsgBlocked,
			"CLEARANCE_CONTAINER=ctra00000015", "CLEARANCE_REQUEST_ID=j:1", "CLEARANCE_DEST=198.51.100.90",
			"CLEARANCE_PORT=443", "CLEARANCE_PROTO=tcp"),
		exportRecord(now+1, "_HOSTNAME=alpha", "MESSAGE=sshd: session opened (not clearance's)"),
		exportRecord(now+2, "_HOSTNAME=alpha", "MESSAGE=verdict", "MESSAGE_ID="+audit.MsgVerdict,
			"CLEARANCE_CONTAINER=ctra00000015", "CLEARANCE_REQUEST_ID=j:1", "CLEARANCE_DEST=198.51.100.90",
			"CLEARANCE_PORT=443", "CLEARANCE_PROTO=tcp", "CLEARANCE_ACTION=allow", "CLEARANCE_SCOPE=always",
			"CLEARANCE_OPERATOR_UID=1000", "CLEARANCE_CHANNEL=nats.alice"),
		exportRecord(now+3, "_HOSTNAME=alpha", "MESSAGE=another program's record", "MESSAGE_ID=0123456789abcdef0123456789abcdef"),
		exportRecord(now+4, "_HOSTNAME=alpha", "MESSAGE=always verdict mirrored", "MESSAGE_ID="+audit.MsgMirrored,
			"CLEARANCE_POLICY=webapp", "CLEARANCE_ACTION=allow", "CLEARANCE_DEST=198.51.100.90", "CLEARANCE_PORT=443",
			"CLEARANCE_PROTO=tcp", "CLEARANCE_SCOPE=always", "CLEARANCE_CHANNEL=nats.alice", "CLEARANCE_HOST=alpha"),
	)
	url := startJournalRemote(t, coll)

	pipe := exec.Command("sh", "-c", `"$1" log --export --follow --journal-dir "$2" | "$3" --url="$4" -`,
		"sh", bin(t, "clearancectl"), src, journalUpload, url)
	pipe.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var perr strings.Builder
	pipe.Stderr = &perr
	if err := pipe.Start(); err != nil {
		t.Fatal(err)
	}
	pipeDone := make(chan struct{})
	go func() { pipe.Wait(); close(pipeDone) }()
	t.Cleanup(func() {
		syscall.Kill(-pipe.Process.Pid, syscall.SIGTERM)
		<-pipeDone
	})

	collected := func(want int) []map[string]any {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			res := ctl(t, base, nil, "log", "--journal-dir", coll, "--json")
			var entries []map[string]any
			json.Unmarshal([]byte(res.stdout), &entries)
			if len(entries) >= want {
				return entries
			}
			if time.Now().After(deadline) {
				t.Fatalf("collected %d of %d records: %s %s\npipeline: %s", len(entries), want, res.stdout, res.stderr, perr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	entries := collected(3)
	if len(entries) != 3 {
		t.Fatalf("collected: %v", entries)
	}
	for _, e := range entries {
		if e["host"] != "alpha" {
			t.Errorf("record without its host: %v", e)
		}
	}
	// --follow: a record written later is shipped too.
	writeJournal(t, filepath.Join(src, "alpha-2.journal"),
		exportRecord(now+5, "_HOSTNAME=alpha", "MESSAGE=verdict", "MESSAGE_ID="+audit.MsgVerdict,
			"CLEARANCE_CONTAINER=ctra00000016", "CLEARANCE_REQUEST_ID=j:2", "CLEARANCE_DEST=203.0.113.90",
			"CLEARANCE_PORT=80", "CLEARANCE_PROTO=tcp", "CLEARANCE_ACTION=deny", "CLEARANCE_SCOPE=once",
			"CLEARANCE_CHANNEL=notifier"),
		exportRecord(now+6, "_HOSTNAME=alpha", "MESSAGE=later noise"))
	entries = collected(4)

	// Only clearance's records left the host.
	out, err := exec.Command("journalctl", "--directory="+coll, "-o", "json", "--no-pager").Output()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), "\n"); n != 4 || strings.Contains(string(out), "not clearance's") ||
		strings.Contains(string(out), "another program") || strings.Contains(string(out), "later noise") {
		t.Errorf("collected journal (%d records):\n%s", n, out)
	}
	res := ctl(t, base, nil, "log", "--journal-dir", coll)
	for _, want := range []string{"HOST", "alpha", "via nats.alice", "mirrored", "198.51.100.90:443/tcp", "ctra00000016"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("log --journal-dir lacks %q:\n%s", want, res.stdout)
		}
	}
	res = ctl(t, base, nil, "log", "--journal-dir", coll, "--container", "ctra00000016", "--json")
	if json.Unmarshal([]byte(res.stdout), &entries) != nil || len(entries) != 1 {
		t.Errorf("--container on collected files: %s", res.stdout)
	}

	// Bad input.
	for _, args := range [][]string{
		{"log", "--journal-dir", filepath.Join(base, "nosuch")},
		{"log", "--follow"},
		{"log", "--export", "--json"},
	} {
		if res := ctl(t, base, nil, args...); res.code != 2 || res.stderr == "" {
			t.Errorf("%v: exit %d, %s", args, res.code, res.stderr)
		}
	}
}

// A follower started before the journal holds any record of clearance's
// waits for the first one instead of failing: journalctl exits 1 when a
// --cursor-file it was given does not exist yet and nothing matches.
func TestExportFollowBeforeFirstRecord(t *testing.T) {
	if _, err := os.Stat(journalRemote); err != nil {
		testutil.Unavailable(t, "%s (Debian systemd-journal-remote)", journalRemote)
	}
	testutil.RequireTool(t, "journalctl")
	base := testutil.ShortDir(t)
	src := filepath.Join(base, "src")
	os.Mkdir(src, 0o700)
	now := time.Now().UnixMicro()
	writeJournal(t, filepath.Join(src, "a.journal"), exportRecord(now, "_HOSTNAME=alpha", "MESSAGE=not clearance's"))
	cursor := filepath.Join(base, "cursor")

	// Once, without --follow: nothing to ship is not a failure either.
	if res := ctl(t, base, nil, "log", "--export", "--journal-dir", src, "--cursor-file", cursor); res.code != 0 || res.stdout != "" {
		t.Fatalf("export with nothing to ship: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}

	out, err := os.Create(filepath.Join(base, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var errb strings.Builder
	follow := exec.Command(bin(t, "clearancectl"), "log", "--export", "--follow", "--journal-dir", src, "--cursor-file", cursor)
	follow.Stdout, follow.Stderr = out, &errb
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- follow.Wait() }()
	defer func() {
		follow.Process.Signal(syscall.SIGTERM)
		<-exited
	}()

	// Two rounds of journalctl with nothing to ship; the follower lives.
	select {
	case err := <-exited:
		exited <- err
		t.Fatalf("the follower ended before any record: %v: %s", err, errb.String())
	case <-time.After(2*time.Second + 500*time.Millisecond):
	}
	writeJournal(t, filepath.Join(src, "b.journal"),
		exportRecord(now+1, "_HOSTNAME=alpha", "MESSAGE=blocked", "MESSAGE_ID="+audit.MsgBlocked,
			"CLEARANCE_CONTAINER=ctra00000017", "CLEARANCE_REQUEST_ID=f:1", "CLEARANCE_DEST=198.51.100.91"))
	if !testutil.Within(20*time.Second, func() bool {
		b, _ := os.ReadFile(out.Name())
		return strings.Contains(string(b), "CLEARANCE_REQUEST_ID=f:1")
	}) {
		t.Fatalf("the first record was not shipped: %s", errb.String())
	}
	if _, err := os.Stat(cursor); err != nil {
		t.Errorf("no cursor kept after the first record: %v", err)
	}
}

// The same pipeline fed by a real hub's records: a systemd-journald in a
// private mount namespace (managerlab), the hub logging to it, a blocked
// request and a verdict; exactly those reach the collector, with the
// fields the hub wrote, and journald's own records do not.
func TestJournalFromRealHub(t *testing.T) {
	testutil.RequireRoot(t)
	for _, p := range []string{journalRemote, journalUpload, "/lib/systemd/systemd-journald"} {
		if _, err := os.Stat(p); err != nil {
			testutil.Unavailable(t, "%s", p)
		}
	}
	bin(t, "clearancectl")
	managerlab.RunInner(t, "TestInnerJournalFromRealHub", envBin+"="+binaries.dir)
}

func TestInnerJournalFromRealHub(t *testing.T) {
	if !managerlab.Inner(t.Name()) {
		return
	}
	run := managerlab.New(t)
	run.StartJournald(t)
	base := testutil.ShortDir(t)
	coll := filepath.Join(base, "coll")
	os.Mkdir(coll, 0o700)
	url := startJournalRemote(t, coll)
	pipe := exec.Command("sh", "-c", `"$1" log --export --follow --cursor-file "$2" | "$3" --url="$4" -`,
		"sh", bin(t, "clearancectl"), filepath.Join(base, "cursor"), journalUpload, url)
	var perr strings.Builder
	pipe.Stderr = &perr
	managerlab.Start(t, pipe, nil)

	alpha := newHost(t)
	alpha.logTo = "journal"
	a := alpha.startHub(t, "ctra00000019")
	a.block(t, "ctra00000019", "jr:1", "198.51.100.95", 443)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if res := ctl(t, alpha.rt, nil, "allow", "jr:1"); res.code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("jr:1 never pending")
		}
		time.Sleep(50 * time.Millisecond)
	}
	host, _ := os.Hostname()
	var entries []map[string]any
	deadline = time.Now().Add(30 * time.Second)
	for len(entries) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("collected %v\npipeline: %s\nsource journal:\n%s", entries, perr.String(), run.Journal(t, "-o", "short"))
		}
		time.Sleep(100 * time.Millisecond)
		res := ctl(t, base, nil, "log", "--journal-dir", coll, "--json", "--container", "ctra00000019")
		json.Unmarshal([]byte(res.stdout), &entries)
	}
	got := map[string]map[string]any{}
	for _, e := range entries {
		got[e["event"].(string)] = e
		if e["host"] != host || e["request_id"] != "jr:1" || e["dest"] != "198.51.100.95" {
			t.Errorf("collected record: %v", e)
		}
	}
	if v := got["verdict"]; v == nil || v["action"] != "allow" || v["channel"] != "clearancectl" || v["operator_uid"] != float64(0) {
		t.Errorf("verdict record: %v", v)
	}
	if got["blocked"] == nil {
		t.Errorf("no blocked record: %v", entries)
	}
	out, err := exec.Command("journalctl", "--directory="+coll, "-o", "json", "--no-pager").Output()
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]bool{audit.MsgBlocked: true, audit.MsgVerdict: true, audit.MsgVerdictFailed: true, audit.MsgExpired: true,
		audit.MsgEngaged: true, audit.MsgDisengaged: true, audit.MsgDenied: true, audit.MsgLearned: true,
		audit.MsgMirrored: true, audit.MsgAdopted: true}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var rec struct {
			MessageID string `json:"MESSAGE_ID"`
		}
		if json.Unmarshal([]byte(l), &rec) != nil || !ours[rec.MessageID] {
			t.Errorf("a record not clearance's left the host: %s", l)
		}
	}
	// There were others to leave behind: journald's own, the hub's
	// plain log lines.
	if src := run.Journal(t, "-o", "json"); strings.Count(src, "\n") <= strings.Count(string(out), "\n") {
		t.Errorf("the source journal holds nothing but what was shipped:\n%s", src)
	}
}
