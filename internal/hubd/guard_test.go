// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// nlmsg builds one netlink message of nftables subsystem type msg.
func nlmsg(subsys, msg uint16, payload int) []byte {
	l := unix.NLMSG_HDRLEN + payload
	b := make([]byte, (l+3)&^3)
	binary.NativeEndian.PutUint32(b[0:4], uint32(l))
	binary.NativeEndian.PutUint16(b[4:6], subsys<<8|msg)
	return b
}

func TestNFTChanged(t *testing.T) {
	nft := uint16(unix.NFNL_SUBSYS_NFTABLES)
	tests := []struct {
		name string
		b    []byte
		want bool
	}{
		{"a rule deleted", nlmsg(nft, unix.NFT_MSG_DELRULE, 20), true},
		{"a table deleted", nlmsg(nft, unix.NFT_MSG_DELTABLE, 0), true},
		{"a chain changed", nlmsg(nft, unix.NFT_MSG_NEWCHAIN, 7), true},
		{"an element added (a verdict)", nlmsg(nft, unix.NFT_MSG_NEWSETELEM, 40), false},
		{"the generation message of every batch", nlmsg(nft, unix.NFT_MSG_NEWGEN, 12), false},
		{"elements, then a rule", append(nlmsg(nft, unix.NFT_MSG_NEWSETELEM, 5), nlmsg(nft, unix.NFT_MSG_NEWRULE, 9)...), true},
		{"another subsystem", nlmsg(unix.NFNL_SUBSYS_CTNETLINK, unix.NFT_MSG_DELRULE, 0), false},
		{"truncated", nlmsg(nft, unix.NFT_MSG_DELRULE, 20)[:10], false},
		{"a length beyond the buffer", func() []byte {
			b := nlmsg(nft, unix.NFT_MSG_DELRULE, 0)
			binary.NativeEndian.PutUint32(b[0:4], 4096)
			return b
		}(), false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nftChanged(tt.b); got != tt.want {
				t.Errorf("nftChanged = %v, want %v", got, tt.want)
			}
		})
	}
}
