// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package varlinkapi is clearance's varlink layer: the serve loop every
// clearance server uses, the client helpers every other binary uses, and
// the generated interface packages below it (orgterokclearance1,
// orgterokclearancehub1, iosystemdservice, …), whose .varlink files are the
// source (go generate).
//
// It builds on github.com/varlink/go and its IDL generator but owns the
// accept loop and the message framing, which fixes the library's gaps
// (see docs/varlink.md):
//
//   - a peer hanging up during a streaming call is noticed ([Hangup]);
//   - org.varlink.service.ExpectedMore can be sent ([ReplyExpectedMore]);
//   - a malformed or oversized request gets a typed error reply
//     (org.terok.ClearanceHub1.ProtocolViolation) and the connection stays
//     usable, instead of being dropped without a word;
//   - memory per connection is bounded by the message limit;
//   - with [Server.Params], a call with a missing, ill-typed or unknown
//     parameter is answered org.varlink.service.InvalidParameter naming
//     it, as the seed answers ([ParamCheck]).
//
// Handlers must never return a Go error to signal a failed call: they reply
// with a varlink error. A returned error ends the connection (it means the
// reply could not be written).
package varlinkapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/varlink/go/varlink"
)

// Defaults for [Server].
const (
	DefaultMaxMessage = 1 << 20
	DefaultMaxConns   = 256
)

// ProtocolViolation is the error sent for a request that cannot be parsed.
const ProtocolViolation = "org.terok.ClearanceHub1.ProtocolViolation"

// Server serves one [varlink.Service] on any number of listeners.
//
// The zero value is not usable; set Service. Other fields may be left zero.
type Server struct {
	// Service holds the registered interfaces. Required.
	Service *varlink.Service

	// Log receives connection-level warnings. Nil discards them.
	Log *slog.Logger

	// MaxMessage bounds one request in bytes (default DefaultMaxMessage).
	// A longer request is discarded up to its terminator and answered with
	// ProtocolViolation; the connection stays open.
	MaxMessage int

	// MaxConns bounds concurrent connections (default DefaultMaxConns).
	// Connections beyond it are accepted and closed at once.
	MaxConns int

	// Idle, when positive, makes Serve return nil after no connection has
	// been open for this long (socket-activated services exit when idle;
	// systemd keeps the listening socket and starts them again).
	Idle time.Duration

	// RequestTimeout, when positive, closes a connection on which no
	// complete request arrived within this long. The clock starts when the
	// connection is served and again after each reply; it stops while a
	// call is handled, and a streaming call that watches for a hang-up
	// ([Hangup]) is never timed out. Bytes that trickle in without
	// completing a request do not extend it. Zero never times out.
	RequestTimeout time.Duration

	// Acceptors is the number of goroutines accepting connections at
	// once (default 1).
	Acceptors int

	// Params, when set, checks every call's parameters against its
	// method's declaration before the call is dispatched, and answers a
	// bad one with org.varlink.service.InvalidParameter naming the
	// parameter, as the seed does (see [ParamCheck]). Without it the
	// generated dispatchers decode the parameters themselves: a missing
	// one is its zero value, an unknown one is ignored, and an ill-typed
	// one is answered InvalidParameter{parameter: "parameters"}.
	Params *ParamCheck

	// Admit, when set, decides about each connection Serve accepts before
	// anything is read from it. It returns a release func, called when
	// the connection ends, and ok; when ok is false, refusal (if not
	// empty) is written to the peer as a complete varlink error reply
	// (see [RefusalFrame]) and the connection is closed at once, so a
	// refused connection costs nothing beyond its accept. ServeConn does
	// not call Admit: whoever passes it a connection decides.
	Admit func(nc net.Conn) (release func(), refusal []byte, ok bool)

	active   atomic.Int64
	rejected atomic.Uint64
	warnMu   sync.Mutex
	lastWarn time.Time
}

// Active reports the number of connections being served.
func (s *Server) Active() int64 { return s.active.Load() }

