// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/netns"
)

// Bounds on a container's ruleset beyond which the service refuses to
// read it. The container's owner owns its network namespace and can fill
// it with anything (hundreds of thousands of set elements, thousands of
// tables), and every call reads the ruleset: without a bound, one user's
// call costs seconds of CPU and hundreds of megabytes in the service
// every other user's calls go through. [rulesetGuard] counts with dumps
// it abandons as soon as a bound is passed.
const (
	// GuardMaxTables bounds the inet tables of the namespace.
	GuardMaxTables = 256
	// GuardMaxSets bounds the sets of clearance's (or the shield's) table.
	GuardMaxSets = 256
	// GuardMaxElements bounds the set elements of that table (an
	// interval element counts twice: start and end). It leaves room for
	// everything clearance itself puts there: the DNS forwarder's whole
	// learned table (dnsfwd.DefaultMaxLearned, 65 536 addresses) and as
	// many again for the policy's sets. Below that, a container that
	// merely resolved many names would have its own ruleset refused to
	// Verify, Engage and Disengage.
	GuardMaxElements = 1 << 17
	// GuardMaxRules bounds the rules of its DNS redirect chain.
	GuardMaxRules = 1024
)

// errRulesetTooBig is wrapped by the guard's refusals.
var errRulesetTooBig = errors.New("the container's ruleset is larger than the service reads")

// rulesetGuard checks a namespace's ruleset against the bounds above
// before the firewall reads it.
type rulesetGuard struct {
	// tables are the inet tables the firewall reads, with the chain of
	// each whose rules it reads ("" for none).
	tables map[string]string
}

// nftables netlink constants (linux/netfilter/nf_tables.h).
const (
	nfnlSubsysNFTables = 10
	nftMsgGetTable     = 1
	nftMsgGetRule      = 7
	nftMsgGetSet       = 10
	nftMsgGetSetElem   = 13
	nfprotoINet        = 1
	nftaNameTable      = 1 // NFTA_SET_TABLE, NFTA_RULE_TABLE, NFTA_SET_ELEM_LIST_TABLE
	nftaNameSecond     = 2 // NFTA_SET_NAME, NFTA_RULE_CHAIN, NFTA_SET_ELEM_LIST_SET
	nftaSetElemList    = 3 // NFTA_SET_ELEM_LIST_ELEMENTS
)

// check counts the ruleset of the namespace nsFD.
func (g rulesetGuard) check(nsFD int) error {
	var fd int
	err := netns.Do(nsFD, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return fmt.Errorf("check ruleset size: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("check ruleset size: %w", err)
	}
	d := &dumper{fd: fd, buf: make([]byte, 64<<10)}

	present := map[string]bool{}
	n, err := d.count(nftMsgGetTable, nil, GuardMaxTables, func(data []byte) int {
		if name, ok := stringAttr(data, nftaNameTable); ok {
			if _, want := g.tables[name]; want {
				present[name] = true
			}
		}
		return 1
	})
	if err != nil {
		return guardError("inet tables", n, GuardMaxTables, err)
	}
	for table, chain := range g.tables {
		if !present[table] {
			continue
		}
		var sets []string
		n, err := d.count(nftMsgGetSet, attrs(nftaNameTable, table), GuardMaxSets, func(data []byte) int {
			if name, ok := stringAttr(data, nftaNameSecond); ok {
				sets = append(sets, name)
			}
			return 1
		})
		if err != nil {
			return guardError("sets in table "+table, n, GuardMaxSets, err)
		}
		elems := 0
		for _, set := range sets {
			n, err := d.count(nftMsgGetSetElem, attrs(nftaNameTable, table, nftaNameSecond, set), GuardMaxElements-elems, countElements)
			elems += n
			if err != nil {
				return guardError("set elements in table "+table, elems, GuardMaxElements, err)
			}
		}
		if chain != "" {
			n, err := d.count(nftMsgGetRule, attrs(nftaNameTable, table, nftaNameSecond, chain), GuardMaxRules, func([]byte) int { return 1 })
			if err != nil {
				return guardError("rules in chain "+chain, n, GuardMaxRules, err)
			}
		}
	}
	return nil
}

func guardError(what string, n, limit int, err error) error {
	if errors.Is(err, errRulesetTooBig) {
		return fmt.Errorf("%w: more than %d %s (counting stopped at %d); shrink it with nft in the container's namespace",
			errRulesetTooBig, limit, what, n)
	}
	return fmt.Errorf("check ruleset size: count %s: %w", what, err)
}

// dumper runs nftables dumps on a raw netlink socket, reading one
// datagram at a time into a fixed buffer: memory stays bounded however
// much the kernel has to send, and a dump abandoned early just ends with
// the socket.
type dumper struct {
	fd  int
	seq uint32
	buf []byte
}

// count sends a dump request of nftables message type typ with payload
// (attributes after the nfgenmsg) and sums per over the replies. It
// returns errRulesetTooBig as soon as the sum passes limit; a missing
// object (ENOENT) counts as none.
func (d *dumper) count(typ uint16, payload []byte, limit int, per func(data []byte) int) (int, error) {
	d.seq++
	req := make([]byte, unix.NLMSG_HDRLEN+4+len(payload))
	binary.NativeEndian.PutUint32(req[0:4], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:6], nfnlSubsysNFTables<<8|typ)
	binary.NativeEndian.PutUint16(req[6:8], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:12], d.seq)
	req[unix.NLMSG_HDRLEN] = nfprotoINet // nfgenmsg: family, version 0, res_id 0
	copy(req[unix.NLMSG_HDRLEN+4:], payload)
	if err := unix.Sendto(d.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, err
	}
	total := 0
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		if err != nil {
			return total, err
		}
		msgs, err := syscall.ParseNetlinkMessage(d.buf[:n])
		if err != nil {
			return total, err
		}
		for _, m := range msgs {
			if m.Header.Seq != d.seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return total, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return total, errors.New("short netlink error")
				}
				errno := -int32(binary.NativeEndian.Uint32(m.Data[:4]))
				if errno == 0 {
					continue
				}
				if syscall.Errno(errno) == unix.ENOENT {
					return total, nil
				}
				return total, syscall.Errno(errno)
			}
			if len(m.Data) >= 4 {
				total += per(m.Data[4:])
			}
			if total > limit {
				return total, errRulesetTooBig
			}
		}
	}
}

// attrs encodes pairs of (type, string) netlink attributes.
func attrs(kv ...any) []byte {
	ae := netlink.NewAttributeEncoder()
	for i := 0; i+1 < len(kv); i += 2 {
		ae.String(uint16(kv[i].(int)), kv[i+1].(string))
	}
	b, _ := ae.Encode()
	return b
}

// stringAttr returns the string attribute typ of an nftables message.
func stringAttr(data []byte, typ uint16) (string, bool) {
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return "", false
	}
	for ad.Next() {
		if ad.Type() == typ {
			return ad.String(), true
		}
	}
	return "", false
}

// countElements counts the elements of one NEWSETELEM message.
func countElements(data []byte) int {
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return 0
	}
	n := 0
	for ad.Next() {
		if ad.Type() != nftaSetElemList {
			continue
		}
		ad.Nested(func(nad *netlink.AttributeDecoder) error {
			for nad.Next() {
				n++
			}
			return nil
		})
	}
	return n
}
