// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package ask serves a container's ask endpoint: a small HTTP/1.1
// service on loopback inside the container's network namespace, where a
// workload that knows it will need a destination says so before it
// connects, with its reason, and waits for the operator's verdict
// instead of retrying blindly (docs/ask.md).
//
//	POST /ask        dest, port, reason (proto, wait): a form (curl -d) or JSON
//	GET  /ask/ID     the same request again (wait=N)
//	GET  /           a short usage text
//
// Answers are JSON: 200 "allowed", 403 "denied", 202 "pending" (the wait
// ended first; the request keeps waiting), 410 "gone" (it expired, or
// the container's hub forgot it), 4xx "error" with what is wrong, 429
// with Retry-After when the container asks too often.
//
// # Hostile input
//
// Everything that arrives is the container's and is treated as hostile:
// one request per connection, at most [MaxHeader] bytes of headers and
// [MaxBody] of body, read within [Server.ReadTimeout] (408 after it, so
// a slow sender cannot hold a connection), strict field checks (UTF-8,
// no control or invisible characters, numbers without sign or space, no
// unknown or repeated fields), a bounded number of connections and a
// token bucket per container. A bad request gets a clear error and
// changes nothing.
//
// The HTTP parsing is net/http's ([http.ReadRequest]); the connection
// handling is this package's own, so that every limit above holds and
// answers with a status (net/http's server closes a connection whose
// headers do not arrive in time without a word).
package ask

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var errEOF = io.EOF

// Defaults of [Server] fields left zero.
const (
	DefaultRatePerMinute  = 60
	DefaultBurst          = 20
	DefaultMaxConnections = 32
	DefaultMaxWait        = 10 * time.Minute
	DefaultWait           = 2 * time.Minute
	DefaultReadTimeout    = 10 * time.Second
	// MaxHeader bounds the request line and headers, in bytes.
	MaxHeader = 8192
)

// Statuses of an [Answer].
const (
	StatusAllowed = "allowed"
	StatusDenied  = "denied"
	StatusPending = "pending"
	StatusGone    = "gone"
	StatusError   = "error"
)

// Answer is what the endpoint replies, as JSON.
type Answer struct {
	// Status is StatusAllowed, StatusDenied, StatusPending, StatusGone
	// or StatusError.
	Status string `json:"status"`
	// RequestID is the pending request the question became (none when
	// a rule answered at once); GET /ask/ID asks about it again.
	RequestID string `json:"request_id,omitempty"`
	Dest      string `json:"dest,omitempty"`
	Port      int    `json:"port,omitempty"`
	Proto     string `json:"proto,omitempty"`
	// Reason is the reason as the operator sees it (printable ASCII).
	Reason string `json:"reason,omitempty"`
	// Scope and ExpiresUsec describe a verdict: "once", "container" or
	// "always", and when it ends (CLOCK_REALTIME µs; absent: it does
	// not).
	Scope       string `json:"scope,omitempty"`
	ExpiresUsec int64  `json:"expires_usec,omitempty"`
	// By says who or what decided: "by alice (uid 1000) via notifier",
	// or the rule that answered at once.
	By string `json:"by,omitempty"`
	// Message says it all in one sentence, for people and logs.
	Message string `json:"message,omitempty"`
	// Error says what was wrong with the request (status "error").
	Error string `json:"error,omitempty"`
	// RetryAfter is the Retry-After header's value in seconds (429).
	RetryAfter int `json:"retry_after,omitempty"`
}

// Decider answers questions; the hub implements it. Both methods must be
// safe for concurrent use.
type Decider interface {
	// Ask answers q at once when a rule decides it (allowed or denied),
	// or raises a pending request and returns its id with status
	// pending. An error is answered 503.
	Ask(ctx context.Context, q Question) (Answer, error)
	// Await waits until request id is decided or gone, or ctx ends
	// (pending).
	Await(ctx context.Context, id string) Answer
}

