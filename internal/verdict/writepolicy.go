// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/policy"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
)

// MaxUserPolicies bounds the policy files in one user's directory: each
// is read by that user's containers, and the directory is on a file
// system the administrator shares.
const MaxUserPolicies = 256

// WritePolicy writes a whole policy for the caller (see the .varlink
// file): root's go to PolicyDir, any other uid's to its own
// UserPolicyDir, checked first as a container would load them.
func (h *firewall1) WritePolicy(ctx context.Context, c fw1.VarlinkCall, name, content string, replace bool) error {
	s := h.s
	closeFDs(&c.Call)
	if !policy.ValidName(name) {
		return c.ReplyInvalidParameter(ctx, "name")
	}
	peer, err := peerUID(&c.Call)
	if err != nil {
		reason := err.Error()
		var perm *permissionError
		if errors.As(err, &perm) {
			reason = perm.reason
		}
		return c.ReplyPermissionDenied(ctx, reason)
	}
	if owner := s.owners.owner(peer); owner != peer {
		s.log.Warn("policy write refused: subordinate uid", "uid", peer, "owner_uid", owner, "CLEARANCE_POLICY", name)
		return c.ReplyPermissionDenied(ctx, "uid "+strconv.FormatUint(uint64(peer), 10)+
			" is a subordinate uid of uid "+strconv.FormatUint(uint64(owner), 10)+
			" (a process in a user namespace): only the user itself may write its policies")
	}
	release := s.calls.acquire(peer, s.owners)
	defer release()

	dir := UserPolicyDir(s.cfg.PolicyDir, peer)
	userDir := ""
	if peer != 0 {
		userDir = dir
	}
	systemPath := append([]string{s.cfg.PolicyDir}, s.cfg.PolicyPath...)
	data := []byte(content)
	if err := policy.Check(systemPath, userDir, dir, name, data); err != nil {
		return c.ReplyInvalidPolicy(ctx, name, truncate(err.Error()))
	}
	if peer != 0 {
		if n := countPolicies(dir); n >= MaxUserPolicies {
			if _, err := os.Lstat(filepath.Join(dir, name+".yaml")); err != nil {
				return c.ReplyPermissionDenied(ctx, "uid "+strconv.FormatUint(uint64(peer), 10)+" has "+
					strconv.Itoa(n)+" policies, the most one user may have; remove one first")
			}
		}
	}
	path, replaced, err := policy.Write(dir, name, data, replace)
	switch {
	case errors.Is(err, policy.ErrExists):
		return c.ReplyPolicyExists(ctx, name, path)
	case err != nil:
		s.log.Error("policy write failed", "CLEARANCE_POLICY", name, "CLEARANCE_OPERATOR_UID", strconv.FormatUint(uint64(peer), 10), "err", err)
		return c.ReplyFirewallFailed(ctx, "write-policy", truncate(err.Error()))
	}
	if peer != 0 {
		// The user's directory is the service's alone, whatever an
		// older version or the umask left (as for "always" verdicts).
		if err := os.Chmod(dir, 0o700); err != nil {
			return c.ReplyFirewallFailed(ctx, "write-policy", truncate(err.Error()))
		}
	}
	verb := "written"
	if replaced {
		verb = "replaced"
	}
	s.log.Info("policy "+name+" "+verb+" by uid "+strconv.FormatUint(uint64(peer), 10), "MESSAGE_ID", audit.MsgPolicyWritten,
		"CLEARANCE_POLICY", name, "CLEARANCE_OPERATOR_UID", strconv.FormatUint(uint64(peer), 10),
		"path", path, "bytes", len(data), "replaced", replaced)
	return c.ReplyWritePolicy(ctx, path, replaced)
}

// countPolicies counts the policy files in dir (0 when it does not exist).
func countPolicies(dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".yaml") && !strings.HasPrefix(e.Name(), ".") {
			n++
		}
	}
	return n
}
