// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// installedFiles are paths the package must put on the machine.
var installedFiles = []string{
	"/usr/bin/clearance-hub",
	"/usr/bin/clearance-verdict",
	"/usr/bin/clearance-notifier",
	"/usr/bin/clearancectl",
	"/usr/lib/systemd/system/clearance-verdict.socket",
	"/usr/lib/systemd/system/clearance-verdict.service",
	"/usr/lib/systemd/user/clearance-notifier.service",
	"/usr/lib/systemd/catalog/clearance.catalog",
	"/usr/lib/sysusers.d/clearance.conf",
	"/usr/share/man/man1/clearancectl.1.gz",
	"/usr/share/man/man1/clearance-notifier.1.gz",
	"/usr/share/bash-completion/completions/clearancectl",
	"/usr/share/doc/clearance/copyright",
	"/usr/share/doc/clearance/changelog.Debian.gz",
	"/etc/clearance/clearance.yaml",
	"/etc/clearance/policy.d",
	"/usr/share/clearance/policy.d/base.yaml",
	"/usr/share/clearance/policy.d/dev-go.yaml",
	"/usr/share/clearance/policy.d/dev-node.yaml",
	"/usr/share/clearance/policy.d/dev-python.yaml",
	"/usr/share/clearance/policy.d/github.yaml",
}

// optionalFiles are installed when the tree has their source.
var optionalFiles = map[string]string{
	"packaging/oci/clearance.json":                  "/usr/share/containers/oci/hooks.d/clearance.json",
	"units/user/clearance-hub@.socket":              "/usr/lib/systemd/user/clearance-hub@.socket",
	"units/user/clearance-hub@.service":             "/usr/lib/systemd/user/clearance-hub@.service",
	"cmd/clearance-oci-hook/main.go":                "/usr/bin/clearance-oci-hook",
	"completions/_clearancectl":                     "/usr/share/zsh/vendor-completions/_clearancectl",
	"completions/clearancectl.fish":                 "/usr/share/fish/vendor_completions.d/clearancectl.fish",
	"docs/man/clearance-notifier.1":                 "/usr/share/man/man1/clearance-notifier.1.gz",
	"units/user/clearance-notifier.service":         "/usr/lib/systemd/user/clearance-notifier.service",
	"units/user/clearance-relay.service":            "/usr/lib/systemd/user/clearance-relay.service",
	"units/system/clearance-journal-upload.service": "/usr/lib/systemd/system/clearance-journal-upload.service",
	"docs/man/clearance-relay.1":                    "/usr/share/man/man1/clearance-relay.1.gz",
	"cmd/clearance-relay/main.go":                   "/usr/bin/clearance-relay",
}

// operatorGroup is the group of rootful containers' hub sockets
// (packaging/sysusers.d/clearance.conf).
const operatorGroup = "clearance"

// enableLink is what "systemctl enable clearance-verdict.socket" in the
// postinst creates.
const enableLink = "/etc/systemd/system/sockets.target.wants/clearance-verdict.socket"

// TestPackages builds the .deb and .rpm with scripts/package.sh, checks
// the .rpm's contents and scripts, the licence both name (checkLicence)
// and runs lintian on the .deb (no errors allowed). It then installs the
// .deb with dpkg -i, never on the machine's root: only inside a private
// mount namespace whose /usr, /etc and /var are overlays over the machine's
// (TestInnerDebInstall): dpkg's database, the units, /etc/clearance and
// the journal catalog it writes are the namespace's own and vanish with
// it. There it checks the installed files, the postinst's work and
// `systemd-analyze verify` of the installed units, then purges the
// package and checks that nothing is left. Back on the real root it
// checks that the machine saw none of it (checkHostUntouched).
//
// It refuses to run where clearance is already installed or
// /etc/clearance exists: the checks inside the namespace need a machine
// without them.
func TestPackages(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "dpkg", "dpkg-query", "getent", "groupdel", "lintian", "rpm", "systemd-analyze", "systemctl", "journalctl", "go", "make", "git", "unshare")
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "clearance").Output(); err == nil && hostHasPackage(string(out)) {
		t.Fatalf("the clearance package is installed on this machine (%s); this test needs a machine without it", out)
	}
	if _, err := os.Stat("/etc/clearance"); err == nil {
		t.Fatal("/etc/clearance exists on this machine; this test needs a machine without it")
	}
	before := snapshotHost(t)

	dist := t.TempDir()
	cmd := exec.Command(filepath.Join(repoRoot, "scripts", "package.sh"), dist, "deb", "rpm")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("package.sh: %v\n%s", err, out)
	}
	deb, _ := filepath.Glob(filepath.Join(dist, "clearance_*.deb"))
	rpm, _ := filepath.Glob(filepath.Join(dist, "clearance-*.rpm"))
	if len(deb) != 1 || len(rpm) != 1 {
		t.Fatalf("dist holds deb %v rpm %v, want one of each", deb, rpm)
	}

	t.Run("rpm", func(t *testing.T) { checkRPM(t, rpm[0]) })
	t.Run("lintian", func(t *testing.T) { checkLintian(t, deb[0]) })
	t.Run("licence", func(t *testing.T) { checkLicence(t, deb[0], rpm[0]) })
	t.Run("dpkg", func(t *testing.T) {
		runInner(t, "TestInnerDebInstall", envDeb+"="+deb[0])
		checkHostUntouched(t, before, snapshotHost(t))
	})
}

