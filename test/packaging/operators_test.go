// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package packaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// The operator group test's throwaway accounts, created only in the
// namespace's overlay of /etc.
const (
	memberName = "clrmember"
	memberUID  = 61251
	otherName  = "clrother"
	otherUID   = 61252
	opCtrID    = "0fe1a2b3c4d5"
	opDest     = "10.254.78.2"
)

// TestOperatorGroup runs the system instances of the hub (a rootful
// container's hub when root has no user manager) from the packaged units,
// with the packaged verdict service, under a real systemd manager in a
// private mount namespace: the operator group comes from the packaged
// sysusers.d file (systemd-sysusers on an overlay of /etc, as the
// postinst runs it), and a member and a non-member exist only in that
// overlay. The member finds the hub with clearancectl's default globs,
// subscribes, sees a real blocked packet and allows it: the element is in
// the kernel and the hub's audit record carries the member's uid and
// name. The non-member cannot connect (EACCES) and clearancectl says once
// that they are not a member. When the hub's directory is deleted, the
// hub binds its sockets again with the same modes and group.
func TestOperatorGroup(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "unshare", "nsenter", "ip", "nft", "systemd-sysusers", "/usr/lib/systemd/systemd", "systemctl",
		"/lib/systemd/systemd-journald", "journalctl")
	bin := binaries(t, "clearance-verdict", "clearance-hub", "clearancectl", "clearance-notifier")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, exe, filepath.Join(bin, "pkgtest-client"), 0o755)
	runInner(t, "TestInnerOperatorGroup", "CLEARANCE_PKGTEST_BIN="+bin)
}

