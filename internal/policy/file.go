// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"
)

// ErrInvalidName is returned for a policy name that does not match
// [A-Za-z0-9][A-Za-z0-9_.-]{0,127}.
var ErrInvalidName = errors.New("invalid policy name")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ValidName reports whether name may name a policy file. Valid names
// contain no slash and never start with a dot, so <dir>/<name>.yaml always
// stays inside dir.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Path returns <dir>/<name>.yaml, or an error wrapping [ErrInvalidName].
func Path(dir, name string) (string, error) {
	if !ValidName(name) {
		return "", fmt.Errorf("policy %q: %w", name, ErrInvalidName)
	}
	return filepath.Join(dir, name+".yaml"), nil
}

// Load reads <dir>/<name>.yaml as written: its includes are listed in
// Include, not expanded (see [LoadLayered]). A missing file is an empty
// policy.
func Load(dir, name string) (*Policy, error) {
	path, err := Path(dir, name)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Policy{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return Parse(path, data)
}

// appendMu serialises Appends within the process; flock on the directory
// serialises them across processes.
var appendMu sync.Mutex

// Append adds e (a name or an address, with its port, protocol and
// comment; its Source is ignored) to list ("allow" or "deny") of
// <dir>/<name>.yaml, creating dir and the file if needed. The entry is
// written in the short syntax ("github.com:443/tcp"), or as dest and
// comment when it has a comment.
//
// It is idempotent: nothing is written when the list already holds the
// same destination, port and protocol ([Entry.Same]). The same entry is
// removed from the other list, so the newest "always" verdict is the one
// that applies when the next container starts.
// Other entries, comments and key order in the file are kept. An existing
// file that does not parse is left alone and reported.
//
// The file is replaced atomically: a temporary file in dir is written and
// fsynced, renamed over the old file, and dir is fsynced. The file is
// [FileMode] (0600) whatever the umask, and a directory Append creates is
// 0700: what a user allowed "always" is nobody else's business. Concurrent Appends, in this process or others
// using Append, are serialised with flock(2) on dir.
func Append(dir, name, list string, e Entry) error {
	if list != ListAllow && list != ListDeny {
		return fmt.Errorf("append to policy list %q: unknown list", list)
	}
	path, err := Path(dir, name)
	if err != nil {
		return err
	}
	e, err = e.normalize()
	if err != nil {
		return fmt.Errorf("append to policy %s: %w", name, err)
	}
	e.Source = Source{}

	appendMu.Lock()
	defer appendMu.Unlock()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create policy directory: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open policy directory: %w", err)
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock policy directory: %w", err)
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN)

	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		data = nil
	case err != nil:
		return fmt.Errorf("read policy: %w", err)
	}
	out, changed, err := appendEntry(path, data, list, e)
	if err != nil || !changed {
		return err
	}
	if err := writeAtomic(d, path, out, FileMode); err != nil {
		return fmt.Errorf("write policy %s: %w", path, err)
	}
	return nil
}

// FileMode is the mode of every policy file [Append] writes.
const FileMode fs.FileMode = 0o600

// appendEntry edits the document tree of data (keeping comments and order)
// and returns the new content and whether anything changed.
func appendEntry(file string, data []byte, list string, e Entry) ([]byte, bool, error) {
	p, err := Parse(file, data)
	if err != nil {
		return nil, false, err
	}
	cur, other := p.Allow, p.Deny
	otherList := ListDeny
	if list == ListDeny {
		cur, other, otherList = p.Deny, p.Allow, ListAllow
	}
	has := func(es []Entry) bool { return slices.ContainsFunc(es, e.Same) }
	if has(cur) && !has(other) {
		return nil, false, nil
	}

	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, false, yamlError(file, data, err)
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode}
	}
	if len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null") {
		doc.Content = []*yaml.Node{{Kind: yaml.MappingNode}}
	}
	root := doc.Content[0]
	seq := func(key string) *yaml.Node {
		for i := 0; i+1 < len(root.Content); i += 2 {
			if root.Content[i].Value == key {
				v := root.Content[i+1]
				if v.Kind != yaml.SequenceNode { // "allow:" (null)
					*v = yaml.Node{Kind: yaml.SequenceNode}
				}
				return v
			}
		}
		v := &yaml.Node{Kind: yaml.SequenceNode}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, v)
		return v
	}
	if !has(cur) {
		s := seq(list)
		s.Style = 0 // block style, one entry per line
		s.Content = append(s.Content, entryNode(e))
	}
	if has(other) {
		s := seq(otherList)
		s.Content = slices.DeleteFunc(s.Content, func(n *yaml.Node) bool {
			x, err := entryFromNode(n, func(*yaml.Node, string, ...any) error { return errors.New("") })
			return err == nil && x.Same(e)
		})
	}
	out, err := encodeNode(&doc)
	if err != nil {
		return nil, false, err
	}
	if _, err := Parse(file, out); err != nil {
		return nil, false, fmt.Errorf("re-parse edited policy: %w", err)
	}
	return out, true, nil
}

// writeAtomic replaces path (inside directory d) with data.
func writeAtomic(d *os.File, path string, data []byte, mode fs.FileMode) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return d.Sync()
}