// Server serves the ask endpoint of one container. Fill in Decider; the
// other fields have defaults. Its methods are safe for concurrent use.
type Server struct {
	Decider Decider
	// RatePerMinute and Burst are the container's token bucket: every
	// request takes a token.
	RatePerMinute, Burst int
	// MaxConnections bounds open connections (waiting ones included).
	MaxConnections int
	// MaxWait bounds a request's wait parameter; DefaultWait is the wait
	// without one (capped at MaxWait).
	MaxWait, DefaultWait time.Duration
	// ReadTimeout bounds reading one whole request.
	ReadTimeout time.Duration
	// Log receives diagnostics; nil discards. Bad requests are logged at
	// debug level (a container can send many).
	Log *slog.Logger
	// Now returns the time (nil: time.Now). For tests.
	Now func() time.Time

	once    sync.Once
	bucket  bucket
	conns   atomic.Int64
	stats   counters
	logOnce sync.Map // kinds of warnings logged once per minute
}

// Stats are the endpoint's counters.
type Stats struct {
	Requests    uint64 // requests read (whatever their outcome)
	Asked       uint64 // questions that raised or joined a request
	Answered    uint64 // questions a rule answered at once
	BadRequests uint64 // 4xx for malformed input (not 429)
	TimedOut    uint64 // 408: the request did not arrive in time
	RateLimited uint64 // 429: no token
	Refused     uint64 // connections over MaxConnections
	Waiting     int64  // connections waiting for a verdict now
}

type counters struct {
	requests, asked, answered, bad, timedOut, limited, refused atomic.Uint64
	waiting                                                    atomic.Int64
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{Requests: s.stats.requests.Load(), Asked: s.stats.asked.Load(), Answered: s.stats.answered.Load(),
		BadRequests: s.stats.bad.Load(), TimedOut: s.stats.timedOut.Load(), RateLimited: s.stats.limited.Load(),
		Refused: s.stats.refused.Load(), Waiting: s.stats.waiting.Load()}
}

func (s *Server) init() {
	s.once.Do(func() {
		if s.RatePerMinute <= 0 {
			s.RatePerMinute = DefaultRatePerMinute
		}
		if s.Burst <= 0 {
			s.Burst = DefaultBurst
		}
		if s.MaxConnections <= 0 {
			s.MaxConnections = DefaultMaxConnections
		}
		if s.MaxWait <= 0 {
			s.MaxWait = DefaultMaxWait
		}
		if s.DefaultWait <= 0 {
			s.DefaultWait = DefaultWait
		}
		s.DefaultWait = min(s.DefaultWait, s.MaxWait)
		if s.ReadTimeout <= 0 {
			s.ReadTimeout = DefaultReadTimeout
		}
		if s.Log == nil {
			s.Log = slog.New(slog.DiscardHandler)
		}
		if s.Now == nil {
			s.Now = time.Now
		}
		s.bucket = bucket{rate: float64(s.RatePerMinute) / 60, burst: float64(s.Burst), tokens: float64(s.Burst)}
	})
}

// Serve accepts connections on ln until ctx ends, then closes ln and
// every connection and returns after their goroutines finished. The
// listener is closed either way.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.init()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var err error
	for {
		var c net.Conn
		c, err = ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				err = nil
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				break
			}
			// EMFILE and the like: back off a little, keep serving.
			s.warn("accept", "ask endpoint: accept failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if s.conns.Add(1) > int64(s.MaxConnections) {
			s.conns.Add(-1)
			s.stats.refused.Add(1)
			s.warn("conns", "ask endpoint: too many connections; refusing", "max", s.MaxConnections)
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.refuse(c)
			}()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.conns.Add(-1)
			s.serveConn(ctx, c)
		}()
	}
	ln.Close()
	cancel()
	wg.Wait()
	return err
}

// refuse answers a connection over the limit with 429 and closes it.
func (s *Server) refuse(c net.Conn) {
	defer c.Close()
	s.write(c, http.StatusTooManyRequests, Answer{Status: StatusError, RetryAfter: 1,
		Error: "too many connections to the ask endpoint (at most " + strconv.Itoa(s.MaxConnections) + "); try again"})
	linger(c)
}

