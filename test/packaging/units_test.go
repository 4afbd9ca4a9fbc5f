// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package packaging

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// maxExposure is the highest `systemd-analyze security` exposure the
// verdict service may have (issue 5: 2.5; issue 9, without
// CAP_SYS_PTRACE: 2.0).
const maxExposure = 2.0

// TestUnitsVerify runs `systemd-analyze verify` on every unit under
// units/, with their Exec lines pointing at freshly built binaries, and
// wants no complaint at all.
func TestUnitsVerify(t *testing.T) {
	testutil.RequireTool(t, "systemd-analyze")
	for _, kind := range []string{"system", "user"} {
		t.Run(kind, func(t *testing.T) {
			files := unitFiles(t, kind)
			if kind == "system" && len(files) < 2 {
				t.Fatalf("units/system holds %d units, want the verdict socket and service", len(files))
			}
			if len(files) == 0 {
				t.Fatalf("no units under units/%s", kind)
			}
			bin := binaries(t, referencedBinaries(t, files)...)
			dir := t.TempDir()
			copies := installUnits(t, files, dir, bin)
			args := []string{"verify", "--man=no"}
			if kind == "user" {
				args = append([]string{"--user"}, args...)
			}
			cmd := testutil.SystemdAnalyze(append(args, copies...)...)
			cmd.Dir = dir
			if kind == "user" {
				// systemd-analyze --user needs a runtime directory to
				// resolve %t; give it a private one.
				rt := filepath.Join(dir, "rt")
				os.Mkdir(rt, 0o700)
				cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+rt)
			}
			out, err := cmd.CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Fatalf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			t.Logf("verified %d units: %s", len(copies), strings.Join(baseNames(files), " "))
		})
	}
}

func baseNames(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = filepath.Base(p)
	}
	return out
}

