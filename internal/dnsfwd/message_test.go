// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/net/dns/dnsmessage"
)

func TestParseQueryRepacks(t *testing.T) {
	tsigLike := dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: mustName(t, "key.test"), Class: dnsmessage.ClassANY},
		Body:   &dnsmessage.UnknownResource{Type: 250, Data: []byte("mac")},
	}
	m := dnsmessage.Message{
		Header:      dnsmessage.Header{ID: 77, RecursionDesired: true, CheckingDisabled: true},
		Questions:   []dnsmessage.Question{{Name: mustName(t, "MiXeD.Test"), Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET}},
		Answers:     rrA(t, "smuggled.test", 60, "192.0.2.66"),
		Additionals: []dnsmessage.Resource{tsigLike, ednsOpt(9000, dnsmessage.Option{Code: 10, Data: []byte("12345678")})},
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	q, reply := parseQuery(b)
	if q == nil {
		t.Fatalf("parseQuery refused a valid query: reply %x", reply)
	}
	if q.id != 77 || q.name != "mixed.test" || !q.rd || !q.cd {
		t.Errorf("query id %d name %q rd %v cd %v", q.id, q.name, q.rd, q.cd)
	}
	up := unpack(t, q.wire)
	want := dnsmessage.Message{
		Header:      dnsmessage.Header{RecursionDesired: true, CheckingDisabled: true},
		Questions:   m.Questions,
		Additionals: []dnsmessage.Resource{ednsOpt(MaxUDPSize, dnsmessage.Option{Code: 10, Data: []byte("12345678")})},
	}
	if diff := cmp.Diff(want, up, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(dnsmessage.ResourceHeader{}, "Length")); diff != "" {
		t.Errorf("query sent upstream (-want +got):\n%s", diff)
	}
}

func TestParseAnswer(t *testing.T) {
	const qn = "www.example.com"
	q, _ := parseQuery(queryMsg(t, 1, qn, dnsmessage.TypeA))
	reply := func(rcode dnsmessage.RCode, answers ...dnsmessage.Resource) []byte {
		m := dnsmessage.Message{Header: dnsmessage.Header{Response: true, RCode: rcode},
			Questions: []dnsmessage.Question{q.question}, Answers: answers}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	type result struct {
		Chain []string
		Addrs []string
		TTLs  []uint32
	}
	tests := []struct {
		name    string
		msg     []byte
		want    result
		wantErr bool
	}{
		{
			name: "no answers",
			msg:  reply(dnsmessage.RCodeNameError),
			want: result{Chain: []string{qn}},
		},
		{
			name: "addresses of the question",
			msg:  reply(0, rrA(t, "WWW.Example.COM", 30, "192.0.2.1", "192.0.2.2")...),
			want: result{Chain: []string{qn}, Addrs: []string{"192.0.2.1", "192.0.2.2"}, TTLs: []uint32{30, 30}},
		},
		{
			name: "a chain in any order, smallest ttl on the way",
			msg: reply(0, concat(rrA(t, "c.test", 900, "192.0.2.9"),
				[]dnsmessage.Resource{rrCNAME(t, "B.test", "c.test", 100), rrCNAME(t, qn, "b.TEST", 500)})...),
			want: result{Chain: []string{qn, "b.test", "c.test"}, Addrs: []string{"192.0.2.9"}, TTLs: []uint32{100}},
		},
		{
			name: "the same cname twice is fine",
			msg:  reply(0, rrCNAME(t, qn, "b.test", 60), rrCNAME(t, qn, "b.test", 40)),
			want: result{Chain: []string{qn, "b.test"}},
		},
		{
			name: "records off the chain are ignored",
			msg: reply(0, concat([]dnsmessage.Resource{rrCNAME(t, qn, "b.test", 60), rrCNAME(t, "x.test", "b.test", 60)},
				rrA(t, qn, 60, "192.0.2.66"), rrA(t, "x.test", 60, "192.0.2.67"), rrA(t, "b.test", 60, "192.0.2.2"))...),
			want: result{Chain: []string{qn, "b.test"}, Addrs: []string{"192.0.2.2"}, TTLs: []uint32{60}},
		},
		{name: "cname loop", msg: reply(0, rrCNAME(t, qn, "b.test", 60), rrCNAME(t, "b.test", qn, 60)), wantErr: true},
		{name: "cname to itself", msg: reply(0, rrCNAME(t, qn, qn, 60)), wantErr: true},
		{name: "cname fork", msg: reply(0, rrCNAME(t, qn, "b.test", 60), rrCNAME(t, qn, "c.test", 60)), wantErr: true},
		{name: "not a response", msg: queryMsg(t, 1, qn, dnsmessage.TypeA), wantErr: true},
		{name: "another question", msg: queryMsg(t, 1, "other.test", dnsmessage.TypeA), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := parseAnswer(tt.msg, q)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseAnswer accepted it: chain %v", a.chain)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := result{Chain: a.chain}
			for _, x := range a.addrs {
				got.Addrs = append(got.Addrs, x.addr.String())
				got.TTLs = append(got.TTLs, x.ttl)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := parseAnswer(reply(0, rrCNAME(t, qn, qn, 60)), q); !errors.Is(err, errMalformed) {
		t.Errorf("loop error %v, want errMalformed", err)
	}
}
