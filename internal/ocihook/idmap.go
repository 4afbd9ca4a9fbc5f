// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// maxIDMapSize bounds how much of a uid_map is read (the kernel allows at
// most 340 lines of three numbers).
const maxIDMapSize = 32 << 10

// IDMapRange is one line of /proc/<pid>/uid_map: Count ids starting at
// Inside in the process's user namespace are Outside.. in the parent
// user namespace (for the reader's own map).
type IDMapRange struct {
	Inside, Outside, Count uint32
}

// ParseIDMap parses the contents of a uid_map or gid_map file. Every line
// must hold exactly three decimal numbers, Count must be positive and no
// range may run past 2^32.
func ParseIDMap(b []byte) ([]IDMapRange, error) {
	var out []IDMapRange
	for n, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("parse id map line %d: want 3 fields, got %d", n+1, len(f))
		}
		var v [3]uint32
		for i, s := range f {
			u, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("parse id map line %d: %w", n+1, err)
			}
			v[i] = uint32(u)
		}
		r := IDMapRange{Inside: v[0], Outside: v[1], Count: v[2]}
		if r.Count == 0 || uint64(r.Inside)+uint64(r.Count) > 1<<32 || uint64(r.Outside)+uint64(r.Count) > 1<<32 {
			return nil, fmt.Errorf("parse id map line %d: range %d %d %d out of bounds", n+1, r.Inside, r.Outside, r.Count)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("parse id map: no ranges (user namespace without a mapping)")
	}
	return out, nil
}

// Initial reports whether m is the identity map of the initial user
// namespace ("0 0 4294967295").
func Initial(m []IDMapRange) bool {
	return len(m) == 1 && m[0] == IDMapRange{Inside: 0, Outside: 0, Count: 4294967295}
}

// MapID returns the outside id of id under m (the host uid of an
// in-namespace uid, for the reader's own /proc/self/uid_map when its
// parent is the initial user namespace). ok is false when id is not
// mapped.
func MapID(m []IDMapRange, id uint32) (outside uint32, ok bool) {
	for _, r := range m {
		if id >= r.Inside && uint64(id) < uint64(r.Inside)+uint64(r.Count) {
			return r.Outside + (id - r.Inside), true
		}
	}
	return 0, false
}

// HostUID returns the host uid of the calling process: its effective uid
// mapped through /proc/self/uid_map (path; "" means that file). In the
// initial user namespace that is the effective uid itself; as uid 0 of
// rootless podman's user namespace it is the user who runs podman.
//
// A user namespace nested more than one level deep maps only to its
// parent; clearance does not support that (podman's rootless namespace is
// a child of the initial one).
func HostUID(path string, euid int) (uint32, error) {
	if path == "" {
		path = "/proc/self/uid_map"
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read uid map: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxIDMapSize))
	if err != nil {
		return 0, fmt.Errorf("read uid map: %w", err)
	}
	m, err := ParseIDMap(b)
	if err != nil {
		return 0, err
	}
	if euid < 0 {
		return 0, fmt.Errorf("host uid: invalid euid %d", euid)
	}
	host, ok := MapID(m, uint32(euid))
	if !ok {
		return 0, fmt.Errorf("host uid: euid %d is not mapped in %s", euid, path)
	}
	if host == 4294967295 {
		return 0, fmt.Errorf("host uid: euid %d maps to the invalid uid -1", euid)
	}
	return host, nil
}
