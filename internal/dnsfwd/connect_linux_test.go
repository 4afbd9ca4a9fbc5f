// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

func TestConnectFile(t *testing.T) {
	testutil.LeakCheck(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	server := ln.Addr().(*net.TCPAddr).AddrPort()
	echoed := make(chan error, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Plain copy: TCP-to-TCP io.Copy splices through pipes the
			// runtime caches, which the fd leak check would count.
			_, err = io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
			c.Close()
			echoed <- err
		}
	}()
	closed, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().(*net.TCPAddr).AddrPort()
	closed.Close()

	tests := []struct {
		name    string
		domain  int
		server  netip.AddrPort
		wantErr error
	}{
		{"ipv4 socket", unix.AF_INET, server, nil},
		{"ipv6 socket to an ipv4 server", unix.AF_INET6, server, nil},
		{"refused", unix.AF_INET, refused, unix.ECONNREFUSED},
		{"ipv4 socket to an ipv6 server", unix.AF_INET, netip.MustParseAddrPort("[::1]:53"), unix.EAFNOSUPPORT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd, err := unix.Socket(tt.domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Skipf("skipping, no socket of domain %d: %v", tt.domain, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := ConnectFile(ctx, os.NewFile(uintptr(fd), "pool"), tt.server)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ConnectFile: %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("echo %q, %v", buf, err)
			}
			c.Close()
			if err := <-echoed; err != nil {
				t.Errorf("echo server: %v", err)
			}
		})
	}
}
