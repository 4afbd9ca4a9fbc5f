// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/policy"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
	"github.com/terok-ai/clearance/internal/verdict"
)

// TestIntegrationWritePolicy writes policies through the real service, as
// root and as another uid (a re-executed client with that uid's
// credentials), and starts a container from what root wrote.
func TestIntegrationWritePolicy(t *testing.T) {
	ctr := startContainer(t)
	const nobody = 65534
	dir, err := os.MkdirTemp("", "clrverdict-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	subuid := filepath.Join(dir, "subuid")
	// 70000..70009 are uid 4242's subordinate uids.
	os.WriteFile(subuid, []byte("4242:70000:10\n"), 0o644)
	var records testutil.Buffer
	e := startServiceWith(t, dir, func(c *verdict.Config) {
		c.SubUIDFile = subuid
		c.PolicyPath = []string{}
		c.Log = slog.New(slog.NewJSONHandler(&records, nil))
	})
	os.Chmod(e.policyDir, 0o755)
	exe := filepath.Join(dir, "client.test")
	copyFile(t, mustExecutable(t), exe, 0o755)
	ctx := t.Context()

	// Root writes the administrator's policy, and a container starts
	// with it.
	c := e.dial(t)
	doc := "# proposed by clearancectl\nallow:\n  - " + peerAddr.String() + " # seen 2×\n"
	path, replaced, err := c.WritePolicy(ctx, "proj", []byte(doc), false)
	if err != nil || replaced || path != filepath.Join(e.policyDir, "proj.yaml") {
		t.Fatalf("WritePolicy as root = %q, %v, %v", path, replaced, err)
	}
	if b, _ := os.ReadFile(path); string(b) != doc {
		t.Errorf("file holds %q, want the document as sent", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode())
	}
	rec := ctr.rec("wrctr0000001")
	rec.Policy = "proj"
	writeRecord(t, e.root, 0, rec)
	if _, _, err := c.Engage(ctx, rec.ID12, nil); err != nil {
		t.Fatalf("engage from the written policy: %v", err)
	}
	if findElement(t, c, rec.ID12, peerAddr.String()) == nil {
		t.Error("the written policy's address is not in the container's allow set")
	}

	// Replacing needs replace.
	_, _, err = c.WritePolicy(ctx, "proj", []byte("allow: []\n"), false)
	var exists *fw1.PolicyExists
	if !errors.As(err, &exists) || exists.Path != path {
		t.Errorf("second write without replace: %v, want PolicyExists at %s", err, path)
	}
	if _, replaced, err := c.WritePolicy(ctx, "proj", []byte("allow: []\n"), true); err != nil || !replaced {
		t.Errorf("write with replace: %v, %v", replaced, err)
	}
	var invalid *fw1.InvalidPolicy
	if _, _, err := c.WritePolicy(ctx, "proj", []byte("allow: ['*.com']\n"), true); !errors.As(err, &invalid) ||
		!strings.Contains(invalid.Reason, "proj.yaml:1") {
		t.Errorf("a policy that does not parse: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "allow: []\n" {
		t.Errorf("a refused write changed the file: %q", b)
	}

	// Another uid writes its own layer only.
	run := func(t *testing.T, uid int, name, content string, replace bool) string {
		t.Helper()
		cmd := exec.Command(exe)
		cmd.Env = []string{clientEnv + "=WritePolicy", "CLRV_SOCK=" + e.sock, "CLRV_POLICY=" + name, "CLRV_CONTENT=" + content}
		if replace {
			cmd.Env = append(cmd.Env, "CLRV_REPLACE=1")
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	userDir := filepath.Join(e.policyDir, "uid-65534")
	for _, tc := range []struct {
		name, policy, content string
		uid                   int
		replace               bool
		want                  string
	}{
		{"a user's policy goes to the user's directory", "proj", "allow: [pypi.org:443/tcp]\n", nobody, false,
			"ok " + filepath.Join(userDir, "proj.yaml")},
		{"the user's own file exists", "proj", "allow: []\n", nobody, false, "PolicyExists"},
		{"and is replaced on request", "proj", "allow: [pypi.org]\n", nobody, true,
			"ok " + filepath.Join(userDir, "proj.yaml")},
		{"a policy that includes itself", "proj", "include: [proj]\n", nobody, true, "InvalidPolicy"},
		{"a user's include of a missing policy", "other", "include: [nothere]\n", nobody, false, "InvalidPolicy"},
		{"a user's include of the system policy", "other", "include: [proj]\n", nobody, false,
			"ok " + filepath.Join(userDir, "other.yaml")},
		{"a name with a slash", "../proj", "allow: []\n", nobody, false, "InvalidParameter"},
		{"YAML that does not parse", "bad", "allow: [\n", nobody, false, "InvalidPolicy"},
		{"a subordinate uid", "proj", "allow: []\n", 70003, false, "PermissionDenied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := run(t, tc.uid, tc.policy, tc.content, tc.replace); got != tc.want {
				t.Errorf("WritePolicy(%s) as uid %d = %q, want %q", tc.policy, tc.uid, got, tc.want)
			}
		})
	}
	if b, _ := os.ReadFile(path); string(b) != "allow: []\n" {
		t.Errorf("another uid's write changed root's file: %q", b)
	}
	st, err := os.Stat(userDir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("user directory: %v %v, want 0700", st, err)
	}
	st, err = os.Stat(filepath.Join(userDir, "proj.yaml"))
	if err != nil || st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("user's file: %v %v, want 0600 owned by root (the service's)", st, err)
	}
	if _, err := os.Stat(filepath.Join(e.policyDir, "uid-70003")); err == nil {
		t.Error("a subordinate uid got a directory")
	}

	// Every write is audited with its own MESSAGE_ID.
	log := records.String()
	if n := strings.Count(log, audit.MsgPolicyWritten); n != 5 {
		t.Errorf("%d policy-written records, want 5 (root twice, the user three times):\n%s", n, log)
	}
	if !strings.Contains(log, `"CLEARANCE_OPERATOR_UID":"65534"`) || !strings.Contains(log, `"CLEARANCE_POLICY":"other"`) {
		t.Errorf("audit lacks the user's write:\n%s", log)
	}

	// Content over the size bound is refused and writes nothing. (A new
	// connection: the service closes one idle for 5 s, as the first may
	// have been while the other uid's calls ran on a loaded machine.)
	c = e.dial(t)
	big := "allow:\n" + strings.Repeat("  - 192.0.2.1 # padding padding padding padding\n", policy.MaxFileSize/40)
	if _, _, err := c.WritePolicy(ctx, "huge", []byte(big), false); !errors.As(err, &invalid) {
		t.Errorf("a policy of %d bytes: %v, want InvalidPolicy", len(big), err)
	}
	if _, err := os.Stat(filepath.Join(e.policyDir, "huge.yaml")); err == nil {
		t.Error("the refused policy was written")
	}

	// A user with MaxUserPolicies policies may replace one, not add one.
	for i := 0; countYAML(t, userDir) < verdict.MaxUserPolicies; i++ {
		os.WriteFile(filepath.Join(userDir, fmt.Sprintf("filler%03d.yaml", i)), []byte("allow: []\n"), 0o600)
	}
	if got := run(t, nobody, "onemore", "allow: []\n", false); got != "PermissionDenied" {
		t.Errorf("a policy beyond the bound: %q, want PermissionDenied", got)
	}
	if _, err := os.Stat(filepath.Join(userDir, "onemore.yaml")); err == nil {
		t.Error("the policy beyond the bound was written")
	}
	if got := run(t, nobody, "proj", "allow: [pypi.org:443/tcp]\n", true); got != "ok "+filepath.Join(userDir, "proj.yaml") {
		t.Errorf("replacing a policy at the bound: %q", got)
	}
}

// countYAML counts the policy files in dir.
func countYAML(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".yaml") {
			n++
		}
	}
	return n
}
