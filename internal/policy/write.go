// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// MaxFileSize bounds a policy file [Write] accepts: a quarter of the
// verdict service's 1 MiB request limit, so it always fits one call, JSON
// escapes included. Real policies are a few kilobytes.
const MaxFileSize = 256 << 10

// ErrExists is returned by [Write] when the policy file exists and the
// caller did not ask to replace it.
var ErrExists = errors.New("policy exists")

// ErrTooLarge is returned by [Write] for content above [MaxFileSize].
var ErrTooLarge = errors.New("policy too large")

// Check reports whether the policy name would load, the way a container
// starts with it ([LoadLayered] with systemPath and userDir), if
// <dir>/<name>.yaml held data: data parses, its includes exist, and no
// include cycle or nesting limit is hit. dir is userDir for a user's
// layer, or the first directory of systemPath for the administrator's.
// Nothing is written. Errors are [*Error]s with file and line where the
// problem has one.
func Check(systemPath []string, userDir, dir, name string, data []byte) error {
	path, err := Path(dir, name)
	if err != nil {
		return err
	}
	if len(data) > MaxFileSize {
		return fmt.Errorf("policy %s: %w (%d bytes, at most %d)", name, ErrTooLarge, len(data), MaxFileSize)
	}
	if _, err := Parse(path, data); err != nil {
		return err
	}
	_, err = loadLayered(systemPath, userDir, name, map[string][]byte{filepath.Clean(path): data})
	return err
}

// Write replaces <dir>/<name>.yaml with data, a whole policy document,
// creating dir (0700) if needed. data must parse ([Parse]) and be at most
// [MaxFileSize] bytes; it is written as given, comments included. When
// the file exists, Write fails with [ErrExists] unless replace is true.
// It returns the file's path and whether an existing file was replaced.
//
// The file is replaced atomically as by [Append] (a temporary file in
// dir, fsynced, renamed over the old one, dir fsynced), is [FileMode]
// (0600) whatever the umask, and Write is serialised with Append and
// other Writes by the same flock(2) on dir, so an "always" verdict
// appended meanwhile is never half-overwritten: it is either in the old
// file that Write replaces or appended to the new one.
func Write(dir, name string, data []byte, replace bool) (path string, replaced bool, err error) {
	path, err = Path(dir, name)
	if err != nil {
		return "", false, err
	}
	if len(data) > MaxFileSize {
		return "", false, fmt.Errorf("policy %s: %w (%d bytes, at most %d)", name, ErrTooLarge, len(data), MaxFileSize)
	}
	if _, err := Parse(path, data); err != nil {
		return "", false, err
	}

	appendMu.Lock()
	defer appendMu.Unlock()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, fmt.Errorf("create policy directory: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return "", false, fmt.Errorf("open policy directory: %w", err)
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return "", false, fmt.Errorf("lock policy directory: %w", err)
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN)

	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", false, fmt.Errorf("look up policy: %w", err)
	case !st.Mode().IsRegular():
		return "", false, fmt.Errorf("policy %s is not a regular file (mode %s)", path, st.Mode().Type())
	case !replace:
		return path, false, fmt.Errorf("%s: %w", path, ErrExists)
	default:
		replaced = true
	}
	if err := writeAtomic(d, path, data, FileMode); err != nil {
		return "", false, fmt.Errorf("write policy %s: %w", path, err)
	}
	return path, replaced, nil
}
