// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package record reads and writes a container's runtime record: the JSON
// file the OCI hook writes when a container is created, and the one thing
// that ties a container id to a process, its network namespace and its
// policy.
//
// # Location
//
// The hook runs as the container's owner (in rootless podman, as uid 0 of
// the user namespace, which is the host user's uid outside it) and writes
//
//	/run/user/<uid>/clearance/<id>/container.json    containers of a user
//	/run/clearance/containers/<id>/container.json    containers of root
//
// (see [Locate]); <id> is the short id (12 hex characters for podman).
//
// # Trust
//
// A record is written by the container's owner, so a privileged reader
// treats it as a claim, never as proof: clearance-verdict re-checks the pid
// against the namespace identity recorded here, and the namespace's owner
// against the caller. [ReadOwned] refuses symlinks, files that are not
// regular, files owned by anyone but the expected uid or root, and files
// writable by others.
package record

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/netns"
)

// FileName is the record's file name inside its directory.
const FileName = "container.json"

// MaxSize is the largest record [Read] accepts, in bytes.
const MaxSize = 64 << 10

// DefaultRuntimeRoot is the root [Locate] uses when given "".
const DefaultRuntimeRoot = "/run"

// Record is a container's runtime record.
type Record struct {
	// ID is the container's full id.
	ID string `json:"id"`
	// ID12 is the short id the record's directory is named after.
	ID12 string `json:"id12"`
	// Name is the container's name.
	Name string `json:"name"`
	// PID is the container's init process, as seen from the initial pid
	// namespace.
	PID int `json:"pid"`
	// NetnsInode and NetnsDev identify the container's network namespace
	// (st_ino and st_dev of /proc/<pid>/ns/net at hook time).
	NetnsInode uint64 `json:"netns_inode"`
	NetnsDev   uint64 `json:"netns_dev"`
	// OwnerUID is the host uid owning the container's user namespace.
	OwnerUID uint32 `json:"owner_uid"`
	// Dossier holds the container's dossier.* annotations (key without
	// the prefix). Never nil after Read.
	Dossier map[string]string `json:"dossier"`
	// Policy names the YAML policy (project or image) the container's
	// ruleset starts from.
	Policy string `json:"policy"`
	// CreatedUsec is when the record was written (CLOCK_REALTIME µs).
	CreatedUsec int64 `json:"created_usec"`
	// Resolvers are the nameservers of the container's /etc/resolv.conf
	// as the runtime wrote it, read by the hook at createRuntime (never
	// later from inside the container, which may rewrite it). The DNS
	// forwarder asks them unless the configuration names resolvers.
	Resolvers []string `json:"resolvers,omitempty"`
	// NetnsPath is the existing network namespace the container joined,
	// as its OCI bundle names it (a pod's, another container's, a named
	// one: "/run/netns/…", "/proc/<pid>/ns/net"), or "" when the runtime
	// made one for the container alone. Such a namespace outlives the
	// container, and poststop uses the path to undo what createRuntime did
	// to it. Not trusted by the verdict service.
	NetnsPath string `json:"netns_path,omitempty"`
	// Engaged is set when this container's createRuntime installed the
	// ruleset (it was not there before), so its poststop removes it from
	// a namespace that outlives the container.
	Engaged bool `json:"engaged,omitempty"`
	// Mode is the firewall mode the container asked for with its
	// io.clearance.mode annotation: "" or [ModeEnforce] (blocked
	// connections are refused), or [ModeObserve] (logged and let
	// through). A claim of the container's owner: the verdict service
	// grants observe mode only where the system configuration allows it.
	Mode string `json:"mode,omitempty"`
}

// Firewall modes of [Record.Mode].
const (
	ModeEnforce = "enforce"
	ModeObserve = "observe"
)

// MaxResolvers bounds [Record.Resolvers] (resolv.conf itself honours 3).
const MaxResolvers = 8

