// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/google/nftables"

	"github.com/terok-ai/clearance/internal/nflog"
	"github.com/terok-ai/clearance/internal/nft"
)

// Firewall is the ruleset of one network namespace. Implementations are
// used by one call at a time and closed by the opener.
type Firewall interface {
	// Table names the inet table the firewall works on.
	Table() string
	// Engaged reports whether the table exists.
	Engaged() (bool, error)
	// Engage installs or repairs the ruleset (built-in) or checks that
	// the shield's table and sets exist.
	Engage(rs nft.Ruleset) error
	// Repair is Engage, and says what it found before (nft.Integrity).
	Repair(rs nft.Ruleset) (nft.Integrity, error)
	// Verify reports whether the ruleset is as Engage built it for rs,
	// without reading the sets' elements.
	Verify(rs nft.Ruleset) (nft.Integrity, error)
	// Disengage removes the built-in table; a no-op for the shield's.
	Disengage() error
	// Apply adds dest to the action's set with ttl (0 = no timeout) and
	// comment. An error wrapping [nft.ErrNoTimeout] means the set cannot
	// time out.
	Apply(action string, dest nft.Dest, ttl time.Duration, comment string) error
	// Revoke removes dest from the allow and deny sets.
	Revoke(dest nft.Dest) error
	// Learn adds addresses the DNS forwarder learned to the learned sets.
	Learn(ls []nft.Learned) error
	// Unlearn removes learned addresses.
	Unlearn(ds []nft.Dest) error
	// SetDNSPort points the ruleset's DNS redirect at port.
	SetDNSPort(port uint16, mark uint32) error
	// List returns the elements of the allow, deny and learned sets.
	List() ([]nft.Element, error)
	// Explain says what happens to a new connection to dst, proto, port.
	Explain(dst netip.Addr, proto uint8, port uint16) (nft.Explanation, error)
	// Close releases the firewall's netlink socket.
	Close() error
}

// Backend opens a [Firewall] inside the network namespace nsFD. The
// namespace fd is not retained after Open returns.
type Backend interface {
	Open(nsFD int) (Firewall, error)
}

// Binder binds an NFLOG group in the calling thread's network namespace
// and returns the socket (see [nflog.Bind]). It is called inside
// [netns.Do].
type Binder func(group, copyRange uint16) (*os.File, error)

// ShieldRunner applies a verdict by running terok-shield allow|deny
// CONTAINER DEST, as the seed did. ok is the exit status, stderr its
// trimmed standard error (≤ 512 bytes).
type ShieldRunner interface {
	Apply(ctx context.Context, container, dest, action string) (ok bool, stderr string)
}

// NFTBackend is the [Backend] over internal/nft. Layouts are tried in
// order: the first whose table and sets exist is used; with one layout
// (built-in) it is used directly.
type NFTBackend struct {
	Layouts []nft.Layout
}

// Open dials nftables inside nsFD (see [nft.Dial]) and picks the layout.
func (b NFTBackend) Open(nsFD int) (Firewall, error) {
	if len(b.Layouts) == 0 {
		return nil, errors.New("open firewall: no layout configured")
	}
	conn, err := nft.Dial(nsFD)
	if err != nil {
		return nil, err
	}
	layout := b.Layouts[0]
	if len(b.Layouts) > 1 {
		for _, l := range b.Layouts {
			if nft.New(conn, l).Engage(nft.Ruleset{}) == nil {
				layout = l
				break
			}
		}
	}
	return &nftFirewall{Firewall: nft.New(conn, layout), conn: conn}, nil
}

type nftFirewall struct {
	*nft.Firewall
	conn *nftables.Conn
}

func (f *nftFirewall) Table() string { return f.Layout().Table }

func (f *nftFirewall) Engaged() (bool, error) {
	_, err := f.Firewall.List()
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, nft.ErrNotEngaged):
		return false, nil
	}
	return false, err
}

func (f *nftFirewall) Close() error {
	if err := f.conn.CloseLasting(); err != nil {
		return fmt.Errorf("close nftables: %w", err)
	}
	return nil
}

// NFLOGBind is the production [Binder].
func NFLOGBind(group, copyRange uint16) (*os.File, error) { return nflog.Bind(group, copyRange) }