// TestInnerOperatorGroup is TestOperatorGroup's body, run only in the
// private mount namespace.
func TestInnerOperatorGroup(t *testing.T) {
	if !inner(t.Name()) {
		return
	}
	ns := newPrivateRun(t)
	bin := "/run/pkgtest-bin"
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"clearance-verdict", "clearance-hub", "clearancectl", "clearance-notifier", "pkgtest-client"} {
		copyFile(t, filepath.Join(os.Getenv("CLEARANCE_PKGTEST_BIN"), f), filepath.Join(bin, f), 0o755)
	}
	var units []string
	for _, u := range []string{"clearance-verdict.socket", "clearance-verdict.service",
		"clearance-hub@.socket", "clearance-hub-ingest@.socket", "clearance-hub@.service"} {
		dst := filepath.Join(bin, u)
		copyFile(t, filepath.Join(repoRoot, "units", "system", u), dst, 0o644)
		units = append(units, dst)
	}
	sysusers := filepath.Join(bin, "clearance.conf")
	copyFile(t, filepath.Join(repoRoot, "packaging", "sysusers.d", "clearance.conf"), sysusers, 0o644)
	mustMount(t, "tmpfs", "/tmp", "tmpfs", "mode=1777")
	mustMount(t, "tmpfs", "/var/tmp", "tmpfs", "mode=1777")
	ns.overlay(t, "/etc")
	if err := os.MkdirAll("/etc/clearance/policy.d", 0o755); err != nil {
		t.Fatal(err)
	}

	// The group as the postinst creates it, and the two accounts.
	if out, err := exec.Command("systemd-sysusers", sysusers).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	grp, err := user.LookupGroup(operatorGroup)
	if err != nil {
		t.Fatalf("sysusers.d/clearance.conf created no group: %v", err)
	}
	gid, _ := strconv.Atoi(grp.Gid)
	addAccounts(t, gid)
	t.Logf("group %s gid %d; member %s uid %d; non-member %s uid %d", operatorGroup, gid, memberName, memberUID, otherName, otherUID)
	ns.startJournald(t)

	// The rootful "container": a network namespace of root's with a veth
	// whose far end answers nothing (blocked packets leave through it),
	// and its runtime record.
	holder := exec.Command("unshare", "--net", "sleep", "infinity")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	nsFile := waitForeignNetns(t, holder.Process.Pid)
	defer nsFile.Close()
	pid := strconv.Itoa(holder.Process.Pid)
	for _, args := range [][]string{
		{"link", "add", "v0", "type", "veth", "peer", "name", "v1"},
		{"addr", "add", "10.254.78.1/24", "dev", "v0"},
		{"link", "set", "v0", "up"}, {"link", "set", "v1", "up"}, {"link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("nsenter", append([]string{"-t", pid, "-n", "ip"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	id, err := netns.Identify(nsFile)
	if err != nil {
		t.Fatal(err)
	}
	// Named as rootful podman names it (/run/netns/netns-…, in the OCI
	// bundle): the system hub, holding no capability, cannot open
	// /proc/<pid>/ns/net of a process that holds some.
	nsPath := "/run/netns/pkgop"
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(nsPath, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("/proc/"+pid+"/ns/net", nsPath, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(nsPath, syscall.MNT_DETACH) })
	if err := os.MkdirAll("/run/clearance", 0o755); err != nil {
		t.Fatal(err)
	}
	rec := record.Record{ID: opCtrID, ID12: opCtrID, Name: "pkgop", PID: holder.Process.Pid, NetnsPath: nsPath,
		NetnsInode: id.Ino, NetnsDev: id.Dev, OwnerUID: 0, Policy: "pkgop",
		Dossier: map[string]string{}, CreatedUsec: time.Now().UnixMicro()}
	if err := record.Write(filepath.Dir(record.Locate("/run", 0, opCtrID)), rec); err != nil {
		t.Fatal(err)
	}

	// The packaged units under the manager; the ruleset engaged as the
	// hook engages it, then the hub's sockets.
	installUnits(t, units, "/run/systemd/user", bin)
	// The one difference a root user manager makes: its notification
	// socket is /run/user/0/systemd/notify, under what ProtectHome=
	// hides (a system manager's is /run/systemd/notify). Bring it back.
	if err := os.MkdirAll("/run/systemd/user/clearance-hub@.service.d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/run/systemd/user/clearance-hub@.service.d/usermanager.conf",
		[]byte("[Service]\nBindReadOnlyPaths=/run/user/0/systemd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := ns.startUserManager(t)
	m.systemctl(t, "start", "clearance-verdict.socket")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	vc, err := verdictclient.Dial(ctx, "/run/clearance/verdict.sock")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = vc.Engage(ctx, opCtrID, nsFile)
	vc.Close()
	if err != nil {
		t.Fatalf("engage: %v", err)
	}
	hubUnit := "clearance-hub@" + opCtrID
	m.systemctl(t, "start", hubUnit+".socket")
	t.Cleanup(func() { m.Command("stop", hubUnit+".socket", hubUnit+".service").Run() })
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := m.Command("status", "--all", hubUnit+".socket", "clearance-hub-ingest@"+opCtrID+".socket", hubUnit+".service").CombinedOutput()
			b, _ := os.ReadFile("/run/managerlab-manager.log")
			var lines []string
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "hub@") && (strings.Contains(strings.ToLower(l), "namespac") || strings.Contains(l, "ailed")) {
					lines = append(lines, l)
				}
			}
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			t.Logf("units:\n%s\nmanager:\n%s\njournal:\n%s", out, strings.Join(lines, "\n"),
				func() string {
					var keep []string
					for _, l := range strings.Split(ns.journal(t, "-o", "json"), "\n") {
						var e map[string]any
						if json.Unmarshal([]byte(l), &e) != nil {
							continue
						}
						msg := fmt.Sprint(e["MESSAGE"])
						if strings.Contains(msg, opCtrID) || strings.Contains(fmt.Sprint(e["SYSLOG_IDENTIFIER"]), "clearance") {
							keep = append(keep, fmt.Sprintf("%v: %s %v", e["SYSLOG_IDENTIFIER"], msg, e["CLEARANCE_ERR"]))
						}
					}
					if len(keep) > 30 {
						keep = keep[len(keep)-30:]
					}
					return strings.Join(keep, "\n")
				}())
		}
	})
	dir := filepath.Join("/run/clearance", opCtrID)
	hubSock := filepath.Join(dir, "hub.sock")
	wantAccess := func(when string) {
		t.Helper()
		for p, want := range map[string][2]uint32{dir: {0o750, uint32(gid)}, hubSock: {0o660, uint32(gid)},
			filepath.Join(dir, "ingest.sock"): {0o600, ^uint32(0)}} {
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil {
				t.Errorf("%s: %s: %v", when, p, err)
				continue
			}
			if st.Mode&0o777 != want[0] || st.Uid != 0 || (want[1] != ^uint32(0) && st.Gid != want[1]) {
				t.Errorf("%s: %s is %04o %d:%d, want %04o root:%d", when, p, st.Mode&0o777, st.Uid, st.Gid, want[0], int32(want[1]))
			}
		}
	}
	testutil.Eventually(t, 10*time.Second, "the ingest socket", func() bool {
		_, err := os.Stat(filepath.Join(dir, "ingest.sock"))
		return err == nil
	})
	wantAccess("socket units started")

	// The member: clearancectl's default globs find the hub (connecting
	// activates it) once its watch is up.
	member := asUser(memberUID, gid)
	var status []map[string]any
	var last string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the member's last clearancectl status: %s", last)
		}
	})
	testutil.Eventually(t, 30*time.Second, "the member's clearancectl status shows the hub engaged", func() bool {
		out, err := member(filepath.Join(bin, "clearancectl"), "status", "--json").CombinedOutput()
		last = fmt.Sprintf("%v %s", err, out)
		status = nil
		json.Unmarshal(out, &status)
		return len(status) == 1 && status[0]["socket"] == hubSock && status[0]["ruleset"] == "engaged"
	})

	// A blocked packet from the container: the member subscribes,
	// decides, and sees the outcome.
	if out, err := exec.Command("nsenter", "-t", pid, "-n", "timeout", "5", "bash", "-c",
		"exec 3<>/dev/tcp/"+opDest+"/8443").CombinedOutput(); err == nil {
		t.Fatalf("the container's connect was not refused: %s", out)
	}
	cl := member(filepath.Join(bin, "pkgtest-client"))
	cl.Env = append(cl.Env, envClient+"=operator", "CLRV_HUB="+hubSock, "CLRV_DEST="+opDest)
	out, err := cl.CombinedOutput()
	t.Logf("the member's client:\n%s", out)
	if err != nil || !strings.Contains(string(out), "applied ok=true") {
		t.Fatalf("the member's verdict: %v", err)
	}
	rid := between(string(out), "decided ", "\n")
	if nft, _ := exec.Command("nsenter", "-t", pid, "-n", "nft", "list", "table", "inet", "clearance").CombinedOutput(); !strings.Contains(string(nft), opDest) {
		t.Errorf("the allow is not in the kernel:\n%s", nft)
	}
	var rec0 map[string]string
	testutil.Eventually(t, 10*time.Second, "the hub's audit record of the member's verdict", func() bool {
		for _, l := range strings.Split(ns.journal(t, "-o", "json", "MESSAGE_ID="+audit.MsgVerdict, audit.FieldSide+"="+audit.SideOperator), "\n") {
			var e map[string]string
			if json.Unmarshal([]byte(l), &e) == nil && e[audit.FieldRequestID] == rid {
				rec0 = e
				return true
			}
		}
		return false
	})
	for k, want := range map[string]string{audit.FieldOperatorUID: strconv.Itoa(memberUID), audit.FieldOperator: memberName,
		audit.FieldChannel: "pkgtest", audit.FieldAction: "allow", audit.FieldDest: opDest, "_UID": "0"} {
		if rec0[k] != want {
			t.Errorf("audit record %s=%q, want %q", k, rec0[k], want)
		}
	}

	// The non-member: the socket cannot be reached, and clearancectl
	// skips it, saying why once.
	other := asUser(otherUID, otherUID)
	dl := other(filepath.Join(bin, "pkgtest-client"))
	dl.Env = append(dl.Env, envClient+"=dial", "CLRV_HUB="+hubSock)
	if out, _ := dl.CombinedOutput(); strings.TrimSpace(string(out)) != "EACCES" {
		t.Errorf("the non-member's connect: %q, want EACCES", out)
	}
	st := other(filepath.Join(bin, "clearancectl"), "status")
	var so, se strings.Builder
	st.Stdout, st.Stderr = &so, &se
	err = st.Run()
	t.Logf("the non-member's clearancectl status: %v\n%s%s", err, so.String(), se.String())
	if err != nil || !strings.Contains(so.String(), "no hubs found") ||
		strings.Count(se.String(), "not a member of group "+operatorGroup) != 1 {
		t.Errorf("the non-member's status: %v", err)
	}

	// The notifier with its default configuration, headless (no session
	// bus): the member's follows the hub, the non-member's does not see
	// it and has nothing to say about it.
	if log := notifierLog(t, member(filepath.Join(bin, "clearance-notifier")), "subscribed to hub"); !strings.Contains(log, "hub="+hubSock) {
		t.Errorf("the member's notifier did not subscribe to %s:\n%s", hubSock, log)
	}
	if log := notifierLog(t, other(filepath.Join(bin, "clearance-notifier")), ""); !strings.Contains(log, "notifier running") ||
		strings.Contains(log, opCtrID) || strings.Contains(log, "level=WARN msg=\"watch") {
		t.Errorf("the non-member's notifier saw the hub, or did not run:\n%s", log)
	} else {
		t.Logf("the non-member's notifier:\n%s", log)
	}

	// The directory deleted under the running hub: it comes back, as the
	// socket units made it.
	mainPID := m.show(t, hubUnit+".service", "MainPID")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the hub binds its socket again", func() bool {
		return testutil.Accepts(hubSock, filepath.Join(dir, "ingest.sock"))
	})
	wantAccess("after the directory was deleted")
	if out, err := member(filepath.Join(bin, "clearancectl"), "status", "--json").Output(); err != nil || !strings.Contains(string(out), `"answers": true`) {
		t.Errorf("the member after the rebind: %v %s", err, out)
	}
	if now := m.show(t, hubUnit+".service", "MainPID"); now != mainPID {
		t.Errorf("the hub restarted (%s → %s) instead of binding again", mainPID, now)
	}
}