// hostHasPackage reports whether dpkg-query's ${Status} ("want ok
// status") says the package is on the machine in any state. dpkg keeps
// "unknown ok not-installed" for a package that was purged: that one is
// gone.
func hostHasPackage(status string) bool {
	f := strings.Fields(status)
	return len(f) == 3 && f[2] != "not-installed"
}

// envDeb names the .deb TestInnerDebInstall installs.
const envDeb = "CLEARANCE_PKGTEST_DEB"

// TestInnerDebInstall is TestPackages' dpkg part, run only in the private
// mount namespace: tmpfs on /run (no running systemd there, so the
// postinst enables the socket without starting it, as in a chroot) and
// overlays with tmpfs upper layers on /usr, /etc and /var.
func TestInnerDebInstall(t *testing.T) {
	if !inner(t.Name()) {
		return
	}
	ns := newPrivateRun(t)
	for _, d := range []string{"/usr", "/etc", "/var"} {
		ns.overlay(t, d)
	}
	// Refuse to go on unless every directory dpkg writes to is the
	// namespace's own.
	for _, d := range []string{"/usr/bin", "/etc/systemd", "/var/lib/dpkg", "/var/lib/systemd/catalog"} {
		var fs unix.Statfs_t
		if err := unix.Statfs(d, &fs); err != nil || fs.Type != unix.OVERLAYFS_SUPER_MAGIC {
			t.Fatalf("%s is not on the namespace's overlay (statfs type %#x, %v)", d, fs.Type, err)
		}
	}
	// testutil.SystemdAnalyze mounts its own tmpfs there.
	if err := os.MkdirAll("/run/systemd", 0o755); err != nil {
		t.Fatal(err)
	}
	checkDebInstall(t, os.Getenv(envDeb))
}

// hostState is what the package would change on the real root if it were
// installed there.
type hostState struct {
	// dpkgLog counts the lines of /var/log/dpkg.log naming clearance:
	// every dpkg action on the package appends some.
	dpkgLog int
	// status is clearance's stanza in dpkg's status file ("" when dpkg
	// does not know the package).
	status string
	// info lists dpkg's files for the package (/var/lib/dpkg/info/clearance.*).
	info []string
	// present lists the package's paths that exist (wantFiles, the
	// enable link, /etc/clearance).
	present []string
	// catalog is the modification time of journald's catalog database,
	// which the postinst and postrm rebuild.
	catalog time.Time
}

func snapshotHost(t *testing.T) hostState {
	t.Helper()
	var s hostState
	if b, err := os.ReadFile("/var/log/dpkg.log"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, " clearance:") {
				s.dpkgLog++
			}
		}
	}
	b, err := os.ReadFile("/var/lib/dpkg/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, stanza := range strings.Split(string(b), "\n\n") {
		if strings.HasPrefix(stanza, "Package: clearance\n") {
			s.status = stanza
		}
	}
	s.info, _ = filepath.Glob("/var/lib/dpkg/info/clearance.*")
	for _, f := range append(wantFiles(t), enableLink, "/etc/clearance") {
		if _, err := os.Lstat(f); err == nil {
			s.present = append(s.present, f)
		}
	}
	if st, err := os.Stat("/var/lib/systemd/catalog/database"); err == nil {
		s.catalog = st.ModTime()
	}
	return s
}

