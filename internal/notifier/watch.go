// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/hubclient"
)

// watchMask is what a watched directory reports: entries appearing and
// going away, and the directory itself going away.
const watchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// watcher finds the hub sockets matching a set of glob patterns and uses
// inotify to learn when the set may have changed.
//
// It watches, for every pattern, the directories the pattern can descend
// through: the fixed leading directory (or, while that does not exist yet,
// its nearest existing ancestor) and every existing directory matching a
// wildcard component. Whenever something changes there, Changed fires and
// the owner calls Scan again, which also adjusts the watches.
//
// Scan and Close must be called from one goroutine; Changed may be read
// from any.
type watcher struct {
	patterns []string
	log      *slog.Logger
	fd       int
	file     *os.File
	wds      map[string]int // watched directory → watch descriptor
	changed  chan struct{}
	done     chan struct{}
	once     sync.Once
}

// newWatcher starts an inotify instance for patterns (made absolute) and
// the goroutine that reads it. The caller must Close it.
func newWatcher(patterns []string, log *slog.Logger) (*watcher, error) {
	abs := make([]string, 0, len(patterns))
	for _, p := range patterns {
		if p == "" {
			continue
		}
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("resolve glob %q: %w", p, err)
		}
		if _, err := filepath.Match(filepath.Base(a), ""); err != nil {
			return nil, fmt.Errorf("parse glob %q: %w", p, err)
		}
		abs = append(abs, filepath.Clean(a))
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify init: %w", err)
	}
	w := &watcher{
		patterns: abs,
		log:      log,
		fd:       fd,
		// A non-blocking fd is registered with the runtime poller: Read
		// parks the goroutine and Close wakes it.
		file:    os.NewFile(uintptr(fd), "inotify"),
		wds:     map[string]int{},
		changed: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	go w.read()
	return w, nil
}

// Changed receives a value (coalesced) after inotify reported a change in
// a watched directory.
func (w *watcher) Changed() <-chan struct{} { return w.changed }

// Close stops the reader goroutine and releases the inotify instance.
func (w *watcher) Close() error {
	var err error
	w.once.Do(func() {
		err = w.file.Close()
		<-w.done
	})
	return err
}

func (w *watcher) read() {
	defer close(w.done)
	buf := make([]byte, 16<<10)
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				w.log.Warn("read inotify events", "err", err)
			}
			return
		}
		if n > 0 {
			select {
			case w.changed <- struct{}{}:
			default:
			}
		}
	}
}

// Scan returns the sockets matching the patterns now, sorted, and updates
// the watched directories. A directory created between listing and
// watching is caught by repeating until the set of directories is stable.
func (w *watcher) Scan() []string {
	for range 8 {
		dirs, socks := w.evaluate()
		if w.rewatch(dirs) {
			return socks
		}
	}
	_, socks := w.evaluate()
	return socks
}

// evaluate lists the directories to watch and the matching sockets.
func (w *watcher) evaluate() (dirs, socks []string) {
	for _, p := range w.patterns {
		d, s := expandPattern(p)
		dirs = append(dirs, d...)
		socks = append(socks, s...)
	}
	slices.Sort(dirs)
	slices.Sort(socks)
	return slices.Compact(dirs), slices.Compact(socks)
}

// rewatch makes dirs the watched set and reports whether it was already
// exactly that (same paths, same directories).
func (w *watcher) rewatch(dirs []string) (stable bool) {
	stable = true
	next := make(map[string]int, len(dirs))
	for _, d := range dirs {
		// Adding a watch again is cheap and returns the same descriptor
		// for the same directory, or a new one when the path now names
		// a new directory.
		wd, err := unix.InotifyAddWatch(w.fd, d, watchMask)
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			// Not ours to watch (a rootful container's hub directory,
			// 0750 root:clearance, and we are not a member): nothing in
			// it can be ours either. Quietly, and it stays that way.
			continue
		}
		if err != nil {
			if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
				w.log.Warn("watch directory", "dir", d, "err", err)
			}
			stable = false // it went away meanwhile: look again
			continue
		}
		next[d] = wd
		if old, ok := w.wds[d]; !ok || old != wd {
			stable = false
		}
	}
	kept := map[int]bool{}
	for _, wd := range next {
		kept[wd] = true
	}
	for d, wd := range w.wds {
		if _, ok := next[d]; !ok {
			stable = false
		}
		if !kept[wd] {
			// Already gone when the directory was removed (EINVAL).
			_, _ = unix.InotifyRmWatch(w.fd, uint32(wd))
		}
	}
	w.wds = next
	return stable
}

// expandPattern returns the directories to watch for pattern (absolute
// and clean) and the sockets matching it. Wildcards never match names
// starting with "." (runtime files such as ".lock" or "hub.sock.tmp" in a
// dot directory stay out), and only sockets we may connect to count: a
// rootful container's hub (0660 root:clearance) is skipped quietly
// unless we are a member of its group.
func expandPattern(pattern string) (dirs, socks []string) {
	dir, base := filepath.Split(pattern)
	dir = filepath.Clean(dir)
	comps := strings.Split(strings.TrimPrefix(dir, "/"), "/")
	if dir == "/" {
		comps = nil
	}
	// The fixed leading part.
	i := 0
	for i < len(comps) && !hasMeta(comps[i]) {
		i++
	}
	static := "/" + strings.Join(comps[:i], "/")
	if !isDir(static) {
		// Not there yet: watch the nearest ancestor that is, and look
		// again when something appears in it.
		for d := filepath.Dir(static); ; d = filepath.Dir(d) {
			if isDir(d) {
				return []string{d}, nil
			}
			if d == "/" {
				return nil, nil
			}
		}
	}
	dirs = append(dirs, static)
	level := []string{static}
	for _, comp := range comps[i:] {
		var next []string
		for _, parent := range level {
			for _, name := range matchNames(parent, comp) {
				p := filepath.Join(parent, name)
				if isDir(p) {
					next = append(next, p)
				}
			}
		}
		dirs = append(dirs, next...)
		level = next
	}
	for _, parent := range level {
		for _, name := range matchNames(parent, base) {
			p := filepath.Join(parent, name)
			if hubclient.Usable(p) {
				socks = append(socks, p)
			}
		}
	}
	return dirs, socks
}

// matchNames lists the entries of dir matching the glob component pat,
// skipping names that start with ".". A component without wildcards is
// looked up directly.
func matchNames(dir, pat string) []string {
	if !hasMeta(pat) {
		return []string{pat} // named by the configuration, dot or not
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		if ok, _ := filepath.Match(pat, name); ok {
			out = append(out, name)
		}
	}
	return out
}

func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[\`) }

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
