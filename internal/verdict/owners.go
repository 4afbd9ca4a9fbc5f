// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/sockets"
	"github.com/terok-ai/clearance/internal/varlinkapi"
)

// DefaultSubUIDFile lists the subordinate uid ranges of users
// (subuid(5)); [Config.SubUIDFile] defaults to it.
const DefaultSubUIDFile = "/etc/subuid"

// DefaultMaxConnsPerOwner is [Config.MaxConnsPerOwner]'s default.
const DefaultMaxConnsPerOwner = 16

// maxSubUIDFile bounds how much of the subuid file is read.
const maxSubUIDFile = 4 << 20

// subRange is one line of subuid(5): uids start..start+count-1 belong to
// owner.
type subRange struct {
	start, count uint64
	owner        uint32
}

// subUIDs maps a uid to the user it belongs to: the user whose
// subordinate range holds it (a user with subuids can connect as any of
// them, from a user namespace newuidmap set up), else the uid itself.
// The file is re-read when its modification time or size changes. Safe
// for concurrent use.
type subUIDs struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	stamp   string    // mtime and size of the version read
	checked time.Time // when stamp was last compared with the file
	ranges  []subRange
}

// subUIDRecheck is how often the file is checked for changes: every
// accepted connection asks, and a connect flood must not cost a stat each.
const subUIDRecheck = time.Second

// owner returns the uid that uid counts as. An unreadable file is logged
// (once per change) and treated as empty.
func (s *subUIDs) owner(uid uint32) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshLocked()
	for _, r := range s.ranges {
		if uint64(uid) >= r.start && uint64(uid)-r.start < r.count {
			return r.owner
		}
	}
	return uid
}

func (s *subUIDs) refreshLocked() {
	if s.path == "" {
		return
	}
	now := time.Now()
	if !s.checked.IsZero() && now.Sub(s.checked) < subUIDRecheck {
		return
	}
	s.checked = now
	var st unix.Stat_t
	stamp := "missing"
	if err := unix.Stat(s.path, &st); err == nil {
		stamp = fmt.Sprintf("%d.%d/%d", st.Mtim.Sec, st.Mtim.Nsec, st.Size)
	}
	if stamp == s.stamp {
		return
	}
	s.stamp = stamp
	ranges, err := readSubUIDs(s.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) && s.log != nil {
		s.log.Warn("read subordinate uids: every uid counts as its own owner", "file", s.path, "err", err)
	}
	s.ranges = ranges
}

// readSubUIDs parses a subuid(5) file: "user:start:count" lines, where
// user is a name (looked up in the user database) or a uid. Lines that do
// not parse, and names that do not resolve, are skipped.
func readSubUIDs(path string) ([]subRange, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSubUIDFile))
	if err != nil {
		return nil, err
	}
	return parseSubUIDs(b, lookupUID), nil
}

// lookupUID resolves a user name to its uid.
func lookupUID(name string) (uint32, bool) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(n), err == nil
}

func parseSubUIDs(b []byte, lookup func(string) (uint32, bool)) []subRange {
	var out []subRange
	names := map[string]uint32{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil || count == 0 {
			continue
		}
		owner, ok := names[f[0]]
		if !ok {
			if n, err := strconv.ParseUint(f[0], 10, 32); err == nil {
				owner, ok = uint32(n), true
			} else {
				owner, ok = lookup(f[0])
			}
			if !ok {
				continue
			}
			names[f[0]] = owner
		}
		out = append(out, subRange{start: start, count: count, owner: owner})
	}
	return out
}

// connLimiter hands out connection slots per owner uid.
type connLimiter interface {
	// acquire takes one of owner's slots; release gives it back.
	acquire(owner uint32) (release func(), ok bool)
	// shouldLog reports whether a refusal for owner is to be logged now
	// (at most one line per owner every refusalLogEvery).
	shouldLog(owner uint32) bool
}

// refusalLogEvery spaces the log lines about refused connections of one
// owner, so a connect loop cannot flood the journal.
const refusalLogEvery = 10 * time.Second

