// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/hubd"
	"github.com/terok-ai/clearance/internal/testenv/hubtest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// startHub serves a hub on a real Unix socket in a temp dir.
func startHub(t *testing.T, depth int) *hubtest.Hub {
	t.Helper()
	return hubtest.Serve(t, filepath.Join(t.TempDir(), "hub.sock"), hubtest.Options{QueueDepth: depth})
}

func dial(t *testing.T, path string) *varlink.Connection {
	t.Helper()
	c, err := varlinkapi.Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawConn speaks varlink by hand, to check exact bytes.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, path string) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := r.c.Write([]byte(s + "\x00")); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) recv() string {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := r.br.ReadBytes(0)
	if err != nil {
		r.t.Fatalf("recv: %v", err)
	}
	return string(b[:len(b)-1])
}

func blocked(id, dest, domain string) event.Event {
	return event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: id, Dest: dest,
		Port: 443, Proto: 6, Domain: domain, Dossier: map[string]string{}}
}

// subscribe starts a Subscribe stream and waits until the hub counts it.
func subscribe(t *testing.T, th *hubtest.Hub) func() (orgterokclearance1.ClearanceEvent, error) {
	t.Helper()
	before := th.Hub.Stats().Subscribers
	c := dial(t, th.Path)
	recv, err := orgterokclearance1.Subscribe().Send(context.Background(), c, varlink.More)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 0, "wait", func() bool { return th.Hub.Stats().Subscribers > before })
	return func() (orgterokclearance1.ClearanceEvent, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ev, flags, err := recv(ctx)
		if err == nil && flags&varlink.Continues == 0 {
			return ev, errors.New("reply without continues")
		}
		return ev, err
	}
}

func TestSubscribeWithoutMoreIsExpectedMore(t *testing.T) {
	th := startHub(t, 0)
	r := dialRaw(t, th.Path)
	r.send(`{"method":"org.terok.Clearance1.Subscribe"}`)
	if got, want := r.recv(), `{"error":"org.varlink.service.ExpectedMore"}`; got != want {
		t.Fatalf("reply = %s, want %s", got, want)
	}
	// The connection stays usable.
	r.send(`{"method":"org.varlink.service.GetInfo"}`)
	if got := r.recv(); !strings.Contains(got, `"product":"clearance-hub"`) {
		t.Fatalf("GetInfo after ExpectedMore = %s", got)
	}
}

func TestSubscribeStreamsAllElevenFields(t *testing.T) {
	th := startHub(t, 0)
	r := dialRaw(t, th.Path)
	r.send(`{"method":"org.terok.Clearance1.Subscribe","more":true}`)
	testutil.Eventually(t, 0, "wait", func() bool { return th.Hub.Stats().Subscribers == 1 })
	th.Hub.Publish(event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:1",
		Dest: "198.51.100.1", Port: 443, Proto: 6, Domain: "registry.example.net"})
	// Byte for byte the seed's reply (asyncvarlink's key order).
	want := `{"continues":true,"parameters":{"event":{"type":"connection_blocked","container":"c","request_id":"c:1","dest":"198.51.100.1","port":443,"proto":6,"domain":"registry.example.net","action":"","ok":false,"reason":"","dossier":{}}}}`
	if got := r.recv(); got != want {
		t.Fatalf("reply\n got %s\nwant %s", got, want)
	}
}

