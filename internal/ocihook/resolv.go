// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/record"
)

// Bounds on what BundleResolvers reads.
const (
	maxBundleConfig = 4 << 20
	maxResolvConf   = 64 << 10
)

// BundleResolvers returns the nameservers of the container's
// /etc/resolv.conf as the runtime prepared it, read from the OCI bundle at
// createRuntime, before the container's process runs (it may rewrite the
// file later; the hook never reads it again). The file is the source of the
// bind mount onto /etc/resolv.conf in the bundle's config.json (podman
// writes one for every container, --dns included), or else the file in the
// container's root filesystem, resolved inside that root. Only a regular
// file is read.
func BundleResolvers(bundle string) ([]netip.Addr, error) {
	if bundle == "" {
		return nil, errors.New("read resolv.conf: no bundle")
	}
	b, err := readBounded(unix.AT_FDCWD, filepath.Join(bundle, "config.json"), maxBundleConfig, 0)
	if err != nil {
		return nil, fmt.Errorf("read bundle config: %w", err)
	}
	var spec struct {
		Root *struct {
			Path string `json:"path"`
		} `json:"root"`
		Mounts []struct {
			Destination string   `json:"destination"`
			Source      string   `json:"source"`
			Type        string   `json:"type"`
			Options     []string `json:"options"`
		} `json:"mounts"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("parse bundle config: %w", err)
	}
	src := ""
	for _, m := range spec.Mounts { // the last mount onto a path wins
		if filepath.Clean(m.Destination) == "/etc/resolv.conf" && (m.Type == "bind" || hasBind(m.Options)) {
			src = m.Source
		}
	}
	if src != "" {
		if !filepath.IsAbs(src) {
			src = filepath.Join(bundle, src)
		}
		rc, err := readBounded(unix.AT_FDCWD, src, maxResolvConf, 0)
		if err != nil {
			return nil, fmt.Errorf("read resolv.conf mount source: %w", err)
		}
		return record.ParseResolvConf(rc), nil
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return nil, errors.New("read resolv.conf: the bundle has no root and no resolv.conf mount")
	}
	root := spec.Root.Path
	if !filepath.IsAbs(root) {
		root = filepath.Join(bundle, root)
	}
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open container root: %w", err)
	}
	defer unix.Close(dir)
	rc, err := readBounded(dir, "etc/resolv.conf", maxResolvConf, unix.RESOLVE_IN_ROOT)
	if err != nil {
		return nil, fmt.Errorf("read resolv.conf in the container's root: %w", err)
	}
	return record.ParseResolvConf(rc), nil
}

func hasBind(opts []string) bool {
	for _, o := range opts {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// readBounded reads at most max bytes of the regular file path (relative
// to dirfd), refusing magic links and, with RESOLVE_IN_ROOT, symlinks
// that would leave dirfd.
func readBounded(dirfd int, path string, max int64, resolve uint64) ([]byte, error) {
	fd, err := unix.Openat2(dirfd, path, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK,
		Resolve: resolve | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}