// Serve accepts connections on ln and serves each on its own goroutine
// until ctx ends, then closes ln and every open connection and waits for
// their goroutines. It returns nil after ctx ends or an idle timeout, and
// the accept error otherwise.
//
// [Server.Acceptors] goroutines accept at once, so a connect flood from
// several threads cannot keep the listen backlog full by outpacing one
// accepting thread; a connection Admit refuses costs its accept, a
// peer-credentials read and a close.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		ln.Close()
		wg.Wait()
	}()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	maxConns := s.MaxConns
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	acceptors := s.Acceptors
	if acceptors <= 0 {
		acceptors = 1
	}
	var (
		errMu    sync.Mutex
		firstErr error
		lastBusy atomic.Int64 // when a connection last ended (or Serve started), unix ns
	)
	lastBusy.Store(time.Now().UnixNano())
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		cancel()
	}
	if s.Idle > 0 {
		wg.Go(func() {
			tick := time.NewTicker(max(s.Idle/4, 5*time.Millisecond))
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if s.active.Load() == 0 && time.Since(time.Unix(0, lastBusy.Load())) >= s.Idle {
					cancel() // idle: return nil
					return
				}
			}
		})
	}
	var acc sync.WaitGroup
	for range acceptors {
		acc.Go(func() {
			for {
				nc, err := ln.Accept()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					if transientAccept(err) {
						// Out of descriptors (a flood) or a peer gone
						// before its accept: wait a moment instead of
						// giving up the socket for everyone.
						s.warn("varlink: accept failed, retrying", "err", err)
						select {
						case <-ctx.Done():
							return
						case <-time.After(20 * time.Millisecond):
						}
						continue
					}
					fail(fmt.Errorf("accept: %w", err))
					return
				}
				if s.active.Add(1) > int64(maxConns) {
					s.active.Add(-1)
					s.rejected.Add(1)
					s.warn("varlink: connection limit reached, closing new connection", "limit", maxConns)
					nc.Close()
					continue
				}
				release := func() {}
				if s.Admit != nil {
					rel, refusal, ok := s.Admit(nc)
					if !ok {
						s.active.Add(-1)
						s.rejected.Add(1)
						Refuse(nc, refusal)
						continue
					}
					if rel != nil {
						release = rel
					}
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() {
						lastBusy.Store(time.Now().UnixNano())
						s.active.Add(-1)
					}()
					defer release()
					s.ServeConn(ctx, nc)
				}()
			}
		})
	}
	acc.Wait()
	errMu.Lock()
	defer errMu.Unlock()
	return firstErr
}

// ServeConn serves requests on one connection until the peer closes it,
// a reply cannot be written, or ctx ends; then it closes nc.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) {
	max := s.MaxMessage
	if max <= 0 {
		max = DefaultMaxMessage
	}
	c := newConn(nc, max)
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()

	for {
		var deadline time.Time
		if s.RequestTimeout > 0 {
			deadline = time.Now().Add(s.RequestTimeout)
		}
		msg, fds, err := c.next(ctx, deadline)
		if errors.Is(err, errTooLarge) {
			s.warn("varlink: request too large, discarded", "limit", max)
			if werr := writeError(ctx, c, ProtocolViolation, map[string]string{
				"reason": fmt.Sprintf("message larger than %d bytes", max)}); werr != nil {
				return
			}
			continue
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && s.Log != nil {
				s.Log.Debug("varlink: no complete request in time, closing the connection", "timeout", s.RequestTimeout)
			}
			return
		}
		call, reason := checkCall(msg)
		if reason != "" {
			closeFiles(fds)
			s.warn("varlink: malformed request", "reason", reason)
			if werr := writeError(ctx, c, ProtocolViolation, map[string]string{"reason": reason}); werr != nil {
				return
			}
			continue
		}
		if s.Params != nil {
			var params []byte
			if call.Parameters != nil {
				params = *call.Parameters
			}
			if bad := s.Params.Check(call.Method, call.More, params); bad != "" {
				closeFiles(fds)
				if call.Oneway {
					continue
				}
				if werr := writeError(ctx, c, InvalidParameter, map[string]string{"parameter": bad}); werr != nil {
					return
				}
				continue
			}
		}
		if err := s.handle(ctx, c, msg, fds); err != nil {
			if s.Log != nil && ctx.Err() == nil {
				s.Log.Debug("varlink: connection ended by handler", "err", err)
			}
			return
		}
		if c.watching() {
			// A streaming handler returned: the peer is gone or we are
			// shutting down. Its background reader owns the socket.
			return
		}
	}
}

// transientAccept reports whether an accept error passes by itself.
func transientAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.EAGAIN, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// handle serves one call. A handler that panics ends its connection, not
// the process: a server shared by many users (clearance-verdict) must
// not let one caller's call take every other caller's down with it.
func (s *Server) handle(ctx context.Context, c *conn, msg []byte, fds []*os.File) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if s.Log != nil {
				s.Log.Error("varlink: handler panicked; closing its connection", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			}
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return s.Service.HandleMessageWithFDs(ctx, c, msg, fds)
}

// callHead is what the serve loop reads of a call.
type callHead struct {
	Method     string           `json:"method"`
	Parameters *json.RawMessage `json:"parameters"`
	More       bool             `json:"more"`
	Oneway     bool             `json:"oneway"`
	Upgrade    bool             `json:"upgrade"`
}

