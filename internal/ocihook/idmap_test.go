// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

func TestParseIDMap(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []IDMapRange
		wantErr bool
	}{
		{"initial namespace", "         0          0 4294967295\n", []IDMapRange{{0, 0, 4294967295}}, false},
		{"rootless podman", "         0       1001          1\n         1     100000      65536\n",
			[]IDMapRange{{0, 1001, 1}, {1, 100000, 65536}}, false},
		{"empty lines ignored", "\n0 1000 1\n\n", []IDMapRange{{0, 1000, 1}}, false},
		{"empty map", "", nil, true},
		{"two fields", "0 1000\n", nil, true},
		{"four fields", "0 1000 1 1\n", nil, true},
		{"negative", "0 -1 1\n", nil, true},
		{"not a number", "0 x 1\n", nil, true},
		{"too large", "0 4294967296 1\n", nil, true},
		{"zero count", "0 1000 0\n", nil, true},
		{"range overflows", "4294967295 0 2\n", nil, true},
		{"outside overflows", "0 4294967295 2\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseIDMap([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseIDMap(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseIDMap(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestHostUID(t *testing.T) {
	tests := []struct {
		name    string
		uidMap  string
		euid    int
		want    uint32
		wantErr bool
	}{
		{"rootful podman: root in the initial namespace", "0 0 4294967295\n", 0, 0, false},
		{"a user in the initial namespace", "0 0 4294967295\n", 1000, 1000, false},
		{"rootless podman: uid 0 is the host user", "0 1001 1\n1 100000 65536\n", 0, 1001, false},
		{"rootless podman: a subordinate uid", "0 1001 1\n1 100000 65536\n", 5, 100004, false},
		{"unmapped uid", "0 1001 1\n", 7, 0, true},
		{"maps to the invalid uid", "0 4294967295 1\n", 0, 0, true},
		{"negative euid", "0 0 4294967295\n", -1, 0, true},
		{"garbage", "hello\n", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "uid_map")
			if err := os.WriteFile(p, []byte(tt.uidMap), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := HostUID(p, tt.euid)
			if (err != nil) != tt.wantErr {
				t.Fatalf("HostUID err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("HostUID = %d, want %d", got, tt.want)
			}
		})
	}
}

// envHostUIDChild makes the test binary TestHostUIDSelf's child: it
// prints HostUID of its own euid and exits.
const envHostUIDChild = "CLEARANCE_TEST_HOSTUID_CHILD"

// TestHostUIDSelf reads the real /proc/self/uid_map twice: in the test's
// own user namespace, where the initial namespace maps every uid to
// itself, and in a child the test starts in a new user namespace that
// maps its uid 7 to the test's euid, where HostUID must undo that
// mapping. The second half holds wherever the test runs, the initial
// namespace or not.
func TestHostUIDSelf(t *testing.T) {
	if os.Getenv(envHostUIDChild) == "1" {
		got, err := HostUID("", os.Geteuid())
		if err != nil {
			fmt.Printf("error: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("hostuid=%d\n", got)
		os.Exit(0)
	}

	euid := os.Geteuid()
	got, err := HostUID("", euid)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseIDMap(b)
	if err != nil {
		t.Fatal(err)
	}
	if Initial(m) {
		if got != uint32(euid) {
			t.Errorf("HostUID in the initial namespace = %d, want euid %d", got, euid)
		}
	} else if got == uint32(euid) && len(m) == 1 && m[0].Inside != m[0].Outside {
		t.Errorf("HostUID = euid %d in a namespace that maps %d to %d", got, m[0].Inside, m[0].Outside)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestHostUIDSelf$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHostUIDChild+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 7, HostID: euid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 7, HostID: os.Getegid(), Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EINVAL) {
		testutil.Unavailable(t, "cannot create a user namespace: %v", err)
	}
	if err != nil {
		t.Fatalf("child in a new user namespace: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("hostuid=%d\n", euid); string(out) != want {
		t.Errorf("child mapped 7 -> %d printed %q, want %q", euid, out, want)
	}
}

func TestInitial(t *testing.T) {
	if !Initial([]IDMapRange{{0, 0, 4294967295}}) {
		t.Error("identity map not recognised")
	}
	if Initial([]IDMapRange{{0, 0, 65536}}) {
		t.Error("partial identity map taken for the initial namespace")
	}
}

func FuzzParseIDMap(f *testing.F) {
	f.Add([]byte("0 0 4294967295\n"))
	f.Add([]byte("0 1001 1\n1 100000 65536\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseIDMap(b)
		if err != nil {
			return
		}
		for _, r := range m {
			if r.Count == 0 || uint64(r.Inside)+uint64(r.Count) > 1<<32 {
				t.Fatalf("accepted bad range %+v", r)
			}
			if out, ok := MapID(m, r.Inside); !ok || out != r.Outside && !overlaps(m, r) {
				t.Fatalf("MapID(%d) = %d, %v", r.Inside, out, ok)
			}
		}
	})
}

// overlaps reports whether an earlier range also covers r.Inside (the
// first match wins, as in the kernel's lookup of a valid map).
func overlaps(m []IDMapRange, r IDMapRange) bool {
	for _, o := range m {
		if o == r {
			return false
		}
		if r.Inside >= o.Inside && uint64(r.Inside) < uint64(o.Inside)+uint64(o.Count) {
			return true
		}
	}
	return false
}
