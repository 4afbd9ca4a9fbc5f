// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package packaging tests what clearance ships: the systemd units
// (systemd-analyze verify and security, the verdict service's units under
// a real systemd manager), the journal catalog and the audit records in a
// real journald, the default configuration, and the .deb and .rpm built by
// scripts/package.sh.
//
// Tests that need a systemd manager or journald run them in a private
// mount namespace with tmpfs on /run (docs/test-machine.md §M9): the
// test binary re-executes itself under "unshare -m --propagation private"
// with $CLEARANCE_PKGTEST_INNER naming the inner test, which mounts, starts
// what it needs and kills it by pid before it returns. Nothing is started
// on the machine's real /run, and no system-wide systemd is ever booted.
package packaging

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"testing"

	"github.com/terok-ai/clearance/internal/testenv/managerlab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// repoRoot is the repository's top directory.
var repoRoot = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}()

func TestMain(m *testing.M) {
	if mode := os.Getenv(envClient); mode != "" {
		os.Exit(runClient(mode))
	}
	code := testutil.Main(m)
	testutil.RemoveCommands()
	os.Exit(code)
}

// binaries returns the directory of the named commands (cmd/<name>),
// built once per test binary (or make build's), where other uids can run
// them.
func binaries(t *testing.T, names ...string) string {
	t.Helper()
	dir, err := testutil.Commands(names...)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// unitFiles returns the unit files under units/<kind> (user or system).
func unitFiles(t *testing.T, kind string) []string {
	t.Helper()
	var out []string
	for _, pat := range []string{"*.service", "*.socket", "*.target", "*.timer", "*.path"} {
		m, err := filepath.Glob(filepath.Join(repoRoot, "units", kind, pat))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m...)
	}
	sort.Strings(out)
	return out
}

var execRe = regexp.MustCompile(`(?m)^(Exec[A-Za-z]*=[-@:+!]*)/usr/bin/(clearance[-a-z]*)`)

// referencedBinaries lists the clearance binaries the units' Exec lines run.
func referencedBinaries(t *testing.T, files []string) []string {
	t.Helper()
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range execRe.FindAllStringSubmatch(string(b), -1) {
			if !seen[m[2]] {
				seen[m[2]] = true
				out = append(out, m[2])
			}
		}
	}
	sort.Strings(out)
	return out
}

// installUnits copies unit files into dir with /usr/bin/clearance* in
// their Exec lines pointing at bin instead.
func installUnits(t *testing.T, files []string, dir, bin string) []string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = execRe.ReplaceAll(b, []byte("${1}"+bin+"/${2}"))
		dst := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
		out = append(out, dst)
	}
	return out
}

// runInner runs the test named name in this test binary again, inside a
// new private mount namespace, and fails t if it fails
// (managerlab.RunInner).
func runInner(t *testing.T, name string, env ...string) {
	t.Helper()
	managerlab.RunInner(t, name, env...)
}

// inner reports whether this process is the re-executed inner run of the
// test name (managerlab.Inner).
func inner(name string) bool { return managerlab.Inner(name) }
