// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/sanitize"
)

// DefaultMaxLine is the longest line, in bytes without its newline, that
// [Server] accepts by default: the seed's asyncio limit, 64 KiB.
const DefaultMaxLine = 64 << 10

// DefaultWarnInterval is how often, at most, [Server] logs a warning of one
// kind (malformed line, oversized line, sink error, foreign peer).
const DefaultWarnInterval = 10 * time.Second

// logLinePrefix is how much of a bad line a warning quotes (the seed: 120).
const logLinePrefix = 120

// Server reads producer events from connections on an ingest socket and
// hands each translated event to Sink.
//
// Set the fields before the first call to [Server.Serve] and do not change
// them afterwards. A Server may serve several listeners at once; its
// counters are shared. A Server must not be copied after first use.
type Server struct {
	// Sink receives every event, translated by [Parse]. It is required.
	//
	// Sink is called from the connection goroutines, never concurrently
	// (calls from all connections are serialised), and in line order for
	// each connection; the next line of a connection is read only after
	// Sink returns. A non-nil error is logged (rate-limited) and counted, and
	// the connection goes on with its next line. Sink must return promptly:
	// Serve waits for it before returning.
	Sink func(event.Event) error

	// Log receives warnings about rejected peers and dropped lines, each
	// kind at most once per WarnInterval with a count of those suppressed.
	// If nil, nothing is logged.
	Log *slog.Logger

	// MaxLine is the longest line accepted, in bytes without its newline.
	// Longer lines are discarded without ending the connection. Each
	// connection buffers at most MaxLine+1 bytes. If zero, DefaultMaxLine.
	MaxLine int

	// UID is the only peer uid accepted (SO_PEERCRED). If zero, the
	// process's own uid, [os.Getuid]. (A non-root hub cannot be told to
	// accept root only; nothing needs that.)
	UID int

	// WarnInterval is the minimum time between two warnings of one kind.
	// If zero, DefaultWarnInterval.
	WarnInterval time.Duration

	sinkMu sync.Mutex
	stats  struct {
		accepted, rejected, events, malformed, unknown, oversized, sinkErrors atomic.Uint64
	}
	limitOnce sync.Once
	// One limiter per kind of warning, so a flood of one kind cannot hide
	// another.
	warnMalformed, warnOversized, warnSink, warnRejected, warnUnknown *limiter
}

// Stats are a [Server]'s counters since it was created. Connections are
// counted when accepted or rejected; lines when delivered or dropped.
type Stats struct {
	Accepted    uint64 // connections that passed the peer check
	Rejected    uint64 // connections closed for a foreign or unknown peer
	Events      uint64 // events handed to Sink
	Malformed   uint64 // lines dropped as malformed (incl. invalid UTF-8)
	UnknownType uint64 // lines dropped for an unknown type
	Oversized   uint64 // lines over MaxLine discarded
	SinkErrors  uint64 // events Sink returned an error for
}

// Stats returns the counters. It is safe to call concurrently with Serve.
func (s *Server) Stats() Stats {
	return Stats{
		Accepted:    s.stats.accepted.Load(),
		Rejected:    s.stats.rejected.Load(),
		Events:      s.stats.events.Load(),
		Malformed:   s.stats.malformed.Load(),
		UnknownType: s.stats.unknown.Load(),
		Oversized:   s.stats.oversized.Load(),
		SinkErrors:  s.stats.sinkErrors.Load(),
	}
}

// Serve accepts connections on ln until ctx ends or ln fails, and reads
// events from each connection until it closes.
//
// Serve owns ln: before returning it closes ln and every connection it
// accepted, and waits for all its goroutines (including Sink calls in
// progress). It returns nil when ctx ended, or the accept error otherwise.
// ln is normally a *net.UnixListener; connections of other kinds are
// rejected because they carry no peer credentials.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.Sink == nil {
		ln.Close()
		return errors.New("serve ingest: nil Sink")
	}
	s.limitOnce.Do(s.initLimiters)

	var (
		mu      sync.Mutex
		conns   = make(map[net.Conn]struct{})
		closing bool
		wg      sync.WaitGroup
	)
	shutdown := sync.OnceFunc(func() {
		ln.Close()
		mu.Lock()
		closing = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	stop := context.AfterFunc(ctx, shutdown)
	defer func() {
		stop()
		shutdown()
		wg.Wait()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if temporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger().Warn("ingest: accept failed, retrying", "err", err, "backoff", backoff)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(backoff):
				}
				continue
			}
			return fmt.Errorf("accept ingest connection: %w", err)
		}
		backoff = 0
		mu.Lock()
		if closing {
			mu.Unlock()
			c.Close()
			continue // the next Accept fails: ln is closed
		}
		conns[c] = struct{}{}
		wg.Add(1)
		mu.Unlock()
		go func() {
			defer wg.Done()
			s.serveConn(ctx, c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		}()
	}
}

// temporary reports whether an accept error may go away by itself
// (descriptor or memory exhaustion), as net/http treats it.
func temporary(err error) bool {
	for _, e := range []error{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// serveConn checks the peer of c and then reads its lines until EOF, a read
// error (c closed by shutdown) or the end of ctx.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	if !s.peerAllowed(c) {
		s.stats.rejected.Add(1)
		return
	}
	s.stats.accepted.Add(1)
	err := s.readLines(ctx, c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET) {
		s.logger().Debug("ingest: connection ended", "err", err)
	}
}

