package varlinkapi

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/varlink/go/varlink"
)

// Dial connects to the varlink service listening on the Unix socket at
// path. The caller closes the returned connection. A varlink connection
// serves one call at a time: a client that streams (Subscribe) and also
// calls methods needs two connections, as the seed's client does.
func Dial(ctx context.Context, path string) (*varlink.Connection, error) {
	c, err := varlink.NewConnection(ctx, "unix:"+path)
	if err != nil {
		return nil, fmt.Errorf("dial varlink %s: %w", path, err)
	}
	return c, nil
}

// DialInterruptible is [Dial] plus an interrupt function that shuts down
// the connection's read side without closing it: a receive blocked on
// the connection (a Subscribe stream waiting for its next event) returns at
// once, and every later one fails. Use it for streams a context should be
// able to end: cancelling the context of a blocked receive can leave the
// library's reader stuck, and closing the connection from another
// goroutine races with that reader. The caller still closes the
// connection.
func DialInterruptible(ctx context.Context, path string) (c *varlink.Connection, interrupt func(), err error) {
	d := &captureDialer{}
	c, err = varlink.NewConnectionWithDialer(ctx, "unix:"+path, d)
	if err != nil {
		return nil, nil, fmt.Errorf("dial varlink %s: %w", path, err)
	}
	uc, _ := d.conn.(*net.UnixConn)
	return c, func() {
		if uc != nil {
			_ = uc.CloseRead()
		}
	}, nil
}

// captureDialer dials Unix sockets and remembers the connection.
type captureDialer struct{ conn net.Conn }

func (d *captureDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, address)
	d.conn = c
	return c, err
}

// ErrorName returns the varlink error name carried by err (a typed error
// of a generated package or a *varlink.Error), or "".
func ErrorName(err error) string {
	switch e := err.(type) {
	case nil:
		return ""
	case *varlink.Error:
		return e.Name
	}
	// Generated error types render as "iface.Name(Field: value, …)".
	name, _, _ := strings.Cut(err.Error(), "(")
	if strings.Count(name, ".") >= 2 && !strings.ContainsAny(name, " :") {
		return name
	}
	return ""
}
