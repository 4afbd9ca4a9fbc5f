// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

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
//
// The connection takes no file descriptors from the service (a reply
// carrying some fails): that keeps it on the library's buffered read path,
// which reuses one buffer for every message, instead of the SCM_RIGHTS
// path, which allocates a fresh 8 KiB data and 1 KiB control buffer for
// each read. A long-lived stream of small events would otherwise turn
// every event into ~9 KiB of garbage.
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

// captureDialer dials Unix sockets, remembers the connection and hands
// the library a [plainConn] of it.
type captureDialer struct{ conn net.Conn }

func (d *captureDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	d.conn = c
	return plainConn{c}, nil
}

// plainConn hides a *net.UnixConn from varlink/go, which passes file
// descriptors (and allocates per read) only on that type.
type plainConn struct{ net.Conn }

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
