// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nft

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/terok-ai/clearance/internal/testenv/netnstest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestAttackVerifyNoticesTampering: a process holding CAP_NET_ADMIN in
// the namespace can delete the table, a rule or a chain, or open the
// output policy; Verify tells each from the table Engage built, and
// Engage repairs it (issue 9, item 4, the hub's half).
func TestAttackVerifyNoticesTampering(t *testing.T) {
	testutil.RequireRoot(t)
	nftBin := testutil.RequireTool(t, "nft", "nsenter")
	tests := []struct {
		name   string
		tamper string // an nft command run in the namespace
		want   Integrity
	}{
		{"untouched", "", Intact},
		{"table deleted", "delete table inet clearance", Missing},
		{"output policy opened", "chain inet clearance output { policy accept ; }", Altered},
		{"a rule inserted", "insert rule inet clearance output accept", Altered},
		{"input chain flushed", "flush chain inet clearance input", Altered},
		{"a rule added at the end", "add rule inet clearance output accept", Altered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := netnstest.NewNetNS(t)
			conn, err := Dial(int(ns.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseLasting()
			f := New(conn, Builtin)
			rs := Ruleset{TCPReset: true}
			if err := f.Engage(rs); err != nil {
				t.Fatal(err)
			}
			if tt.tamper != "" {
				args := append([]string{"--net=" + netnstest.Path(ns), "--", nftBin}, strings.Fields(tt.tamper)...)
				if out, err := exec.Command("nsenter", args...).CombinedOutput(); err != nil {
					t.Fatalf("nft %s: %v\n%s", tt.tamper, err, out)
				}
			}
			got, err := f.Verify(rs)
			if err != nil || got != tt.want {
				t.Fatalf("Verify = %q, %v; want %q", got, err, tt.want)
			}
			if err := f.Engage(rs); err != nil {
				t.Fatal(err)
			}
			if got, err := f.Verify(rs); err != nil || got != Intact {
				t.Fatalf("after Engage, Verify = %q, %v; want intact", got, err)
			}
		})
	}
}
