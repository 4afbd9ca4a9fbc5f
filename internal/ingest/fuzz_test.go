// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ingest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/event"
)

// fuzzSeeds are producer-like lines, good and bad, to start the fuzzers.
var fuzzSeeds = []string{
	`{"type":"pending","container":"abc123def456","id":"abc123def456:1","dest":"93.184.215.14","port":443,"proto":6,"domain":"example.com","dossier":{"project":"p1"},"ts":"2026-05-05T10:00:00.123456+00:00"}`,
	`{"type":"pending","container":"c","id":"c:1","dest":"1.2.3.4","port":"443","proto":6.0,"domain":null}`,
	`{"type":"container_exited","container":"c","reason":"poststop","dossier":{"n":8080,"b":true,"o":{"a":[1]}}}`,
	`{"type":"shield_down_all","container":"tainted\u0000name\u202e"}`,
	`{"type":"pending"}`,
	`{"type":"unheard-of"}`,
	`{"typ\u0065":"shield_up","container":"a","container":"b","dossier":{"k":1,"k":"2","\u00e9":[{"x":"}"}]}}`,
	` { "type" : "pending" , "container" : "c" , "id" : "c:\"1" , "dest" : "d" , "port" : 4.43e2 , "proto" : "6" } `,
	`{"type":"pending","container":"c","id":"c:2","dest":"d","port":65536,"proto":" +17 ","domain":true,"dossier":[1]}`,
	`{"type":"pending","container":"c","id":"c:3","dest":"d","port":1e-400,"proto":-0.0,"dossier":{"a":{"b" : [ 1 , "x" ]},"n":null,"f":1.50}}`,
	"\v{\"type\":\"container_exited\",\"container\":12,\"reason\":null,\"dossier\":null}\f",
	`{"type":"shield_up","container":{"a":1}}`,
	`null`,
	`not-json`,
	`[1,2]`,
	"{\"type\":\"shield_up\",\"container\":\"\xff\"}",
	"",
}

// isPrintableASCII reports whether s holds only 0x20..0x7E.
func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7E {
			return false
		}
	}
	return true
}

func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		ev, err := Parse(line)
		ref, outcome := parseReference(line)
		var got refOutcome
		switch {
		case err == nil:
			got = refOK
		case errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownType):
			got = refMalformed
		case errors.Is(err, ErrUnknownType) && !errors.Is(err, ErrMalformed):
			got = refUnknownType
		default:
			t.Fatalf("Parse(%q) error %v matches neither or both kinds", line, err)
		}
		if got != outcome {
			t.Fatalf("Parse(%q): %v (err %v), the reference says %v", line, got, err, outcome)
		}
		if err != nil {
			return
		}
		if diff := cmp.Diff(ref, ev); diff != "" {
			t.Fatalf("Parse(%q) differs from the reference (-ref +got):\n%s", line, diff)
		}
		if ev.Dossier == nil {
			t.Fatalf("Parse(%q): nil dossier", line)
		}
		strs := []string{ev.Container, ev.RequestID, ev.Dest, ev.Domain, ev.Action, ev.Reason}
		for _, v := range ev.Dossier {
			strs = append(strs, v)
		}
		for _, s := range strs {
			if len(s) > 256 || !isPrintableASCII(s) {
				t.Fatalf("Parse(%q): unsanitised string %q in %+v", line, s, ev)
			}
		}
		switch ev.Type {
		case event.ConnectionBlocked:
			if ev.Port < 0 || ev.Port > 65535 || ev.Proto < 0 || ev.Proto > 255 {
				t.Fatalf("Parse(%q): port/proto out of range in %+v", line, ev)
			}
		case event.ContainerStarted, event.ContainerExited, event.ShieldUp, event.ShieldDown, event.ShieldDisengaged:
			if ev.RequestID != "" || ev.Dest != "" || ev.Port != 0 || ev.Proto != 0 || ev.Domain != "" {
				t.Fatalf("Parse(%q): lifecycle event with connection fields %+v", line, ev)
			}
		default:
			t.Fatalf("Parse(%q): type %q is not a wire type the hub takes from producers", line, ev.Type)
		}
	})
}

// FuzzReadLines feeds random bytes, then a newline and a valid line, through
// a connection's read loop in random chunk sizes: nothing panics, the valid
// line always arrives last, and the line reader agrees with a reference
// splitter.
func FuzzReadLines(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s+"\n"+s), uint8(0))
	}
	f.Add([]byte(strings.Repeat("x", 300)+"\n\xff\xfe\n\n"), uint8(1))
	f.Add([]byte("\r\n\r\n"+strings.Repeat("{", 200)), uint8(2))

	const maxLine = 64
	sentinel := `{"type":"shield_up","container":"sentinel"}`
	want := event.Event{Type: event.ShieldUp, Container: "sentinel", Dossier: map[string]string{}}

	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		chunked := func(b []byte) io.Reader {
			r := io.Reader(bytes.NewReader(b))
			switch mode % 4 {
			case 1:
				r = iotest.OneByteReader(r)
			case 2:
				r = iotest.HalfReader(r)
			case 3:
				r = iotest.DataErrReader(r)
			}
			return r
		}

		// The line reader against the reference splitter, in bounded memory.
		br := &boundedReader{t: t, r: chunked(data), limit: maxLine + 1}
		if diff := cmp.Diff(referenceLines(data, maxLine), readAll(t, newLineReader(br, maxLine))); diff != "" {
			t.Fatalf("lines of %q differ from the reference (-want +got):\n%s", data, diff)
		}

		// The whole read loop: a later valid line is never lost.
		input := append(append(bytes.Clone(data), '\n'), sentinel+"\n"...)
		var got []event.Event
		srv := &Server{MaxLine: maxLine, Sink: func(ev event.Event) error {
			got = append(got, ev)
			return nil
		}}
		if err := srv.readLines(context.Background(), chunked(input)); err != nil {
			t.Fatalf("readLines: %v", err)
		}
		if len(got) == 0 {
			t.Fatalf("input %q: sentinel lost, nothing delivered", data)
		}
		if diff := cmp.Diff(want, got[len(got)-1]); diff != "" {
			t.Fatalf("input %q: last event (-want +got):\n%s", data, diff)
		}
		s := srv.Stats()
		if total := s.Events + s.Malformed + s.UnknownType + s.Oversized; total > uint64(bytes.Count(input, []byte("\n"))) {
			t.Fatalf("Stats %+v count more lines than the input has", s)
		}
	})
}
