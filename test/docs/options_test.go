// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package docs

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

var (
	// helpOption is an option line of a program's --help: Go's flag
	// package ("  -config string") and clearancectl's ("  --since TIME").
	helpOption = regexp.MustCompile(`(?m)^ {2}(-{1,2}[a-z][a-z0-9-]*)`)
	// helpCommand is a command line under clearancectl's "Commands:".
	helpCommand = regexp.MustCompile(`(?m)^ {2}([a-z]+) {2,}\S`)
	// roffFont is a font escape of a man page.
	roffFont = regexp.MustCompile(`\\f[BIRP]|\\f\[[A-Z]*\]`)
)

// help runs bin with args and returns what it printed (--help exits 0
// or 2, depending on the program; either is fine here).
func help(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, _ := exec.Command(bin, args...).CombinedOutput()
	if len(out) == 0 {
		t.Fatalf("%s %v printed nothing", filepath.Base(bin), args)
	}
	return string(out)
}

// usageOption is an option named in a usage synopsis ("[--wait]").
var usageOption = regexp.MustCompile(`(?:^|[\s\[|])--([a-z][a-z0-9-]*)`)

// options returns the option names (without dashes) in a --help text:
// its option lines, and the options its usage synopsis names (the
// notifier's help has no option lines).
func options(text string) []string {
	seen := map[string]bool{"help": true, "h": true}
	var out []string
	add := func(name string) {
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	for _, m := range helpOption.FindAllStringSubmatch(text, -1) {
		add(strings.TrimLeft(m[1], "-"))
	}
	if i := strings.Index(text, "Usage:"); i >= 0 {
		usage := text[i:]
		if j := strings.Index(usage, "\n\n"); j >= 0 {
			usage = usage[:j]
		}
		for _, m := range usageOption.FindAllStringSubmatch(usage, -1) {
			add(m[1])
		}
	}
	return out
}

// manText is a man page with its escapes for dashes and fonts undone.
func manText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return roffFont.ReplaceAllString(strings.ReplaceAll(string(b), `\-`, "-"), "")
}

// mentionsOption reports whether text names the option, with one or two
// dashes, as a whole word.
func mentionsOption(text, name string) bool {
	return regexp.MustCompile(`(^|[^a-z0-9-])--?` + regexp.QuoteMeta(name) + `($|[^a-z0-9-])`).MatchString(text)
}

// TestManPagesDocumentEveryOption: every option a program's --help lists
// (and for clearancectl, every command's) is in its man page, and every
// clearancectl command and option is completed by the bash, zsh and fish
// completions, so what ships beside the binaries cannot fall behind them.
func TestManPagesDocumentEveryOption(t *testing.T) {
	root := repoRoot(t)
	cmds, err := filepath.Glob(filepath.Join(root, "cmd", "*"))
	if err != nil || len(cmds) == 0 {
		t.Fatalf("no programs under cmd/: %v", err)
	}
	var names []string
	for _, c := range cmds {
		names = append(names, filepath.Base(c))
	}
	dir, err := testutil.Commands(names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, prog := range names {
		t.Run(prog, func(t *testing.T) {
			bin := filepath.Join(dir, prog)
			man := manText(t, filepath.Join(root, "docs", "man", prog+".1"))
			top := help(t, bin, "--help")
			want := map[string][]string{"": options(top)} // command → options
			if len(want[""]) == 0 {
				t.Errorf("%s --help lists no options", prog)
			}
			if prog == "clearancectl" {
				for _, m := range helpCommand.FindAllStringSubmatch(top[strings.Index(top, "Commands:"):], -1) {
					cmd := m[1]
					want[cmd] = options(help(t, bin, cmd, "--help"))
					if cmd == "policy" {
						for _, sub := range []string{"propose", "stale"} {
							want["policy "+sub] = options(help(t, bin, "policy", sub, "--help"))
						}
					}
				}
			}
			var cmdNames []string
			for cmd := range want {
				cmdNames = append(cmdNames, cmd)
			}
			sort.Strings(cmdNames)
			for _, cmd := range cmdNames {
				if cmd != "" && !strings.Contains(man, cmd) {
					t.Errorf("%s(1) does not name the command %q", prog, cmd)
				}
				for _, o := range want[cmd] {
					if !mentionsOption(man, o) {
						t.Errorf("%s(1) lacks --%s (of %q)", prog, o, strings.TrimSpace(prog+" "+cmd))
					}
				}
			}
			if prog != "clearancectl" {
				return
			}
			for _, f := range []string{"clearancectl.bash", "_clearancectl", "clearancectl.fish"} {
				b, err := os.ReadFile(filepath.Join(root, "completions", f))
				if err != nil {
					t.Fatal(err)
				}
				text := string(b)
				for _, cmd := range cmdNames {
					if last := cmd[strings.LastIndex(cmd, " ")+1:]; cmd != "" && !regexp.MustCompile(`\b`+last+`\b`).MatchString(text) {
						t.Errorf("%s does not complete the command %q", f, cmd)
					}
					for _, o := range want[cmd] {
						ok := mentionsOption(text, o)
						if f == "clearancectl.fish" {
							ok = regexp.MustCompile(`-l ` + regexp.QuoteMeta(o) + `\b`).MatchString(text)
						}
						if !ok {
							t.Errorf("%s does not complete --%s (of %q)", f, o, strings.TrimSpace("clearancectl "+cmd))
						}
					}
				}
			}
		})
	}
}

// The option and command scanners read both help styles.
func TestHelpScanners(t *testing.T) {
	goFlags := "Options:\n  -config string\n    \tread only this file\n  -debug\n    \tlog at debug level\n"
	ours := "Options:\n  --since TIME             only records newer than TIME\n  --json   print JSON\n      --not-an-option here\n"
	if got := options(goFlags); strings.Join(got, ",") != "config,debug" {
		t.Errorf("Go flag help: %v", got)
	}
	if got := options(ours); strings.Join(got, ",") != "since,json" {
		t.Errorf("clearancectl help: %v", got)
	}
	synopsis := "Usage:\n  prog notify TITLE [--actions KEY:LABEL ...] [--wait]\n  prog help | --help\n\nSee --not-this.\n"
	if got := options(synopsis); strings.Join(got, ",") != "actions,wait" {
		t.Errorf("usage synopsis: %v", got)
	}
	if !mentionsOption("use \\fB--cursor-file\\fR", "cursor-file") || mentionsOption("--cursor-files", "cursor-file") ||
		!mentionsOption("-config FILE", "config") {
		t.Error("mentionsOption")
	}
	if !strings.Contains(roffFont.ReplaceAllString(`\fB\-\-json\fR`, ""), `\-\-json`) {
		t.Error("roffFont")
	}
}
