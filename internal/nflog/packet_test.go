// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nflog

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestParsePacket(t *testing.T) {
	lo4, lo4b := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	lo6 := netip.MustParseAddr("::1")
	tests := []struct {
		name    string
		file    string
		cut     int // if > 0, parse only the first cut bytes
		want    Packet
		wantErr error // matched with errors.Is; any error if errAny
	}{
		{name: "IPv4 TCP SYN", file: "ipv4-tcp-syn.bin",
			want: Packet{Src: v4a, Dst: v4b, Proto: ProtoTCP, SrcPort: 40000, DstPort: 443}},
		{name: "IPv4 UDP", file: "ipv4-udp.bin",
			want: Packet{Src: v4a, Dst: v4b, Proto: ProtoUDP, SrcPort: 40001, DstPort: 53}},
		{name: "IPv4 with options", file: "ipv4-options-udp.bin",
			want: Packet{Src: v4a, Dst: v4b, Proto: ProtoUDP, SrcPort: 40001, DstPort: 53}},
		{name: "IPv4 later fragment has no ports", file: "ipv4-fragment.bin",
			want: Packet{Src: v4a, Dst: v4b, Proto: ProtoUDP, Fragment: true}},
		{name: "IPv4 first fragment has ports", file: "ipv4-first-frag.bin",
			want: Packet{Src: v4a, Dst: v4b, Proto: ProtoUDP, SrcPort: 40001, DstPort: 53}},
		{name: "IPv4 ICMP has no ports", file: "ipv4-icmp.bin",
			want: Packet{Src: v4a, Dst: v4b, Proto: ProtoICMP}},
		{name: "IPv4 SCTP", file: "ipv4-sctp.bin",
			want: Packet{Src: v4a, Dst: v4b, Proto: ProtoSCTP, SrcPort: 5000, DstPort: 3868}},
		{name: "IPv6 TCP behind hop-by-hop and destination options", file: "ipv6-tcp-hbh-dstopts.bin",
			want: Packet{Src: v6a, Dst: v6b, Proto: ProtoTCP, SrcPort: 40000, DstPort: 443}},
		{name: "IPv6 UDP behind routing and AH", file: "ipv6-udp-routing-ah.bin",
			want: Packet{Src: v6a, Dst: v6b, Proto: ProtoUDP, SrcPort: 40001, DstPort: 53}},
		{name: "IPv6 first fragment has ports", file: "ipv6-fragment-first.bin",
			want: Packet{Src: v6a, Dst: v6b, Proto: ProtoUDP, SrcPort: 40001, DstPort: 53}},
		{name: "IPv6 later fragment has no ports", file: "ipv6-fragment-later.bin",
			want: Packet{Src: v6a, Dst: v6b, Proto: ProtoUDP, Fragment: true}},
		{name: "IPv6 UDP-Lite", file: "ipv6-udplite.bin",
			want: Packet{Src: v6a, Dst: v6b, Proto: ProtoUDPLite, SrcPort: 7000, DstPort: 7001}},
		{name: "IPv6 ICMPv6 has no ports", file: "ipv6-icmpv6.bin",
			want: Packet{Src: v6a, Dst: v6b, Proto: ProtoICMPv6}},
		{name: "kernel capture: IPv4 UDP", file: "kernel-ipv4-udp.bin",
			want: Packet{Src: lo4, Dst: lo4b, Proto: ProtoUDP, SrcPort: 40009, DstPort: 9}},
		{name: "kernel capture: IPv4 TCP SYN", file: "kernel-ipv4-tcp-syn.bin",
			want: Packet{Src: lo4, Dst: netip.MustParseAddr("127.0.0.3"), Proto: ProtoTCP, SrcPort: 40010, DstPort: 18080}},
		{name: "kernel capture: IPv6 UDP", file: "kernel-ipv6-udp.bin",
			want: Packet{Src: lo6, Dst: lo6, Proto: ProtoUDP, SrcPort: 40009, DstPort: 9}},
		{name: "kernel capture: IPv6 TCP SYN", file: "kernel-ipv6-tcp-syn.bin",
			want: Packet{Src: lo6, Dst: lo6, Proto: ProtoTCP, SrcPort: 40010, DstPort: 18080}},

		{name: "IPv4 cut at the copy range after the ports", file: "ipv4-tcp-syn.bin", cut: 24,
			want: Packet{Src: v4a, Dst: v4b, Proto: ProtoTCP, SrcPort: 40000, DstPort: 443}},
		{name: "truncated IPv4 header", file: "ipv4-udp.bin", cut: 19, wantErr: ErrTruncated},
		{name: "truncated IPv4 options", file: "ipv4-options-udp.bin", cut: 22, wantErr: ErrTruncated},
		{name: "truncated IPv4 ports", file: "ipv4-tcp-syn.bin", cut: 23, wantErr: ErrTruncated},
		{name: "truncated IPv6 header", file: "ipv6-udplite.bin", cut: 39, wantErr: ErrTruncated},
		{name: "truncated IPv6 extension header", file: "ipv6-tcp-hbh-dstopts.bin", cut: 50, wantErr: ErrTruncated},
		{name: "truncated IPv6 fragment header", file: "ipv6-fragment-first.bin", cut: 45, wantErr: ErrTruncated},
		{name: "truncated IPv6 ports", file: "ipv6-tcp-hbh-dstopts.bin", cut: 40 + 24 + 3, wantErr: ErrTruncated},
		{name: "IPv6 extension chain too long", file: "ipv6-ext-chain-long.bin", wantErr: errAny},
		{name: "empty", file: "ipv4-udp.bin", cut: -1, wantErr: ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := readFixture(t, tt.file)
			switch {
			case tt.cut < 0:
				b = b[:0]
			case tt.cut > 0:
				b = b[:tt.cut]
			}
			got, err := ParsePacket(b)
			if tt.wantErr != nil {
				if err == nil || (tt.wantErr != errAny && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("ParsePacket: got (%+v, %v), want error %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePacket: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("ParsePacket (-want +got):\n%s", diff)
			}
		})
	}
}

// errAny in a test table accepts any non-nil error.
var errAny = errors.New("any error")

func TestParsePacketMalformed(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
	}{
		{"version 5", []byte{0x50, 0, 0, 0}},
		{"IHL below 5", append([]byte{0x44}, make([]byte, 30)...)},
		{"IPv4 total length below header", func() []byte {
			b := ipv4(ProtoUDP, v4a, v4b, 0, nil, udpDatagram(1, 2, nil))
			b[2], b[3] = 0, 10
			return b
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := ParsePacket(tt.b); err == nil {
				t.Fatalf("ParsePacket: got %+v, want error", got)
			}
		})
	}
}