// checkCall validates the shape of a call before the library sees it, and
// returns it, or why it is malformed.
func checkCall(msg []byte) (callHead, string) {
	var call callHead
	if !utf8.Valid(msg) {
		return call, "request is not valid UTF-8"
	}
	if !json.Valid(msg) {
		return call, "request is not valid JSON"
	}
	if err := json.Unmarshal(msg, &call); err != nil {
		return call, "request is not a varlink call object: " + err.Error()
	}
	if call.Method == "" {
		return call, "request has no method"
	}
	if call.Parameters != nil {
		p := *call.Parameters
		if len(p) == 0 || (p[0] != '{' && string(p) != "null") {
			return call, "parameters is not an object"
		}
	}
	return call, ""
}

func (s *Server) warn(msg string, args ...any) {
	if s.Log == nil {
		return
	}
	s.warnMu.Lock()
	now := time.Now()
	ok := now.Sub(s.lastWarn) >= time.Second
	if ok {
		s.lastWarn = now
	}
	s.warnMu.Unlock()
	if ok {
		s.Log.Warn(msg, args...)
	}
}

// errorReply is an error reply frame with the seed's (asyncvarlink's)
// key order: "error", then "parameters" (omitted when there are none).
type errorReply struct {
	Error      string `json:"error"`
	Parameters any    `json:"parameters,omitempty"`
}

// writeError writes an error reply frame directly, for error names the
// library refuses to send (org.varlink.service.*), for requests the
// library never saw, and for replies that must match the seed's bytes.
func writeError(ctx context.Context, w varlink.ReadWriterContext, name string, params any) error {
	reply := errorReply{name, params}
	b, err := json.Marshal(reply)
	if err != nil {
		return err
	}
	_, err = w.Write(ctx, append(b, 0))
	return err
}

// RefusalFrame encodes a complete varlink error reply (name, with params
// as its parameters) including the terminating NUL, for [Server.Admit]
// to send to a connection it refuses before reading its first call: a
// client that writes its call and then reads gets it as the reply.
func RefusalFrame(name string, params any) []byte {
	reply := errorReply{name, params}
	b, err := json.Marshal(reply)
	if err != nil {
		return nil
	}
	return append(b, 0)
}

// Refuse answers a connection that is not served and closes it: it
// writes refusal (a [RefusalFrame], or nothing when empty), shuts down its
// sending side, discards what the peer sends for up to [lingerFor] (a
// peer that connects and then writes its call would otherwise find a
// closed socket, EPIPE, and never read the refusal) and closes it. That
// happens in the background, for at most [maxLingering] connections at
// once; beyond that the connection is closed at once, without a word: a
// connect flood costs no more than its accepts.
func Refuse(nc net.Conn, refusal []byte) {
	select {
	case lingering <- struct{}{}:
	default:
		nc.Close()
		return
	}
	go func() {
		defer func() { <-lingering }()
		defer nc.Close()
		if len(refusal) > 0 {
			nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := nc.Write(refusal); err != nil {
				return
			}
		}
		if uc, ok := nc.(*net.UnixConn); ok {
			uc.CloseWrite() // the peer reads the refusal, then EOF
			uc.SetReadDeadline(time.Now().Add(lingerFor))
			io.Copy(io.Discard, io.LimitReader(uc, 64<<10))
		}
	}()
}

// Refused connections are answered (see [Refuse]) at most this many at
// once, each for at most this long.
const (
	maxLingering = 64
	lingerFor    = 200 * time.Millisecond
)

var lingering = make(chan struct{}, maxLingering)

// ReplyExpectedMore answers a streaming call made without "more": true with
// org.varlink.service.ExpectedMore, which the library cannot send itself.
func ReplyExpectedMore(ctx context.Context, c *varlink.Call) error {
	if c.IsOneway() {
		return nil
	}
	return writeError(ctx, c.Conn, "org.varlink.service.ExpectedMore", nil)
}

// ReplyPermissionDenied answers with org.varlink.service.PermissionDenied.
func ReplyPermissionDenied(ctx context.Context, c *varlink.Call) error {
	if c.IsOneway() {
		return nil
	}
	return writeError(ctx, c.Conn, "org.varlink.service.PermissionDenied", nil)
}

// Hangup returns a channel that is closed when the peer of c hangs up. A
// streaming handler selects on it next to its event source. After the
// first call the connection serves no further requests: the handler must
// return only when the peer is gone, ctx is done, or a write failed.
// It returns nil (never closed) for connections not served by [Server].
func Hangup(c *varlink.Call) <-chan struct{} {
	if h, ok := c.Conn.(interface{ Hangup() <-chan struct{} }); ok {
		return h.Hangup()
	}
	return nil
}

// PeerConn returns the network connection a call arrived on, for peer
// credentials, or nil.
func PeerConn(c *varlink.Call) net.Conn {
	if g, ok := c.Conn.(varlink.GetNetConn); ok {
		return g.NetConn()
	}
	return nil
}
