// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package verdictclient is the unprivileged side of clearance-verdict: a
// typed client for org.terok.ClearanceFirewall1 and
// org.terok.ClearanceVerdict1 that can pass the container's network
// namespace with a call and receive the NFLOG socket from Watch.
//
// A Client wraps one connection. The service closes a connection on which
// no complete request arrived for a few seconds (verdict.idle_timeout) and
// limits how many one user holds: keep one Client for a burst of calls and
// close it when idle. Every call passes the container's network namespace
// (the service refuses a non-root caller that does not). Calls on one
// Client are serialised (varlink serves one call at a time per
// connection); a Client is safe for concurrent use.
//
// Errors of the service come back as the generated types of package
// orgterokclearancefirewall1 (*PermissionDenied, *NoSuchContainer,
// *StaleRecord, *InvalidDestination, *FirewallFailed) or as
// *varlink.InvalidParameter; test with errors.As.
package verdictclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/varlink/go/varlink"

	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearanceverdict1"
)

// DefaultSocket is the verdict service's socket.
const DefaultSocket = "/run/clearance/verdict.sock"

const iface = "org.terok.ClearanceFirewall1."

// Client is a connection to the verdict service.
type Client struct {
	mu     sync.Mutex
	conn   *varlink.Connection
	redial func(ctx context.Context) (*varlink.Connection, error) // nil: FromConn
	served bool                                                   // a call on conn got a reply
}

// Dial connects to the verdict service at path ("" = DefaultSocket).
//
// A connect that finds the socket's backlog full (EAGAIN: someone is
// flooding the service with connections) is retried every few
// milliseconds until ctx ends; a service that is not there at all
// (ECONNREFUSED, ENOENT) fails at once. When the service closes a new
// connection before answering its first call (it was refused for lack of
// room, or the client took longer than the service's idle timeout to send
// it), the Client dials once more and repeats the call; every method is
// idempotent.
func Dial(ctx context.Context, path string) (*Client, error) {
	return DialFunc(ctx, path, nil)
}

// DialFunc is [Dial] with dial making the raw connection (nil: a plain
// net.Dialer); tests connect as other users through it.
func DialFunc(ctx context.Context, path string, dial func(ctx context.Context, path string) (net.Conn, error)) (*Client, error) {
	if path == "" {
		path = DefaultSocket
	}
	if dial == nil {
		dial = func(ctx context.Context, path string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
	}
	redial := func(ctx context.Context) (*varlink.Connection, error) {
		c, err := varlink.NewConnectionWithDialer(ctx, "unix:"+path, retryDialer(dial))
		if err != nil {
			return nil, fmt.Errorf("dial varlink %s: %w", path, err)
		}
		return c, nil
	}
	c, err := redial(ctx)
	if err != nil {
		return nil, err
	}
	return &Client{conn: c, redial: redial}, nil
}

// retryDialer retries a connect refused for a full backlog.
type retryDialer func(ctx context.Context, path string) (net.Conn, error)

func (d retryDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	for i := 0; ; i++ {
		c, err := d(ctx, address)
		if err == nil || !errors.Is(err, syscall.EAGAIN) {
			return c, err
		}
		// A short, varying pause: room in the backlog appears as fast
		// as the service accepts, and a flooder retries at once.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (the service's backlog stayed full)", err)
		case <-time.After(time.Millisecond + time.Duration(i%4)*time.Millisecond):
		}
	}
}