// ResolverAddrs returns the record's resolvers as addresses.
func (r *Record) ResolverAddrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(r.Resolvers))
	for _, s := range r.Resolvers {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// ParseResolvConf returns the addresses of the nameserver lines of a
// resolv.conf, at most [MaxResolvers]. IPv4-mapped addresses become IPv4;
// scoped (link-local with a zone) addresses are skipped, because the zone
// names an interface of the container's namespace that the forwarder
// cannot resolve.
func ParseResolvConf(b []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() && len(out) < MaxResolvers {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(fields[1])
		if err != nil || a.Zone() != "" {
			continue
		}
		out = append(out, a.Unmap())
	}
	return out
}

// ErrInvalid is wrapped by every validation error of [Record.Validate],
// [Read] and [ReadOwned].
var ErrInvalid = errors.New("invalid runtime record")

// ValidID reports whether id may name a container: 1..64 characters of
// [A-Za-z0-9_.-], starting with a letter or digit (the rule of
// sockets.ValidContainerID), so an id can never name another path.
func ValidID(id string) bool { return ValidName(id, 64) }

// Validate checks that r is complete: valid ids, pid > 1, a namespace
// identity, a valid policy name (1..128 characters of [A-Za-z0-9_.-],
// or none). Names and dossier values are
// not interpreted here.
func (r *Record) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case !ValidID(r.ID):
		return bad("id %q", r.ID)
	case !ValidID(r.ID12):
		return bad("id12 %q", r.ID12)
	case r.PID <= 1:
		return bad("pid %d", r.PID)
	case r.NetnsInode == 0:
		return bad("netns_inode missing")
	case r.NetnsDev == 0:
		return bad("netns_dev missing")
	case r.Policy != "" && !ValidName(r.Policy, 128):
		return bad("policy %q", r.Policy)
	case len(r.Name) > 256:
		return bad("name longer than 256 bytes")
	case len(r.Resolvers) > MaxResolvers:
		return bad("%d resolvers, at most %d", len(r.Resolvers), MaxResolvers)
	case r.NetnsPath != "" && (!filepath.IsAbs(r.NetnsPath) || len(r.NetnsPath) > 4096):
		return bad("netns_path %q", r.NetnsPath)
	case r.Mode != "" && r.Mode != ModeEnforce && r.Mode != ModeObserve:
		return bad("mode %q (want %q or %q)", r.Mode, ModeEnforce, ModeObserve)
	}
	for _, s := range r.Resolvers {
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
			return bad("resolver %q", s)
		}
	}
	return nil
}

// ValidName accepts 1..max characters of [A-Za-z0-9_.-] starting with a
// letter or digit: a policy name, an annotation's key or value that ends
// up in a path or a journal field.
func ValidName(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		if !alnum && (i == 0 || (c != '_' && c != '.' && c != '-')) {
			return false
		}
	}
	return true
}

// Locate returns where the record of container id lives for uid:
// <root>/user/<uid>/clearance/<id>/container.json, or
// <root>/clearance/containers/<id>/container.json for uid 0. root ""
// means [DefaultRuntimeRoot]. id must satisfy [ValidID]; Locate returns
// "" otherwise.
func Locate(runtimeRoot string, uid int, id string) string {
	if !ValidID(id) || uid < 0 {
		return ""
	}
	if runtimeRoot == "" {
		runtimeRoot = DefaultRuntimeRoot
	}
	if uid == 0 {
		return filepath.Join(runtimeRoot, "clearance", "containers", id, FileName)
	}
	return filepath.Join(runtimeRoot, "user", strconv.Itoa(uid), "clearance", id, FileName)
}

// Decode parses and validates a record. Unknown fields, trailing data and
// a document larger than [MaxSize] are errors wrapping [ErrInvalid].
func Decode(b []byte) (Record, error) {
	if len(b) > MaxSize {
		return Record{}, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r Record
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Record{}, fmt.Errorf("%w: trailing data after the record", ErrInvalid)
	}
	if r.Dossier == nil {
		r.Dossier = map[string]string{}
	}
	if err := r.Validate(); err != nil {
		return Record{}, err
	}
	return r, nil
}