// checkHostUntouched fails t where the real root changed as an install
// of the package would change it.
func checkHostUntouched(t *testing.T, before, after hostState) {
	t.Helper()
	if after.status != "" {
		t.Errorf("the real dpkg database lists clearance:\n%s", after.status)
	}
	if out, err := exec.Command("dpkg-query", "-W", "clearance").CombinedOutput(); err == nil {
		t.Errorf("dpkg-query -W clearance on the real root: %s", out)
	}
	if after.dpkgLog != before.dpkgLog {
		t.Errorf("the real /var/log/dpkg.log gained %d clearance lines", after.dpkgLog-before.dpkgLog)
	}
	if len(after.info) > 0 {
		t.Errorf("dpkg's files for clearance on the real root: %v", after.info)
	}
	if diff := cmp.Diff(before.present, after.present); diff != "" {
		t.Errorf("package paths on the real root changed (-before +after):\n%s", diff)
	}
	if _, err := os.Stat("/etc/clearance"); err == nil {
		t.Error("/etc/clearance exists on the real root")
	}
	if !after.catalog.Equal(before.catalog) {
		t.Errorf("the real journal catalog database was rewritten (%v, was %v)", after.catalog, before.catalog)
	}
	t.Logf("real root untouched: dpkg.log clearance lines %d, status stanza %q, catalog %v",
		after.dpkgLog, after.status, after.catalog)
}

func wantFiles(t *testing.T) []string {
	files := append([]string(nil), installedFiles...)
	for src, dst := range optionalFiles {
		if _, err := os.Stat(filepath.Join(repoRoot, src)); err == nil {
			files = append(files, dst)
		}
	}
	return files
}

func checkRPM(t *testing.T, pkg string) {
	out, err := exec.Command("rpm", "-qpl", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("rpm -qpl: %v\n%s", err, out)
	}
	list := "\n" + string(out)
	for _, f := range wantFiles(t) {
		if strings.HasSuffix(f, "changelog.Debian.gz") {
			if strings.Contains(list, "\n"+f+"\n") {
				t.Errorf("the .rpm carries the Debian changelog %s", f)
			}
			continue
		}
		if !strings.Contains(list, "\n"+f+"\n") {
			t.Errorf("rpm lacks %s", f)
		}
	}
	if strings.Contains(list, "lintian") {
		t.Errorf("the .rpm carries lintian overrides")
	}
	conf, _ := exec.Command("rpm", "-qp", "--configfiles", pkg).CombinedOutput()
	if !strings.Contains(string(conf), "/etc/clearance/clearance.yaml") {
		t.Errorf("rpm config files: %s", conf)
	}
	scripts, _ := exec.Command("rpm", "-qp", "--scripts", pkg).CombinedOutput()
	for _, want := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet",
		"systemctl enable --now clearance-verdict.socket", "journalctl --update-catalog"} {
		if !strings.Contains(string(scripts), want) {
			t.Errorf("rpm scripts lack %q", want)
		}
	}
	t.Logf("rpm -qpl:\n%s", out)
}

// checkLicence checks that both packages name the repository's licence:
// the .rpm in its header, the .deb in its machine-readable copyright file.
func checkLicence(t *testing.T, deb, rpm string) {
	const want = "Apache-2.0"
	out, err := exec.Command("rpm", "-qp", "--queryformat", "%{LICENSE}", rpm).CombinedOutput()
	if err != nil {
		t.Fatalf("rpm -qp --queryformat %%{LICENSE}: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("the .rpm's licence is %q, want %q", got, want)
	}

	dir := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "usr/share/doc/clearance/copyright"))
	if err != nil {
		t.Fatal(err)
	}
	copyright := string(b)
	for _, line := range []string{
		"Files: *",
		"License: " + want,
		`can be found in "/usr/share/common-licenses/Apache-2.0".`,
	} {
		if !strings.Contains(copyright, "\n"+line+"\n") && !strings.Contains(copyright, "\n "+line+"\n") {
			t.Errorf("the .deb's copyright lacks the line %q:\n%s", line, copyright)
		}
	}
	if strings.Contains(copyright, "LicenseRef-") {
		t.Errorf("the .deb's copyright still names a LicenseRef:\n%s", copyright)
	}
	lic, err := os.ReadFile(filepath.Join(repoRoot, "LICENSE"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(lic), "Apache License") || !strings.Contains(string(lic), "Version 2.0, January 2004") {
		t.Errorf("LICENSE is not the Apache License 2.0 the packages name")
	}
}

