package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/testutil"
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

// enableLink is what "systemctl enable clearance-verdict.socket" in the
// postinst creates.
const enableLink = "/etc/systemd/system/sockets.target.wants/clearance-verdict.socket"

// TestPackages builds the .deb and .rpm with scripts/package.sh, checks
// the .rpm's contents and scripts, runs lintian on the .deb (no errors
// allowed), installs the .deb on this machine with dpkg -i, checks the
// installed files, the postinst's work and `systemd-analyze verify` of the
// installed units, then purges it and checks that nothing is left.
//
// It refuses to run where clearance is already installed or
// /etc/clearance exists, so it never removes someone's installation.
func TestPackages(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "dpkg", "dpkg-query", "lintian", "rpm", "systemd-analyze", "systemctl", "journalctl", "go", "make", "git")
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "clearance").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Fatalf("the clearance package is already installed here (%s); this test installs and purges its own build", out)
	}
	if _, err := os.Stat("/etc/clearance"); err == nil {
		t.Fatal("/etc/clearance exists on this machine; this test would purge it")
	}

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
	t.Run("dpkg", func(t *testing.T) { checkDebInstall(t, deb[0]) })
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
	if out, _ := exec.Command("journalctl", "--list-catalog", hub.MsgVerdict).CombinedOutput(); !strings.Contains(string(out), "clearance: ") {
		t.Errorf("postinst did not update the catalog: %s", out)
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
	if out, _ := exec.Command("journalctl", "--list-catalog", hub.MsgVerdict).CombinedOutput(); strings.Contains(string(out), "clearance: ") {
		t.Errorf("catalog still lists clearance after purge: %s", out)
	}
}
