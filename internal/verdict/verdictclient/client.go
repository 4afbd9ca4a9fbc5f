// Package verdictclient is the unprivileged side of clearance-verdict: a
// typed client for org.terok.ClearanceFirewall1 and
// org.terok.ClearanceVerdict1 that can pass the container's network
// namespace with a call and receive the NFLOG socket from Watch.
//
// A Client wraps one connection. Under systemd every connection starts its
// own privileged instance (Accept=yes), which lives until the connection
// closes: keep one Client for a burst of calls and close it when idle.
// Calls on one Client are serialised (varlink serves one call at a time
// per connection); a Client is safe for concurrent use.
//
// Errors of the service come back as the generated types of package
// orgterokclearancefirewall1 (*PermissionDenied, *NoSuchContainer,
// *StaleRecord, *InvalidDestination, *FirewallFailed) or as
// *varlink.InvalidParameter; test with errors.As.
package verdictclient

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/varlinkapi"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearanceverdict1"
)

// DefaultSocket is the verdict service's socket.
const DefaultSocket = "/run/clearance/verdict.sock"

const iface = "org.terok.ClearanceFirewall1."

// Client is a connection to the verdict service.
type Client struct {
	mu   sync.Mutex
	conn *varlink.Connection
}

// Dial connects to the verdict service at path ("" = DefaultSocket).
func Dial(ctx context.Context, path string) (*Client, error) {
	if path == "" {
		path = DefaultSocket
	}
	c, err := varlinkapi.Dial(ctx, path)
	if err != nil {
		return nil, err
	}
	return &Client{conn: c}, nil
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

// Engage installs or verifies the container's ruleset. ns, if not nil, is
// the container's network namespace (an open /proc/<pid>/ns/net); the
// caller keeps it. engagedNow is true when the table was created now.
func (c *Client) Engage(ctx context.Context, container string, ns *os.File) (table string, engagedNow bool, err error) {
	var out struct {
		Table       string `json:"table"`
		Engaged_now bool   `json:"engaged_now"`
	}
	err = c.callNoFDs(ctx, "Engage", struct {
		Container string `json:"container"`
	}{container}, &out, ns)
	return out.Table, out.Engaged_now, err
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
}

// ApplyResult is the outcome of Apply. OK false carries the reason in
// Stderr; Expires is zero when the element does not time out.
type ApplyResult struct {
	OK      bool
	Stderr  string
	Expires time.Time
}

// Apply applies a verdict. A returned error means the request was refused
// or malformed (typed errors); a failure to apply is OK false.
func (c *Client) Apply(ctx context.Context, r ApplyRequest, ns *os.File) (ApplyResult, error) {
	in := struct {
		Container     string `json:"container"`
		Ip            string `json:"ip"`
		Action        string `json:"action"`
		Scope         string `json:"scope"`
		Ttl_sec       int64  `json:"ttl_sec"`
		Policy_target string `json:"policy_target"`
	}{r.Container, r.IP, r.Action, r.Scope, int64(r.TTL / time.Second), r.PolicyTarget}
	var out struct {
		Ok           bool   `json:"ok"`
		Stderr       string `json:"stderr"`
		Expires_usec int64  `json:"expires_usec"`
	}
	if err := c.callNoFDs(ctx, "Apply", in, &out, ns); err != nil {
		return ApplyResult{}, err
	}
	res := ApplyResult{OK: out.Ok, Stderr: out.Stderr}
	if out.Expires_usec > 0 {
		res.Expires = time.UnixMicro(out.Expires_usec)
	}
	return res, nil
}

// Revoke removes ip from the container's allow and deny sets.
func (c *Client) Revoke(ctx context.Context, container, ip string, ns *os.File) error {
	return c.callNoFDs(ctx, "Revoke", struct {
		Container string `json:"container"`
		Ip        string `json:"ip"`
	}{container, ip}, &struct{}{}, ns)
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
	Verdict string // "accept", "drop" or "reject"
	Reason  string // "loopback", "resolver", "denied", "allowed", "blocked", "not-engaged"
	Expires time.Time
}

// Explain says what the container's ruleset does with a new connection
// to ip:port/proto.
func (c *Client) Explain(ctx context.Context, container, ip string, port int, proto string, ns *os.File) (Explanation, error) {
	var out struct {
		Verdict      string `json:"verdict"`
		Reason       string `json:"reason"`
		Expires_usec int64  `json:"expires_usec"`
	}
	err := c.callNoFDs(ctx, "Explain", struct {
		Container string `json:"container"`
		Ip        string `json:"ip"`
		Port      int64  `json:"port"`
		Proto     string `json:"proto"`
	}{container, ip, int64(port), proto}, &out, ns)
	x := Explanation{Verdict: out.Verdict, Reason: out.Reason}
	if out.Expires_usec > 0 {
		x.Expires = time.UnixMicro(out.Expires_usec)
	}
	return x, err
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