func TestVerdictTypedErrors(t *testing.T) {
	th := startHub(t, 0)
	th.Hub.Publish(blocked("c:1", "198.51.100.1", "registry.example.net"))
	tests := []struct {
		name                     string
		container, id, dest, act string
		wantErr                  string
		wantParams               map[string]string
	}{
		{"invalid action checked first", "x", "ghost:42", "y", "maybe",
			"org.terok.Clearance1.InvalidAction", map[string]string{"action": "maybe"}},
		{"action is case-sensitive", "c", "c:1", "registry.example.net", "Allow",
			"org.terok.Clearance1.InvalidAction", map[string]string{"action": "Allow"}},
		{"unknown request", "c", "ghost:42", "registry.example.net", "allow",
			"org.terok.Clearance1.UnknownRequest", map[string]string{"request_id": "ghost:42"}},
		{"wrong container", "other", "c:1", "registry.example.net", "allow",
			"org.terok.Clearance1.VerdictTupleMismatch", map[string]string{
				"expected_container": "c", "expected_dest": "registry.example.net",
				"got_container": "other", "got_dest": "registry.example.net"}},
		{"ip instead of domain", "c", "c:1", "198.51.100.1", "deny",
			"org.terok.Clearance1.VerdictTupleMismatch", map[string]string{
				"expected_container": "c", "expected_dest": "registry.example.net",
				"got_container": "c", "got_dest": "198.51.100.1"}},
	}
	r := dialRaw(t, th.Path)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := json.Marshal(map[string]string{"container": tt.container, "request_id": tt.id, "dest": tt.dest, "action": tt.act})
			r.send(fmt.Sprintf(`{"method":"org.terok.Clearance1.Verdict","parameters":%s}`, p))
			got := r.recv()
			var reply struct {
				Error      string            `json:"error"`
				Parameters map[string]string `json:"parameters"`
			}
			if err := json.Unmarshal([]byte(got), &reply); err != nil {
				t.Fatal(err)
			}
			// The seed's bytes: "error" first, the parameters in the
			// IDL's order.
			if !strings.HasPrefix(got, `{"error":"`+tt.wantErr+`","parameters":{`) {
				t.Fatalf("reply = %s, want the seed's key order", got)
			}
			if reply.Error != tt.wantErr {
				t.Fatalf("error = %q, want %q", reply.Error, tt.wantErr)
			}
			if diff := cmp.Diff(tt.wantParams, reply.Parameters); diff != "" {
				t.Fatalf("parameters (-want +got):\n%s", diff)
			}
		})
	}
	if n := len(th.Applier.Calls()); n != 0 {
		t.Fatalf("applier called %d times for rejected verdicts", n)
	}
	// The binding survived every rejection.
	c := dial(t, th.Path)
	ok, err := orgterokclearance1.Verdict().Call(context.Background(), c, "c", "c:1", "registry.example.net", "allow")
	if err != nil || !ok {
		t.Fatalf("verdict after rejections = %v, %v", ok, err)
	}
}

func TestVerdictSuccessFansOutBeforeReply(t *testing.T) {
	th := startHub(t, 0)
	next := subscribe(t, th)
	th.Hub.Publish(blocked("c:1", "198.51.100.1", ""))
	if ev, err := next(); err != nil || ev.Type != "connection_blocked" {
		t.Fatalf("first event = %+v, %v", ev, err)
	}
	// Stream and RPC on one connection is not possible in varlink; the
	// ordering guarantee is: by the time Verdict returns, the event is
	// already queued for every subscriber.
	c := dial(t, th.Path)
	ok, err := orgterokclearance1.Verdict().Call(context.Background(), c, "c", "c:1", "198.51.100.1", "allow")
	if err != nil || !ok {
		t.Fatalf("verdict = %v, %v", ok, err)
	}
	ev, err := next()
	if err != nil {
		t.Fatal(err)
	}
	want := orgterokclearance1.ClearanceEvent{Type: "verdict_applied", Container: "c", Request_id: "c:1",
		Action: "allow", Ok: true, Reason: hubd.Caller(os.Getuid(), "varlink").Describe(), Dossier: map[string]string{}}
	if diff := cmp.Diff(want, ev); diff != "" {
		t.Fatalf("verdict_applied (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]hub.ApplyRequest{{Container: "c", Dest: "198.51.100.1", IP: "198.51.100.1",
		Port: 443, Proto: 6, Action: "allow", Scope: "once"}}, th.Applier.Calls()); diff != "" {
		t.Fatalf("applier calls (-want +got):\n%s", diff)
	}
	// Consumed: a second verdict is unknown.
	_, err = orgterokclearance1.Verdict().Call(context.Background(), c, "c", "c:1", "198.51.100.1", "allow")
	var unk *orgterokclearance1.UnknownRequest
	if !errors.As(err, &unk) || unk.Request_id != "c:1" {
		t.Fatalf("second verdict err = %v", err)
	}
}