func checkLintian(t *testing.T, pkg string) {
	out, _ := exec.Command("lintian", "--tag-display-limit", "0", pkg).CombinedOutput()
	var errs, warns []string
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "E: "):
			errs = append(errs, l)
		case strings.HasPrefix(l, "W: "):
			warns = append(warns, l)
		}
	}
	t.Logf("lintian warnings (documented in docs/packaging.md):\n%s", strings.Join(warns, "\n"))
	if len(errs) > 0 {
		t.Errorf("lintian errors:\n%s", strings.Join(errs, "\n"))
	}
}

func checkDebInstall(t *testing.T, pkg string) {
	purged := false
	purge := func() {
		if purged {
			return
		}
		purged = true
		if out, err := exec.Command("dpkg", "--purge", "clearance").CombinedOutput(); err != nil {
			t.Errorf("dpkg --purge: %v\n%s", err, out)
		}
	}
	t.Cleanup(purge)
	// The postinst creates the operator group (systemd-sysusers); a purge
	// keeps it, as packages do with system groups. Remove it afterwards
	// when this test created it.
	hadGroup := exec.Command("getent", "group", operatorGroup).Run() == nil
	if !hadGroup {
		t.Cleanup(func() {
			if out, err := exec.Command("groupdel", operatorGroup).CombinedOutput(); err != nil {
				t.Errorf("groupdel %s: %v\n%s", operatorGroup, err, out)
			}
		})
	}
	if out, err := exec.Command("dpkg", "-i", pkg).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	files := wantFiles(t)
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("installed: %v", err)
		}
	}
	if st, err := os.Stat("/usr/bin/clearance-verdict"); err == nil && st.Mode().Perm() != 0o755 {
		t.Errorf("/usr/bin/clearance-verdict mode %v", st.Mode())
	}
	if conf, _ := exec.Command("dpkg-query", "-W", "-f=${Conffiles}", "clearance").Output(); !strings.Contains(string(conf), "/etc/clearance/clearance.yaml") {
		t.Errorf("conffiles: %q", conf)
	}
	// postinst: the socket is enabled (started too where systemd runs)
	// and the catalog rebuilt.
	if _, err := os.Lstat(enableLink); err != nil {
		t.Errorf("postinst did not enable the socket: %v", err)
	}
	if out, _ := exec.Command("journalctl", "--list-catalog", audit.MsgVerdict).CombinedOutput(); !strings.Contains(string(out), "clearance: ") {
		t.Errorf("postinst did not update the catalog: %s", out)
	}

	if out, err := exec.Command("getent", "group", operatorGroup).Output(); err != nil {
		t.Errorf("postinst did not create the group %s: %v", operatorGroup, err)
	} else {
		t.Logf("operator group: %s", strings.TrimSpace(string(out)))
	}

	// The installed units verify as they are, their man: links included
	// where man(1) is there to resolve them.
	sys, _ := filepath.Glob("/usr/lib/systemd/system/clearance-verdict*")
	user, _ := filepath.Glob("/usr/lib/systemd/user/clearance-*")
	man := "--man=yes"
	if _, err := exec.LookPath("man"); err != nil {
		man = "--man=no"
	}
	for _, set := range []struct {
		args  []string
		units []string
	}{{[]string{"verify", man}, sys}, {[]string{"--user", "verify", man}, user}} {
		cmd := testutil.SystemdAnalyze(append(set.args, set.units...)...)
		rt := t.TempDir()
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+rt)
		out, err := cmd.CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze %v %v: %v\n%s", set.args, set.units, err, out)
		}
	}

	purge()
	for _, f := range append(files, "/etc/clearance", enableLink) {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("left after purge: %s", f)
		}
	}
	if out, _ := exec.Command("journalctl", "--list-catalog", audit.MsgVerdict).CombinedOutput(); strings.Contains(string(out), "clearance: ") {
		t.Errorf("catalog still lists clearance after purge: %s", out)
	}
}

// TestHostHasPackage: a purged package ("not-installed") does not stop
// TestPackages; one in any other state does.
func TestHostHasPackage(t *testing.T) {
	for status, want := range map[string]bool{
		"install ok installed":      true,
		"deinstall ok config-files": true,
		"install ok half-installed": true,
		"install ok unpacked":       true,
		"unknown ok not-installed":  false,
		"":                          false,
	} {
		if got := hostHasPackage(status); got != want {
			t.Errorf("hostHasPackage(%q) = %v, want %v", status, got, want)
		}
	}
}
