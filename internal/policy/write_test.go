// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "uid-1000")
	doc := "# proposed\nallow:\n  - github.com:443/tcp # seen 3×\n"

	path, replaced, err := Write(dir, "webshop", []byte(doc), false)
	if err != nil || replaced || path != filepath.Join(dir, "webshop.yaml") {
		t.Fatalf("Write = %q, %v, %v", path, replaced, err)
	}
	got, _ := os.ReadFile(path)
	if string(got) != doc {
		t.Errorf("file holds %q, want the document as given (comments kept)", got)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: FileMode} {
		if st, err := os.Stat(p); err != nil || st.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, st.Mode(), err, want)
		}
	}

	// An existing file stays unless the caller replaces it.
	_, _, err = Write(dir, "webshop", []byte("allow: [pypi.org]\n"), false)
	if !errors.Is(err, ErrExists) {
		t.Errorf("second Write without replace: %v, want ErrExists", err)
	}
	if got, _ := os.ReadFile(path); string(got) != doc {
		t.Errorf("a refused Write changed the file: %q", got)
	}
	if _, replaced, err = Write(dir, "webshop", []byte("allow: [pypi.org]\n"), true); err != nil || !replaced {
		t.Errorf("Write with replace: %v, %v", replaced, err)
	}
	p, err := Load(dir, "webshop")
	if err != nil || len(p.Allow) != 1 || p.Allow[0].String() != "pypi.org" {
		t.Errorf("after replace: %+v, %v", p, err)
	}
	// Appends still work on a written file (same lock, same format).
	e, _ := ParseEntry("api.example.com:443/tcp")
	if err := Append(dir, "webshop", ListAllow, e); err != nil {
		t.Fatal(err)
	}
	if p, _ := Load(dir, "webshop"); len(p.Allow) != 2 {
		t.Errorf("after Append: %v", dests(p.Allow))
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries (temporary files left?)", len(ents))
	}
}

func TestWriteRefuses(t *testing.T) {
	dir := t.TempDir()
	big := "allow:\n" + strings.Repeat("  - 192.0.2.1\n", MaxFileSize/14+1)
	tests := []struct {
		name, policy, doc string
		want              error  // errors.Is target, or nil
		msg               string // substring of the error
	}{
		{"a name with a slash", "../etc/passwd", "allow: []\n", ErrInvalidName, ""},
		{"a hidden name", ".hidden", "allow: []\n", ErrInvalidName, ""},
		{"an empty name", "", "allow: []\n", ErrInvalidName, ""},
		{"YAML that does not parse", "p", "allow: [\n", nil, "p.yaml:"},
		{"an unknown key", "p", "allowed: [github.com]\n", nil, `unknown key "allowed"`},
		{"a bad destination", "p", "allow: ['*.com']\n", nil, "top-level domain"},
		{"too large", "p", big, ErrTooLarge, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Write(dir, tt.policy, []byte(tt.doc), true)
			if err == nil {
				t.Fatal("Write accepted it")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q lacks %q", err, tt.msg)
			}
		})
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("refused Writes left %d files", len(ents))
	}

	// A symlink in place of the policy is never followed.
	target := filepath.Join(t.TempDir(), "elsewhere")
	os.WriteFile(target, []byte("keep"), 0o644)
	os.Symlink(target, filepath.Join(dir, "link.yaml"))
	if _, _, err := Write(dir, "link", []byte("allow: []\n"), true); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Write over a symlink: %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("the symlink's target was written: %q", b)
	}
}

func TestCheck(t *testing.T) {
	root := tree(t, map[string]string{
		"usr/github.yaml":       "allow: [github.com:443/tcp]\n",
		"etc/proj.yaml":         "allow: [192.0.2.10]\n",
		"etc/uid-1000/a.yaml":   "include: [github]\n",
		"etc/uid-1000/cyc.yaml": "include: [new]\n",
	})
	sys := []string{filepath.Join(root, "etc"), filepath.Join(root, "usr")}
	user := filepath.Join(root, "etc", "uid-1000")
	tests := []struct {
		name, dir, userDir, policy, doc, err string
	}{
		{"a user's policy including a shipped profile", user, user, "new", "include: [github, a]\n", ""},
		{"a user's policy over a system one", user, user, "proj", "allow: [pypi.org]\n", ""},
		{"an administrator's policy", sys[0], "", "new", "include: [github]\n", ""},
		{"an include that names nothing", user, user, "new", "include: [pyhton]\n", `include "pyhton": no policy`},
		{"a cycle through an existing file", user, user, "new", "include: [cyc]\n", "include cycle: new -> cyc -> new"},
		{"the administrator cannot include a user's file", sys[0], "", "new", "include: [a]\n", `include "a": no policy`},
		{"a document that does not parse", user, user, "new", "allow: {", "new.yaml:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(sys, tt.userDir, tt.dir, tt.policy, []byte(tt.doc))
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("Check: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("Check = %v, want an error with %q", err, tt.err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(user, "new.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Check wrote a file: %v", err)
	}
}

// TestWriteConcurrentWithAppend: Writes and Appends on one directory are
// serialised; every file read meanwhile parses.
func TestWriteConcurrentWithAppend(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := Write(dir, "p", []byte("allow: [a.example]\n"), false); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if _, _, err := Write(dir, "p", []byte("allow: [a.example, b.example]\n"), true); err != nil {
					t.Error(err)
				}
			}
		}()
		go func() {
			defer wg.Done()
			e, _ := ParseEntry("c.example")
			for j := 0; j < 20; j++ {
				if err := Append(dir, "p", ListDeny, e); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	readErr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				readErr <- nil
				return
			default:
			}
			if _, err := Load(dir, "p"); err != nil && !errors.Is(err, syscall.ENOENT) {
				readErr <- err
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	if err := <-readErr; err != nil {
		t.Errorf("a reader saw a broken file: %v", err)
	}
}
