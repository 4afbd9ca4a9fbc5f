// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ingest

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/event"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		line string
		want event.Event
	}{
		// docs/seed-compat.md §S10.18, §S10.34 and §S3.2: a full pending line.
		{
			name: "pending becomes connection_blocked with every field",
			line: `{"type":"pending","container":"abc123def456","id":"abc123def456:1","dest":"93.184.215.14","port":443,"proto":6,"domain":"example.com","dossier":{"project":"p1","task":"t1"},"ts":"2026-05-05T10:00:00.123456+00:00"}`,
			want: event.Event{
				Type: event.ConnectionBlocked, Container: "abc123def456", RequestID: "abc123def456:1",
				Dest: "93.184.215.14", Port: 443, Proto: 6, Domain: "example.com",
				Dossier: map[string]string{"project": "p1", "task": "t1"},
			},
		},
		// §S10.19.
		{
			name: "missing domain is empty",
			line: `{"type":"pending","container":"c","id":"c:1","dest":"10.0.0.1","port":53,"proto":17}`,
			want: event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:1", Dest: "10.0.0.1", Port: 53, Proto: 17, Dossier: map[string]string{}},
		},
		{
			name: "ipv6 destination and empty domain",
			line: `{"type":"pending","container":"c","id":"c:2","dest":"2001:db8::1","port":443,"proto":6,"domain":"","dossier":{}}`,
			want: event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:2", Dest: "2001:db8::1", Port: 443, Proto: 6, Dossier: map[string]string{}},
		},
		{
			name: "container_started",
			line: `{"type":"container_started","container":"abc123def456"}`,
			want: event.Event{Type: event.ContainerStarted, Container: "abc123def456", Dossier: map[string]string{}},
		},
		// §S10.20.
		{
			name: "container_exited carries reason",
			line: `{"type":"container_exited","container":"c","reason":"poststop"}`,
			want: event.Event{Type: event.ContainerExited, Container: "c", Reason: "poststop", Dossier: map[string]string{}},
		},
		{
			name: "container_exited without reason",
			line: `{"type":"container_exited","container":"c"}`,
			want: event.Event{Type: event.ContainerExited, Container: "c", Dossier: map[string]string{}},
		},
		{
			name: "shield_up with dossier",
			line: `{"type":"shield_up","container":"my-task","dossier":{"project":"p","name":"n"}}`,
			want: event.Event{Type: event.ShieldUp, Container: "my-task", Dossier: map[string]string{"project": "p", "name": "n"}},
		},
		// §S10.21.
		{
			name: "shield_down has only container",
			line: `{"type":"shield_down","container":"c","id":"c:9","dest":"1.2.3.4","port":1,"proto":6,"domain":"x","reason":"r"}`,
			want: event.Event{Type: event.ShieldDown, Container: "c", Dossier: map[string]string{}},
		},
		{
			name: "shield_disengaged",
			line: `{"type":"shield_disengaged","container":"c"}`,
			want: event.Event{Type: event.ShieldDisengaged, Container: "c", Dossier: map[string]string{}},
		},
		{
			name: "older shield_down_all becomes shield_disengaged",
			line: `{"type":"shield_down_all","container":"c","dossier":{"task":"t"}}`,
			want: event.Event{Type: event.ShieldDisengaged, Container: "c", Dossier: map[string]string{"task": "t"}},
		},
		// §S10.22.
		{
			name: "missing dossier is empty",
			line: `{"type":"shield_up","container":"c"}`,
			want: event.Event{Type: event.ShieldUp, Container: "c", Dossier: map[string]string{}},
		},
		{
			name: "list dossier is empty",
			line: `{"type":"shield_up","container":"c","dossier":["a","b"]}`,
			want: event.Event{Type: event.ShieldUp, Container: "c", Dossier: map[string]string{}},
		},
		{
			name: "scalar dossier is empty",
			line: `{"type":"shield_up","container":"c","dossier":"x"}`,
			want: event.Event{Type: event.ShieldUp, Container: "c", Dossier: map[string]string{}},
		},
		{
			name: "null dossier is empty",
			line: `{"type":"shield_up","container":"c","dossier":null}`,
			want: event.Event{Type: event.ShieldUp, Container: "c", Dossier: map[string]string{}},
		},
		{
			name: "dossier values become text",
			line: `{"type":"shield_up","container":"c","dossier":{"port":8080,"ratio":1.5,"on":true,"off":false,"none":null,"nested":{"a": [1, "b"]},"list":[1,2]}}`,
			want: event.Event{Type: event.ShieldUp, Container: "c", Dossier: map[string]string{
				"port": "8080", "ratio": "1.5", "on": "true", "off": "false", "none": "",
				"nested": `{"a":[1,"b"]}`, "list": "[1,2]",
			}},
		},
		// §S10.23.
		{
			name: "terminal escapes in domain",
			line: `{"type":"pending","container":"c","id":"c:1","dest":"1.2.3.4","port":443,"proto":6,"domain":"evil\u001b[31mfake\u0000.example.com"}`,
			want: event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:1", Dest: "1.2.3.4", Port: 443, Proto: 6, Domain: "evil [31mfake .example.com", Dossier: map[string]string{}},
		},
		{
			name: "right-to-left override in domain",
			line: `{"type":"pending","container":"c","id":"c:1","dest":"1.2.3.4","port":443,"proto":6,"domain":"evil` + "\u202e" + `.com"}`,
			want: event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:1", Dest: "1.2.3.4", Port: 443, Proto: 6, Domain: "evil .com", Dossier: map[string]string{}},
		},
		// §S10.24.
		{
			name: "dossier values sanitised, keys unchanged",
			line: `{"type":"shield_up","container":"c","dossier":{"project":"p1\nProtocol: spoof","task":"café","<k\u0001>":"v"}}`,
			want: event.Event{Type: event.ShieldUp, Container: "c", Dossier: map[string]string{
				"project": "p1 Protocol: spoof", "task": "caf ", "<k\x01>": "v",
			}},
		},
		// §S10.25.
		{
			name: "markup in domain passes through",
			line: `{"type":"pending","container":"c","id":"c:1","dest":"1.2.3.4","port":443,"proto":6,"domain":"<b>bold</b>&amp;"}`,
			want: event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:1", Dest: "1.2.3.4", Port: 443, Proto: 6, Domain: "<b>bold</b>&amp;", Dossier: map[string]string{}},
		},
		{
			name: "nul in container",
			line: `{"type":"shield_down","container":"tainted\u0000name"}`,
			want: event.Event{Type: event.ShieldDown, Container: "tainted name", Dossier: map[string]string{}},
		},
		{
			name: "long strings capped at 256",
			line: `{"type":"pending","container":"c","id":"c:1","dest":"1.2.3.4","port":443,"proto":6,"domain":"` + strings.Repeat("a", 300) + `"}`,
			want: event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:1", Dest: "1.2.3.4", Port: 443, Proto: 6, Domain: strings.Repeat("a", 253) + "...", Dossier: map[string]string{}},
		},
		// Null handling (fixes §S11.9).
		{
			name: "null domain is empty, never None",
			line: `{"type":"pending","container":"c","id":"c:1","dest":"1.2.3.4","port":443,"proto":6,"domain":null}`,
			want: event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:1", Dest: "1.2.3.4", Port: 443, Proto: 6, Dossier: map[string]string{}},
		},
		{
			name: "null reason is empty",
			line: `{"type":"container_exited","container":"c","reason":null}`,
			want: event.Event{Type: event.ContainerExited, Container: "c", Dossier: map[string]string{}},
		},
		// Scalars where strings belong.
		{
			name: "numeric id and container keep their JSON text",
			line: `{"type":"pending","container":12,"id":7,"dest":"1.2.3.4","port":443,"proto":6,"domain":true}`,
			want: event.Event{Type: event.ConnectionBlocked, Container: "12", RequestID: "7", Dest: "1.2.3.4", Port: 443, Proto: 6, Domain: "true", Dossier: map[string]string{}},
		},
		// Port and proto forms.
		{
			name: "numeric strings for port and proto",
			line: `{"type":"pending","container":"c","id":"c:1","dest":"1.2.3.4","port":"443","proto":" 17 "}`,
			want: event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:1", Dest: "1.2.3.4", Port: 443, Proto: 17, Dossier: map[string]string{}},
		},
		{
			name: "integral floats for port and proto",
			line: `{"type":"pending","container":"c","id":"c:1","dest":"1.2.3.4","port":443.0,"proto":1.7e1}`,
			want: event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:1", Dest: "1.2.3.4", Port: 443, Proto: 17, Dossier: map[string]string{}},
		},
		{
			name: "range limits accepted",
			line: `{"type":"pending","container":"c","id":"c:1","dest":"1.2.3.4","port":65535,"proto":255}`,
			want: event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:1", Dest: "1.2.3.4", Port: 65535, Proto: 255, Dossier: map[string]string{}},
		},
		{
			name: "zero port and proto accepted",
			line: `{"type":"pending","container":"c","id":"c:1","dest":"1.2.3.4","port":0,"proto":-0}`,
			want: event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:1", Dest: "1.2.3.4", Dossier: map[string]string{}},
		},
		// Framing tolerance.
		{
			name: "surrounding ascii whitespace and crlf",
			line: " \t\v\f{ \"type\" : \"shield_up\" , \"container\" : \"c\" }\r\n",
			want: event.Event{Type: event.ShieldUp, Container: "c", Dossier: map[string]string{}},
		},
		{
			name: "duplicate member, last wins",
			line: `{"type":"shield_up","container":"a","container":"b"}`,
			want: event.Event{Type: event.ShieldUp, Container: "b", Dossier: map[string]string{}},
		},
		{
			name: "unicode escapes decoded then sanitised",
			line: `{"type":"shield_up","container":"caf\u00e9\ud83d\ude00"}`,
			want: event.Event{Type: event.ShieldUp, Container: "caf  ", Dossier: map[string]string{}},
		},
		{
			name: "empty container accepted as the seed does",
			line: `{"type":"shield_up","container":""}`,
			want: event.Event{Type: event.ShieldUp, Dossier: map[string]string{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.line))
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.line, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	const okPending = `"type":"pending","container":"c","id":"c:1","dest":"1.2.3.4"`
	tests := []struct {
		name    string
		line    string
		wantIs  error
		wantErr string // substring of the message
	}{
		// §S10.35.
		{name: "pending without fields", line: `{"type":"pending"}`, wantIs: ErrMalformed, wantErr: `field "container": missing`},
		{name: "unheard-of type", line: `{"type":"unheard-of","container":"c"}`, wantIs: ErrUnknownType, wantErr: `"unheard-of"`},
		// §S10.38 (at the parser).
		{name: "not json", line: `not-json`, wantIs: ErrMalformed, wantErr: "not JSON"},
		{name: "empty line", line: ``, wantIs: ErrMalformed, wantErr: "not JSON"},
		{name: "truncated object", line: `{"type":"shield_up"`, wantIs: ErrMalformed, wantErr: "not JSON"},
		{name: "trailing garbage", line: `{"type":"shield_up","container":"c"} x`, wantIs: ErrMalformed, wantErr: "not JSON"},
		{name: "array", line: `[1,2]`, wantIs: ErrMalformed, wantErr: "not a JSON object"},
		{name: "string", line: `"pending"`, wantIs: ErrMalformed, wantErr: "not a JSON object"},
		{name: "null", line: `null`, wantIs: ErrMalformed, wantErr: "not a JSON object"},
		{name: "invalid utf-8", line: "{\"type\":\"shield_up\",\"container\":\"\xff\"}", wantIs: ErrMalformed, wantErr: "invalid UTF-8"},
		// Types the hub never accepts from producers.
		{name: "missing type", line: `{"container":"c"}`, wantIs: ErrUnknownType, wantErr: `""`},
		{name: "non-string type", line: `{"type":5,"container":"c"}`, wantIs: ErrUnknownType},
		{name: "producer-sent connection_blocked", line: `{"type":"connection_blocked","container":"c","id":"c:1","dest":"d","port":1,"proto":6}`, wantIs: ErrUnknownType},
		{name: "producer-sent verdict_applied", line: `{"type":"verdict_applied","container":"c","id":"c:1"}`, wantIs: ErrUnknownType},
		{name: "producer-sent verdict_expired", line: `{"type":"verdict_expired","container":"c"}`, wantIs: ErrUnknownType},
		{name: "type is case-sensitive", line: `{"type":"Pending","container":"c"}`, wantIs: ErrUnknownType},
		// Required members.
		{name: "lifecycle without container", line: `{"type":"shield_down"}`, wantIs: ErrMalformed, wantErr: `"container": missing`},
		{name: "null container", line: `{"type":"shield_down","container":null}`, wantIs: ErrMalformed, wantErr: `"container": missing`},
		{name: "object container", line: `{"type":"shield_down","container":{"a":1}}`, wantIs: ErrMalformed, wantErr: `"container": not a string`},
		{name: "array container", line: `{"type":"shield_down","container":["c"]}`, wantIs: ErrMalformed, wantErr: `"container": not a string`},
		{name: "pending without id", line: `{"type":"pending","container":"c","dest":"d","port":1,"proto":6}`, wantIs: ErrMalformed, wantErr: `"id": missing`},
		{name: "pending with null id", line: `{"type":"pending","container":"c","id":null,"dest":"d","port":1,"proto":6}`, wantIs: ErrMalformed, wantErr: `"id": missing`},
		{name: "pending without dest", line: `{"type":"pending","container":"c","id":"c:1","port":1,"proto":6}`, wantIs: ErrMalformed, wantErr: `"dest": missing`},
		{name: "pending without port", line: `{` + okPending + `,"proto":6}`, wantIs: ErrMalformed, wantErr: `"port": missing`},
		{name: "pending without proto", line: `{` + okPending + `,"port":1}`, wantIs: ErrMalformed, wantErr: `"proto": missing`},
		{name: "object domain", line: `{` + okPending + `,"port":1,"proto":6,"domain":{}}`, wantIs: ErrMalformed, wantErr: `"domain": not a string`},
		{name: "object reason", line: `{"type":"container_exited","container":"c","reason":[]}`, wantIs: ErrMalformed, wantErr: `"reason": not a string`},
		// Port and proto values.
		{name: "null port", line: `{` + okPending + `,"port":null,"proto":6}`, wantIs: ErrMalformed, wantErr: `"port": missing`},
		{name: "boolean port", line: `{` + okPending + `,"port":true,"proto":6}`, wantIs: ErrMalformed, wantErr: `"port": not an integer`},
		{name: "fractional port", line: `{` + okPending + `,"port":443.7,"proto":6}`, wantIs: ErrMalformed, wantErr: `"port": not an integer`},
		{name: "negative port", line: `{` + okPending + `,"port":-1,"proto":6}`, wantIs: ErrMalformed, wantErr: `"port": out of range 0..65535`},
		{name: "port too big", line: `{` + okPending + `,"port":65536,"proto":6}`, wantIs: ErrMalformed, wantErr: `"port": out of range 0..65535`},
		{name: "port far too big", line: `{` + okPending + `,"port":1e30,"proto":6}`, wantIs: ErrMalformed, wantErr: `"port": not an integer in 0..65535`},
		{name: "huge integer port", line: `{` + okPending + `,"port":99999999999999999999999,"proto":6}`, wantIs: ErrMalformed, wantErr: `"port"`},
		{name: "word port", line: `{` + okPending + `,"port":"https","proto":6}`, wantIs: ErrMalformed, wantErr: `"port": not an integer`},
		{name: "float string port", line: `{` + okPending + `,"port":"443.0","proto":6}`, wantIs: ErrMalformed, wantErr: `"port": not an integer`},
		{name: "string port out of range", line: `{` + okPending + `,"port":"70000","proto":6}`, wantIs: ErrMalformed, wantErr: `"port": out of range`},
		{name: "object port", line: `{` + okPending + `,"port":{},"proto":6}`, wantIs: ErrMalformed, wantErr: `"port": not an integer`},
		{name: "proto too big", line: `{` + okPending + `,"port":1,"proto":256}`, wantIs: ErrMalformed, wantErr: `"proto": out of range 0..255`},
		{name: "boolean proto", line: `{` + okPending + `,"port":1,"proto":false}`, wantIs: ErrMalformed, wantErr: `"proto": not an integer`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.line))
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want error", tt.line, got)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("Parse(%q) error %q does not match %v", tt.line, err, tt.wantIs)
			}
			other := ErrUnknownType
			if tt.wantIs == ErrUnknownType {
				other = ErrMalformed
			}
			if errors.Is(err, other) {
				t.Errorf("Parse(%q) error %q also matches %v", tt.line, err, other)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) error %q, want it to contain %q", tt.line, err, tt.wantErr)
			}
			if diff := cmp.Diff(event.Event{}, got); diff != "" {
				t.Errorf("Parse returned a non-zero event with its error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnknownTypeErrorSanitisesType(t *testing.T) {
	_, err := Parse([]byte(`{"type":"evil\u001b[2J` + strings.Repeat("x", 100) + `"}`))
	var ute *UnknownTypeError
	if !errors.As(err, &ute) {
		t.Fatalf("Parse error %v is not an *UnknownTypeError", err)
	}
	if want := "evil [2J" + strings.Repeat("x", 53) + "..."; ute.Type != want {
		t.Errorf("UnknownTypeError.Type = %q, want %q", ute.Type, want)
	}
}

func TestMalformedErrorUnwrapsDecodeError(t *testing.T) {
	_, err := Parse([]byte(`{"type":`))
	var me *MalformedError
	if !errors.As(err, &me) {
		t.Fatalf("Parse error %v is not a *MalformedError", err)
	}
	if me.Err == nil || errors.Unwrap(err) == nil {
		t.Errorf("MalformedError %v carries no decode error", err)
	}
}

func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct{ name, line string }{
		{"pending", `{"type":"pending","container":"abc123def456","id":"abc123def456:17","dest":"93.184.215.14","port":443,"proto":6,"domain":"registry.example.net","dossier":{"project":"p1","task":"t1","name":"builder"},"ts":"2026-05-05T10:00:00.123456+00:00"}`},
		{"shield_up", `{"type":"shield_up","container":"my-task"}`},
		{"dirty", `{"type":"pending","container":"abc\u0000123","id":"x:1","dest":"1.2.3.4","port":"443","proto":6.0,"domain":"evil\u001b[31mcafé.example.com","dossier":{"n":8080,"b":true,"o":{"a":1}}}`},
	} {
		line := []byte(bc.line)
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(line); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
