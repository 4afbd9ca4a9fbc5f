package verdict

import (
	"errors"
	"fmt"
	"os"
	"strconv"

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
}

func (t *target) Close() error { return t.ns.Close() }

// policyName is the container's policy from its record, or "".
func (t *target) policyName() string {
	if t.rec == nil {
		return ""
	}
	return t.rec.Policy
}

// pid is the container's pid from its (verified) record, or 0.
func (t *target) pid() int {
	if t.rec == nil {
		return 0
	}
	return t.rec.PID
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
	switch len(fds) {
	case 0:
		return s.resolveRecord(container, peer)
	case 1:
		return s.resolveFD(container, peer, fds[0])
	default:
		closeAll()
		return nil, &permissionError{reason: fmt.Sprintf("%d file descriptors passed, want at most one network namespace", len(fds))}
	}
}

// resolveFD uses the namespace the caller passed. A record, if the caller
// has one for container, must name the same namespace.
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
	t.rec = &rec
	return t, nil
}

// resolveRecord finds the namespace through the record under the peer's
// uid, re-checking the pid against the recorded namespace identity.
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
	if err != nil {
		return nil, &staleRecordError{container: container, reason: err.Error()}
	}
	t := &target{container: container, ns: ns, peer: peer, rec: &rec}
	fail := func(err error) (*target, error) { ns.Close(); return nil, err }
	if t.id, err = netns.Identify(ns); err != nil {
		return fail(&staleRecordError{container: container, reason: err.Error()})
	}
	if rec.NetnsInode != t.id.Ino || rec.NetnsDev != t.id.Dev {
		return fail(&staleRecordError{container: container, reason: fmt.Sprintf(
			"pid %d is in network namespace %v, the record says net:[%d]@%d (pid reused?)",
			rec.PID, t.id, rec.NetnsInode, rec.NetnsDev)})
	}
	if t.owner, err = netns.OwnerUID(ns); err != nil {
		return fail(&staleRecordError{container: container, reason: err.Error()})
	}
	if err := authorize(peer, t.owner); err != nil {
		return fail(err)
	}
	if rec.OwnerUID != t.owner {
		return fail(&staleRecordError{container: container, reason: fmt.Sprintf(
			"the record says owner uid %d, the namespace is owned by uid %d", rec.OwnerUID, t.owner)})
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
	return &permissionError{reason: fmt.Sprintf("uid %d does not own the container's network namespace (owner uid %d)", peer, owner)}
}
