// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nflog

import (
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
	if r.Stats().Malformed == 0 {
		t.Errorf("Stats().Malformed = 0 after a cut datagram")
	}
}

func FuzzDispatch(f *testing.F) {
	f.Add(packetMessage(f, 2, []netlink.Attribute{
		{Type: nfulaPacketHdr, Data: []byte{8, 0, 3, 0}},
		{Type: nfulaPrefix, Data: []byte("X\x00")},
		{Type: nfulaPayload, Data: []byte{0x45, 0, 0, 20}},
	}))
	r := &Reader{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f.Fuzz(func(t *testing.T, b []byte) {
		r.dispatch(b, func(Record) {})
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