// notifierLog runs the notifier until its log shows want (or for 2 s
// when want is ""), stops it with SIGTERM and returns its log.
func notifierLog(t *testing.T, cmd *exec.Cmd, want string) string {
	t.Helper()
	var log testutil.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	if want != "" {
		deadline = time.Now().Add(20 * time.Second)
	}
	for time.Now().Before(deadline) && (want == "" || !strings.Contains(log.String(), want)) {
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("notifier: %v", err)
	}
	return log.String()
}

// addAccounts adds the member (in group gid) and the non-member to the
// overlay's /etc/passwd and /etc/group.
func addAccounts(t *testing.T, gid int) {
	t.Helper()
	appendTo := func(path, text string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(text); err != nil {
			t.Fatal(err)
		}
	}
	appendTo("/etc/passwd", fmt.Sprintf("%s:x:%d:%d::/nonexistent:/usr/sbin/nologin\n%s:x:%d:%d::/nonexistent:/usr/sbin/nologin\n",
		memberName, memberUID, memberUID, otherName, otherUID, otherUID))
	b, err := os.ReadFile("/etc/group")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.HasPrefix(l, operatorGroup+":") {
			l = strings.TrimSuffix(l, ":") + ":" + memberName
			if strings.Count(l, ":") > 3 { // the group had no members field
				l = strings.Replace(l, "::"+memberName, ":"+memberName, 1)
			}
		}
		lines = append(lines, l)
	}
	lines = append(lines, fmt.Sprintf("%s:x:%d:", memberName, memberUID), fmt.Sprintf("%s:x:%d:", otherName, otherUID))
	if err := os.WriteFile("/etc/group", []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if g, err := user.LookupGroup(operatorGroup); err != nil {
		t.Fatal(err)
	} else if u, err := user.Lookup(memberName); err != nil {
		t.Fatal(err)
	} else if gs, err := u.GroupIds(); err != nil || !contains(gs, g.Gid) {
		t.Fatalf("%s is not in group %s: %v %v", memberName, operatorGroup, gs, err)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// asUser returns a command maker running as uid with the given group
// (and no other), in a clean environment.
func asUser(uid, gid int) func(name string, args ...string) *exec.Cmd {
	return func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/", "XDG_RUNTIME_DIR=/run/user/" + strconv.Itoa(uid)}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{uint32(gid)}}}
		return cmd
	}
}

func between(s, from, to string) string {
	_, after, ok := strings.Cut(s, from)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(after, to)
	return strings.TrimSpace(v)
}

// runOperator is the member's client: it subscribes to $CLRV_HUB, finds
// the request for $CLRV_DEST (pending already, or arriving), allows it
// with Decide naming channel "pkgtest", and waits for the outcome.
func runOperator() int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path, dest := os.Getenv("CLRV_HUB"), os.Getenv("CLRV_DEST")
	stream, err := varlinkapi.Dial(ctx, path)
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	defer stream.Close()
	recv, err := orgterokclearance1.Subscribe().Send(ctx, stream, varlink.More)
	if err != nil {
		fmt.Println("subscribe:", err)
		return 1
	}
	fmt.Println("subscribed")
	calls, err := varlinkapi.Dial(ctx, path)
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	defer calls.Close()
	pending, err := orgterokclearancehub1.Pending().Call(ctx, calls)
	if err != nil {
		fmt.Println("pending:", err)
		return 1
	}
	var rid string
	for _, p := range pending {
		if p.Dest == dest {
			rid = p.Request_id
		}
	}
	for rid == "" {
		ev, _, err := recv(ctx)
		if err != nil {
			fmt.Println("receive:", err)
			return 1
		}
		if ev.Type == "connection_blocked" && ev.Dest == dest {
			rid = ev.Request_id
		}
	}
	ch := "pkgtest"
	if _, _, err := orgterokclearancehub1.Decide().Call(ctx, calls, rid, "allow", "once", 0, nil, &ch); err != nil {
		fmt.Println("decide:", err)
		return 1
	}
	fmt.Printf("decided %s\n", rid)
	for {
		ev, _, err := recv(ctx)
		if err != nil {
			fmt.Println("receive:", err)
			return 1
		}
		if ev.Type == "verdict_applied" && ev.Request_id == rid {
			fmt.Printf("applied ok=%v by %q\n", ev.Ok, ev.Reason)
			return 0
		}
	}
}

// runDial connects to $CLRV_HUB and prints EACCES, "connected" or the
// error.
func runDial() int {
	c, err := net.Dial("unix", os.Getenv("CLRV_HUB"))
	switch {
	case err == nil:
		c.Close()
		fmt.Println("connected")
	case errors.Is(err, syscall.EACCES):
		fmt.Println("EACCES")
	default:
		fmt.Println(err)
	}
	return 0
}
