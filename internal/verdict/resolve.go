// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/sockets"
	"github.com/terok-ai/clearance/internal/varlinkapi"
)

// Domain errors of the authorization step; mapped to varlink errors in
// one place (replyError).
type (
	// permissionError: the caller does not own the namespace.
	permissionError struct{ reason string }
	// noSuchContainerError: no record, or its process is gone.
	noSuchContainerError struct{ container, reason string }
	// staleRecordError: the record contradicts the kernel or is not
	// trustworthy.
	staleRecordError struct{ container, reason string }
)

func (e *permissionError) Error() string { return "permission denied: " + e.reason }
func (e *noSuchContainerError) Error() string {
	return "no such container " + strconv.Quote(e.container) + ": " + e.reason
}
func (e *staleRecordError) Error() string {
	return "stale record for " + strconv.Quote(e.container) + ": " + e.reason
}

// target is a container whose network namespace the caller is allowed to
// act on. The caller of resolve closes it.
type target struct {
	container string
	ns        *os.File       // the namespace, owned
	id        netns.ID       // its identity
	owner     uint32         // owner uid of the namespace's user namespace
	peer      uint32         // the caller's uid (SO_PEERCRED)
	rec       *record.Record // nil when the caller passed the namespace and has no record
	release   func()         // gives the caller's call slot back
}

func (t *target) Close() error {
	if t.release != nil {
		t.release()
	}
	return t.ns.Close()
}

// containerID is the container's full id from its record, or "".
func (t *target) containerID() string {
	if t.rec == nil {
		return ""
	}
	return t.rec.ID
}

// policyName is the container's policy from its record, or "".
func (t *target) policyName() string {
	if t.rec == nil {
		return ""
	}
	return t.rec.Policy
}

// peerUID returns the kernel-verified uid of the process that connected
// the call's socket.
func peerUID(call *varlink.Call) (uint32, error) {
	nc := varlinkapi.PeerConn(call)
	if nc == nil {
		return 0, &permissionError{reason: "no peer credentials on this connection"}
	}
	cred, err := sockets.PeerCred(nc)
	if err != nil {
		return 0, &permissionError{reason: "no peer credentials: " + err.Error()}
	}
	return cred.Uid, nil
}

// NoNamespaceReason is the PermissionDenied reason of a call from a
// non-root caller that passed no network namespace.
const NoNamespaceReason = "no network namespace passed with the call: pass the container's network namespace " +
	"(an open /proc/<pid>/ns/net of its process) as a file descriptor (SCM_RIGHTS) with every call; " +
	"the service looks containers up by their runtime record alone only for root"

// hostNetnsReason is the PermissionDenied reason for the namespace the
// service must never act on.
const hostNetnsReason = "the container shares the host's network namespace (e.g. --network host): " +
	"clearance firewalls only a network namespace of the container's own"

// resolve authorizes the call for container and opens its namespace.
// It claims the fds passed with the call (closing those it does not keep).
func (s *Service) resolve(call *varlink.Call, container string) (*target, error) {
	fds := call.RequestFDs()
	closeAll := func() {
		for _, f := range fds {
			f.Close()
		}
	}
	if !record.ValidID(container) {
		closeAll()
		return nil, &noSuchContainerError{container: container, reason: "invalid container id"}
	}
	peer, err := peerUID(call)
	if err != nil {
		closeAll()
		return nil, err
	}
	// One user's calls run at most MaxCallsPerOwner at a time: each may
	// read a ruleset of the caller's making (bounded by the guard), and
	// the service is shared by every user.
	release := s.calls.acquire(peer, s.owners)
	t, err := s.resolveFDs(container, peer, fds)
	if err != nil {
		release()
		return nil, err
	}
	t.release = release
	return t, nil
}

