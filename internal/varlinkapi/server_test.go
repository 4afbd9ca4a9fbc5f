// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package varlinkapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/varlink/go/varlink"
)

// testIface is a minimal interface for serve-loop tests: Hold(ms) replies
// after ms milliseconds, or when release is closed.
type testIface struct {
	release chan struct{}
	entered chan struct{}
}

func (t *testIface) VarlinkGetName() string { return "org.example.test" }
func (t *testIface) VarlinkGetDescription() string {
	return "interface org.example.test\nmethod Hold(ms: int) -> ()\nmethod Panic() -> ()\n"
}

func (t *testIface) VarlinkDispatch(ctx context.Context, c varlink.Call, method string) error {
	if method == "Panic" {
		panic("boom")
	}
	if method != "Hold" {
		return c.ReplyMethodNotFound(ctx, method)
	}
	var in struct {
		Ms int `json:"ms"`
	}
	if err := c.GetParameters(&in); err != nil {
		return c.ReplyInvalidParameter(ctx, "parameters")
	}
	if t.entered != nil {
		t.entered <- struct{}{}
	}
	select {
	case <-time.After(time.Duration(in.Ms) * time.Millisecond):
	case <-t.release:
	case <-ctx.Done():
	}
	return c.Reply(ctx, struct{}{})
}

// serveTest serves a Server configured by cfg on a fresh socket.
func serveTest(t *testing.T, iface *testIface, cfg func(*Server)) string {
	t.Helper()
	svc, err := varlink.NewService("test", "test", "1", "https://example.invalid")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.RegisterInterface(iface); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Service: svc}
	cfg(srv)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ctx, ln) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return path
}

func dialRaw(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readClosed reads until the server closes c and returns what it sent and
// how long that took.
func readClosed(t *testing.T, c net.Conn, limit time.Duration) ([]byte, time.Duration) {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	b, err := io.ReadAll(c)
	// A close with bytes of ours still unread (a trickled request) is a
	// reset, not an end of file: closed all the same.
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the server did not close the connection within %v: %v", limit, err)
	}
	return b, time.Since(start)
}

func TestAttackRequestTimeoutClosesSilentConnections(t *testing.T) {
	const timeout = 300 * time.Millisecond
	path := serveTest(t, &testIface{}, func(s *Server) { s.RequestTimeout = timeout })

	t.Run("nothing sent", func(t *testing.T) {
		c := dialRaw(t, path)
		_, took := readClosed(t, c, 10*time.Second)
		if took < timeout/2 {
			t.Errorf("closed after %v, before the %v timeout", took, timeout)
		}
	})
	t.Run("a request trickling in never completes", func(t *testing.T) {
		c := dialRaw(t, path)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 100; i++ {
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
				time.Sleep(timeout / 10)
			}
		}()
		_, took := readClosed(t, c, 10*time.Second)
		if took > 5*timeout {
			t.Errorf("closed after %v although no request completed within %v", took, timeout)
		}
		c.Close()
		<-done
	})
}

func TestRequestTimeoutSparesBusyAndActiveConnections(t *testing.T) {
	const timeout = 300 * time.Millisecond
	iface := &testIface{release: make(chan struct{}), entered: make(chan struct{}, 1)}
	path := serveTest(t, iface, func(s *Server) { s.RequestTimeout = timeout })
	ctx := context.Background()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// A call the handler holds for longer than the timeout is answered:
	// only waiting for a request counts.
	errc := make(chan error, 1)
	go func() { errc <- c.Call(ctx, "org.example.test.Hold", map[string]int{"ms": 60000}, &struct{}{}) }()
	<-iface.entered
	time.Sleep(3 * timeout)
	close(iface.release)
	if err := <-errc; err != nil {
		t.Fatalf("a call handled for longer than the request timeout failed: %v", err)
	}
	// Requests that keep coming within the timeout keep the connection.
	for i := 0; i < 4; i++ {
		time.Sleep(timeout / 2)
		if err := c.Call(ctx, "org.example.test.Hold", map[string]int{"ms": 0}, &struct{}{}); err != nil {
			t.Fatalf("call %d, %v after the last reply: %v", i, timeout/2, err)
		}
		<-iface.entered
	}
}

func TestAttackAdmitRefusesBeforeReading(t *testing.T) {
	refusal := RefusalFrame("org.example.test.TooMany", map[string]string{"reason": "no room"})
	var mu sync.Mutex
	admitted := 0
	released := make(chan struct{}, 1)
	path := serveTest(t, &testIface{}, func(s *Server) {
		s.Admit = func(nc net.Conn) (func(), []byte, bool) {
			mu.Lock()
			defer mu.Unlock()
			if admitted == 1 {
				return nil, refusal, false
			}
			admitted++
			return func() { released <- struct{}{} }, nil, true
		}
	})
	first := dialRaw(t, path)
	second := dialRaw(t, path)
	b, _ := readClosed(t, second, 10*time.Second)
	if !bytes.Equal(b, refusal) {
		t.Errorf("refused connection got %q, want %q", b, refusal)
	}
	// The typed error reaches a varlink client that calls first.
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Call(context.Background(), "org.example.test.Hold", map[string]int{"ms": 0}, &struct{}{})
	c.Close()
	var ve *varlink.Error
	if !errors.As(err, &ve) || ve.Name != "org.example.test.TooMany" {
		t.Errorf("call on a refused connection = %v, want org.example.test.TooMany", err)
	}
	first.Close()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("release not called after the admitted connection ended")
	}
}

// TestAttackHandlerPanicEndsOnlyItsConnection: a handler panic closes the
// caller's connection and the server goes on serving the others.
func TestAttackHandlerPanicEndsOnlyItsConnection(t *testing.T) {
	path := serveTest(t, &testIface{}, func(*Server) {})
	ctx := context.Background()
	other, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Call(ctx, "org.example.test.Panic", nil, &struct{}{}); err == nil {
		t.Error("a panicking call succeeded")
	}
	if err := other.Call(ctx, "org.example.test.Hold", map[string]int{"ms": 0}, &struct{}{}); err != nil {
		t.Errorf("another connection after a panic: %v", err)
	}
}

// TestServeIdleExit: with Idle, Serve returns once no connection has been
// open for that long, and not while one is.
func TestServeIdleExit(t *testing.T) {
	svc, err := varlink.NewService("test", "test", "1", "https://example.invalid")
	if err != nil {
		t.Fatal(err)
	}
	svc.RegisterInterface(&testIface{})
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	const idle = 200 * time.Millisecond
	srv := &Server{Service: svc, Idle: idle, Acceptors: 3}
	done := make(chan error, 1)
	start := time.Now()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- srv.Serve(context.Background(), ln) }()
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) while a connection was open", err)
	case <-time.After(3 * idle):
	}
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v after the idle timeout, want nil", err)
		}
		if took := time.Since(start); took < 4*idle {
			t.Errorf("returned after %v", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the idle timeout")
	}
}