var exposureRe = regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+)`)

// TestVerdictServiceExposure measures the verdict service's sandbox with
// `systemd-analyze security --offline=yes` (systemd ≥ 252) and wants an
// exposure of at most 2.0.
func TestVerdictServiceExposure(t *testing.T) {
	testutil.RequireTool(t, "systemd-analyze")
	unit := filepath.Join(repoRoot, "units", "system", "clearance-verdict.service")
	bin := binaries(t, "clearance-verdict")
	dir := t.TempDir()
	copies := installUnits(t, []string{unit}, dir, bin)
	cmd := testutil.SystemdAnalyze("security", "--offline=yes", "--no-pager", copies[0])
	cmd.Dir = dir
	out, _ := cmd.CombinedOutput() // exits non-zero above its own threshold
	m := exposureRe.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure in systemd-analyze security output:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	var open []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "✗") {
			open = append(open, strings.Join(strings.Fields(l), " "))
		}
	}
	t.Logf("exposure %.1f; remaining items:\n%s", score, strings.Join(open, "\n"))
	if score > maxExposure {
		t.Errorf("clearance-verdict.service exposure %.1f, want ≤ %.1f\n%s", score, maxExposure, out)
	}
}

// maxUserExposure bounds `systemd-analyze security --user --offline=yes`
// of the user units (issue 9, item 12: before it, systemd 252 here
// measured the hub 6.1 and the notifier 8.4; the issue quotes 5.9 and
// 8.2). The analyzer scores every option as if the
// manager could apply it; a user manager cannot apply most namespace and
// capability options (see the units' comments and test/podman
// TestUserUnitsSandbox), which is what keeps the hub this high.
var maxUserExposure = map[string]float64{
	"clearance-hub@.service":     5.9,
	"clearance-notifier.service": 3.0,
	"clearance-relay.service":    3.3,
}

// TestUserUnitsExposure measures the user units' sandboxes offline.
func TestUserUnitsExposure(t *testing.T) {
	testutil.RequireTool(t, "systemd-analyze")
	for unit, limit := range maxUserExposure {
		t.Run(unit, func(t *testing.T) {
			bin := binaries(t, referencedBinaries(t, []string{filepath.Join(repoRoot, "units", "user", unit)})...)
			dir := t.TempDir()
			copies := installUnits(t, []string{filepath.Join(repoRoot, "units", "user", unit)}, dir, bin)
			cmd := testutil.SystemdAnalyze("security", "--user", "--offline=yes", "--no-pager", copies[0])
			cmd.Dir = dir
			rt := filepath.Join(dir, "rt")
			os.Mkdir(rt, 0o700)
			cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+rt)
			out, _ := cmd.CombinedOutput()
			m := exposureRe.FindSubmatch(out)
			if m == nil {
				t.Fatalf("no exposure in systemd-analyze security output:\n%s", out)
			}
			score, _ := strconv.ParseFloat(string(m[1]), 64)
			t.Logf("%s: exposure %.1f", unit, score)
			if score > limit {
				t.Errorf("%s exposure %.1f, want ≤ %.1f\n%s", unit, score, limit, out)
			}
		})
	}
}

// TestVerdictSocketUnit checks the promises of clearance-verdict.socket
// that callers and docs rely on.
func TestVerdictSocketUnit(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "units", "system", "clearance-verdict.socket"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok && !strings.HasPrefix(l, "#") {
			got[k] = v
		}
	}
	for k, want := range map[string]string{
		"ListenStream": "/run/clearance/verdict.sock",
		// The service decides about each connection itself, before any
		// process is started for it (issue 9, item 2).
		"Accept":        "no",
		"SocketMode":    "0666",
		"DirectoryMode": "0755",
		// A connect loop must never fail the socket (issue 9, item 2).
		"TriggerLimitIntervalSec": "0",
		"WantedBy":                "sockets.target",
	} {
		if got[k] != want {
			t.Errorf("%s=%q, want %q", k, got[k], want)
		}
	}
}

// TestVerdictUnitsUnderManager runs the packaged verdict socket and
// service, unchanged but for the binary's path, under a real systemd
// manager in a private mount namespace, and drives them as an unprivileged
// user whose "container" lives in a user namespace of its own: Engage,
// Watch (the fd comes back), Apply once and always (written to the
// policy directory, the one writable path), List, Disengage. That proves
// the hardening (capability bounding set, ProtectSystem=strict,
// ProtectHome=tmpfs with /run/user bound back, ProtectProc=invisible,
// the system call filter, RestrictNamespaces=net) leaves the service
// everything it needs.
//
// The manager is `systemd --user` run as root: a system manager cannot be
// started without booting one (docs/test-machine.md §M9.1). A root user manager
// applies the same execution sandbox (mount namespace, capabilities,
// seccomp, no_new_privs); what it cannot apply is the cgroup BPF part
// (IPAddressDeny=, DevicePolicy=), which it skips with a warning.
func TestVerdictUnitsUnderManager(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "unshare", "setpriv", "/usr/lib/systemd/systemd", "systemctl", "/lib/systemd/systemd-journald")
	bin := binaries(t, "clearance-verdict")
	// The client runs as another uid: give it a copy of this test binary.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	client := filepath.Join(bin, "pkgtest-client")
	copyFile(t, exe, client, 0o755)
	runInner(t, "TestInnerVerdictUnits", "CLEARANCE_PKGTEST_BIN="+bin)
}

const (
	// testUID is the unprivileged user of the manager test: not 65534,
	// because the service accepts a namespace owner reported as the
	// overflow uid only from root. It needs no passwd entry.
	testUID      = 61234
	managerCtrID = "pkgunit00001"
	capMask      = 1<<unix.CAP_DAC_READ_SEARCH | 1<<unix.CAP_NET_ADMIN | 1<<unix.CAP_SYS_ADMIN
)

// TestInnerVerdictUnits is TestVerdictUnitsUnderManager's body, run only
// in the private mount namespace.
func TestInnerVerdictUnits(t *testing.T) {
	if !inner(t.Name()) {
		return
	}
	ns := newPrivateRun(t)
	// Binaries onto the namespace's /run, then a tmpfs /tmp too: the
	// service's PrivateTmp= directories must not land on the real /tmp,
	// and its own /tmp would hide a binary there anyway.
	bin := "/run/pkgtest-bin"
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"clearance-verdict", "pkgtest-client"} {
		copyFile(t, filepath.Join(os.Getenv("CLEARANCE_PKGTEST_BIN"), f), filepath.Join(bin, f), 0o755)
	}
	// The units too, before /tmp is covered: the checkout may live there.
	var units []string
	for _, u := range []string{"clearance-verdict.socket", "clearance-verdict.service"} {
		dst := filepath.Join(bin, u)
		copyFile(t, filepath.Join(repoRoot, "units", "system", u), dst, 0o644)
		units = append(units, dst)
	}
	mustMount(t, "tmpfs", "/tmp", "tmpfs", "mode=1777")
	// PrivateTmp= also makes a directory under /var/tmp: keep it off the
	// real disk too.
	mustMount(t, "tmpfs", "/var/tmp", "tmpfs", "mode=1777")
	// /etc through an overlay, so the policy directory can exist without
	// touching the real /etc.
	ns.overlay(t, "/etc")
	if err := os.MkdirAll("/etc/clearance/policy.d", 0o755); err != nil {
		t.Fatal(err)
	}
	ns.startJournald(t)

	// The unprivileged user's "container": a network namespace owned by a
	// user namespace that uid 61234 owns, and its runtime record in
	// /run/user/61234 (0700, so reading it needs CAP_DAC_READ_SEARCH).
	holder := exec.Command("setpriv", "--reuid=61234", "--regid=61234", "--clear-groups",
		"unshare", "--user", "--map-root-user", "--net", "sleep", "infinity")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	nsFile := waitForeignNetns(t, holder.Process.Pid)
	defer nsFile.Close()
	id, err := netns.Identify(nsFile)
	if err != nil {
		t.Fatal(err)
	}
	userRun := "/run/user/" + strconv.Itoa(testUID)
	if err := os.MkdirAll(userRun, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(userRun, testUID, testUID)
	rec := record.Record{ID: managerCtrID, ID12: managerCtrID, Name: "pkgunit", PID: holder.Process.Pid,
		NetnsInode: id.Ino, NetnsDev: id.Dev, OwnerUID: testUID, Policy: "pkgunit",
		Dossier: map[string]string{}, CreatedUsec: time.Now().UnixMicro()}
	recDir := filepath.Dir(record.Locate("/run", testUID, managerCtrID))
	if err := record.Write(recDir, rec); err != nil {
		t.Fatal(err)
	}
	for p := recDir; p != userRun; p = filepath.Dir(p) {
		os.Chown(p, testUID, testUID)
	}
	os.Chown(filepath.Join(recDir, record.FileName), testUID, testUID)

	// The packaged units, as the user manager's own.
	installUnits(t, units, "/run/systemd/user", bin)
	probe := probeUnit(t, units[1])
	if err := os.WriteFile("/run/systemd/user/clearance-probe.service", []byte(probe), 0o644); err != nil {
		t.Fatal(err)
	}
	m := ns.startUserManager(t)
	m.systemctl(t, "start", "clearance-verdict.socket")
	st, err := os.Stat("/run/clearance/verdict.sock")
	if err != nil || st.Mode()&0o777 != 0o666 {
		t.Fatalf("verdict.sock: %v %v", st, err)
	}

	// The sandbox really is applied: the same [Service] section running a
	// shell that reports its own credentials.
	m.systemctl(t, "start", "clearance-probe.service")
	status, err := os.ReadFile("/run/probe.out")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("CapBnd:\t%016x", capMask),
		"NoNewPrivs:\t1",
		"Seccomp:\t2",
	} {
		if !strings.Contains(string(status), want) {
			t.Errorf("probe status lacks %q:\n%s", want, status)
		}
	}

	// The calls, as the unprivileged user, with the namespace it opened
	// itself (/proc/<pid>/ns/net of its own process).
	cmd := exec.Command(filepath.Join(bin, "pkgtest-client"))
	cmd.Env = []string{envClient + "=scenario", "CLRV_SOCK=/run/clearance/verdict.sock", "CLRV_CONTAINER=" + managerCtrID,
		"CLRV_NSPID=" + strconv.Itoa(holder.Process.Pid)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testUID, Gid: testUID}}
	out, err := cmd.CombinedOutput()
	t.Logf("client as uid %d:\n%s", testUID, out)
	if err != nil {
		t.Errorf("client: %v", err)
		t.Logf("journal:\n%s", ns.journal(t, "-o", "cat", "SYSLOG_IDENTIFIER=clearance-verdict"))
	}
	for _, want := range []string{"engage ok", "watch ok", "apply once ok", "apply always ok", "list ok", "disengage ok"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("client output lacks %q", want)
		}
	}
	polFile := fmt.Sprintf("/etc/clearance/policy.d/uid-%d/pkgunit.yaml", testUID)
	pol, err := os.ReadFile(polFile)
	if err != nil || !strings.Contains(string(pol), "10.254.77.3") {
		t.Errorf("always verdict not in the user's policy: %q %v", pol, err)
	}
	for p, want := range map[string]os.FileMode{polFile: 0o600, filepath.Dir(polFile): 0o700} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, st.Mode().Perm(), err, want)
		}
	}
	if n := m.show(t, "clearance-verdict.service", "NRestarts"); n != "0" {
		t.Errorf("the service restarted %s times", n)
	}
}

// probeUnit is the verdict service's unit with ExecStart replaced by a
// shell printing its /proc status.
func probeUnit(t *testing.T, unit string) string {
	t.Helper()
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "ExecStart="):
			l = "ExecStart=/bin/sh -c 'cat /proc/self/status'"
		case strings.HasPrefix(l, "Type="):
			l = "Type=oneshot"
		case strings.HasPrefix(l, "StandardOutput="):
			l = "StandardOutput=truncate:/run/probe.out"
		case strings.HasPrefix(l, "Requires="), strings.HasPrefix(l, "After="):
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// waitForeignNetns opens the network namespace of pid once it differs
// from ours.
func waitForeignNetns(t *testing.T, pid int) *os.File {
	t.Helper()
	self, _ := os.Readlink("/proc/self/ns/net")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && l != self {
			f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
			if err == nil {
				return f
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d never entered its own network namespace", pid)
	return nil
}

// envClient selects the client mode of the test binary (TestMain).
const envClient = "CLEARANCE_PKGTEST_CLIENT"

// runClient is the unprivileged client: it calls the verdict service on
// $CLRV_SOCK for container $CLRV_CONTAINER, passing the network namespace
// of $CLRV_NSPID that it opens itself (the service finds the runtime
// record by the caller's uid and checks it against that namespace), and
// prints one line per step. A call without the namespace is refused.
func runClient(mode string) int {
	switch mode {
	case "operator":
		return runOperator()
	case "dial":
		return runDial()
	case "scenario":
	default:
		fmt.Println("unknown client mode", mode)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sock, ctr := os.Getenv("CLRV_SOCK"), os.Getenv("CLRV_CONTAINER")
	ns, err := os.Open("/proc/" + os.Getenv("CLRV_NSPID") + "/ns/net")
	if err != nil {
		fmt.Println("open the container's namespace:", err)
		return 1
	}
	defer ns.Close()
	{
		c, err := verdictclient.Dial(ctx, sock)
		if err != nil {
			fmt.Println("dial:", err)
			return 1
		}
		_, _, err = c.Engage(ctx, ctr, nil)
		c.Close()
		if !strings.Contains(fmt.Sprint(err), "no network namespace passed") {
			fmt.Println("engage without a namespace: want refused, got", err)
			return 1
		}
		fmt.Println("engage without a namespace refused ok")
	}
	step := func(name string, f func(c *verdictclient.Client) (string, error)) bool {
		c, err := verdictclient.Dial(ctx, sock)
		if err != nil {
			fmt.Printf("%s: dial: %v\n", name, err)
			return false
		}
		defer c.Close()
		detail, err := f(c)
		if err != nil {
			fmt.Printf("%s: %v\n", name, err)
			return false
		}
		fmt.Printf("%s ok %s\n", name, detail)
		return true
	}
	ok := step("engage", func(c *verdictclient.Client) (string, error) {
		table, now, err := c.Engage(ctx, ctr, ns)
		return fmt.Sprintf("table=%s now=%v", table, now), err
	}) && step("watch", func(c *verdictclient.Client) (string, error) {
		f, group, err := c.Watch(ctx, ctr, ns)
		if err != nil {
			return "", err
		}
		defer f.Close()
		dom, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil || dom != unix.AF_NETLINK {
			return "", fmt.Errorf("passed fd is not a netlink socket (domain %d, %v)", dom, err)
		}
		return fmt.Sprintf("group=%d", group), nil
	}) && step("apply once", func(c *verdictclient.Client) (string, error) {
		return applied(c.Apply(ctx, verdictclient.ApplyRequest{Container: ctr, IP: "10.254.77.1", Action: "allow", Scope: "once"}, ns))
	}) && step("apply always", func(c *verdictclient.Client) (string, error) {
		return applied(c.Apply(ctx, verdictclient.ApplyRequest{Container: ctr, IP: "10.254.77.3", Action: "allow", Scope: "always"}, ns))
	}) && step("list", func(c *verdictclient.Client) (string, error) {
		els, err := c.List(ctx, ctr, ns)
		if err != nil {
			return "", err
		}
		b, _ := json.Marshal(els)
		for _, want := range []string{"10.254.77.1", "10.254.77.3"} {
			if !strings.Contains(string(b), want) {
				return "", fmt.Errorf("%s not listed: %s", want, b)
			}
		}
		return string(b), nil
	}) && step("disengage", func(c *verdictclient.Client) (string, error) {
		return "", c.Disengage(ctx, ctr, ns)
	})
	if !ok {
		return 1
	}
	return 0
}

func applied(r verdictclient.ApplyResult, err error) (string, error) {
	if err != nil {
		return "", err
	}
	if !r.OK {
		return "", fmt.Errorf("not applied: %s", r.Stderr)
	}
	return "expires=" + r.Expires.Format(time.RFC3339), nil
}
