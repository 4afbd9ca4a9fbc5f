// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nflog

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/mdlayher/netlink"
)

// packetMessage builds one NFULNL_MSG_PACKET netlink message as the kernel
// would send it.
func packetMessage(tb testing.TB, family uint8, attrs []netlink.Attribute) []byte {
	tb.Helper()
	body, err := netlink.MarshalAttributes(attrs)
	must(tb, err)
	data := append(nfgenmsg(family, 7), body...)
	m := netlink.Message{
		Header: netlink.Header{
			Length: uint32(16 + len(data) + (4-len(data)%4)%4),
			Type:   netlink.HeaderType(nfnlSubsysULOG<<8 | nfulnlMsgPacket),
		},
		Data: data,
	}
	b, err := m.MarshalBinary()
	must(tb, err)
	return b
}

func TestDispatch(t *testing.T) {
	payload := readFixture(t, "ipv4-udp.bin")
	hdr := []byte{0x08, 0x00, 3, 0}
	ts := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 1_700_000_000), 250_000)
	ack := make([]byte, 36) // an acknowledgement: skipped
	binary.NativeEndian.PutUint32(ack[0:], 36)
	binary.NativeEndian.PutUint16(ack[4:], uint16(netlink.Error))

	var dgram []byte
	dgram = append(dgram, packetMessage(t, 2, []netlink.Attribute{
		{Type: nfulaPacketHdr, Data: hdr},
		{Type: nfulaTimestamp, Data: ts},
		{Type: nfulaPrefix, Data: []byte("TEST: \x00")},
		{Type: nfulaPayload, Data: payload},
	})...)
	dgram = append(dgram, ack...)
	dgram = append(dgram, packetMessage(t, 10, []netlink.Attribute{
		{Type: nfulaPayload, Data: []byte{0x60}},
	})...)

	r := &Reader{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var got []Record
	before := time.Now()
	r.dispatch(dgram, func(rec Record) { got = append(got, rec) })

	if len(got) != 2 {
		t.Fatalf("dispatch delivered %d records, want 2", len(got))
	}
	if got[1].Time.Before(before) {
		t.Errorf("record without timestamp: Time %v, want the read time", got[1].Time)
	}
	got[1].Time = time.Time{}
	want := []Record{
		{Prefix: "TEST: ", Payload: payload, Time: time.Unix(1_700_000_000, 250_000_000), HwProtocol: 0x0800, Hook: 3, Family: 2},
		{Payload: []byte{0x60}, Family: 10},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dispatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Stats{Records: 2}, r.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}

	// A length beyond the datagram is counted, not a panic.
	r.dispatch(dgram[:len(dgram)-4], func(Record) {})
	if r.Stats().Malformed != 1 {
		t.Errorf("Stats().Malformed = %d after a cut datagram, want 1", r.Stats().Malformed)
	}
	// So are bytes too few for a header, alone or after a whole message.
	n := 0
	r.dispatch(dgram[:8], func(Record) { n++ })
	r.dispatch(append(bytes.Clone(ack), 0, 0, 0, 0), func(Record) { n++ })
	if r.Stats().Malformed != 3 || n != 0 {
		t.Errorf("after a 8-byte datagram and an ack with 4 bytes more: Malformed = %d, want 3; %d records", r.Stats().Malformed, n)
	}
}

// FuzzDispatch feeds datagrams to the netlink message loop and checks
// what it promises besides not panicking: Stats counts exactly the
// records delivered, a record never needs fewer than a message header's
// 16 bytes, each payload is bytes of the datagram and the record's own
// copy (overwriting the datagram leaves it intact), and a datagram that
// decoded cleanly decodes, twice over, into twice its records.
func FuzzDispatch(f *testing.F) {
	msg := func(family uint8, attrs ...netlink.Attribute) []byte { return packetMessage(f, family, attrs) }
	ts := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 1_700_000_000), 250_000)
	ack := make([]byte, 36)
	binary.NativeEndian.PutUint32(ack[0:], 36)
	binary.NativeEndian.PutUint16(ack[4:], uint16(netlink.Error))
	whole := append(append(msg(2,
		netlink.Attribute{Type: nfulaPacketHdr, Data: []byte{8, 0, 3, 0}},
		netlink.Attribute{Type: nfulaTimestamp, Data: ts},
		netlink.Attribute{Type: nfulaPrefix, Data: []byte("X\x00")},
		netlink.Attribute{Type: nfulaPayload, Data: readFixture(f, "ipv4-udp.bin")}), ack...),
		msg(10, netlink.Attribute{Type: nfulaPayload, Data: readFixture(f, "ipv6-tcp-hbh-dstopts.bin")})...)
	badLen := bytes.Clone(whole)
	binary.NativeEndian.PutUint32(badLen[0:], 1<<20)
	for _, seed := range [][]byte{
		whole,
		whole[:len(whole)-4], // cut in the last message
		ack,                  // not a packet: skipped
		msg(2),               // no attributes
		msg(2, netlink.Attribute{Type: nfulaPacketHdr, Data: []byte{8}}), // short packet header
		msg(2, netlink.Attribute{Type: nfulaTimestamp, Data: []byte{1}}), // short timestamp
		badLen,     // a length beyond the datagram
		whole[:16], // a bare header
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		r := &Reader{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		var got []Record
		var copies [][]byte
		r.dispatch(b, func(rec Record) {
			got = append(got, rec)
			copies = append(copies, bytes.Clone(rec.Payload))
		})
		st := r.Stats()
		if st.Records != uint64(len(got)) {
			t.Fatalf("Stats().Records = %d, %d records delivered", st.Records, len(got))
		}
		if len(got) > len(b)/16 {
			t.Fatalf("%d records from %d bytes", len(got), len(b))
		}
		for i := range b {
			b[i] ^= 0xff
		}
		for i, rec := range got {
			if !bytes.Contains(orig, copies[i]) {
				t.Fatalf("record %d payload %x is not in the datagram", i, copies[i])
			}
			if !bytes.Equal(rec.Payload, copies[i]) {
				t.Fatalf("record %d payload changed with the datagram: it is not the record's own copy", i)
			}
		}

		if st.Malformed != 0 || len(orig)%4 != 0 {
			return
		}
		twice := append(bytes.Clone(orig), orig...)
		r2 := &Reader{log: r.log}
		var again []Record
		r2.dispatch(twice, func(rec Record) { again = append(again, rec) })
		if r2.Stats().Malformed != 0 || len(again) != 2*len(got) {
			t.Fatalf("the datagram twice: %d records, %d malformed; once: %d records", len(again), r2.Stats().Malformed, len(got))
		}
		noTime := cmp.Transformer("noTime", func(r Record) Record { r.Time = time.Time{}; return r })
		if diff := cmp.Diff(append(got, got...), again, noTime, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("the datagram twice (-want +got):\n%s", diff)
		}
	})
}

func TestNewReaderRejectsNonNetlink(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	if r, err := NewReader(pr, nil); err == nil {
		r.Close()
		t.Fatal("NewReader(pipe) succeeded, want error")
	}
}
