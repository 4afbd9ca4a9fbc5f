// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package flows cuts a container's established connections to a
// destination by deleting their conntrack entries in the container's
// network namespace (github.com/ti-mo/conntrack over netlink).
//
// clearance's ruleset lets every packet of an established connection pass
// ("ct state established,related accept"), so a connection opened while a
// verdict allowed it would outlive the verdict. Once its entry is gone,
// the next packet the container sends on it is judged like a new
// connection's: without a verdict it is refused and logged.
//
// # Network namespaces
//
// [Cut] opens its netlink socket inside the namespace with [netns.Do] (a
// locked thread that is never returned to the scheduler), like every
// other socket clearance opens in a container's namespace.
package flows

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/netns"
)

// Match selects connections by their original direction (as the
// container opened them): destination address within Dst and, when Proto
// is not 0, that IP protocol and, when Port is not 0, that destination
// port.
type Match struct {
	Dst   netip.Prefix
	Proto uint8
	Port  uint16
}

func (m Match) matches(f conntrack.Flow) bool {
	o := f.TupleOrig
	if !m.Dst.Contains(o.IP.DestinationAddress.Unmap()) {
		return false
	}
	if m.Proto != 0 && o.Proto.Protocol != m.Proto {
		return false
	}
	return m.Port == 0 || o.Proto.DestinationPort == m.Port
}

// Cut deletes the conntrack entries of the network namespace nsFD that m
// matches and returns how many it deleted. An entry that disappears
// meanwhile (it timed out) is not an error. nsFD is not closed.
func Cut(nsFD int, m Match) (int, error) {
	if !m.Dst.IsValid() {
		return 0, fmt.Errorf("cut flows: invalid destination %v", m.Dst)
	}
	var c *conntrack.Conn
	err := netns.Do(nsFD, func() error {
		var err error
		c, err = conntrack.Dial(nil)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("cut flows: open conntrack: %w", err)
	}
	defer c.Close()
	family := netfilter.ProtoIPv4
	if m.Dst.Addr().Is6() {
		family = netfilter.ProtoIPv6
	}
	all, err := c.DumpFilter(conntrack.NewFilter().Family(family), nil)
	if err != nil {
		return 0, fmt.Errorf("cut flows: dump conntrack: %w", err)
	}
	n := 0
	for _, f := range all {
		if !m.matches(f) {
			continue
		}
		if err := c.Delete(f); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return n, fmt.Errorf("cut flows: delete %v: %w", f.TupleOrig, err)
		}
		n++
	}
	return n, nil
}
