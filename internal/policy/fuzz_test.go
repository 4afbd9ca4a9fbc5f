// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package policy

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/dnsname"
)

// FuzzParse checks that Parse never panics, that whatever it accepts
// survives a Marshal/Parse round trip unchanged and marshals the same way
// twice, and that every entry is well formed: one of name and address,
// a protocol only with a port, a canonical name, and a String that parses
// back to the same entry.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"allow: [192.0.2.1, 198.51.100.0/24]\n",
		"deny:\n  - dest: 2001:db8::1\n    comment: x\n",
		"resolvers: [192.0.2.53]\n",
		"allow: [\n",
		"- a\n",
		"allow: {dest: 1}\n",
		"&a [*a]",
		"allow: !!binary AAAA\n",
		"include: [dev-python, github]\nallow: [github.com, '*.githubusercontent.com:443/tcp']\n",
		"allow:\n  - example.org:8443\n  - 198.51.100.0/24:53/udp\n  - '[2001:db8::1]:443/tcp'\n  - '[2001:db8::/32]:53'\n",
		"deny:\n  - dest: Bücher.example.:443/TCP\n    comment: c\n",
		"allow: [null, 'true', ~, 443, x.1, _srv._tcp.example.com:5060/udp]\n",
		"allow:\n  - *.example.com\n",
		"allow: ['*', '*.com', '**.a.b', 'a.*.b', 'a:0', 'a:65536', 'a:1/sctp', '[1.2.3.4]:1']\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		for _, e := range append(append(List{}, p.Allow...), p.Deny...) {
			checkEntry(t, e)
		}
		out, err := p.Marshal()
		if err != nil {
			t.Fatalf("Marshal of parsed policy: %v", err)
		}
		q, err := Parse("fuzz.yaml", out)
		if err != nil {
			t.Fatalf("re-Parse: %v\n%s", err, out)
		}
		if diff := cmp.Diff(p, q, cmpOpts); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
		again, err := q.Marshal()
		if err != nil || !bytes.Equal(out, again) {
			t.Fatalf("Marshal not stable (%v):\n%s\nthen\n%s", err, out, again)
		}
	})
}

func checkEntry(t *testing.T, e Entry) {
	t.Helper()
	if e.IsName() == e.Dest.IsValid() {
		t.Fatalf("entry %+v: not exactly one of name and address", e)
	}
	if e.Port == 0 && e.Proto != ProtoAny || e.Proto != ProtoAny && e.Proto != ProtoTCP && e.Proto != ProtoUDP {
		t.Fatalf("entry %v: port %d with protocol %d", e, e.Port, e.Proto)
	}
	if e.IsName() {
		if c, err := dnsname.Normalize(e.Name.Base()); err != nil || c != e.Name.Base() {
			t.Fatalf("entry %v: name not canonical (%q, %v)", e, c, err)
		}
	} else if e.Dest.Masked() != e.Dest || e.Dest.Addr().Is4In6() || e.Dest.Addr().Zone() != "" {
		t.Fatalf("entry %v: prefix %v not canonical", e, e.Dest)
	}
	x, err := ParseEntry(e.String())
	if err != nil || !x.Same(e) {
		t.Fatalf("entry %+v prints as %q, which parses to %+v, %v", e, e.String(), x, err)
	}
	if e.Source.Line <= 0 || e.Source.File != "fuzz.yaml" {
		t.Fatalf("entry %v: source %v", e, e.Source)
	}
}