func (s *Service) resolveFDs(container string, peer uint32, fds []*os.File) (*target, error) {
	closeAll := func() {
		for _, f := range fds {
			f.Close()
		}
	}
	switch len(fds) {
	case 0:
		if peer != 0 {
			// Resolving a pid means opening /proc/<pid>/ns/net of another
			// user's process, which takes CAP_SYS_PTRACE; the service has
			// none, and a caller can always open its own container's
			// namespace.
			return nil, &permissionError{reason: NoNamespaceReason}
		}
		return s.resolveRecord(container, peer)
	case 1:
		return s.resolveFD(container, peer, fds[0])
	default:
		closeAll()
		return nil, &permissionError{reason: fmt.Sprintf("%d file descriptors passed, want at most one network namespace", len(fds))}
	}
}

// MaxCallsPerOwner bounds the calls of one user (its subordinate uids
// counted as the user) the service handles at once; more wait.
const MaxCallsPerOwner = 2

// callSlots counts calls in progress per owner. Safe for concurrent use.
type callSlots struct {
	max int
	mu  sync.Mutex
	m   map[uint32]chan struct{}
	n   map[uint32]int // users of each channel, to drop idle ones
}

// acquire waits for one of peer's owner's slots; root never waits. The
// returned func gives it back.
func (c *callSlots) acquire(peer uint32, owners *subUIDs) func() {
	if peer == 0 || c.max <= 0 {
		return func() {}
	}
	owner := owners.owner(peer)
	c.mu.Lock()
	if c.m == nil {
		c.m, c.n = map[uint32]chan struct{}{}, map[uint32]int{}
	}
	ch, ok := c.m[owner]
	if !ok {
		ch = make(chan struct{}, c.max)
		c.m[owner] = ch
	}
	c.n[owner]++
	c.mu.Unlock()
	ch <- struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-ch
			c.mu.Lock()
			if c.n[owner]--; c.n[owner] == 0 {
				delete(c.m, owner)
				delete(c.n, owner)
			}
			c.mu.Unlock()
		})
	}
}

// checkHost refuses the namespace the service must never act on.
func (s *Service) checkHost(id netns.ID) error {
	if s.cfg.HostNetns != nil && id == *s.cfg.HostNetns {
		return &permissionError{reason: hostNetnsReason}
	}
	return nil
}

// resolveFD uses the namespace the caller passed. A record, if the caller
// has one for container, must name the same namespace; its pid must live
// there, or the record is ignored (see verifyRecordPID).
func (s *Service) resolveFD(container string, peer uint32, ns *os.File) (*target, error) {
	t := &target{container: container, ns: ns, peer: peer}
	fail := func(err error) (*target, error) { ns.Close(); return nil, err }
	if err := netns.Check(ns); err != nil {
		return fail(&permissionError{reason: "passed file descriptor is not a network namespace"})
	}
	var err error
	if t.id, err = netns.Identify(ns); err != nil {
		return fail(&permissionError{reason: err.Error()})
	}
	if err := s.checkHost(t.id); err != nil {
		return fail(err)
	}
	if t.owner, err = netns.OwnerUID(ns); err != nil {
		return fail(&permissionError{reason: err.Error()})
	}
	if err := authorize(peer, t.owner); err != nil {
		return fail(err)
	}
	rec, err := s.readRecord(container, peer)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return t, nil
	case err != nil:
		return fail(err)
	}
	if rec.NetnsInode != t.id.Ino || rec.NetnsDev != t.id.Dev {
		return fail(&staleRecordError{container: container, reason: "the record names another network namespace than the one passed"})
	}
	if ok, why := verifyRecordPID(rec.PID, t.id); !ok {
		s.log.Warn("runtime record ignored: "+why, "container", container, "uid", peer)
		return t, nil
	}
	t.rec = &rec
	return t, nil
}

// verifyRecordPID checks, as far as the service can see, that pid (from a
// record the caller wrote) lives in the passed namespace id. It returns
// false, with why, when the pid is demonstrably elsewhere: the record is
// then ignored. A pid the service cannot inspect (another user's process:
// /proc/<pid>/ns/net is a ptrace-mode access, and under the packaged unit
// the service holds no CAP_SYS_PTRACE and such pids are invisible, as if
// gone) passes but is never used: on this path the namespace comes from
// the caller's descriptor, and the record only contributes its policy
// name and resolvers, claims about a namespace the caller proved it can
// open and owns.
func verifyRecordPID(pid int, id netns.ID) (bool, string) {
	f, err := netns.OpenPID(pid)
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, unix.ESRCH), errors.Is(err, os.ErrPermission):
		return true, ""
	case err != nil:
		return false, "its process cannot be checked: " + err.Error()
	}
	defer f.Close()
	got, err := netns.Identify(f)
	if err != nil {
		return false, "its process cannot be checked: " + err.Error()
	}
	if got != id {
		return false, "its process is not in the passed network namespace"
	}
	return true, ""
}

