// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// listenAt binds a Unix socket at path (creating its directory) and
// returns a function removing it.
func listenAt(t testing.TB, path string) func() {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return func() { ln.Close() }
}

// scanUntil waits for inotify and rescans until the sockets are want.
func scanUntil(t *testing.T, w *watcher, want []string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		got := w.Scan()
		if cmp.Equal(want, got) {
			return
		}
		select {
		case <-w.Changed():
		case <-deadline:
			t.Fatalf("sockets (-want +got):\n%s", cmp.Diff(want, got))
		}
	}
}

func TestWatcher(t *testing.T) {
	rt := testutil.ShortDir(t)
	base := filepath.Join(rt, "clearance")
	w, err := newWatcher([]string{filepath.Join(base, "*", "hub.sock"), filepath.Join(rt, "terok", "clearance", "*.sock")},
		testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	outer := t // sockets live until the whole test ends
	if got := w.Scan(); len(got) != 0 {
		t.Fatalf("sockets in an empty runtime dir: %q", got)
	}

	a := filepath.Join(base, "aaaa", "hub.sock")
	t.Run("the base directory and a hub appear after the start", func(t *testing.T) {
		listenAt(outer, a)
		scanUntil(t, w, []string{a})
	})

	seed := filepath.Join(rt, "terok", "clearance", "web-1.sock")
	t.Run("the seed's layout through its glob", func(t *testing.T) {
		listenAt(outer, seed)
		scanUntil(t, w, []string{a, seed})
	})

	t.Run("dot entries and regular files are ignored", func(t *testing.T) {
		listenAt(outer, filepath.Join(base, ".hidden", "hub.sock"))
		listenAt(outer, filepath.Join(rt, "terok", "clearance", ".tmp.sock"))
		if err := os.MkdirAll(filepath.Join(base, "file"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(base, "file", "hub.sock"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		b := filepath.Join(base, "bbbb", "hub.sock")
		listenAt(outer, b) // a real one after the decoys: once it shows, the decoys were seen too
		scanUntil(t, w, []string{a, b, seed})
		if err := os.RemoveAll(filepath.Join(base, "bbbb")); err != nil {
			t.Fatal(err)
		}
		scanUntil(t, w, []string{a, seed})
	})

	t.Run("the base directory removed and created again", func(t *testing.T) {
		if err := os.RemoveAll(base); err != nil {
			t.Fatal(err)
		}
		scanUntil(t, w, []string{seed})
		c := filepath.Join(base, "cccc", "hub.sock")
		listenAt(outer, c)
		scanUntil(t, w, []string{c, seed})
	})
}

func TestExpandPattern(t *testing.T) {
	rt := testutil.ShortDir(t)
	listenAt(t, filepath.Join(rt, "x", "a1", "hub.sock"))
	listenAt(t, filepath.Join(rt, "x", "b2", "hub.sock"))
	tests := []struct {
		name      string
		pattern   string
		wantDirs  []string
		wantSocks []string
	}{
		{"per-container directories", filepath.Join(rt, "x", "*", "hub.sock"),
			[]string{filepath.Join(rt, "x"), filepath.Join(rt, "x", "a1"), filepath.Join(rt, "x", "b2")},
			[]string{filepath.Join(rt, "x", "a1", "hub.sock"), filepath.Join(rt, "x", "b2", "hub.sock")}},
		{"a pattern inside the name", filepath.Join(rt, "x", "a?", "hub.sock"),
			[]string{filepath.Join(rt, "x"), filepath.Join(rt, "x", "a1")},
			[]string{filepath.Join(rt, "x", "a1", "hub.sock")}},
		{"a missing base watches its nearest ancestor", filepath.Join(rt, "y", "z", "*", "hub.sock"),
			[]string{rt}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dirs, socks := expandPattern(tt.pattern)
			if diff := cmp.Diff(tt.wantDirs, dirs); diff != "" {
				t.Errorf("dirs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantSocks, socks); diff != "" {
				t.Errorf("sockets (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAllowForLabel(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{time.Hour, "Allow 1 h"},
		{30 * time.Minute, "Allow 30 min"},
		{90 * time.Minute, "Allow 1 h 30 min"},
		{45 * time.Second, "Allow 45 s"},
		{0, ""},
	}
	for _, tt := range tests {
		if got := AllowForLabel(tt.d); got != tt.want {
			t.Errorf("AllowForLabel(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