func TestVerdictFailureRestoresBinding(t *testing.T) {
	tests := []struct {
		name       string
		ok         bool
		stderr     string
		err        error
		wantStderr string
	}{
		{"firewall refused", false, "nft lock", nil, "nft lock"},
		{"verdict service unreachable", false, "", errors.New("dial verdict: connection refused"), "dial verdict: connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th := startHub(t, 0)
			next := subscribe(t, th)
			th.Hub.Publish(blocked("c:1", "198.51.100.1", "registry.example.net"))
			next()
			th.Applier.Set(tt.ok, tt.stderr, tt.err)
			c := dial(t, th.Path)
			_, err := orgterokclearance1.Verdict().Call(context.Background(), c, "c", "c:1", "registry.example.net", "allow")
			var failed *orgterokclearance1.ShieldCliFailed
			if !errors.As(err, &failed) {
				t.Fatalf("err = %v, want ShieldCliFailed", err)
			}
			if diff := cmp.Diff(orgterokclearance1.ShieldCliFailed{Action: "allow", Stderr: tt.wantStderr}, *failed); diff != "" {
				t.Fatalf("ShieldCliFailed (-want +got):\n%s", diff)
			}
			ev, _ := next()
			if ev.Type != "verdict_applied" || ev.Ok {
				t.Fatalf("event = %+v, want verdict_applied ok=false", ev)
			}
			th.Applier.Set(true, "", nil)
			ok, err := orgterokclearance1.Verdict().Call(context.Background(), c, "c", "c:1", "registry.example.net", "allow")
			if err != nil || !ok {
				t.Fatalf("retry = %v, %v", ok, err)
			}
		})
	}
}

func TestSlowSubscriberDropsOldestAndOthersKeepUp(t *testing.T) {
	th := startHub(t, 4)
	// A subscriber that never reads.
	slow := dialRaw(t, th.Path)
	slow.send(`{"method":"org.terok.Clearance1.Subscribe","more":true}`)
	testutil.Eventually(t, 0, "wait", func() bool { return th.Hub.Stats().Subscribers == 1 })
	fast := subscribe(t, th)
	const n = 3000
	var got atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			ev, err := fast()
			if err != nil {
				done <- err
				return
			}
			got.Store(int64(i))
			if want := fmt.Sprintf("c:%d", i); ev.Request_id != want {
				done <- fmt.Errorf("event %d has id %s, want %s", i, ev.Request_id, want)
				return
			}
		}
		done <- nil
	}()
	for i := 1; i <= n; i++ {
		th.Hub.Emit(event.Event{Type: "shield_up", Container: "c", RequestID: fmt.Sprintf("c:%d", i)})
		// Pace the producer to the fast subscriber (queue depth 4), so
		// only the slow one can overflow.
		for got.Load() < int64(i)-2 {
			select {
			case err := <-done:
				t.Fatalf("fast subscriber failed after %d events: %v", got.Load(), err)
			default:
				time.Sleep(50 * time.Microsecond)
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if th.Hub.Stats().Dropped == 0 {
		t.Fatal("the slow subscriber dropped nothing")
	}
}

func TestProtocolViolationsKeepConnection(t *testing.T) {
	th := startHub(t, 0)
	tests := []struct {
		name, send, wantErr string
	}{
		{"not json", `{"method":`, varlinkapi.ProtocolViolation},
		{"not an object", `[1,2,3]`, varlinkapi.ProtocolViolation},
		{"no method", `{"parameters":{}}`, varlinkapi.ProtocolViolation},
		{"parameters not an object", `{"method":"org.terok.Clearance1.Verdict","parameters":"x"}`, varlinkapi.ProtocolViolation},
		{"invalid utf-8", "{\"method\":\"org.varlink.service.GetInfo\xff\"}", varlinkapi.ProtocolViolation},
		{"unknown interface", `{"method":"org.example.Nope.Do"}`, "org.varlink.service.InterfaceNotFound"},
		{"unknown method", `{"method":"org.terok.Clearance1.Nope"}`, "org.varlink.service.MethodNotFound"},
		{"ill-typed parameter", `{"method":"org.terok.Clearance1.Verdict","parameters":{"container":1}}`, "org.varlink.service.InvalidParameter"},
		{"oversized", `{"method":"org.varlink.service.GetInfo","parameters":{"x":"` + strings.Repeat("a", 100<<10) + `"}}`, varlinkapi.ProtocolViolation},
	}
	r := dialRaw(t, th.Path)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.send(tt.send)
			var reply struct{ Error string }
			got := r.recv()
			if err := json.Unmarshal([]byte(got), &reply); err != nil || reply.Error != tt.wantErr {
				t.Fatalf("reply = %s, want error %s", got, tt.wantErr)
			}
			r.send(`{"method":"io.systemd.service.Ping"}`)
			if got := r.recv(); got != `{}` {
				t.Fatalf("ping after %s = %s", tt.name, got)
			}
		})
	}
}

