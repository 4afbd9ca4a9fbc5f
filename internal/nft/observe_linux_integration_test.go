// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nft_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/nflog"
	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/testenv/netnstest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestIntegrationObserveMode: an observe-mode ruleset lets a connection
// nothing allows through and logs it to the NFLOG group with the observe
// prefix (once per connection: the packets after the SYN are
// established), still drops what a deny set names, says so in nft's
// listing, and Explain reports it. Engaging the enforcing ruleset again
// blocks the same connection, so the test can fail.
func TestIntegrationObserveMode(t *testing.T) {
	tb := newTestbed(t)
	testutil.RequireTool(t, "nft")
	fw := tb.fw

	var nl *os.File
	netnstest.Exec(t, tb.ctr, func() error {
		var err error
		nl, err = nflog.Bind(nft.DefaultGroup, 0)
		return err
	})
	r, err := nflog.NewReader(nl, nil)
	nl.Close()
	if err != nil {
		t.Fatal(err)
	}
	records := make(chan nflog.Record, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, func(rec nflog.Record) { records <- rec })
	}()
	t.Cleanup(func() { cancel(); <-done; r.Close() })

	// A closed port of the test host: refused by the host (a reset)
	// unless the deny drops the SYN first.
	closedPort := uint16(tb.port + 1)
	if closedPort == 0 {
		closedPort = uint16(tb.port - 1)
	}
	rs := nft.Ruleset{Observe: true, Deny: []nft.Dest{{Prefix: netip.PrefixFrom(hostAddr, 32), Proto: syscall.IPPROTO_TCP, Port: closedPort}}}
	if err := fw.Engage(rs); err != nil {
		t.Fatal(err)
	}
	text := run(t, tb.ctr, "nft", "list", "table", "inet", "clearance")
	for _, want := range []string{
		`comment "clearance ruleset OBSERVE MODE (not enforced) `,
		`log prefix "CLEARANCE_OBSERVED: " group 100 queue-threshold 1 accept comment "OBSERVE MODE: NOT ENFORCED`,
		`ip daddr . meta l4proto . th dport @deny4_port drop`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("nft list table lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "reject with icmpx admin-prohibited") {
		t.Errorf("observe-mode ruleset still rejects:\n%s", text)
	}

	if err := tb.dial(t); err != nil {
		t.Fatalf("connect in observe mode: %v", err)
	}
	select {
	case rec := <-records:
		p, err := nflog.ParsePacket(rec.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Prefix != strings.TrimSpace(nft.DefaultObservePrefix) && rec.Prefix != nft.DefaultObservePrefix {
			t.Errorf("prefix %q, want %q", rec.Prefix, nft.DefaultObservePrefix)
		}
		if p.Dst != hostAddr || int(p.DstPort) != tb.port {
			t.Errorf("logged %v:%d, want %v:%d", p.Dst, p.DstPort, hostAddr, tb.port)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no NFLOG record for an observed connection")
	}
	// One record per connection: the rest of it was established.
	select {
	case rec := <-records:
		p, _ := nflog.ParsePacket(rec.Payload)
		t.Errorf("a second record for one connection: %q %+v", rec.Prefix, p)
	case <-time.After(300 * time.Millisecond):
	}
	explainIs(t, fw, hostAddr, uint16(tb.port), nft.ReasonObserved, "")
	explainIs(t, fw, hostAddr, closedPort, nft.ReasonDenied, "deny4_port")
	if x, _ := fw.Explain(hostAddr, 6, uint16(tb.port)); x.Verdict != nft.VerdictAccept || x.Prompt {
		t.Errorf("Explain in observe mode = %+v, want accept without a prompt", x)
	}

	// Denied destinations stay denied (dropped): the connect times out
	// instead of meeting the host's reset.
	if err := dialPort(t, tb, closedPort); !isTimeout(err) {
		t.Errorf("connect to a denied port in observe mode = %v, want a timeout (dropped)", err)
	}
	select {
	case rec := <-records:
		t.Errorf("a denied connection was logged: %q", rec.Prefix)
	default:
	}

	// Back to enforcing: the same connection is refused, and logged as
	// blocked.
	if err := fw.Engage(nft.Ruleset{Deny: rs.Deny}); err != nil {
		t.Fatal(err)
	}
	err = tb.dial(t)
	if !errors.Is(err, syscall.EHOSTUNREACH) && !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect after enforcing again = %v, want a refusal", err)
	}
	select {
	case rec := <-records:
		if !strings.HasPrefix(rec.Prefix, strings.TrimSpace(nft.DefaultBlockPrefix)) {
			t.Errorf("prefix after enforcing again %q, want the block prefix", rec.Prefix)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no NFLOG record for a blocked connection")
	}
	if strings.Contains(run(t, tb.ctr, "nft", "list", "table", "inet", "clearance"), "OBSERVE") {
		t.Error("the enforcing ruleset still names observe mode")
	}
	explainIs(t, fw, hostAddr, uint16(tb.port), nft.ReasonBlocked, "")
}

// dialPort connects from the container to the test host's port.
func dialPort(t *testing.T, tb *testbed, port uint16) error {
	t.Helper()
	var derr error
	netnstest.Exec(t, tb.ctr, func() error {
		d := net.Dialer{Timeout: 300 * time.Millisecond}
		c, err := d.Dial("tcp4", netip.AddrPortFrom(hostAddr, port).String())
		if err == nil {
			c.Close()
		}
		derr = err
		return nil
	})
	return derr
}
