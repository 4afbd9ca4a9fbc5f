// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubclient

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Discover returns the hub sockets the patterns match that the caller
// may connect to, each once, sorted. Names starting with "." (a hub's
// directory being set up or torn down) are skipped, and so are sockets
// the caller lacks the permission to connect to: the system hubs of a
// group the caller is not a member of, skipped without a word.
func Discover(patterns []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, p := range patterns {
		matches, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("glob %q: %w", p, err)
		}
		for _, m := range matches {
			if seen[m] || strings.HasPrefix(filepath.Base(m), ".") || strings.HasPrefix(filepath.Base(filepath.Dir(m)), ".") {
				continue
			}
			seen[m] = true
			if Usable(m) {
				out = append(out, m)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// Usable reports whether path is a socket the caller may connect to:
// connect(2) needs write access, checked with the effective ids and
// groups.
func Usable(path string) bool {
	st, err := os.Stat(path)
	if err != nil || st.Mode().Type() != fs.ModeSocket {
		return false
	}
	return unix.Faccessat(unix.AT_FDCWD, path, unix.W_OK, unix.AT_EACCESS) == nil
}
