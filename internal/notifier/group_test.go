// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// envScanChild makes the test binary scan the glob in it as another
// user (TestMain) and print what it found.
const envScanChild = "CLEARANCE_NOTIFIER_SCAN_CHILD"

// scanResult is what the child prints.
type scanResult struct {
	Sockets  []string
	Warnings []string
	Denied   string // dialling the hidden socket anyway
}

// scanChild scans twice (the second scan follows a change in a watched
// directory) and reports the sockets found and every warning logged.
func scanChild() int {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	w, err := newWatcher([]string{os.Getenv(envScanChild)}, log)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer w.Close()
	var res scanResult
	w.Scan()
	res.Sockets = w.Scan()
	if c, err := net.Dial("unix", os.Getenv("CLEARANCE_NOTIFIER_DENIED")); err == nil {
		c.Close()
	} else {
		res.Denied = fmt.Sprint(denied(err))
	}
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if l != "" {
			res.Warnings = append(res.Warnings, l)
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// TestWatcherSkipsOtherGroupsHubs: with the default glob of the system
// hubs (/run/clearance/*/hub.sock, here under a temporary directory), a
// user finds the hubs of a group they are a member of, and skips the
// others without a warning and without scanning again and again: a
// directory 0750 of another group (the socket cannot even be seen) and a
// socket 0660 of another group in an open directory (connect gets
// EACCES). Run as a real second uid, so the kernel decides.
func TestWatcherSkipsOtherGroupsHubs(t *testing.T) {
	testutil.RequireRoot(t)
	const uid, member, other = 61241, 61242, 61243
	base, err := os.MkdirTemp("", "cg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "notifier.test")
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sys := filepath.Join(base, "clearance")
	hub := func(id string, dirMode os.FileMode, gid int) string {
		d := filepath.Join(sys, id)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d, "hub.sock")
		ln, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		for f, m := range map[string]os.FileMode{d: dirMode, p: 0o660} {
			if err := os.Chown(f, 0, gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(f, m); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	mine := hub("aaaaaaaaaaaa", 0o750, member)
	hub("bbbbbbbbbbbb", 0o750, other)
	open := hub("cccccccccccc", 0o755, other)
	os.Chmod(sys, 0o755)

	cmd := exec.Command(bin)
	cmd.Env = []string{envScanChild + "=" + filepath.Join(sys, "*", "hub.sock"), "CLEARANCE_NOTIFIER_DENIED=" + open}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{member}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var got scanResult
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	if diff := cmp.Diff(scanResult{Sockets: []string{mine}, Denied: "true"}, got); diff != "" {
		t.Errorf("a member of group %d scanning (-want +got):\n%s", member, diff)
	}
}