// closedBeforeReply reports whether err means the connection ended before
// a reply arrived.
func closedBeforeReply(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

// FromConn wraps an open varlink connection; the Client takes it over.
func FromConn(c *varlink.Connection) *Client { return &Client{conn: c} }

// Close closes the connection; the per-connection instance then exits.
func (c *Client) Close() error { return c.conn.Close() }

// Conn returns the underlying varlink connection (for GetInfo and the
// generated calls). Do not use it concurrently with the Client's calls.
func (c *Client) Conn() *varlink.Connection { return c.conn }

// call invokes method with ns (may be nil) attached, and returns the fds
// of the reply, which the caller owns.
func (c *Client) call(ctx context.Context, method string, in, out any, ns *os.File) ([]*os.File, error) {
	var fds []*os.File
	if ns != nil {
		fds = []*os.File{ns}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rx, err := c.conn.CallWithFDs(ctx, iface+method, in, out, fds)
	if err != nil && !c.served && c.redial != nil && closedBeforeReply(err) {
		// A new connection closed before its first reply: dial again
		// and repeat the call once.
		if nc, derr := c.redial(ctx); derr == nil {
			c.conn.Close()
			c.conn = nc
			rx, err = c.conn.CallWithFDs(ctx, iface+method, in, out, fds)
		}
	}
	if err == nil || !closedBeforeReply(err) {
		c.served = true
	}
	if err != nil {
		for _, f := range rx {
			f.Close()
		}
		return nil, fw1.Dispatch_Error(err)
	}
	return rx, nil
}

func (c *Client) callNoFDs(ctx context.Context, method string, in, out any, ns *os.File) error {
	rx, err := c.call(ctx, method, in, out, ns)
	for _, f := range rx {
		f.Close()
	}
	return err
}

// Engagement is the outcome of [Client.Engage].
type Engagement struct {
	// Table is the ruleset's inet table.
	Table string
	// EngagedNow is true when the table was created by this call.
	EngagedNow bool
	// Mode is "enforce" or "observe" (the ruleset logs and lets through
	// what it would block); "" from a service that predates modes.
	Mode string
	// ModeNote says why observe mode, requested by the runtime record,
	// was not granted ("" otherwise).
	ModeNote string
}

// Observing reports whether the ruleset runs in observe mode.
func (e Engagement) Observing() bool { return e.Mode == "observe" }

// Engage installs or verifies the container's ruleset. ns, if not nil, is
// the container's network namespace (an open /proc/<pid>/ns/net); the
// caller keeps it. engagedNow is true when the table was created now.
// [Client.EngageMode] also tells the ruleset's mode.
func (c *Client) Engage(ctx context.Context, container string, ns *os.File) (table string, engagedNow bool, err error) {
	e, err := c.EngageMode(ctx, container, ns)
	return e.Table, e.EngagedNow, err
}

// EngageMode is [Client.Engage] with the whole outcome.
func (c *Client) EngageMode(ctx context.Context, container string, ns *os.File) (Engagement, error) {
	var out struct {
		Table       string  `json:"table"`
		Engaged_now bool    `json:"engaged_now"`
		Mode        *string `json:"mode"`
		Mode_note   *string `json:"mode_note"`
	}
	err := c.callNoFDs(ctx, "Engage", struct {
		Container string `json:"container"`
	}{container}, &out, ns)
	e := Engagement{Table: out.Table, EngagedNow: out.Engaged_now}
	if out.Mode != nil {
		e.Mode = *out.Mode
	}
	if out.Mode_note != nil {
		e.ModeNote = *out.Mode_note
	}
	return e, err
}

// Watch returns the container's bound NFLOG socket (the caller owns and
// closes it; read it with nflog.NewReader) and its group.
func (c *Client) Watch(ctx context.Context, container string, ns *os.File) (*os.File, int, error) {
	var out struct {
		Group int64 `json:"group"`
	}
	rx, err := c.call(ctx, "Watch", struct {
		Container string `json:"container"`
	}{container}, &out, ns)
	if err != nil {
		return nil, 0, err
	}
	if len(rx) != 1 {
		for _, f := range rx {
			f.Close()
		}
		return nil, 0, fmt.Errorf("watch %s: reply carried %d file descriptors, want 1", container, len(rx))
	}
	return rx[0], int(out.Group), nil
}

// Monitor returns a netlink socket bound in the container's namespace to
// nftables' event group; the caller owns it.
func (c *Client) Monitor(ctx context.Context, container string, ns *os.File) (*os.File, error) {
	rx, err := c.call(ctx, "Monitor", struct {
		Container string `json:"container"`
	}{container}, &struct{}{}, ns)
	if err != nil {
		return nil, err
	}
	if len(rx) != 1 {
		for _, f := range rx {
			f.Close()
		}
		return nil, fmt.Errorf("monitor %s: reply carried %d file descriptors, want 1", container, len(rx))
	}
	return rx[0], nil
}

// ApplyRequest is a scoped verdict.
type ApplyRequest struct {
	Container string
	// IP is an address or CIDR prefix.
	IP string
	// Action is "allow" or "deny".
	Action string
	// Scope is "once", "container" or "always".
	Scope string
	// TTL applies to "once" only; 0 = the service's default. Whole seconds.
	TTL time.Duration
	// PolicyTarget names the policy an "always" verdict is saved to; ""
	// = the container's.
	PolicyTarget string
	// Proto ("tcp", "udp", "sctp") and Port narrow the verdict to one
	// port; "" and 0 cover every port.
	Proto string
	Port  int
	// Name is the DNS name (or wildcard pattern) the verdict is about:
	// stored as the element's comment, and what "always" saves.
	Name string
	// VerdictID joins the service's audit record of the verdict to the
	// caller's ("" for none).
	VerdictID string
}

// ApplyResult is the outcome of Apply. OK false carries the reason in
// Stderr; Expires is zero when the element does not time out.
type ApplyResult struct {
	OK      bool
	Stderr  string
	Expires time.Time
	// Outcome is the service's audit.Outcome* ("" from a service older
	// than the field).
	Outcome string
}

// Apply applies a verdict. A returned error means the request was refused
// or malformed (typed errors); a failure to apply is OK false.
func (c *Client) Apply(ctx context.Context, r ApplyRequest, ns *os.File) (ApplyResult, error) {
	in := struct {
		Container     string  `json:"container"`
		Ip            string  `json:"ip"`
		Action        string  `json:"action"`
		Scope         string  `json:"scope"`
		Ttl_sec       int64   `json:"ttl_sec"`
		Policy_target string  `json:"policy_target"`
		Proto         *string `json:"proto,omitempty"`
		Port          *int64  `json:"port,omitempty"`
		Name          *string `json:"name,omitempty"`
		Verdict_id    *string `json:"verdict_id,omitempty"`
	}{Container: r.Container, Ip: r.IP, Action: r.Action, Scope: r.Scope, Ttl_sec: int64(r.TTL / time.Second),
		Policy_target: r.PolicyTarget}
	if r.Proto != "" || r.Port != 0 {
		port := int64(r.Port)
		in.Proto, in.Port = &r.Proto, &port
	}
	if r.Name != "" {
		in.Name = &r.Name
	}
	if r.VerdictID != "" {
		in.Verdict_id = &r.VerdictID
	}
	var out struct {
		Ok           bool   `json:"ok"`
		Stderr       string `json:"stderr"`
		Expires_usec int64  `json:"expires_usec"`
		Outcome      string `json:"outcome"`
	}
	if err := c.callNoFDs(ctx, "Apply", in, &out, ns); err != nil {
		return ApplyResult{}, err
	}
	res := ApplyResult{OK: out.Ok, Stderr: out.Stderr, Outcome: out.Outcome}
	if out.Expires_usec > 0 {
		res.Expires = time.UnixMicro(out.Expires_usec)
	}
	return res, nil
}

// Revoke removes ip (for proto and port; "" and 0 for the whole host)
// from the container's allow and deny sets.
func (c *Client) Revoke(ctx context.Context, container, ip, proto string, port int, ns *os.File) error {
	in := struct {
		Container string  `json:"container"`
		Ip        string  `json:"ip"`
		Proto     *string `json:"proto,omitempty"`
		Port      *int64  `json:"port,omitempty"`
	}{Container: container, Ip: ip}
	if proto != "" || port != 0 {
		p := int64(port)
		in.Proto, in.Port = &proto, &p
	}
	return c.callNoFDs(ctx, "Revoke", in, &struct{}{}, ns)
}

// Forwarder is the reply of [Client.Forwarder]: the DNS forwarder's
// sockets by name (verdict.SockUDP4 …), which the caller owns, and what
// the forwarder needs to know.
type Forwarder struct {
	Port      int
	Mark      int
	Sockets   map[string]*os.File
	Resolvers []string
	Names     []fw1.NameRule
}

// Close closes every socket.
func (f *Forwarder) Close() {
	for _, s := range f.Sockets {
		s.Close()
	}
}

// Forwarder creates the container's DNS forwarder sockets.
func (c *Client) Forwarder(ctx context.Context, container string, ns *os.File) (*Forwarder, error) {
	var out struct {
		Port      int64          `json:"port"`
		Mark      int64          `json:"mark"`
		Sockets   []string       `json:"sockets"`
		Resolvers []string       `json:"resolvers"`
		Names     []fw1.NameRule `json:"names"`
	}
	rx, err := c.call(ctx, "Forwarder", struct {
		Container string `json:"container"`
	}{container}, &out, ns)
	if err != nil {
		return nil, err
	}
	socks, err := namedFiles("forwarder", container, rx, out.Sockets)
	if err != nil {
		return nil, err
	}
	return &Forwarder{Port: int(out.Port), Mark: int(out.Mark), Sockets: socks, Resolvers: out.Resolvers, Names: out.Names}, nil
}

// namedFiles pairs the file descriptors of a reply with the names the
// reply gives them, in order (a repeated name keeps the last). It closes
// them all when the counts differ.
func namedFiles(what, container string, rx []*os.File, names []string) (map[string]*os.File, error) {
	if len(rx) != len(names) {
		for _, f := range rx {
			f.Close()
		}
		return nil, fmt.Errorf("%s %s: reply carried %d file descriptors for %d sockets", what, container, len(rx), len(names))
	}
	out := make(map[string]*os.File, len(rx))
	for i, name := range names {
		if old, dup := out[name]; dup {
			old.Close()
		}
		out[name] = rx[i]
	}
	return out, nil
}

// UpstreamTCP returns count unconnected, marked TCP sockets of family
// ("ip4" or "ip6") in the container's namespace; the caller owns them.
func (c *Client) UpstreamTCP(ctx context.Context, container, family string, count int, ns *os.File) ([]*os.File, error) {
	var out struct {
		Count int64 `json:"count"`
	}
	rx, err := c.call(ctx, "UpstreamTCP", struct {
		Container string `json:"container"`
		Family    string `json:"family"`
		Count     int64  `json:"count"`
	}{container, family, int64(count)}, &out, ns)
	if err != nil {
		return nil, err
	}
	if len(rx) != int(out.Count) {
		for _, f := range rx {
			f.Close()
		}
		return nil, fmt.Errorf("upstream tcp %s: reply carried %d file descriptors, said %d", container, len(rx), out.Count)
	}
	return rx, nil
}

// Learned is an address the DNS forwarder learned for an allowed name.
type Learned struct {
	IP      string
	Proto   string // "" with Port 0: every port
	Port    int
	TTL     time.Duration // rounded up to whole milliseconds
	Comment string
}

func wireLearned(ls []Learned) []fw1.Learned {
	out := make([]fw1.Learned, 0, len(ls))
	for _, l := range ls {
		ms := int64((l.TTL + time.Millisecond - 1) / time.Millisecond)
		out = append(out, fw1.Learned{Dest: l.IP, Proto: l.Proto, Port: int64(l.Port), Ttl_ms: ms, Comment: l.Comment})
	}
	return out
}

// Learn adds (or refreshes) learned addresses; it returns once the kernel
// has acknowledged them.
func (c *Client) Learn(ctx context.Context, container string, ls []Learned, ns *os.File) error {
	return c.callNoFDs(ctx, "Learn", struct {
		Container string        `json:"container"`
		Elements  []fw1.Learned `json:"elements"`
	}{container, wireLearned(ls)}, &struct{}{}, ns)
}

// Unlearn removes learned addresses (TTL and Comment are ignored).
func (c *Client) Unlearn(ctx context.Context, container string, ls []Learned, ns *os.File) error {
	return c.callNoFDs(ctx, "Unlearn", struct {
		Container string        `json:"container"`
		Elements  []fw1.Learned `json:"elements"`
	}{container, wireLearned(ls)}, &struct{}{}, ns)
}

// List returns the elements of the container's allow and deny sets.
func (c *Client) List(ctx context.Context, container string, ns *os.File) ([]fw1.Element, error) {
	var out struct {
		Elements []fw1.Element `json:"elements"`
	}
	err := c.callNoFDs(ctx, "List", struct {
		Container string `json:"container"`
	}{container}, &out, ns)
	return out.Elements, err
}

// Explanation is the answer of Explain.
type Explanation struct {
	Verdict string // "accept", "drop", "reject" or "redirect"
	Reason  string // "loopback", "dns", "denied", "allowed", "learned", "blocked", "not-engaged"
	Expires time.Time
	// Set and Comment are the deciding element's, when one decides, and
	// Packets and Bytes what it matched so far.
	Set, Comment   string
	Packets, Bytes int64
}

// Explain says what the container's ruleset does with a new connection
// to ip:port/proto.
func (c *Client) Explain(ctx context.Context, container, ip string, port int, proto string, ns *os.File) (Explanation, error) {
	var out struct {
		Verdict      string `json:"verdict"`
		Reason       string `json:"reason"`
		Expires_usec int64  `json:"expires_usec"`
		Set          string `json:"set"`
		Comment      string `json:"comment"`
		Packets      int64  `json:"packets"`
		Bytes        int64  `json:"bytes"`
	}
	err := c.callNoFDs(ctx, "Explain", struct {
		Container string `json:"container"`
		Ip        string `json:"ip"`
		Port      int64  `json:"port"`
		Proto     string `json:"proto"`
	}{container, ip, int64(port), proto}, &out, ns)
	x := Explanation{Verdict: out.Verdict, Reason: out.Reason, Set: out.Set, Comment: out.Comment,
		Packets: out.Packets, Bytes: out.Bytes}
	if out.Expires_usec > 0 {
		x.Expires = time.UnixMicro(out.Expires_usec)
	}
	return x, err
}

// Verify reports whether container's ruleset is still the one Engage
// built: "intact", "altered" or "missing" (nft.Integrity).
func (c *Client) Verify(ctx context.Context, container string, ns *os.File) (string, error) {
	var out struct {
		Integrity string `json:"integrity"`
	}
	err := c.callNoFDs(ctx, "Verify", struct {
		Container string `json:"container"`
	}{container}, &out, ns)
	return out.Integrity, err
}

// Disengage removes the container's built-in table.
func (c *Client) Disengage(ctx context.Context, container string, ns *os.File) error {
	return c.callNoFDs(ctx, "Disengage", struct {
		Container string `json:"container"`
	}{container}, &struct{}{}, ns)
}

// CompatApply is the seed's org.terok.ClearanceVerdict1.Apply (scope
// once): it never returns a service error, only ok/stderr, and an error
// for a broken connection.
func (c *Client) CompatApply(ctx context.Context, container, dest, action string) (bool, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return orgterokclearanceverdict1.Apply().Call(ctx, c.conn, container, dest, action)
}

// CompatApplyNS is [Client.CompatApply] with the container's network
// namespace passed along (nil passes none), which the seed's clients never
// do; a non-root caller must pass it.
func (c *Client) CompatApplyNS(ctx context.Context, container, dest, action string, ns *os.File) (bool, string, error) {
	in := struct {
		Container string `json:"container"`
		Dest      string `json:"dest"`
		Action    string `json:"action"`
	}{container, dest, action}
	var out struct {
		OK     bool   `json:"ok"`
		Stderr string `json:"stderr"`
	}
	var fds []*os.File
	if ns != nil {
		fds = []*os.File{ns}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rx, err := c.conn.CallWithFDs(ctx, "org.terok.ClearanceVerdict1.Apply", in, &out, fds)
	for _, f := range rx {
		f.Close()
	}
	return out.OK, out.Stderr, err
}

// AskSockets are the listening sockets of a container's ask endpoint,
// created in its namespace by the verdict service.
type AskSockets struct {
	// Port is the endpoint's port on 127.0.0.1 and [::1].
	Port int
	// Sockets maps "tcp4" and "tcp6" to the listening sockets. The
	// caller owns them.
	Sockets map[string]*os.File
}

// Close closes every socket.
func (a *AskSockets) Close() {
	for _, f := range a.Sockets {
		f.Close()
	}
}

// Ask returns the listening sockets of the container's ask endpoint
// (docs/ask.md); the caller owns them.
func (c *Client) Ask(ctx context.Context, container string, ns *os.File) (*AskSockets, error) {
	var out struct {
		Port    int64    `json:"port"`
		Sockets []string `json:"sockets"`
	}
	rx, err := c.call(ctx, "Ask", struct {
		Container string `json:"container"`
	}{container}, &out, ns)
	if err != nil {
		return nil, err
	}
	socks, err := namedFiles("ask", container, rx, out.Sockets)
	if err != nil {
		return nil, err
	}
	return &AskSockets{Port: int(out.Port), Sockets: socks}, nil
}

// AdoptRequest is an "always" verdict of another host for the caller's
// own policy file (Adopt).
type AdoptRequest struct {
	Policy, Action string
	// IP or Name (a DNS name or pattern; it wins when set).
	IP, Name string
	// Proto ("tcp", "udp") and Port narrow it; "" and 0 for every port.
	Proto   string
	Port    int
	Comment string
}

// Adopt writes r to the caller's policy file. adopted is false, with the
// reason, when the file keeps it out (deny wins) or cannot be written.
func (c *Client) Adopt(ctx context.Context, r AdoptRequest) (adopted bool, reason string, err error) {
	in := struct {
		Policy  string  `json:"policy"`
		Action  string  `json:"action"`
		Ip      string  `json:"ip"`
		Name    *string `json:"name,omitempty"`
		Proto   *string `json:"proto,omitempty"`
		Port    *int64  `json:"port,omitempty"`
		Comment string  `json:"comment"`
	}{Policy: r.Policy, Action: r.Action, Ip: r.IP, Comment: r.Comment}
	if r.Name != "" {
		in.Name = &r.Name
	}
	if r.Proto != "" || r.Port != 0 {
		port := int64(r.Port)
		in.Proto, in.Port = &r.Proto, &port
	}
	var out struct {
		Adopted bool   `json:"adopted"`
		Reason  string `json:"reason"`
	}
	if err := c.callNoFDs(ctx, "Adopt", in, &out, nil); err != nil {
		return false, "", err
	}
	return out.Adopted, out.Reason, nil
}