// countingReader counts the bytes read through it and stops at limit.
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= c.limit {
		return 0, errTooLarge
	}
	if int64(len(p)) > c.limit-c.n {
		p = p[:c.limit-c.n]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

var errTooLarge = errors.New("request too large")

// serveConn reads one request from c, answers it and closes c.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	deadline := s.Now().Add(s.ReadTimeout)
	c.SetReadDeadline(deadline)
	cr := &countingReader{r: c, limit: MaxHeader}
	br := bufio.NewReaderSize(cr, 4096)
	req, err := http.ReadRequest(br)
	if err != nil {
		s.stats.requests.Add(1)
		switch {
		case errors.Is(err, io.EOF) && cr.n == 0:
			return // connected and closed: nothing to answer
		case isTimeout(err):
			s.stats.timedOut.Add(1)
			s.write(c, http.StatusRequestTimeout, Answer{Status: StatusError,
				Error: "the request did not arrive within " + s.ReadTimeout.String()})
		case errors.Is(err, errTooLarge) || cr.n >= MaxHeader:
			s.stats.bad.Add(1)
			s.write(c, http.StatusRequestHeaderFieldsTooLarge, Answer{Status: StatusError,
				Error: "request line and headers longer than " + strconv.Itoa(MaxHeader) + " bytes"})
		default:
			s.stats.bad.Add(1)
			s.write(c, http.StatusBadRequest, Answer{Status: StatusError, Error: "malformed HTTP request"})
		}
		s.Log.Debug("ask endpoint: bad request", "err", err)
		linger(c)
		return
	}
	s.stats.requests.Add(1)
	cr.limit = cr.n + MaxBody + 4096 // the body, with room for chunk framing
	code, a, waited := s.handle(ctx, c, req, deadline)
	if a.Status == StatusError && code != http.StatusTooManyRequests && code < 500 {
		s.stats.bad.Add(1)
		s.Log.Debug("ask endpoint: bad request", "status", code, "err", a.Error)
	}
	s.write(c, code, a)
	if !waited {
		linger(c)
	}
}

// handle routes one request and returns the status and answer; waited
// is true when the request's body was read completely.
func (s *Server) handle(ctx context.Context, c net.Conn, req *http.Request, deadline time.Time) (int, Answer, bool) {
	path := req.URL.Path
	switch {
	case path == "/" || path == "/help":
		if req.Method != http.MethodGet {
			return methodNotAllowed("GET")
		}
		if !s.take() {
			return s.limited()
		}
		return http.StatusOK, Answer{Status: "help", Message: Usage}, true
	case path == "/ask":
		if req.Method != http.MethodPost {
			return methodNotAllowed("POST")
		}
		return s.ask(ctx, c, req, deadline)
	case strings.HasPrefix(path, "/ask/"):
		if req.Method != http.MethodGet {
			return methodNotAllowed("GET")
		}
		id := strings.TrimPrefix(path, "/ask/")
		if !validID(id) {
			return http.StatusNotFound, Answer{Status: StatusError, Error: "no such request"}, true
		}
		wait := s.DefaultWait
		q := req.URL.Query()
		for k := range q {
			if k != "wait" {
				return http.StatusBadRequest, Answer{Status: StatusError, Error: "unknown parameter " +
					strconv.Quote(safe(k, 32)) + " (want wait)"}, true
			}
		}
		if v := q["wait"]; len(v) > 0 {
			if len(v) > 1 {
				return http.StatusBadRequest, Answer{Status: StatusError, Error: "wait given " + strconv.Itoa(len(v)) + " times"}, true
			}
			secs, err := strictUint(v[0], uint64(s.MaxWait/time.Second))
			if err != nil {
				return http.StatusBadRequest, Answer{Status: StatusError, Error: "wait must be a whole number of seconds 0.." +
					strconv.Itoa(int(s.MaxWait/time.Second))}, true
			}
			wait = time.Duration(secs) * time.Second
		}
		if !s.take() {
			return s.limited()
		}
		a := s.await(ctx, c, id, wait)
		return statusCode(a), a, true
	}
	return http.StatusNotFound, Answer{Status: StatusError, Error: "no such path " + strconv.Quote(safe(path, 64)) +
		" (POST /ask, GET /ask/ID, GET /)"}, true
}