// memLimiter counts slots in memory: for a service that accepts its
// connections itself (a listening socket).
type memLimiter struct {
	max int

	mu      sync.Mutex
	used    map[uint32]int
	lastLog map[uint32]time.Time
}

func newMemLimiter(max int) *memLimiter {
	return &memLimiter{max: max, used: map[uint32]int{}, lastLog: map[uint32]time.Time{}}
}

func (m *memLimiter) acquire(owner uint32) (func(), bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.used[owner] >= m.max {
		return nil, false
	}
	m.used[owner]++
	var once sync.Once
	return func() {
		once.Do(func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.used[owner]--; m.used[owner] <= 0 {
				delete(m.used, owner)
			}
		})
	}, true
}

func (m *memLimiter) shouldLog(owner uint32) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if now.Sub(m.lastLog[owner]) < refusalLogEvery {
		return false
	}
	if len(m.lastLog) > 4096 {
		clear(m.lastLog)
	}
	m.lastLog[owner] = now
	return true
}

// lockLimiter counts slots across processes: one instance per connection
// (Accept=yes) holds an open file description locking one byte of
// <dir>/owner-<uid>; the kernel releases the lock when the instance exits,
// however it exits. dir must be private to root (the unit's
// RuntimeDirectory=): nobody else may open, and so lock, those files.
type lockLimiter struct {
	dir string
	max int
}

func (l *lockLimiter) path(owner uint32) string {
	return filepath.Join(l.dir, "owner-"+strconv.FormatUint(uint64(owner), 10))
}

func (l *lockLimiter) acquire(owner uint32) (func(), bool) {
	p := l.path(owner)
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err == nil {
		// New: nothing logged for this owner yet (see shouldLog).
		unix.Futimes(fd, []unix.Timeval{{}, {}})
	} else if errors.Is(err, unix.EEXIST) {
		fd, err = unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	}
	if err != nil {
		// Without the directory there is nothing to count with: serve
		// (the socket unit's MaxConnections= still bounds the total).
		return func() {}, true
	}
	for i := 0; i < l.max; i++ {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: int64(i), Len: 1}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err == nil {
			return func() { unix.Close(fd) }, true
		}
	}
	unix.Close(fd)
	return nil, false
}

// shouldLog uses the owner file's modification time as the shared
// "last logged" clock of every instance.
func (l *lockLimiter) shouldLog(owner uint32) bool {
	p := l.path(owner)
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return true
	}
	if time.Since(time.Unix(st.Mtim.Unix())) < refusalLogEvery {
		return false
	}
	now := time.Now()
	os.Chtimes(p, now, now)
	return true
}

// admission decides which connections a Service serves: root always,
// anyone else while the user it belongs to (its subordinate uids count as
// that user) holds fewer than Config.MaxConnsPerOwner connections.
type admission struct {
	owners  *subUIDs
	limiter connLimiter
	max     int
	log     *slog.Logger
}

// admit implements varlinkapi.Server.Admit.
func (a *admission) admit(nc net.Conn) (func(), []byte, bool) {
	cred, err := sockets.PeerCred(nc)
	if err != nil {
		return nil, varlinkapi.RefusalFrame(fw1PermissionDenied, map[string]string{
			"reason": "no peer credentials on this connection"}), false
	}
	if cred.Uid == 0 {
		return func() {}, nil, true
	}
	owner := a.owners.owner(cred.Uid)
	release, ok := a.limiter.acquire(owner)
	if ok {
		return release, nil, true
	}
	if a.limiter.shouldLog(owner) {
		a.log.Warn("too many connections for one user: refusing further ones (logged at most every "+refusalLogEvery.String()+")",
			"uid", cred.Uid, "owner_uid", owner, "limit", a.max)
	}
	reason := fmt.Sprintf("too many connections to the verdict service for uid %d and its subordinate uids (at most %d at once); close idle connections and retry",
		owner, a.max)
	return nil, varlinkapi.RefusalFrame(fw1PermissionDenied, map[string]string{"reason": reason}), false
}

// fw1PermissionDenied is the error a refused connection gets.
const fw1PermissionDenied = "org.terok.ClearanceFirewall1.PermissionDenied"
