// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nflog

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/dns/dnsmessage"
)

func TestParseDNS(t *testing.T) {
	addrCmp := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	tests := []struct {
		name        string
		file        string
		cut         int
		want        []Answer
		wantErr     error // errors.Is; errAny accepts any error
		wantPartial bool  // want answers and an error
	}{
		{name: "A records for the question, name lower-cased", file: "dns-a.bin", want: []Answer{
			{Name: "www.example.test", Addr: netip.MustParseAddr("192.0.2.80"), TTL: 300},
			{Name: "www.example.test", Addr: netip.MustParseAddr("192.0.2.81"), TTL: 30},
		}},
		{name: "CNAME chain maps to the question name with the smallest TTL, unrelated A ignored",
			file: "dns-cname-chain.bin", want: []Answer{
				{Name: "www.example.test", Addr: netip.MustParseAddr("198.51.100.7"), TTL: 20},
			}},
		{name: "AAAA over IPv6", file: "dns-aaaa-v6.bin", want: []Answer{
			{Name: "www.example.test", Addr: v6b, TTL: 600},
		}},
		{name: "kernel capture: A over loopback", file: "kernel-dns-a.bin", want: []Answer{
			{Name: "example.test", Addr: netip.MustParseAddr("127.0.0.9"), TTL: 60},
		}},
		{name: "NXDOMAIN yields nothing", file: "dns-nxdomain.bin"},
		{name: "a query is not a reply", file: "dns-query.bin", wantErr: ErrNotDNSReply},
		{name: "not from port 53", file: "dns-from-other-port.bin", wantErr: ErrNotDNSReply},
		{name: "TCP is not a DNS reply", file: "ipv4-tcp-syn.bin", wantErr: ErrNotDNSReply},
		{name: "compression pointer loop", file: "dns-pointer-loop.bin", wantErr: errAny},
		{name: "300-character name", file: "dns-long-name.bin", wantErr: errAny},
		{name: "cut inside the second answer keeps the first", file: "dns-a.bin", cut: -10, wantPartial: true,
			want: []Answer{{Name: "www.example.test", Addr: netip.MustParseAddr("192.0.2.80"), TTL: 300}}},
		{name: "cut inside the header", file: "dns-a.bin", cut: 20 + 8 + 5, wantErr: errAny},
		{name: "truncated IP header", file: "dns-a.bin", cut: 10, wantErr: ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := readFixture(t, tt.file)
			switch {
			case tt.cut < 0:
				b = b[:len(b)+tt.cut]
			case tt.cut > 0:
				b = b[:tt.cut]
			}
			got, err := ParseDNS(b)
			switch {
			case tt.wantErr != nil:
				if err == nil || (tt.wantErr != errAny && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("ParseDNS: got (%+v, %v), want error %v", got, err, tt.wantErr)
				}
				return
			case tt.wantPartial:
				if err == nil {
					t.Fatalf("ParseDNS: got no error, want one with partial answers")
				}
			case err != nil:
				t.Fatalf("ParseDNS: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, addrCmp); diff != "" {
				t.Errorf("ParseDNS (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseDNSBounds(t *testing.T) {
	q := dnsmessage.MustNewName("many.test.")
	msg := dnsReply(t, q, dnsmessage.RCodeSuccess, func(b *dnsmessage.Builder) {
		for i := range 100 {
			aRR(t, b, q, 60, [4]byte{10, 0, byte(i / 256), byte(i)})
		}
	})
	got, err := ParseDNS(ipv4(ProtoUDP, v4b, v4a, 0, nil, udpDatagram(53, 1000, msg)))
	if err != nil {
		t.Fatalf("ParseDNS: %v", err)
	}
	if len(got) != MaxDNSAnswers {
		t.Errorf("ParseDNS returned %d answers, want the cap %d", len(got), MaxDNSAnswers)
	}

	// A CNAME loop in the answers ends the walk without error.
	a, b := dnsmessage.MustNewName("a.test."), dnsmessage.MustNewName("b.test.")
	msg = dnsReply(t, a, dnsmessage.RCodeSuccess, func(bl *dnsmessage.Builder) {
		cnameRR(t, bl, a, 60, b)
		cnameRR(t, bl, b, 60, a)
		aRR(t, bl, b, 60, [4]byte{10, 9, 9, 9})
	})
	got, err = ParseDNS(ipv4(ProtoUDP, v4b, v4a, 0, nil, udpDatagram(53, 1000, msg)))
	if err != nil {
		t.Fatalf("ParseDNS: %v", err)
	}
	want := []Answer{{Name: "a.test", Addr: netip.MustParseAddr("10.9.9.9"), TTL: 60}}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("ParseDNS with CNAME loop (-want +got):\n%s", diff)
	}
}

func FuzzParseDNS(f *testing.F) {
	for _, b := range builtFixtures(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		answers, _ := ParseDNS(b)
		if len(answers) > MaxDNSAnswers {
			t.Fatalf("ParseDNS returned %d answers, cap is %d", len(answers), MaxDNSAnswers)
		}
		for _, a := range answers {
			if a.Name == "" || len(a.Name) > MaxNameLen || !a.Addr.IsValid() {
				t.Fatalf("ParseDNS returned bad answer %+v", a)
			}
		}
	})
}

func BenchmarkParseDNS(b *testing.B) {
	for _, name := range []string{"dns-a.bin", "dns-cname-chain.bin"} {
		pkt := readFixture(b, name)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseDNS(pkt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