func TestIntrospection(t *testing.T) {
	th := startHub(t, 0)
	c := dial(t, th.Path)
	var vendor, product, version, url string
	var ifaces []string
	if err := c.GetInfo(context.Background(), &vendor, &product, &version, &url, &ifaces); err != nil {
		t.Fatal(err)
	}
	if vendor != hubd.Vendor || product != hubd.Product || version == "" || url != hubd.URL {
		t.Fatalf("GetInfo = %q %q %q %q", vendor, product, version, url)
	}
	want := []string{"org.varlink.service", "org.terok.Clearance1", "org.terok.ClearanceHub1", "io.systemd.service"}
	if diff := cmp.Diff(want, ifaces); diff != "" {
		t.Fatalf("interfaces (-want +got):\n%s", diff)
	}
	desc, err := c.GetInterfaceDescription(context.Background(), "org.terok.Clearance1")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"interface org.terok.Clearance1", "port: int", "ok: bool", "dossier: [string]string",
		"method Subscribe() -> (event: ClearanceEvent)", "error ShieldCliFailed (action: string, stderr: string)"} {
		if !strings.Contains(desc, s) {
			t.Errorf("description lacks %q", s)
		}
	}
	if strings.Contains(desc, ": object") {
		t.Error("ClearanceEvent has an untyped field")
	}
}

// Follow: the backlog first, then the events byte for byte as Subscribe
// sends them; without "more" it is ExpectedMore, as Subscribe.
func TestFollowBacklogThenSubscribeBytes(t *testing.T) {
	th := startHub(t, 0)
	r := dialRaw(t, th.Path)
	r.send(`{"method":"org.terok.ClearanceHub1.Follow"}`)
	if got, want := r.recv(), `{"error":"org.varlink.service.ExpectedMore"}`; got != want {
		t.Fatalf("reply = %s, want %s", got, want)
	}
	r.send(`{"method":"org.terok.ClearanceHub1.Follow","more":true}`)
	if got, want := r.recv(), `{"continues":true,"parameters":{"pending":[]}}`; got != want {
		t.Fatalf("first reply on an empty hub\n got %s\nwant %s", got, want)
	}
	th.Hub.Publish(event.Event{Type: event.ConnectionBlocked, Container: "c", RequestID: "c:1",
		Dest: "198.51.100.1", Port: 443, Proto: 6, Domain: "registry.example.net"})
	want := `{"continues":true,"parameters":{"event":{"type":"connection_blocked","container":"c","request_id":"c:1","dest":"198.51.100.1","port":443,"proto":6,"domain":"registry.example.net","action":"","ok":false,"reason":"","dossier":{}}}}`
	if got := r.recv(); got != want {
		t.Fatalf("event reply\n got %s\nwant %s", got, want)
	}

	// A second follower gets c:1 in its backlog, with the generated client.
	c := dial(t, th.Path)
	recv, err := orgterokclearancehub1.Follow().Send(context.Background(), c, varlink.More)
	if err != nil {
		t.Fatal(err)
	}
	pending, ev, flags, err := recv(context.Background())
	if err != nil || pending == nil || ev != nil || flags&varlink.Continues == 0 {
		t.Fatalf("first reply: pending %v, event %v, flags %d, err %v", pending, ev, flags, err)
	}
	if len(*pending) != 1 || (*pending)[0].Request_id != "c:1" || (*pending)[0].Target != "registry.example.net" {
		t.Fatalf("backlog %+v", *pending)
	}
}

