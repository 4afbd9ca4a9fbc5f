// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// MaxIncludeDepth is how deeply includes may nest: a policy may include
// one that includes another, and so on, MaxIncludeDepth levels below the
// policy loaded.
const MaxIncludeDepth = 8

// LoadLayered returns the policy name as a container starts with it: the
// system layer, then the user's layer on top, every include expanded.
//
// The system layer is <dir>/<name>.yaml of the first directory of
// systemPath that has it ([DefaultPath] is the usual path: the
// administrator's files override shipped profiles of the same name). Its
// includes are looked up the same way, in systemPath only, so nothing a
// user writes changes what an administrator's policy means.
//
// The user's layer is <userDir>/<name>.yaml, when userDir is not "" and
// the file exists. Its includes are looked up in userDir first, then in
// systemPath. It need not include the system layer: that is already below
// it.
//
// Layers and includes are merged: the lists and resolvers of every file
// are concatenated, those of a file's includes (in order) before its own.
// A file reached twice (two profiles including a third) is read once.
// Every entry keeps its Source. A name found in no directory is an empty
// layer; an include that names no file, an include cycle, or includes
// nested deeper than [MaxIncludeDepth] are [*Error]s at the include's file
// and line.
func LoadLayered(systemPath []string, userDir, name string) (*Policy, error) {
	return loadLayered(systemPath, userDir, name, nil)
}

// loadLayered is [LoadLayered] with override: file contents, by clean
// path, read instead of the file system's (a file there need not exist).
func loadLayered(systemPath []string, userDir, name string, override map[string][]byte) (*Policy, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("policy %q: %w", name, ErrInvalidName)
	}
	l := &loader{done: map[string]bool{}, out: &Policy{}, override: override}
	file, err := l.find(systemPath, name)
	if err != nil {
		return nil, err
	}
	if file != "" {
		if err := l.load(systemPath, file, nil); err != nil {
			return nil, err
		}
	}
	if userDir != "" {
		file, err := l.find([]string{userDir}, name)
		if err != nil {
			return nil, err
		}
		if file != "" && !l.done[file] { // the same file as the system layer (root's own dir) counts once
			path := append([]string{userDir}, systemPath...)
			if err := l.load(path, file, nil); err != nil {
				return nil, err
			}
		}
	}
	return l.out, nil
}

// loader expands includes into out.
type loader struct {
	done     map[string]bool // files already merged, by clean path
	out      *Policy
	override map[string][]byte // contents read instead of these files
}

// link is one file on the chain of includes that led to the current one.
type link struct{ name, file string }

// load merges file (found on path) and, first, its includes; chain holds
// the files that included it.
func (l *loader) load(path []string, file string, chain []link) error {
	l.done[file] = true
	data, ok := l.override[file]
	if !ok {
		var err error
		if data, err = os.ReadFile(file); err != nil {
			return fmt.Errorf("read policy: %w", err)
		}
	}
	p, err := Parse(file, data)
	if err != nil {
		return err
	}
	chain = append(chain, link{name: strings.TrimSuffix(filepath.Base(file), ".yaml"), file: file})
	for _, inc := range p.Include {
		at := func(format string, args ...any) error {
			return &Error{File: inc.Source.File, Line: inc.Source.Line, Msg: fmt.Sprintf(format, args...)}
		}
		f, err := l.find(path, inc.Name)
		switch {
		case err != nil:
			return at("include %q: %v", inc.Name, err)
		case f == "":
			return at("include %q: no policy %q in %s", inc.Name, inc.Name, strings.Join(path, ", "))
		}
		for i, c := range chain {
			if c.file == f {
				return at("include cycle: %s", names(chain[i:], inc.Name))
			}
		}
		if len(chain) > MaxIncludeDepth {
			return at("includes nested more than %d deep: %s", MaxIncludeDepth, names(chain, inc.Name))
		}
		if l.done[f] {
			continue
		}
		if err := l.load(path, f, chain); err != nil {
			return err
		}
	}
	l.out.merge(p)
	return nil
}

// names formats a chain of includes ending in last: "a -> b -> last".
func names(chain []link, last string) string {
	var b strings.Builder
	for _, c := range chain {
		b.WriteString(c.name)
		b.WriteString(" -> ")
	}
	b.WriteString(last)
	return b.String()
}

// find returns <dir>/<name>.yaml of the first directory of path that has
// it (on disk or in l.override), "" when none has.
func (l *loader) find(path []string, name string) (string, error) {
	for _, dir := range path {
		f, err := Path(dir, name)
		if err != nil {
			return "", err
		}
		f = filepath.Clean(f)
		if _, ok := l.override[f]; ok {
			return f, nil
		}
		st, err := os.Stat(f)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return "", fmt.Errorf("look up policy: %w", err)
		case !st.Mode().IsRegular():
			return "", fmt.Errorf("policy %s is not a regular file (mode %s)", f, st.Mode().Type())
		}
		return f, nil
	}
	return "", nil
}
