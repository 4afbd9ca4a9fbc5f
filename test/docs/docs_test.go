// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package docs checks the repository's documentation against its code,
// with nothing but the source tree: the package map in
// docs/architecture.md lists every Go package and no other, and every
// section citation (a section sign and an anchor) in Go source or in the Markdown docs
// names an anchor that a document of the repository defines, so no
// comment leans on a document that is not shipped; and every option a
// program's --help lists is in its man page, and every clearancectl
// command and option in the shell completions (options_test.go, with the
// built programs). It runs under a plain `go test`, without privileges.
package docs

import (
	"errors"
	"fmt"
	"go/scanner"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// repoRoot is the directory holding go.mod, found upwards from the test's
// working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// skipDir reports whether a directory holds no code of the repository's
// own packages: test data, hidden and underscore directories.
func skipDir(name string) bool {
	return name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")
}

// goPackages returns the directories under internal/, cmd/ and test/
// (relative to root, slash-separated) that hold at least one .go file.
func goPackages(root string) ([]string, error) {
	seen := map[string]bool{}
	for _, top := range []string{"internal", "cmd", "test"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if p != filepath.Join(root, top) && skipDir(d.Name()) {
					return filepath.SkipDir
				}
				return nil
			}
			if strings.HasSuffix(d.Name(), ".go") {
				rel, err := filepath.Rel(root, filepath.Dir(p))
				if err != nil {
					return err
				}
				seen[filepath.ToSlash(rel)] = true
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	var pkgs []string
	for p := range seen {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	return pkgs, nil
}

// mapRow is a table row of the package map: its first cell is a package
// path in backquotes.
var mapRow = regexp.MustCompile("^\\|\\s*`((?:internal|cmd|test)/[^`]+)`\\s*\\|")

// packageMap returns the packages the "## Package map" section of
// architecture.md lists, in order.
func packageMap(md string) ([]string, error) {
	start := strings.Index(md, "\n## Package map\n")
	if start < 0 {
		return nil, errors.New(`no "## Package map" section`)
	}
	sec := md[start+1:]
	if end := strings.Index(sec[len("## Package map\n"):], "\n## "); end >= 0 {
		sec = sec[:len("## Package map\n")+end]
	}
	var pkgs []string
	for _, line := range strings.Split(sec, "\n") {
		if m := mapRow.FindStringSubmatch(line); m != nil {
			pkgs = append(pkgs, m[1])
		}
	}
	if len(pkgs) == 0 {
		return nil, errors.New("the package map lists no package")
	}
	return pkgs, nil
}

// compareMap returns one problem per package missing from the map, listed
// but absent, or listed twice.
func compareMap(have, listed []string) []string {
	var problems []string
	inMap := map[string]int{}
	for _, p := range listed {
		inMap[p]++
		if inMap[p] == 2 {
			problems = append(problems, fmt.Sprintf("%s is listed twice", p))
		}
	}
	exists := map[string]bool{}
	for _, p := range have {
		exists[p] = true
		if inMap[p] == 0 {
			problems = append(problems, fmt.Sprintf("%s is not in the package map", p))
		}
	}
	for _, p := range listed {
		if !exists[p] {
			problems = append(problems, fmt.Sprintf("%s is in the package map but has no Go files", p))
		}
	}
	return problems
}

func TestPackageMapListsEveryPackage(t *testing.T) {
	root := repoRoot(t)
	have, err := goPackages(root)
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	listed, err := packageMap(string(md))
	if err != nil {
		t.Fatalf("docs/architecture.md: %v", err)
	}
	for _, p := range compareMap(have, listed) {
		t.Errorf("docs/architecture.md: %s", p)
	}
}

func TestCompareMap(t *testing.T) {
	got := compareMap([]string{"internal/a", "internal/b"}, []string{"internal/a", "internal/gone", "internal/a"})
	want := []string{
		"internal/a is listed twice",
		"internal/b is not in the package map",
		"internal/gone is in the package map but has no Go files",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("compareMap =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p := compareMap([]string{"cmd/x"}, []string{"cmd/x"}); len(p) != 0 {
		t.Errorf("compareMap of equal sets = %q, want nothing", p)
	}
}

func TestPackageMapParse(t *testing.T) {
	md := "# A\n\n## Package map\n\n| package | what |\n|---|---|\n| `internal/hub` | core |\n| `cmd/x` | main |\n\n## Next\n\n| `internal/later` | not in the map |\n"
	got, err := packageMap(md)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "internal/hub,cmd/x" {
		t.Errorf("packageMap = %q", got)
	}
	if _, err := packageMap("# A\n\n## Parts\n"); err == nil {
		t.Error("packageMap without the section: no error")
	}
}

// anchorDef matches an anchor where a document defines it: the section
// sign and the anchor (S1, S10.67, M3) at the start of a heading, a list
// item or a table row.
var anchorDef = regexp.MustCompile(`^(?:#{1,6}\s+|[-*]\s+|\d+\.\s+|\|\s*)\**\x{00A7}([A-Z]+[0-9]+(?:\.[0-9]+)*)\b`)

// citation matches a section sign and what names the section after it.
var citation = regexp.MustCompile(`\x{00A7}\s*([A-Za-z]*[0-9]+(?:\.[0-9]+)*)?`)

// externalStandard matches the end of text that names an RFC right before
// a section sign (RFC 1035, section sign, 2.3.4): such a section is not
// ours to define.
var externalStandard = regexp.MustCompile(`\bRFC\s?[0-9]+[^\x{00A7}]{0,20}$`)

// anchors maps every anchor the repository's Markdown documents define to
// the document (relative to root, slash-separated).
type anchors map[string]string

// collectAnchors reads the anchor definitions of docs (path → content).
func collectAnchors(docs map[string]string) (anchors, []string) {
	a := anchors{}
	var problems []string
	paths := make([]string, 0, len(docs))
	for p := range docs {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		for _, line := range strings.Split(docs[p], "\n") {
			m := anchorDef.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			if other, dup := a[m[1]]; dup {
				problems = append(problems, fmt.Sprintf("anchor \u00a7%s is defined in %s and again in %s", m[1], other, p))
				continue
			}
			a[m[1]] = p
		}
	}
	return a, problems
}

// checkCitations returns one problem per section sign in text that does
// not resolve: it must follow an RFC, or name an anchor some document
// defines, and the file the text is from (whole, in file) must name that
// document, so a reader can find it. self is the document the text
// belongs to ("" for Go source).
func checkCitations(text, file, self string, a anchors) []string {
	var problems []string
	for _, loc := range citation.FindAllStringSubmatchIndex(text, -1) {
		if externalStandard.MatchString(text[max(0, loc[0]-40):loc[0]]) {
			continue
		}
		cited := text[loc[0]:loc[1]]
		if loc[2] < 0 {
			problems = append(problems, fmt.Sprintf("%q: a section sign without a section", context(text, loc[0])))
			continue
		}
		name := text[loc[2]:loc[3]]
		doc, ok := a[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("%q: %s is not an anchor of any document in the repository", context(text, loc[0]), cited))
			continue
		}
		if doc != self && !strings.Contains(file, filepath.Base(doc)) {
			problems = append(problems, fmt.Sprintf("%q: %s is defined in %s, which the file never names", context(text, loc[0]), cited, doc))
		}
	}
	return problems
}

// context returns the text around offset i, for messages.
func context(text string, i int) string {
	start, end := i-40, i+20
	if start < 0 {
		start = 0
	}
	if end > len(text) {
		end = len(text)
	}
	for start > 0 && !utf8Start(text[start]) {
		start--
	}
	for end < len(text) && !utf8Start(text[end]) {
		end++
	}
	return strings.Join(strings.Fields(text[start:end]), " ")
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// goTexts returns the comments and string literals of a Go file.
func goTexts(src []byte) []string {
	var s scanner.Scanner
	fset := token.NewFileSet()
	f := fset.AddFile("", fset.Base(), len(src))
	s.Init(f, src, nil, scanner.ScanComments)
	var out []string
	for {
		_, tok, lit := s.Scan()
		if tok == token.EOF {
			return out
		}
		if tok == token.COMMENT || tok == token.STRING || tok == token.CHAR {
			out = append(out, lit)
		}
	}
}

// mdName matches a Markdown file name as a comment mentions it.
var mdName = regexp.MustCompile(`[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b`)

// checkDocNames returns one problem per Markdown document a comment names
// that is not in the repository: at the root, under docs/, or next to the
// file (dir, relative to root).
func checkDocNames(comment, dir, root string) []string {
	var problems []string
	for _, name := range mdName.FindAllString(comment, -1) {
		found := false
		for _, base := range []string{root, filepath.Join(root, "docs"), filepath.Join(root, dir)} {
			if _, err := os.Stat(filepath.Join(base, filepath.FromSlash(name))); err == nil {
				found = true
				break
			}
		}
		if !found {
			problems = append(problems, fmt.Sprintf("names %s, which is not in the repository", name))
		}
	}
	return problems
}

// markdownDocs reads README.md and every .md file under docs/.
func markdownDocs(t *testing.T, root string) map[string]string {
	t.Helper()
	docs := map[string]string{}
	add := func(p string) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		docs[filepath.ToSlash(rel)] = string(b)
	}
	add(filepath.Join(root, "README.md"))
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".md") {
			add(p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

func TestCitationsResolveInRepository(t *testing.T) {
	root := repoRoot(t)
	docs := markdownDocs(t, root)
	a, problems := collectAnchors(docs)
	for _, p := range problems {
		t.Error(p)
	}
	if len(a) == 0 {
		t.Fatal("no document defines an anchor")
	}

	for p, md := range docs {
		for _, prob := range checkCitations(md, md, p, a) {
			t.Errorf("%s: %s", p, prob)
		}
	}

	files := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && skipDir(d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		for _, text := range goTexts(src) {
			for _, prob := range checkCitations(text, string(src), "", a) {
				t.Errorf("%s: %s", rel, prob)
			}
			if strings.HasPrefix(text, "//") || strings.HasPrefix(text, "/*") {
				for _, prob := range checkDocNames(text, filepath.Dir(rel), root) {
					t.Errorf("%s: %s", rel, prob)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("no Go files found")
	}
}

func TestCheckCitations(t *testing.T) {
	a := anchors{"S10.67": "docs/seed-compat.md", "M9.1": "docs/test-machine.md"}
	file := "// see docs/seed-compat.md and docs/test-machine.md"
	tests := []struct {
		name, text string
		problems   int
	}{
		{"in-repo anchor", "// allow ok (docs/seed-compat.md \u00a7S10.67)", 0},
		{"second anchor of the same file", "// \u00a7M9.1", 0},
		{"rfc section", "// Limits of a canonical name (RFC 1035 \u00a72.3.4)", 0},
		{"rfc section without space", "// RFC1035 \u00a73.1", 0},
		{"seed numbering", "// seed \u00a710.67", 1},
		{"out-of-repo document", "// reference/test-machine.md \u00a79.1", 1},
		{"item form", "// \u00a710 item 8.", 1},
		{"unknown anchor", "// \u00a7S10.999", 1},
		{"bare sign", "// the \u00a7 sign", 1},
		{"range, both ends checked", "// \u00a7M9.1–\u00a7M10", 1},
		{"test name", "\"allow ok (\u00a7S10.67)\"", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkCitations(tt.text, file+"\n"+tt.text, "", a)
			if len(got) != tt.problems {
				t.Errorf("checkCitations(%q) = %q, want %d problems", tt.text, got, tt.problems)
			}
		})
	}
	if got := checkCitations("// \u00a7S10.67", "// \u00a7S10.67", "", a); len(got) != 1 {
		t.Errorf("an anchor from a document the file never names: %q, want one problem", got)
	}
	if got := checkCitations("see \u00a7S10.67", "see \u00a7S10.67", "docs/seed-compat.md", a); len(got) != 0 {
		t.Errorf("a document citing its own anchor: %q, want none", got)
	}
}

func TestCollectAnchors(t *testing.T) {
	a, problems := collectAnchors(map[string]string{
		"docs/a.md": "## \u00a7S1 Title\n\n- \u00a7S10.8 item\n| \u00a7M3 | row |\ntext \u00a7S99 is a citation, not a definition\n",
		"docs/b.md": "### \u00a7S1 again\n",
	})
	for _, want := range []string{"S1", "S10.8", "M3"} {
		if a[want] != "docs/a.md" {
			t.Errorf("anchor %s: defined in %q, want docs/a.md", want, a[want])
		}
	}
	if _, ok := a["S99"]; ok {
		t.Error("a citation in running text was taken for a definition")
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "\u00a7S1") {
		t.Errorf("problems = %q, want the duplicate \u00a7S1", problems)
	}
}

func TestCheckDocNames(t *testing.T) {
	root := repoRoot(t)
	if p := checkDocNames("// see docs/architecture.md and policy.md", "internal/policy", root); len(p) != 0 {
		t.Errorf("existing documents: %q", p)
	}
	if p := checkDocNames("// DESIGN.md names it; reference/test-machine.md too", "internal/nflog", root); len(p) != 2 {
		t.Errorf("documents outside the repository: %q, want two problems", p)
	}
}

// TestProgramsImportNoTestEnvironment: the shipped programs are built
// from product code only; the test environments under internal/testenv
// (labs, fakes, harnesses) never end up in a binary.
func TestProgramsImportNoTestEnvironment(t *testing.T) {
	goBin := testutil.RequireTool(t, "go")
	root := repoRoot(t)
	cmds, err := filepath.Glob(filepath.Join(root, "cmd", "*"))
	if err != nil || len(cmds) == 0 {
		t.Fatalf("no programs under cmd/: %v", err)
	}
	for _, c := range cmds {
		cmd := exec.Command(goBin, "list", "-deps", "./cmd/"+filepath.Base(c))
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", c, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.Contains(dep, "/internal/testenv/") || dep == "testing" {
				t.Errorf("%s depends on %s", filepath.Base(c), dep)
			}
		}
	}
}