func TestPendingAndStats(t *testing.T) {
	th := startHub(t, 0)
	th.Hub.Publish(blocked("c:1", "198.51.100.1", "a.example"))
	th.Hub.Publish(blocked("c:2", "198.51.100.2", ""))
	c := dial(t, th.Path)
	reqs, err := orgterokclearancehub1.Pending().Call(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range reqs {
		got = append(got, r.Request_id+"="+r.Target)
	}
	if diff := cmp.Diff([]string{"c:1=a.example", "c:2=198.51.100.2"}, got); diff != "" {
		t.Fatalf("pending (-want +got):\n%s", diff)
	}
	st, err := orgterokclearancehub1.Stats().Call(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 2 || st.Events_in != 2 || st.Container != "c" {
		t.Fatalf("stats = %+v", st)
	}
	ok, _, err := orgterokclearancehub1.Decide().Call(context.Background(), c, "c:2", "deny", "container", 0, nil, nil)
	if err != nil || !ok {
		t.Fatalf("decide = %v, %v", ok, err)
	}
	_, _, err = orgterokclearancehub1.Decide().Call(context.Background(), c, "c:1", "allow", "forever", 0, nil, nil)
	var scope *orgterokclearancehub1.InvalidScope
	if !errors.As(err, &scope) || scope.Scope != "forever" {
		t.Fatalf("bad scope err = %v", err)
	}
}

func TestManyConnectionsOpenedAndDropped(t *testing.T) {
	th := startHub(t, 0)
	next := subscribe(t, th)
	for i := 0; i < 1000; i++ {
		c, err := net.Dial("unix", th.Path)
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			c.Write([]byte(`{"method":"org.terok.Clearance1.Subscribe","more":true}` + "\x00"))
		}
		if i%3 == 1 {
			c.Write(bytes.Repeat([]byte("x"), 1000))
		}
		c.Close()
	}
	th.Hub.Publish(blocked("c:1", "198.51.100.1", ""))
	if ev, err := next(); err != nil || ev.Request_id != "c:1" {
		t.Fatalf("after churn: %+v, %v", ev, err)
	}
	testutil.Eventually(t, 0, "wait", func() bool { return th.Server.Active() <= 1 && th.Hub.Stats().Subscribers == 1 })
}

// FuzzRequest: any single request, however malformed, gets exactly one
// reply and leaves the connection serving the next request.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		`{"method":"org.terok.Clearance1.Verdict","parameters":{"container":"c","request_id":"x","dest":"d","action":"allow"}}`,
		`{"method":"org.varlink.service.GetInterfaceDescription","parameters":{"interface":"org.terok.Clearance1"}}`,
		`{"method":"org.terok.ClearanceHub1.Decide","parameters":{"request_id":"x","action":"deny","scope":"once","ttl_sec":-1}}`,
		`{"method":"io.systemd.service.SetLogLevel","parameters":{"level":99}}`,
		`{"method":"org.terok.Clearance1.Subscribe"}`,
		`{"method":"org.terok.Clearance1.Verdict","parameters":{"container":"c","x":[1,{"y":null}]}}`,
		`{"method":"org.terok.ClearanceHub1.Decide","parameters":{"request_id":"x","action":"deny","scope":"once","ttl_sec":1e3,"any_port":null}}`,
		`{"method":5}`, `null`, `{}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	h := hub.New(hub.Config{Container: "c", Applier: &hubtest.Applier{}})
	svc, err := hubd.NewService(h, nil, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	srv := &varlinkapi.Server{Service: svc, MaxMessage: 4096, Params: hubd.ParamCheck()}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if bytes.IndexByte(msg, 0) >= 0 || bytes.Contains(msg, []byte("more")) || bytes.Contains(msg, []byte("oneway")) {
			return // streams and oneway calls legitimately send no single reply
		}
		a, b := net.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { srv.ServeConn(ctx, a); close(done) }()
		defer func() { cancel(); b.Close(); <-done }()
		b.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(b)
		go func() {
			b.Write(append(append([]byte(nil), msg...), 0))
			b.Write([]byte(`{"method":"io.systemd.service.Ping"}` + "\x00"))
		}()
		first, err := br.ReadBytes(0)
		if err != nil {
			t.Fatalf("no reply to %q: %v", msg, err)
		}
		if !json.Valid(first[:len(first)-1]) {
			t.Fatalf("reply is not JSON: %q", first)
		}
		second, err := br.ReadBytes(0)
		if err != nil || string(second) != "{}\x00" {
			t.Fatalf("after %q the connection did not answer Ping: %q %v", msg, second, err)
		}
	})
}

// seedEvent is the seed's ClearanceEvent exactly: a subscriber that
// refuses any field it does not know.
type seedEvent struct {
	Type      string            `json:"type"`
	Container string            `json:"container"`
	RequestID string            `json:"request_id"`
	Dest      string            `json:"dest"`
	Port      int               `json:"port"`
	Proto     int               `json:"proto"`
	Domain    string            `json:"domain"`
	Action    string            `json:"action"`
	OK        bool              `json:"ok"`
	Reason    string            `json:"reason"`
	Dossier   map[string]string `json:"dossier"`
}

func TestWhoDecidedReachesStrictSeedSubscriber(t *testing.T) {
	th := startHub(t, 0)
	r := dialRaw(t, th.Path)
	r.send(`{"method":"org.terok.Clearance1.Subscribe","more":true}`)
	testutil.Eventually(t, 0, "wait", func() bool { return th.Hub.Stats().Subscribers == 1 })
	th.Hub.Publish(blocked("c:1", "198.51.100.1", ""))
	r.recv() // connection_blocked

	c := dial(t, th.Path)
	channel := "clearancectl"
	ok, _, err := orgterokclearancehub1.Decide().Call(context.Background(), c, "c:1", "allow", "once", 0, nil, &channel)
	if err != nil || !ok {
		t.Fatalf("decide = %v, %v", ok, err)
	}
	ev := decodeStrict(t, r.recv())
	by := hubd.Caller(os.Getuid(), "clearancectl").Describe()
	if diff := cmp.Diff(seedEvent{Type: "verdict_applied", Container: "c", RequestID: "c:1", Action: "allow",
		OK: true, Reason: by, Dossier: map[string]string{}}, ev); diff != "" {
		t.Fatalf("verdict_applied (-want +got):\n%s", diff)
	}

	// A second verdict, on any channel, is refused naming who decided and
	// applies nothing.
	_, _, err = orgterokclearancehub1.Decide().Call(context.Background(), c, "c:1", "deny", "once", 0, nil, nil)
	var done *orgterokclearancehub1.AlreadyDecided
	if !errors.As(err, &done) || done.Request_id != "c:1" || done.Action != "allow" || done.By != by || done.At_usec == 0 {
		t.Fatalf("second decide err = %#v, want AlreadyDecided by %q", err, by)
	}
	if n := len(th.Applier.Calls()); n != 1 {
		t.Fatalf("applied %d times, want 1", n)
	}
}

// decodeStrict decodes the event of a Subscribe reply as a seed
// subscriber that refuses unknown fields would.
func decodeStrict(t *testing.T, raw string) seedEvent {
	t.Helper()
	var reply struct {
		Parameters struct {
			Event json.RawMessage `json:"event"`
		} `json:"parameters"`
	}
	if err := json.Unmarshal([]byte(raw), &reply); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(reply.Parameters.Event))
	dec.DisallowUnknownFields()
	var ev seedEvent
	if err := dec.Decode(&ev); err != nil {
		t.Fatalf("a strict seed subscriber refuses %s: %v", reply.Parameters.Event, err)
	}
	return ev
}

// TestAskAndObserveReachStrictSeedSubscriber: what issue 12's ask
// endpoint and observe mode send to subscribers has the seed's eleven
// fields and no others: a request the container asked for (its reason in
// reason, no address yet), the observe-mode hub_notice, and an
// "observed" event (a type the seed's clients ignore).
func TestAskAndObserveReachStrictSeedSubscriber(t *testing.T) {
	th := startHub(t, 0)
	r := dialRaw(t, th.Path)
	r.send(`{"method":"org.terok.Clearance1.Subscribe","more":true}`)
	testutil.Eventually(t, 0, "wait", func() bool { return th.Hub.Stats().Subscribers == 1 })

	id, fresh := th.Hub.Ask(event.Event{Container: "c", Domain: "api.example.com", Port: 443, Proto: 6,
		Reason: "fetching deps"})
	if !fresh {
		t.Fatal("ask joined nothing, want a new request")
	}
	ev := decodeStrict(t, r.recv())
	if diff := cmp.Diff(seedEvent{Type: "connection_blocked", Container: "c", RequestID: id, Port: 443, Proto: 6,
		Domain: "api.example.com", Reason: "fetching deps", Dossier: map[string]string{}}, ev); diff != "" {
		t.Errorf("asked connection_blocked (-want +got):\n%s", diff)
	}

	th.Hub.SetObserving(true, map[string]string{"project": "p"})
	ev = decodeStrict(t, r.recv())
	if ev.Type != "hub_notice" || !strings.Contains(ev.Reason, "NOT ENFORCED") || ev.Dossier["project"] != "p" {
		t.Errorf("observe notice %+v", ev)
	}
	th.Hub.Observed(event.Event{Container: "c", Dest: "192.0.2.9", Port: 80, Proto: 6})
	th.Hub.Observed(event.Event{Container: "c", Dest: "192.0.2.9", Port: 80, Proto: 6}) // recorded once
	th.Hub.Observed(event.Event{Container: "c", Dest: "192.0.2.9", Port: 81, Proto: 6})
	for _, port := range []int{80, 81} {
		ev = decodeStrict(t, r.recv())
		if diff := cmp.Diff(seedEvent{Type: "observed", Container: "c", Dest: "192.0.2.9", Port: port, Proto: 6,
			Dossier: map[string]string{}}, ev); diff != "" {
			t.Errorf("observed (-want +got):\n%s", diff)
		}
	}
	if st := th.Hub.Stats(); !st.Observing {
		t.Error("Stats.Observing false in observe mode")
	}
}
