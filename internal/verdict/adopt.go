// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"context"
	"os"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/dnsname"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/policy"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
)

// maxAdoptComment bounds Adopt's comment.
const maxAdoptComment = 200

// Adopt writes an "always" verdict of another host (clearance-relay) to
// the caller's own policy file. The caller names nothing but a policy:
// the file is chosen from its kernel-verified uid ([UserPolicyDir]), so a
// user can only ever change what its own containers start with.
func (h *firewall1) Adopt(ctx context.Context, c fw1.VarlinkCall, policyName, action, ip string, name, proto *string,
	port *int64, comment string) error {
	closeFDs(&c.Call)
	peer, err := peerUID(&c.Call)
	if err != nil {
		return h.s.replyError(ctx, &c, "adopt", "", err)
	}
	e, list, bad := adoptEntry(policyName, action, ip, name, proto, port, comment)
	if bad != "" {
		return c.ReplyInvalidParameter(ctx, bad)
	}
	dir := UserPolicyDir(h.s.cfg.PolicyDir, peer)
	if list == policy.ListAllow {
		cur, err := policy.Load(dir, policyName)
		if err != nil {
			return c.ReplyAdopt(ctx, false, truncate(err.Error()))
		}
		for _, d := range cur.Deny {
			if d.Same(e) {
				return c.ReplyAdopt(ctx, false, "the policy denies "+e.String()+" (deny wins)")
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return c.ReplyAdopt(ctx, false, truncate(err.Error()))
	}
	if peer != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return c.ReplyAdopt(ctx, false, truncate(err.Error()))
		}
	}
	if err := policy.Append(dir, policyName, list, e); err != nil {
		return c.ReplyAdopt(ctx, false, truncate(err.Error()))
	}
	h.s.log.Info("fleet verdict adopted into policy", "policy", policyName, "uid", peer, "list", list,
		"dest", e.String(), "comment", e.Comment)
	return c.ReplyAdopt(ctx, true, "")
}

// adoptEntry validates Adopt's parameters; bad names the first invalid
// one.
func adoptEntry(policyName, action, ip string, name, proto *string, port *int64, comment string) (policy.Entry, string, string) {
	var e policy.Entry
	if !policy.ValidName(policyName) {
		return e, "", "policy"
	}
	list := policy.ListAllow
	switch action {
	case event.ActionAllow:
	case event.ActionDeny:
		list = policy.ListDeny
	default:
		return e, "", "action"
	}
	if len(comment) > maxAdoptComment {
		return e, "", "comment"
	}
	for _, r := range comment {
		if r < 0x20 || r > 0x7e {
			return e, "", "comment"
		}
	}
	e.Comment = comment
	if name != nil && *name != "" {
		pat, err := dnsname.ParsePattern(*name)
		if err != nil {
			return e, "", "name"
		}
		e.Name = pat
	} else {
		p, err := policy.ParseDest(ip)
		if err != nil {
			return e, "", "ip"
		}
		e.Dest = p
	}
	p, n, bad := service(proto, port)
	switch {
	case bad != "":
		return e, "", bad
	case p == unix.IPPROTO_SCTP:
		return e, "", "proto" // a policy has tcp and udp ports
	}
	e.Proto, e.Port = policy.Proto(p), n
	return e, list, ""
}
