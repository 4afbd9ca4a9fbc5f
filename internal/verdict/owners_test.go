// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseSubUIDs(t *testing.T) {
	users := map[string]uint32{"alice": 1000, "bob": 1001}
	lookup := func(n string) (uint32, bool) { u, ok := users[n]; return u, ok }
	in := `# comment
alice:100000:65536
1001:165536:65536
ghost:300000:10
bad line
alice:x:1
bob:400000:0
bob:500000:10
`
	got := parseSubUIDs([]byte(in), lookup)
	want := []subRange{{100000, 65536, 1000}, {165536, 65536, 1001}, {500000, 10, 1001}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(subRange{})); diff != "" {
		t.Errorf("ranges (-want +got):\n%s", diff)
	}
}

func TestAttackSubUIDOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subuid")
	os.WriteFile(path, []byte("1000:100000:65536\n"), 0o644)
	s := &subUIDs{path: path}
	for uid, want := range map[uint32]uint32{1000: 1000, 100000: 1000, 165535: 1000, 165536: 165536, 99999: 99999, 0: 0} {
		if got := s.owner(uid); got != want {
			t.Errorf("owner(%d) = %d, want %d", uid, got, want)
		}
	}
	// A changed file is read again (at most once a second).
	os.WriteFile(path, []byte("2000:100000:10\n1000:200000:100000\n"), 0o644)
	s.checked = time.Time{}
	if got := s.owner(100001); got != 2000 {
		t.Errorf("after the file changed, owner(100001) = %d, want 2000", got)
	}
	// A missing file: every uid is its own.
	os.Remove(path)
	s.checked = time.Time{}
	if got := s.owner(100001); got != 100001 {
		t.Errorf("without the file, owner(100001) = %d", got)
	}
}

// testLimiter runs the shared contract of both limiters.
func testLimiter(t *testing.T, l connLimiter) {
	t.Helper()
	var rel []func()
	for i := 0; i < 3; i++ {
		r, ok := l.acquire(1000)
		if !ok {
			t.Fatalf("slot %d of 3 refused", i)
		}
		rel = append(rel, r)
	}
	if _, ok := l.acquire(1000); ok {
		t.Fatal("a fourth slot for the same owner was granted")
	}
	if r, ok := l.acquire(1001); !ok {
		t.Fatal("another owner was refused")
	} else {
		r()
	}
	rel[1]()
	r, ok := l.acquire(1000)
	if !ok {
		t.Fatal("a released slot was not granted again")
	}
	r()
	rel[0]()
	rel[2]()
	if !l.shouldLog(1000) {
		t.Error("first refusal not logged")
	}
	if l.shouldLog(1000) {
		t.Error("second refusal within the interval logged again")
	}
}

func TestAttackMemLimiter(t *testing.T) { testLimiter(t, newMemLimiter(3)) }

// TestLockLimiter counts across open file descriptions, as separate
// instances (processes) would: each acquire opens the owner file anew.
func TestAttackLockLimiter(t *testing.T) {
	testLimiter(t, &lockLimiter{dir: t.TempDir(), max: 3})
}