// resolveRecord finds the namespace through the record under the peer's
// uid, re-checking the pid against the recorded namespace identity. Only
// root gets here (see resolve).
func (s *Service) resolveRecord(container string, peer uint32) (*target, error) {
	rec, err := s.readRecord(container, peer)
	if errors.Is(err, os.ErrNotExist) {
		return nil, &noSuchContainerError{container: container, reason: "no runtime record for uid " + strconv.Itoa(int(peer))}
	}
	if err != nil {
		return nil, err
	}
	ns, err := netns.OpenPID(rec.PID)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return nil, &noSuchContainerError{container: container, reason: "process " + strconv.Itoa(rec.PID) + " is gone"}
	}
	if errors.Is(err, os.ErrPermission) {
		return nil, &staleRecordError{container: container, reason: "cannot open the network namespace of process " +
			strconv.Itoa(rec.PID) + " (the service holds no CAP_SYS_PTRACE): pass the namespace as a file descriptor with the call"}
	}
	if err != nil {
		return nil, &staleRecordError{container: container, reason: err.Error()}
	}
	t := &target{container: container, ns: ns, peer: peer, rec: &rec}
	fail := func(err error) (*target, error) { ns.Close(); return nil, err }
	if t.id, err = netns.Identify(ns); err != nil {
		return fail(&staleRecordError{container: container, reason: err.Error()})
	}
	if rec.NetnsInode != t.id.Ino || rec.NetnsDev != t.id.Dev {
		// Never say which namespace the pid is in: it may be anyone's.
		return fail(&staleRecordError{container: container, reason: fmt.Sprintf(
			"process %d is not in the network namespace the record names (pid reused?)", rec.PID)})
	}
	if err := s.checkHost(t.id); err != nil {
		return fail(err)
	}
	if t.owner, err = netns.OwnerUID(ns); err != nil {
		return fail(&staleRecordError{container: container, reason: err.Error()})
	}
	if err := authorize(peer, t.owner); err != nil {
		return fail(err)
	}
	if rec.OwnerUID != t.owner {
		return fail(&staleRecordError{container: container, reason: "the record's owner uid is not the namespace's owner"})
	}
	return t, nil
}

// readRecord reads container's record from the peer's location. A missing
// record wraps os.ErrNotExist; anything untrustworthy is a staleRecordError.
func (s *Service) readRecord(container string, peer uint32) (record.Record, error) {
	path := record.Locate(s.cfg.RuntimeRoot, int(peer), container)
	if path == "" {
		return record.Record{}, &noSuchContainerError{container: container, reason: "invalid container id"}
	}
	rec, err := record.ReadOwned(path, peer)
	if errors.Is(err, os.ErrNotExist) {
		return rec, err
	}
	if err != nil {
		return rec, &staleRecordError{container: container, reason: err.Error()}
	}
	if rec.ID12 != container {
		return rec, &staleRecordError{container: container, reason: "the record is for " + strconv.Quote(rec.ID12)}
	}
	return rec, nil
}

// overflowUID is what the kernel reports for a uid that does not map into
// the reader's user namespace; it names nobody reliably.
const overflowUID = 65534

// authorize allows root, and the owner of the namespace. An owner reported
// as the overflow uid is ambiguous and only root may act on it.
func authorize(peer, owner uint32) error {
	if peer == 0 || (peer == owner && owner != overflowUID) {
		return nil
	}
	// Never name the owner: it may be another user.
	return &permissionError{reason: fmt.Sprintf("uid %d does not own the container's network namespace", peer)}
}
