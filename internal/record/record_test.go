// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package record

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/netns"
)

func valid() Record {
	return Record{
		ID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", ID12: "0123456789ab",
		Name: "web-1", PID: 4242, NetnsInode: 4026532000, NetnsDev: 4, OwnerUID: 1000,
		Dossier: map[string]string{"project": "demo"}, Policy: "demo", CreatedUsec: 1700000000000000,
	}
}

func TestLocate(t *testing.T) {
	tests := []struct {
		name, root string
		uid        int
		id, want   string
	}{
		{"user", "", 1000, "0123456789ab", "/run/user/1000/clearance/0123456789ab/container.json"},
		{"root", "", 0, "0123456789ab", "/run/clearance/containers/0123456789ab/container.json"},
		{"injected root", "/tmp/x", 7, "abc", "/tmp/x/user/7/clearance/abc/container.json"},
		{"dot-dot refused", "", 1000, "..", ""},
		{"slash refused", "", 1000, "a/b", ""},
		{"empty refused", "", 1000, "", ""},
		{"negative uid refused", "", -1, "abc", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Locate(tt.root, tt.uid, tt.id); got != tt.want {
				t.Errorf("Locate(%q, %d, %q) = %q, want %q", tt.root, tt.uid, tt.id, got, tt.want)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	good := `{"id":"abcdef012345678","id12":"abcdef012345","name":"n","pid":99,"netns_inode":5,"netns_dev":4,"owner_uid":1000,"dossier":{"a":"b"},"policy":"p","created_usec":1}`
	tests := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{"complete", good, false},
		{"no dossier becomes empty map", strings.Replace(good, `"dossier":{"a":"b"},`, "", 1), false},
		{"no policy", strings.Replace(good, `"policy":"p",`, "", 1), false},
		{"unknown field", strings.Replace(good, `"name"`, `"extra":1,"name"`, 1), true},
		{"trailing data", good + `{}`, true},
		{"pid 1", strings.Replace(good, `"pid":99`, `"pid":1`, 1), true},
		{"pid missing", strings.Replace(good, `"pid":99,`, "", 1), true},
		{"negative pid", strings.Replace(good, `"pid":99`, `"pid":-5`, 1), true},
		{"inode missing", strings.Replace(good, `"netns_inode":5,`, "", 1), true},
		{"dev missing", strings.Replace(good, `"netns_dev":4,`, "", 1), true},
		{"bad id12", strings.Replace(good, `"id12":"abcdef012345"`, `"id12":"../etc"`, 1), true},
		{"bad policy", strings.Replace(good, `"policy":"p"`, `"policy":"../p"`, 1), true},
		{"wrong type", strings.Replace(good, `"pid":99`, `"pid":"99"`, 1), true},
		{"observe mode", strings.Replace(good, `"policy":"p"`, `"policy":"p","mode":"observe"`, 1), false},
		{"enforce mode", strings.Replace(good, `"policy":"p"`, `"policy":"p","mode":"enforce"`, 1), false},
		{"unknown mode", strings.Replace(good, `"policy":"p"`, `"policy":"p","mode":"audit"`, 1), true},
		{"not json", `nope`, true},
		{"too large", `{"name":"` + strings.Repeat("a", MaxSize) + `"}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Decode([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Decode: err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if err == nil && r.Dossier == nil {
				t.Error("Dossier is nil")
			}
		})
	}
}

func TestWriteRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "clearance", "0123456789ab")
	want := valid()
	if err := Write(dir, want); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	got, err := ReadOwned(path, uint32(os.Getuid()))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries, want only the record", len(entries))
	}
	// Rewriting replaces it.
	want.PID = 5000
	if err := Write(dir, want); err != nil {
		t.Fatal(err)
	}
	if got, _ := Read(path); got.PID != 5000 {
		t.Errorf("pid after rewrite %d, want 5000", got.PID)
	}
}

func TestWriteRefusesInvalid(t *testing.T) {
	r := valid()
	r.PID = 0
	if err := Write(t.TempDir(), r); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Write(pid 0) = %v, want ErrInvalid", err)
	}
}

func TestReadOwnedRefuses(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := Write(real, valid()); err != nil {
		t.Fatal(err)
	}
	// A symlinked record file.
	linkFile := filepath.Join(base, "linkfile")
	os.MkdirAll(linkFile, 0o700)
	if err := os.Symlink(filepath.Join(real, FileName), filepath.Join(linkFile, FileName)); err != nil {
		t.Fatal(err)
	}
	// A symlinked directory.
	if err := os.Symlink(real, filepath.Join(base, "linkdir")); err != nil {
		t.Fatal(err)
	}
	// A world-writable file.
	ww := filepath.Join(base, "ww")
	if err := Write(ww, valid()); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(ww, FileName), 0o666)
	// A directory in place of the file.
	dirf := filepath.Join(base, "dir")
	os.MkdirAll(filepath.Join(dirf, FileName), 0o700)

	tests := []struct {
		name    string
		path    string
		uid     uint32
		wantErr error
	}{
		{"symlinked file", filepath.Join(linkFile, FileName), uint32(os.Getuid()), ErrInvalid},
		{"symlinked directory", filepath.Join(base, "linkdir", FileName), uint32(os.Getuid()), ErrInvalid},
		{"world writable", filepath.Join(ww, FileName), uint32(os.Getuid()), ErrInvalid},
		{"not a regular file", filepath.Join(dirf, FileName), uint32(os.Getuid()), ErrInvalid},
		{"missing", filepath.Join(base, "none", FileName), uint32(os.Getuid()), os.ErrNotExist},
	}
	if os.Getuid() != 0 {
		tests = append(tests, struct {
			name    string
			path    string
			uid     uint32
			wantErr error
		}{"owned by someone else", filepath.Join(real, FileName), uint32(os.Getuid()) + 1, ErrInvalid})
	} else {
		other := filepath.Join(base, "other")
		if err := Write(other, valid()); err != nil {
			t.Fatal(err)
		}
		os.Chown(filepath.Join(other, FileName), 4321, 4321)
		tests = append(tests, struct {
			name    string
			path    string
			uid     uint32
			wantErr error
		}{"owned by someone else", filepath.Join(other, FileName), 1000, ErrInvalid})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadOwned(tt.path, tt.uid)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadOwned = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"id":"abcdef012345678","id12":"abcdef012345","name":"n","pid":99,"netns_inode":5,"netns_dev":4,"owner_uid":1000,"dossier":{"a":"b"},"policy":"p","created_usec":1}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"pid":1e400}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if r.PID <= 1 || !ValidID(r.ID12) || r.NetnsInode == 0 || r.Dossier == nil {
			t.Fatalf("Decode accepted an invalid record: %+v", r)
		}
	})
}

func TestParseResolvConf(t *testing.T) {
	in := "# comment\nnameserver 10.0.0.53\nnameserver   fe80::1%eth0\nnameserver fe80::2\nsearch example.com\nnameserver bogus\nnameserver ::ffff:192.0.2.1\noptions ndots:2\nnameserver\n"
	want := []netip.Addr{netip.MustParseAddr("10.0.0.53"), netip.MustParseAddr("fe80::2"), netip.MustParseAddr("192.0.2.1")}
	if diff := cmp.Diff(want, ParseResolvConf([]byte(in)), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("ParseResolvConf (-want +got):\n%s", diff)
	}
}

func TestResolversValidated(t *testing.T) {
	for _, tt := range []struct {
		name string
		rs   []string
		ok   bool
	}{
		{"none", nil, true},
		{"v4 and v6", []string{"192.0.2.53", "2001:db8::53"}, true},
		{"not an address", []string{"dns.example"}, false},
		{"zone", []string{"fe80::1%eth0"}, false},
		{"too many", []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6", "192.0.2.7", "192.0.2.8", "192.0.2.9"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := valid()
			r.Resolvers = tt.rs
			if err := r.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// TestOpenNetnsByPath: the path the runtime named is used only when the
// process's /proc/<pid>/ns/net is denied (the capability-less system hub;
// test/packaging TestOperatorGroup covers that case for real); a process
// that is gone stays "not found" whatever the path, since the hub's
// poststop check takes that to mean the container ended.
func TestOpenNetnsByPath(t *testing.T) {
	self, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	id, err := netns.Identify(self)
	self.Close()
	if err != nil {
		t.Fatal(err)
	}
	const gonePID = 1<<22 - 7 // above the default pid_max: never a process
	tests := []struct {
		name    string
		rec     Record
		wantErr bool
	}{
		{"pid not there, the named namespace is the recorded one",
			Record{PID: gonePID, NetnsPath: "/proc/self/ns/net", NetnsInode: id.Ino, NetnsDev: id.Dev}, true},
		{"this process", Record{PID: os.Getpid(), NetnsPath: "/nonexistent/netns", NetnsInode: id.Ino, NetnsDev: id.Dev}, false},
		{"pid not there and no path", Record{PID: gonePID, NetnsInode: id.Ino, NetnsDev: id.Dev}, true},
		{"the named namespace is another one",
			Record{PID: gonePID, NetnsPath: "/proc/self/ns/net", NetnsInode: id.Ino + 1, NetnsDev: id.Dev}, true},
		{"the path is not there",
			Record{PID: gonePID, NetnsPath: "/nonexistent/netns", NetnsInode: id.Ino, NetnsDev: id.Dev}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := tt.rec.OpenNetns()
			if f != nil {
				f.Close()
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("OpenNetns = %v, want error %v", err, tt.wantErr)
			}
			if tt.rec.PID == gonePID && !errors.Is(err, os.ErrNotExist) && tt.rec.NetnsInode == id.Ino {
				t.Errorf("a gone process: %v, want it to wrap fs.ErrNotExist", err)
			}
		})
	}
}
