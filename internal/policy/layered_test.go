// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// tree writes files (path relative to root → content) and returns root.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// dests lists the entries of l as written, for compact comparisons.
func dests(l List) []string {
	var out []string
	for _, e := range l {
		out = append(out, e.String())
	}
	return out
}

func TestLoadLayered(t *testing.T) {
	// etc is the administrator's directory, usr the shipped profiles,
	// etc/uid-1000 a user's own.
	files := map[string]string{
		"usr/github.yaml":     "allow: [github.com:443/tcp, '*.githubusercontent.com:443/tcp']\n",
		"usr/dev-python.yaml": "allow: [pypi.org:443/tcp, files.pythonhosted.org:443/tcp]\n",
		"usr/base.yaml":       "# nothing\n",
		"usr/both.yaml":       "include: [github, dev-python]\n",
		"usr/shipped.yaml":    "include: [github]\nallow: [shipped.example]\n",
		"usr/diamond.yaml":    "include: [both, github, dev-python]\nallow: [diamond.example]\n",
		"usr/resolv.yaml":     "resolvers: [192.0.2.53]\n",

		// The administrator narrows the shipped github profile.
		"etc/github.yaml": "allow: [github.com:443/tcp]\ndeny: [gist.github.com]\n",
		"etc/proj.yaml":   "include: [dev-python, github, resolv]\nallow: [192.0.2.10]\nresolvers: [192.0.2.53, 192.0.2.54]\n",
		"etc/solo.yaml":   "allow: [solo.example]\n",

		// The user's layer of proj, with an include of their own and one
		// of the system's.
		"etc/uid-1000/proj.yaml":  "include: [mine, base]\nallow: [api.example.com:443/tcp]\n",
		"etc/uid-1000/mine.yaml":  "deny: [203.0.113.0/24]\n",
		"etc/uid-1000/userx.yaml": "include: [dev-python]\n",
		// A user's github.yaml never changes what the system's includes mean.
		"etc/uid-1000/github.yaml": "allow: [0.0.0.0/0]\n",
	}
	root := tree(t, files)
	sys := []string{filepath.Join(root, "etc"), filepath.Join(root, "usr")}
	user := filepath.Join(root, "etc", "uid-1000")

	tests := []struct {
		name      string
		policy    string
		userDir   string
		allow     []string
		deny      []string
		resolvers []string
		sources   []string // Source of each allow entry, relative to root
	}{
		{
			name:   "a shipped profile",
			policy: "dev-python",
			allow:  []string{"pypi.org:443/tcp", "files.pythonhosted.org:443/tcp"},
		},
		{
			name:   "the administrator's file overrides the shipped one",
			policy: "github",
			allow:  []string{"github.com:443/tcp"},
			deny:   []string{"gist.github.com"},
		},
		{
			name:    "a shipped profile includes the administrator's override",
			policy:  "shipped",
			allow:   []string{"github.com:443/tcp", "shipped.example"},
			deny:    []string{"gist.github.com"},
			sources: []string{"etc/github.yaml:1", "usr/shipped.yaml:2"},
		},
		{
			name:      "includes first, then the file's own entries",
			policy:    "proj",
			allow:     []string{"pypi.org:443/tcp", "files.pythonhosted.org:443/tcp", "github.com:443/tcp", "192.0.2.10"},
			deny:      []string{"gist.github.com"},
			resolvers: []string{"192.0.2.53", "192.0.2.54"},
			sources:   []string{"usr/dev-python.yaml:1", "usr/dev-python.yaml:1", "etc/github.yaml:1", "etc/proj.yaml:2"},
		},
		{
			name:    "the user's layer on top, its includes from the user's directory then the system's",
			policy:  "proj",
			userDir: user,
			allow: []string{
				"pypi.org:443/tcp", "files.pythonhosted.org:443/tcp", "github.com:443/tcp", "192.0.2.10",
				"api.example.com:443/tcp",
			},
			deny:      []string{"gist.github.com", "203.0.113.0/24"},
			resolvers: []string{"192.0.2.53", "192.0.2.54"},
			sources: []string{
				"usr/dev-python.yaml:1", "usr/dev-python.yaml:1", "etc/github.yaml:1", "etc/proj.yaml:2",
				"etc/uid-1000/proj.yaml:2",
			},
		},
		{
			name:    "a user's file without a system layer",
			policy:  "userx",
			userDir: user,
			allow:   []string{"pypi.org:443/tcp", "files.pythonhosted.org:443/tcp"},
		},
		{
			name:    "a system policy without a user layer",
			policy:  "solo",
			userDir: user,
			allow:   []string{"solo.example"},
		},
		{
			name:   "a file reached twice is read once",
			policy: "diamond",
			allow:  []string{"github.com:443/tcp", "pypi.org:443/tcp", "files.pythonhosted.org:443/tcp", "diamond.example"},
			deny:   []string{"gist.github.com"},
		},
		{
			name:    "the user's directory is the system's (root): read once",
			policy:  "solo",
			userDir: filepath.Join(root, "etc"),
			allow:   []string{"solo.example"},
		},
		{name: "a name found nowhere is empty", policy: "absent", userDir: user},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := LoadLayered(sys, tt.userDir, tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			var rs []string
			for _, r := range p.Resolvers {
				rs = append(rs, r.String())
			}
			type result struct{ Allow, Deny, Resolvers []string }
			if diff := cmp.Diff(result{tt.allow, tt.deny, tt.resolvers}, result{dests(p.Allow), dests(p.Deny), rs}); diff != "" {
				t.Errorf("LoadLayered (-want +got):\n%s", diff)
			}
			if len(p.Include) != 0 {
				t.Errorf("Include = %v, want it expanded", p.Include)
			}
			if tt.sources != nil {
				var got []string
				for _, e := range p.Allow {
					rel, _ := filepath.Rel(root, e.Source.File)
					got = append(got, fmt.Sprintf("%s:%d", rel, e.Source.Line))
				}
				if diff := cmp.Diff(tt.sources, got); diff != "" {
					t.Errorf("sources (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestLoadLayeredErrors(t *testing.T) {
	chain := map[string]string{}
	for i := range MaxIncludeDepth + 2 {
		chain[fmt.Sprintf("sys/d%d.yaml", i)] = fmt.Sprintf("include: [d%d]\n", i+1)
	}
	chain[fmt.Sprintf("sys/d%d.yaml", MaxIncludeDepth+2)] = "allow: [deep.example]\n"
	files := map[string]string{
		"sys/self.yaml":    "include: [self]\n",
		"sys/a.yaml":       "# a\ninclude: [b]\n",
		"sys/b.yaml":       "include:\n  - base\n  - c\n",
		"sys/c.yaml":       "include: [a]\n",
		"sys/base.yaml":    "",
		"sys/unknown.yaml": "allow: [x.example]\ninclude:\n  - base\n  - nonesuch\n",
		"sys/broken.yaml":  "include: [bad]\n",
		"sys/bad.yaml":     "allow:\n  - a..example\n",
		"sys/dir.yaml/x":   "",
		"sys/incdir.yaml":  "include: [dir]\n",
		"sys/proj.yaml":    "allow: [proj.example]\n",
		"user/proj.yaml":   "include: [proj]\n",
		"user/other.yaml":  "include: [only-user]\n",
	}
	for k, v := range chain {
		files[k] = v
	}
	root := tree(t, files)
	sys := filepath.Join(root, "sys")
	user := filepath.Join(root, "user")
	at := func(rel string) string { return filepath.Join(root, rel) }

	tests := []struct {
		name    string
		policy  string
		userDir string
		want    string
	}{
		{name: "a policy includes itself", policy: "self", want: at("sys/self.yaml") + `:1: include cycle: self -> self`},
		{name: "a cycle through three", policy: "a", want: at("sys/c.yaml") + `:1: include cycle: a -> b -> c -> a`},
		{name: "a cycle entered in the middle", policy: "b", want: at("sys/a.yaml") + `:2: include cycle: b -> c -> a -> b`},
		{name: "unknown include", policy: "unknown", want: at("sys/unknown.yaml") + `:4: include "nonesuch": no policy "nonesuch" in ` + sys},
		{name: "an error inside an include", policy: "broken", want: at("sys/bad.yaml") + `:2: invalid name "a..example": empty label`},
		{name: "an include that is a directory", policy: "incdir", want: at("sys/incdir.yaml") + `:1: include "dir": policy ` + at("sys/dir.yaml") + ` is not a regular file (mode d---------)`},
		{
			name:   "nested too deep",
			policy: "d0",
			want: at(fmt.Sprintf("sys/d%d.yaml", MaxIncludeDepth)) + fmt.Sprintf(":1: includes nested more than %d deep: ", MaxIncludeDepth) +
				"d0 -> d1 -> d2 -> d3 -> d4 -> d5 -> d6 -> d7 -> d8 -> d9",
		},
		{name: "the user's file includes its own name", policy: "proj", userDir: user, want: at("user/proj.yaml") + `:1: include cycle: proj -> proj`},
		{name: "a user's include not found lists both directories", policy: "other", userDir: user, want: at("user/other.yaml") + `:1: include "only-user": no policy "only-user" in ` + user + ", " + sys},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadLayered([]string{sys}, tt.userDir, tt.policy)
			if err == nil {
				t.Fatal("LoadLayered = nil error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Errorf("error %T is not a *policy.Error", err)
			}
		})
	}

	// d2 includes d3 … d10: exactly MaxIncludeDepth levels below it.
	p, err := LoadLayered([]string{sys}, "", "d2")
	if err != nil {
		t.Fatalf("%d levels of includes: %v", MaxIncludeDepth, err)
	}
	if diff := cmp.Diff([]string{"deep.example"}, dests(p.Allow)); diff != "" {
		t.Errorf("deep include (-want +got):\n%s", diff)
	}
	if _, err := LoadLayered([]string{sys}, "", "d1"); err == nil || !strings.Contains(err.Error(), "nested more than 8 deep") {
		t.Errorf("%d levels: %v, want nested too deep", MaxIncludeDepth+1, err)
	}
	if _, err := LoadLayered([]string{sys}, "", "../sys/a"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("LoadLayered(../sys/a) = %v, want ErrInvalidName", err)
	}
}

// TestShippedProfiles parses every profile of packaging/policy.d the way
// the verdict service loads it, and checks what the documentation says
// of them.
func TestShippedProfiles(t *testing.T) {
	dir := filepath.Join("..", "..", "packaging", "policy.d")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, strings.TrimSuffix(filepath.Base(f), ".yaml"))
	}
	if diff := cmp.Diff([]string{"base", "dev-go", "dev-node", "dev-python", "github"}, names); diff != "" {
		t.Errorf("shipped profiles (-want +got):\n%s", diff)
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "policy.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(string(doc), "| `"+name+"` |") {
				t.Errorf("docs/policy.md does not describe the profile")
			}
			p, err := LoadLayered([]string{dir}, "", name)
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(filepath.Join(dir, name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(data), "# ") {
				t.Error("a profile starts with a comment block saying what it covers")
			}
			if len(p.Deny) != 0 || len(p.Resolvers) != 0 {
				t.Errorf("a shipped profile only allows: deny %v, resolvers %v", p.Deny, p.Resolvers)
			}
			for _, e := range p.Allow {
				if !e.IsName() {
					t.Errorf("%s: %v: shipped profiles name hosts, never addresses (they change)", e.Source, e)
				}
				if e.Port == 0 {
					t.Errorf("%s: %v: shipped profiles open ports, not whole hosts", e.Source, e)
				}
				if !strings.Contains(string(doc), e.String()) {
					t.Errorf("%s: %v is not in docs/policy.md's table of profiles", e.Source, e)
				}
			}
			if name != "base" && len(p.Allow) == 0 {
				t.Error("profile allows nothing")
			}
		})
	}
	// The verdict service's parse, and the first hit winning: an
	// administrator's github.yaml replaces the shipped one.
	etc := tree(t, map[string]string{"github.yaml": "allow: [github.com:22/tcp]\n"})
	p, err := LoadLayered([]string{etc, dir}, "", "github")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"github.com:22/tcp"}, dests(p.Allow)); diff != "" {
		t.Errorf("override (-want +got):\n%s", diff)
	}
}

// TestDocumentedExamples parses every YAML example of docs/policy.md but
// the one that shows the unquoted-wildcard error.
func TestDocumentedExamples(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "policy.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(doc), "```yaml\n")[1:]
	if len(blocks) < 4 {
		t.Fatalf("found %d yaml blocks in docs/policy.md", len(blocks))
	}
	for i, b := range blocks {
		b = b[:strings.Index(b, "```")]
		if _, err := Parse(fmt.Sprintf("example %d", i), []byte(b)); err != nil {
			t.Errorf("%v\n%s", err, b)
		}
	}
}
