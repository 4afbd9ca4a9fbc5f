// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/terok-ai/clearance/internal/cli"
)

// Bad command lines and configurations are refused with a clear message
// before anything connects.
func TestCommandRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o600)
	badKey := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badKey, []byte("nats:\n  urll: nats://x\n"), 0o600)
	badTLS := filepath.Join(dir, "tls.yaml")
	os.WriteFile(badTLS, []byte("nats:\n  url: nats://x\n  tls_cert: /etc/cert.pem\n"), 0o600)
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no url", []string{"--config", empty}, 2, "no NATS server"},
		{"bad host", []string{"--config", empty, "--url", "nats://127.0.0.1:1", "--host", "a.b"}, 2, `relay host "a.b"`},
		{"host named fleet", []string{"--config", empty, "--url", "nats://127.0.0.1:1", "--host", "fleet"}, 2, `relay host "fleet"`},
		{"unknown key", []string{"--config", badKey}, 1, "urll"},
		{"cert without key", []string{"--config", badTLS}, 1, "tls_key"},
		{"extra argument", []string{"--config", empty, "now"}, 2, "Usage"},
		{"unknown flag", []string{"--frobnicate"}, 2, "frobnicate"},
	} {
		var stderr strings.Builder
		code := Command(context.Background(), c.args, cli.Stdio{Err: &stderr})
		if code != c.code || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%s: exit %d, stderr %q", c.name, code, stderr.String())
		}
	}
}

// The server's refusals count as such whether nats.go hands them on as
// its sentinels or in the server's own words (a refused reconnect).
func TestIsAuthError(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{nats.ErrAuthExpired, true},
		{fmt.Errorf("connect: %w", nats.ErrAuthorization), true},
		{errors.New("nats: User Authentication Expired"), true},
		{errors.New("nats: Authorization Violation"), true},
		{errors.New("nats: User Authentication Revoked"), true},
		{nats.ErrNoServers, false},
		{errors.New("EOF"), false},
		{nil, false},
	} {
		if got := IsAuthError(tt.err); got != tt.want {
			t.Errorf("IsAuthError(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