func methodNotAllowed(allow string) (int, Answer, bool) {
	return http.StatusMethodNotAllowed, Answer{Status: StatusError, Error: "method not allowed here (use " + allow + ")"}, true
}

// ask reads and answers a question.
func (s *Server) ask(ctx context.Context, c net.Conn, req *http.Request, deadline time.Time) (int, Answer, bool) {
	if req.ContentLength > MaxBody {
		return http.StatusRequestEntityTooLarge, Answer{Status: StatusError,
			Error: "request body of " + strconv.FormatInt(req.ContentLength, 10) + " bytes, at most " + strconv.Itoa(MaxBody)}, false
	}
	if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		c.SetWriteDeadline(deadline)
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, MaxBody+1))
	switch {
	case isTimeout(err):
		s.stats.timedOut.Add(1)
		return http.StatusRequestTimeout, Answer{Status: StatusError,
			Error: "the request did not arrive within " + s.ReadTimeout.String()}, false
	case err != nil:
		return http.StatusBadRequest, Answer{Status: StatusError, Error: "unreadable request body"}, false
	case len(body) > MaxBody:
		return http.StatusRequestEntityTooLarge, Answer{Status: StatusError,
			Error: "request body longer than " + strconv.Itoa(MaxBody) + " bytes"}, false
	}
	if !s.take() {
		return s.limited()
	}
	q, err := parseQuestion(req.Header.Get("Content-Type"), body, s.MaxWait)
	if err != nil {
		var ie *inputError
		if errors.As(err, &ie) {
			return ie.status, Answer{Status: StatusError, Error: ie.msg}, true
		}
		return http.StatusBadRequest, Answer{Status: StatusError, Error: err.Error()}, true
	}
	if !q.waitSet {
		q.Wait = s.DefaultWait
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	a, err := s.Decider.Ask(actx, q)
	cancel()
	if err != nil {
		s.warn("decider", "ask endpoint: the hub could not take the question", "err", err)
		return http.StatusServiceUnavailable, Answer{Status: StatusError, Error: "the hub could not take the question: " +
			safe(err.Error(), 200)}, true
	}
	if a.Status != StatusPending {
		s.stats.answered.Add(1)
		return statusCode(a), a, true
	}
	s.stats.asked.Add(1)
	if q.Wait > 0 {
		w := s.await(ctx, c, a.RequestID, q.Wait)
		a = merge(a, w)
	}
	return statusCode(a), a, true
}

// merge completes the pending answer to a question with the outcome of
// its wait.
func merge(asked, w Answer) Answer {
	w.RequestID = asked.RequestID
	w.Dest, w.Port, w.Proto, w.Reason = asked.Dest, asked.Port, asked.Proto, asked.Reason
	return w
}

// await waits for request id for at most wait, ending early when the
// client hangs up or ctx ends.
func (s *Server) await(ctx context.Context, c net.Conn, id string, wait time.Duration) Answer {
	s.stats.waiting.Add(1)
	defer s.stats.waiting.Add(-1)
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	// The client sends nothing more. A reset means it went away: stop
	// waiting. A clean end of its stream does not: nc, socat and the like
	// half-close after sending the request and then read the answer (a
	// client that closed completely cannot be told apart; its wait ends
	// with its wait parameter).
	c.SetReadDeadline(time.Time{})
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		var b [512]byte
		for {
			if _, err := c.Read(b[:]); err != nil {
				if !errors.Is(err, io.EOF) {
					cancel()
				}
				return
			}
		}
	}()
	a := s.Decider.Await(wctx, id)
	c.SetReadDeadline(time.Now()) // ends the reader
	<-gone
	if a.Status == StatusPending {
		a.RequestID = id
		if a.Message == "" {
			a.Message = "still waiting for a verdict; ask again: GET /ask/" + id
		}
	}
	return a
}

// statusCode maps an answer to its HTTP status.
func statusCode(a Answer) int {
	switch a.Status {
	case StatusAllowed:
		return http.StatusOK
	case StatusDenied:
		return http.StatusForbidden
	case StatusPending:
		return http.StatusAccepted
	case StatusGone:
		return http.StatusGone
	}
	return http.StatusInternalServerError
}

