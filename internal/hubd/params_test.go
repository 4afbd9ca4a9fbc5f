// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd_test

import (
	"testing"
)

// TestParametersAnsweredAsTheSeed sends calls with missing, unknown and
// ill-typed parameters as raw bytes and checks each reply byte for byte
// against what the seed (asyncvarlink 0.3.2) answers: the declared
// parameters are checked in declaration order (the first missing or
// ill-typed one is named), then the sent ones in the order they were
// sent (the first unknown one is named). The hub acts on none of them.
func TestParametersAnsweredAsTheSeed(t *testing.T) {
	th := startHub(t, 0)
	th.Hub.Publish(blocked("c:1", "198.51.100.1", "registry.example.net"))
	const verdict = `{"method":"org.terok.Clearance1.Verdict","parameters":`
	invalid := func(p string) string {
		return `{"error":"org.varlink.service.InvalidParameter","parameters":{"parameter":"` + p + `"}}`
	}
	tests := []struct{ name, send, want string }{
		{"Verdict without request_id", verdict + `{"container":"c","dest":"registry.example.net","action":"allow"}}`, invalid("request_id")},
		{"Verdict without action", verdict + `{"container":"c","request_id":"c:1","dest":"registry.example.net"}}`, invalid("action")},
		{"Verdict without parameters", `{"method":"org.terok.Clearance1.Verdict"}`, invalid("container")},
		{"Verdict with empty parameters", verdict + `{}}`, invalid("container")},
		{"Verdict with null parameters", verdict + `null}`, invalid("container")},
		{"Verdict with an extra parameter", verdict + `{"container":"c","request_id":"c:1","dest":"registry.example.net","action":"allow","x":1}}`, invalid("x")},
		{"the first extra parameter as sent", verdict + `{"container":"c","request_id":"c:1","zz":1,"dest":"registry.example.net","action":"allow","aa":2}}`, invalid("zz")},
		{"missing before extra", verdict + `{"x":1,"container":"c","request_id":"c:1","dest":"registry.example.net"}}`, invalid("action")},
		{"ill-typed container", verdict + `{"container":1,"request_id":"c:1","dest":"registry.example.net","action":"allow"}}`, invalid("container")},
		{"null action", verdict + `{"container":"c","request_id":"c:1","dest":"registry.example.net","action":null}}`, invalid("action")},
		{"bool request_id", verdict + `{"container":"c","request_id":true,"dest":"registry.example.net","action":"allow"}}`, invalid("request_id")},
		{"first bad in declaration order", verdict + `{"action":5,"container":"c","request_id":"c:1"}}`, invalid("dest")},
		{"Subscribe with an extra parameter", `{"method":"org.terok.Clearance1.Subscribe","parameters":{"x":1},"more":true}`, invalid("x")},
		{"Subscribe without more: ExpectedMore first", `{"method":"org.terok.Clearance1.Subscribe","parameters":{"x":1}}`, `{"error":"org.varlink.service.ExpectedMore"}`},
		{"Decide without ttl_sec", `{"method":"org.terok.ClearanceHub1.Decide","parameters":{"request_id":"c:1","action":"allow","scope":"once"}}`, invalid("ttl_sec")},
		{"Decide with a fractional ttl_sec", `{"method":"org.terok.ClearanceHub1.Decide","parameters":{"request_id":"c:1","action":"allow","scope":"once","ttl_sec":1.5}}`, invalid("ttl_sec")},
		{"Decide with a string any_port", `{"method":"org.terok.ClearanceHub1.Decide","parameters":{"request_id":"c:1","action":"allow","scope":"once","ttl_sec":0,"any_port":"yes"}}`, invalid("any_port")},
		{"Decide with an extra parameter", `{"method":"org.terok.ClearanceHub1.Decide","parameters":{"request_id":"c:1","action":"allow","scope":"once","ttl_sec":0,"dest":"x"}}`, invalid("dest")},
		{"Pending with an extra parameter", `{"method":"org.terok.ClearanceHub1.Pending","parameters":{"all":true}}`, invalid("all")},
		{"GetInterfaceDescription without interface", `{"method":"org.varlink.service.GetInterfaceDescription"}`, invalid("interface")},
		{"SetLogLevel with a string", `{"method":"io.systemd.service.SetLogLevel","parameters":{"level":"7"}}`, invalid("level")},
	}
	r := dialRaw(t, th.Path)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.send(tt.send)
			if got := r.recv(); got != tt.want {
				t.Fatalf("reply\n got %s\nwant %s", got, tt.want)
			}
		})
	}
	t.Run("oneway gets no reply", func(t *testing.T) {
		r.send(`{"method":"org.terok.Clearance1.Verdict","parameters":{"container":"c"},"oneway":true}`)
		// Refused by the handler (varlinkapi.ReplyError), not the check.
		r.send(`{"method":"org.terok.ClearanceHub1.Decide","parameters":{"request_id":"c:1","action":"allow","scope":"once","ttl_sec":-1},"oneway":true}`)
		r.send(`{"method":"org.terok.Clearance1.Verdict","parameters":{"container":"c","request_id":"ghost:2","dest":"d","action":"allow"},"oneway":true}`)
		r.send(`{"method":"io.systemd.service.Ping"}`)
		if got := r.recv(); got != `{}` {
			t.Fatalf("first reply after a oneway call = %s, want Ping's {}", got)
		}
	})
	if n := len(th.Applier.Calls()); n != 0 {
		t.Fatalf("applier called %d times for refused calls", n)
	}
	if p := th.Hub.Stats().Pending; p != 1 {
		t.Fatalf("pending = %d after refused calls, want 1", p)
	}
	// Optional parameters may be left out or null.
	for _, p := range []string{`"ttl_sec":0`, `"ttl_sec":0,"any_port":null,"channel":null`} {
		r.send(`{"method":"org.terok.ClearanceHub1.Decide","parameters":{"request_id":"ghost:1","action":"allow","scope":"once",` + p + `}}`)
		if got, want := r.recv(), `{"error":"org.terok.Clearance1.UnknownRequest","parameters":{"request_id":"ghost:1"}}`; got != want {
			t.Fatalf("Decide with %s:\n got %s\nwant %s", p, got, want)
		}
	}
}
