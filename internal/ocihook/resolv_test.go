// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBundleResolvers(t *testing.T) {
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	write := func(t *testing.T, path, s string) {
		t.Helper()
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T, bundle string)
		want    []netip.Addr
		wantErr bool
	}{
		{"podman's bind mount", func(t *testing.T, b string) {
			write(t, filepath.Join(b, "userdata", "resolv.conf"), "search x\nnameserver 10.254.77.1\nnameserver 2001:db8::53\n")
			write(t, filepath.Join(b, "config.json"), `{"root":{"path":"rootfs"},"mounts":[
				{"destination":"/proc","type":"proc","source":"proc"},
				{"destination":"/etc/resolv.conf","type":"bind","source":"`+filepath.Join(b, "userdata", "resolv.conf")+`","options":["bind","ro"]}]}`)
			write(t, filepath.Join(b, "rootfs", "etc", "resolv.conf"), "nameserver 192.0.2.99\n")
		}, addrs("10.254.77.1", "2001:db8::53"), false},
		{"bind mount by option, relative source", func(t *testing.T, b string) {
			write(t, filepath.Join(b, "rc"), "nameserver 192.0.2.1\n")
			write(t, filepath.Join(b, "config.json"), `{"mounts":[{"destination":"/etc//resolv.conf","source":"rc","options":["rbind"]}]}`)
		}, addrs("192.0.2.1"), false},
		{"the image's own file", func(t *testing.T, b string) {
			write(t, filepath.Join(b, "config.json"), `{"root":{"path":"rootfs"}}`)
			write(t, filepath.Join(b, "rootfs", "etc", "resolv.conf"), "nameserver 192.0.2.7\n")
		}, addrs("192.0.2.7"), false},
		{"a symlink in the image stays inside its root", func(t *testing.T, b string) {
			write(t, filepath.Join(b, "config.json"), `{"root":{"path":"rootfs"}}`)
			write(t, filepath.Join(b, "rootfs", "real"), "nameserver 192.0.2.8\n")
			write(t, filepath.Join(b, "host-secret"), "nameserver 203.0.113.66\n")
			os.MkdirAll(filepath.Join(b, "rootfs", "etc"), 0o755)
			// An absolute link resolves inside the root, not on the host.
			os.Symlink("/real", filepath.Join(b, "rootfs", "etc", "resolv.conf"))
		}, addrs("192.0.2.8"), false},
		{"a directory is not read", func(t *testing.T, b string) {
			write(t, filepath.Join(b, "config.json"), `{"root":{"path":"rootfs"}}`)
			os.MkdirAll(filepath.Join(b, "rootfs", "etc", "resolv.conf"), 0o755)
		}, nil, true},
		{"no config", func(t *testing.T, b string) {}, nil, true},
		{"malformed config", func(t *testing.T, b string) { write(t, filepath.Join(b, "config.json"), `{"mounts":`) }, nil, true},
		{"no root and no mount", func(t *testing.T, b string) { write(t, filepath.Join(b, "config.json"), `{}`) }, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := t.TempDir()
			tt.setup(t, b)
			got, err := BundleResolvers(b)
			if (err != nil) != tt.wantErr {
				t.Fatalf("BundleResolvers error = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("BundleResolvers (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := BundleResolvers(""); err == nil {
		t.Error("BundleResolvers(\"\") = nil error")
	}
}