// peerAllowed reports whether c's peer is the accepted uid, logging a
// warning when it is not.
func (s *Server) peerAllowed(c net.Conn) bool {
	want := s.UID
	if want == 0 {
		want = os.Getuid()
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		s.warnRejected.log(s.logger(), slog.LevelWarn, "ingest: accepted connection exposes no socket; refusing")
		return false
	}
	cred, err := peerCred(uc)
	if err != nil {
		s.warnRejected.log(s.logger(), slog.LevelWarn, "ingest: rejecting connection from foreign uid", "err", err)
		return false
	}
	if int(cred.Uid) != want {
		s.warnRejected.log(s.logger(), slog.LevelWarn, "ingest: rejecting connection from foreign uid",
			"peer_uid", cred.Uid, "peer_pid", cred.Pid, "want_uid", want)
		return false
	}
	return true
}

// peerCred returns the SO_PEERCRED credentials of c's peer: those it had
// when it connected, as the kernel recorded them.
func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("get peer credentials: %w", err)
	}
	var (
		cred   *unix.Ucred
		optErr error
	)
	if err := rc.Control(func(fd uintptr) {
		cred, optErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("get peer credentials: %w", err)
	}
	if optErr != nil {
		return nil, fmt.Errorf("get peer credentials: %w", optErr)
	}
	return cred, nil
}

// readLines reads r line by line, delivering each event to Sink, until r
// ends or fails or ctx ends. It returns the read error (nil at EOF).
func (s *Server) readLines(ctx context.Context, r io.Reader) error {
	s.limitOnce.Do(s.initLimiters)
	maxLine := s.MaxLine
	if maxLine <= 0 {
		maxLine = DefaultMaxLine
	}
	lr := newLineReader(r, maxLine)
	for ctx.Err() == nil {
		line, err := lr.next()
		switch {
		case errors.Is(err, errLineTooLong):
			s.stats.oversized.Add(1)
			s.warnOversized.log(s.logger(), slog.LevelWarn, "ingest: dropping oversized line", "max_line", maxLine)
			continue
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		}
		s.handleLine(line)
	}
	return nil
}

// handleLine parses one line and delivers or drops it.
func (s *Server) handleLine(line []byte) {
	line = trimASCIISpace(line)
	if len(line) == 0 {
		return
	}
	ev, err := Parse(line)
	switch {
	case errors.Is(err, ErrUnknownType):
		s.stats.unknown.Add(1)
		s.warnUnknown.log(s.logger(), slog.LevelDebug, "ingest: dropping unknown event type", "err", err)
		return
	case err != nil:
		s.stats.malformed.Add(1)
		s.warnMalformed.log(s.logger(), slog.LevelWarn, "ingest: dropping malformed line",
			"err", err, "line", quoteLine(line))
		return
	}
	s.sinkMu.Lock()
	err = s.Sink(ev)
	s.sinkMu.Unlock()
	s.stats.events.Add(1)
	if err != nil {
		s.stats.sinkErrors.Add(1)
		s.warnSink.log(s.logger(), slog.LevelWarn, "ingest: sink failed", "err", err,
			"type", ev.Type, "container", ev.Container, "request_id", ev.RequestID)
	}
}

// quoteLine renders the start of an untrusted line for a log record.
func quoteLine(line []byte) string {
	if len(line) > logLinePrefix {
		line = line[:logLinePrefix]
	}
	return sanitize.String(string(line), logLinePrefix)
}

var discardLogger = slog.New(slog.DiscardHandler)

func (s *Server) logger() *slog.Logger {
	if s.Log == nil {
		return discardLogger
	}
	return s.Log
}

func (s *Server) initLimiters() {
	every := s.WarnInterval
	if every <= 0 {
		every = DefaultWarnInterval
	}
	s.warnMalformed = newLimiter(every)
	s.warnOversized = newLimiter(every)
	s.warnSink = newLimiter(every)
	s.warnRejected = newLimiter(every)
	s.warnUnknown = newLimiter(every)
}

// limiter lets one log record of a kind through per interval and counts the
// ones it holds back; the next record that passes reports that count as
// "suppressed". Safe for concurrent use.
type limiter struct {
	every time.Duration
	now   func() time.Time

	mu         sync.Mutex
	last       time.Time
	suppressed uint64
}

func newLimiter(every time.Duration) *limiter {
	return &limiter{every: every, now: time.Now}
}

// allow reports whether a record may be logged now and, if so, how many
// were suppressed since the last one.
func (l *limiter) allow() (ok bool, suppressed uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return false, 0
	}
	l.last = now
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// log logs msg at level if the limiter allows it, adding a "suppressed"
// count when records were held back.
func (l *limiter) log(log *slog.Logger, level slog.Level, msg string, args ...any) {
	if !log.Enabled(context.Background(), level) {
		return
	}
	ok, n := l.allow()
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Log(context.Background(), level, msg, args...)
}