func (s *Server) limited() (int, Answer, bool) {
	s.stats.limited.Add(1)
	secs := s.bucket.retryAfter(s.Now())
	return http.StatusTooManyRequests, Answer{Status: StatusError, RetryAfter: secs,
		Error: "too many requests from this container (" + strconv.Itoa(s.RatePerMinute) + " a minute); retry in " +
			strconv.Itoa(secs) + " s"}, true
}

func (s *Server) take() bool { return s.bucket.take(s.Now()) }

// write sends the answer as a complete HTTP/1.1 response that closes the
// connection.
func (s *Server) write(c net.Conn, code int, a Answer) {
	var body []byte
	if a.Status == "help" {
		body = []byte(a.Message)
	} else {
		body, _ = json.Marshal(a)
		body = append(body, '\n')
	}
	var b strings.Builder
	b.WriteString("HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n")
	if a.Status == "help" {
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	} else {
		b.WriteString("Content-Type: application/json\r\n")
	}
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\nCache-Control: no-store\r\n")
	switch code {
	case http.StatusTooManyRequests:
		b.WriteString("Retry-After: " + strconv.Itoa(max(1, a.RetryAfter)) + "\r\n")
	case http.StatusMethodNotAllowed:
		allow := "POST"
		if !strings.Contains(a.Error, "POST") {
			allow = "GET"
		}
		b.WriteString("Allow: " + allow + "\r\n")
	case http.StatusAccepted:
		if a.RequestID != "" {
			b.WriteString("Location: /ask/" + a.RequestID + "\r\n")
		}
	}
	b.WriteString("\r\n")
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write(append([]byte(b.String()), body...))
}

// linger half-closes c and reads what the client still sends for a
// moment, so that a client that is still sending (a body we refused)
// reads our answer instead of a reset.
func linger(c net.Conn) {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := c.(closeWriter); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c, 1<<20))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// validID accepts a request id as the hub makes them: 1..128 characters
// of [A-Za-z0-9:._-].
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ':' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// safe makes s printable ASCII of at most n characters for an error text.
func safe(s string, n int) string {
	b := make([]byte, 0, min(len(s), n))
	for i := 0; i < len(s) && len(b) < n; i++ {
		if c := s[i]; c >= 0x20 && c <= 0x7e {
			b = append(b, c)
		} else {
			b = append(b, '?')
		}
	}
	return string(b)
}

// warn logs a warning of kind at most once a minute.
func (s *Server) warn(kind, msg string, args ...any) {
	now := s.Now()
	if last, ok := s.logOnce.Load(kind); ok && now.Sub(last.(time.Time)) < time.Minute {
		return
	}
	s.logOnce.Store(kind, now)
	s.Log.Warn(msg, args...)
}

// bucket is a token bucket. Safe for concurrent use.
type bucket struct {
	mu          sync.Mutex
	rate, burst float64 // tokens per second, capacity
	tokens      float64
	last        time.Time
}

func (b *bucket) refill(now time.Time) {
	if !b.last.IsZero() {
		b.tokens = math.Min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
}

func (b *bucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// retryAfter is the whole seconds until a token is there.
func (b *bucket) retryAfter(now time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	if b.tokens >= 1 {
		return 1
	}
	return max(1, int(math.Ceil((1-b.tokens)/b.rate)))
}

// Usage is the text GET / answers.
const Usage = `clearance ask endpoint: say which destination this container needs and why,
before connecting, and wait for the operator's verdict.

  curl -s http://127.0.0.1:25452/ask -d dest=api.example.com -d port=443 -d reason='fetching deps'

POST /ask   fields (form or JSON): dest (a name or an IP address), port (1-65535),
            reason (what for, at most 256 characters), proto (tcp or udp, default tcp),
            wait (seconds to wait for the verdict, default 120)
GET /ask/ID the same request again (?wait=N)

Answers (JSON): 200 allowed, 403 denied, 202 pending (ask again with GET /ask/ID),
410 gone (expired), 4xx error, 429 too many requests (see Retry-After).
Your reason is shown to the operator as the container's claim.
`