// TestParsePacketEveryPrefix cuts every fixture at every length, as the
// NFLOG copy range may, and checks what ParsePacket and ParseDNS promise
// for a cut packet: ParsePacket fails with ErrTruncated until the last
// header it reads is complete and from there on returns exactly what the
// whole packet gives (a packet whose whole parse fails fails at every
// length); ParseDNS returns, with an error, a leading part of the whole
// reply's answers.
func TestParsePacketEveryPrefix(t *testing.T) {
	addrs := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	for name, b := range builtFixtures(t) {
		t.Run(name, func(t *testing.T) {
			full, fullErr := ParsePacket(b)
			fullDNS, _ := ParseDNS(b)
			complete := -1 // the shortest prefix that parses
			for i := range len(b) {
				p, err := ParsePacket(b[:i])
				switch {
				case fullErr != nil:
					if err == nil {
						t.Fatalf("prefix %d parses to %+v, the whole packet fails: %v", i, p, fullErr)
					}
				case err != nil:
					if !errors.Is(err, ErrTruncated) {
						t.Fatalf("prefix %d: error %v does not wrap ErrTruncated", i, err)
					}
					if complete >= 0 {
						t.Fatalf("prefix %d fails (%v) after prefix %d parsed", i, err, complete)
					}
				default:
					if complete < 0 {
						complete = i
					}
					if diff := cmp.Diff(full, p, addrs); diff != "" {
						t.Fatalf("prefix %d parses differently from the whole packet (-whole +prefix):\n%s", i, diff)
					}
				}

				answers, err := ParseDNS(b[:i])
				if len(answers) > len(fullDNS) {
					t.Fatalf("ParseDNS of prefix %d: %d answers, the whole reply has %d", i, len(answers), len(fullDNS))
				}
				if diff := cmp.Diff(fullDNS[:len(answers)], answers, addrs, cmpopts.EquateEmpty()); diff != "" {
					t.Fatalf("ParseDNS of prefix %d: answers are not a leading part of the whole reply's (-whole +prefix):\n%s", i, diff)
				}
				if err == nil && len(fullDNS) > 0 {
					t.Fatalf("ParseDNS of prefix %d of a reply with %d answers: no error", i, len(fullDNS))
				}
			}
			if fullErr == nil && complete < 0 {
				t.Fatalf("no prefix shorter than the whole packet parses (fine only without a payload)")
			}
		})
	}
}

func FuzzParsePacket(f *testing.F) {
	for _, b := range builtFixtures(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePacket(b)
		if err != nil {
			return
		}
		if !p.Src.IsValid() || !p.Dst.IsValid() {
			t.Fatalf("ParsePacket(%x) = %+v without error but invalid addresses", b, p)
		}
		if !p.HasPorts() && (p.SrcPort != 0 || p.DstPort != 0) {
			t.Fatalf("ParsePacket(%x) = %+v: ports without a port protocol", b, p)
		}
	})
}

func BenchmarkParsePacket(b *testing.B) {
	for _, name := range []string{"ipv4-tcp-syn.bin", "ipv6-tcp-hbh-dstopts.bin"} {
		pkt := readFixture(b, name)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParsePacket(pkt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