// Read reads the record at path. The last path component must not be a
// symlink and must be a regular file of at most [MaxSize] bytes. Use
// [ReadOwned] when the reader is privileged.
func Read(path string) (Record, error) {
	r, _, err := read(path)
	return r, err
}

// ReadOwned is [Read] for a privileged reader acting for uid: the file
// must be owned by uid or root and not writable by group or others, and
// no component of path may be a symlink. Violations wrap [ErrInvalid];
// a missing file wraps [os.ErrNotExist].
func ReadOwned(path string, uid uint32) (Record, error) {
	r, st, err := read(path)
	if err != nil {
		return Record{}, err
	}
	if st.Uid != uid && st.Uid != 0 {
		return Record{}, fmt.Errorf("%w: %s owned by uid %d, not %d or root", ErrInvalid, path, st.Uid, uid)
	}
	if st.Mode&0o022 != 0 {
		return Record{}, fmt.Errorf("%w: %s is writable by group or others (mode %#o)", ErrInvalid, path, st.Mode&0o777)
	}
	return r, nil
}

func read(path string) (Record, unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOSYS) {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return Record{}, st, fmt.Errorf("read record %s: %w", path, os.ErrNotExist)
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
		return Record{}, st, fmt.Errorf("%w: %s: path contains a symlink", ErrInvalid, path)
	case err != nil:
		return Record{}, st, fmt.Errorf("read record %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err := unix.Fstat(fd, &st); err != nil {
		return Record{}, st, fmt.Errorf("read record %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Record{}, st, fmt.Errorf("%w: %s is not a regular file", ErrInvalid, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return Record{}, st, fmt.Errorf("read record %s: %w", path, err)
	}
	r, err := Decode(b)
	if err != nil {
		return Record{}, st, fmt.Errorf("%s: %w", path, err)
	}
	return r, st, nil
}

// Write writes rec to <dir>/container.json atomically: a temporary file in
// dir is written with mode 0600, synced and renamed over the record, and
// dir is synced. dir is created (0700) if missing. rec is validated first.
func Write(dir string, rec Record) error {
	if rec.Dossier == nil {
		rec.Dossier = map[string]string{}
	}
	if err := rec.Validate(); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if len(b) > MaxSize {
		return fmt.Errorf("write record: %w: larger than %d bytes", ErrInvalid, MaxSize)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".container.json.*")
	if err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, FileName)); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write record: sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write record: sync dir: %w", err)
	}
	return nil
}

// OpenNetns opens the network namespace of the record's process and checks
// that it is the namespace the hook recorded, so a reused pid is never
// mistaken for the container. The caller closes the file. Callers pass it
// to the verdict service with their calls: the service then acts on a
// namespace the caller proved it can open, and resolves no pid itself.
//
// Opening /proc/<pid>/ns/net of another process takes more than its uid:
// a caller without the process's capabilities (the system hub of a
// rootful container, which holds none) gets EPERM. The namespace's own
// file, when the runtime named one (NetnsPath, e.g. podman's
// /run/netns/netns-…), only takes read access to it; it is opened then,
// and must be the same recorded namespace. A process that is gone stays
// an error wrapping [fs.ErrNotExist] (the hub's poststop check relies on
// it), even when the named namespace outlives it.
func (r Record) OpenNetns() (*os.File, error) {
	f, err := netns.OpenPID(r.PID)
	if errors.Is(err, os.ErrPermission) && r.NetnsPath != "" {
		if pf, perr := os.Open(r.NetnsPath); perr == nil {
			f, err = pf, nil
		} else {
			err = fmt.Errorf("%w; open %s: %w", err, r.NetnsPath, perr)
		}
	}
	if err != nil {
		return nil, err
	}
	got, err := netns.Identify(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if got.Ino != r.NetnsInode || got.Dev != r.NetnsDev {
		f.Close()
		return nil, fmt.Errorf("%w: pid %d is in another network namespace than recorded", ErrInvalid, r.PID)
	}
	return f, nil
}
