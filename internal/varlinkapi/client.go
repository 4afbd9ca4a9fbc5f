package varlinkapi

import (
	"context"
	"fmt"
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
