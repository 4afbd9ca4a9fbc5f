// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

var (
	errTimeout = errors.New("no answer in time")
	errStopped = errors.New("forwarder stopped")
)

// upstream sends queries to the resolvers and matches their replies.
type upstream struct {
	f       *Forwarder
	servers []netip.AddrPort // unmapped, no zone

	mu      sync.Mutex
	pending map[uint16]*pendingQuery // UDP attempts waiting, by upstream id
	stopped bool                     // abortAll ran: no more async attempts

	pref atomic.Uint32 // index of the server asked first
}

// pendingQuery is one UDP attempt waiting for its reply: an attempt of
// exchange, on a goroutine waiting on ch, or of exchangeAsync, whose cb
// the winner of the attempt calls (the reader with the reply, the timer,
// or abortAll). Whoever removes it from pending first is the winner.
type pendingQuery struct {
	id     uint16
	server netip.AddrPort
	q      *query
	ch     chan []byte // capacity 1: the reader never blocks
	cb     func(resp []byte, err error)
	timer  *time.Timer // of an async attempt
}

func newUpstream(f *Forwarder) *upstream {
	u := &upstream{f: f, pending: make(map[uint16]*pendingQuery)}
	for _, s := range f.cfg.Upstream.Servers {
		u.servers = append(u.servers, plainAddrPort(s))
	}
	return u
}

func plainAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// exchange sends q upstream and returns the reply, its id not yet
// rewritten: over TCP when the client used TCP and DialTCP is set, over
// UDP otherwise, attempts going to the servers in turn.
func (u *upstream) exchange(ctx context.Context, q *query) ([]byte, error) {
	f := u.f
	f.st.forwarded.Add(1)
	n := len(u.servers)
	start := int(u.pref.Load()) % n
	var err error
	for i := 0; i < f.cfg.Upstream.Attempts; i++ {
		idx := (start + i) % n
		s := u.servers[idx]
		var resp []byte
		if q.tcp && f.cfg.Upstream.DialTCP != nil {
			resp, err = u.exchangeTCP(ctx, q, s)
		} else {
			resp, err = u.exchangeUDP(ctx, q, s)
		}
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		f.st.upstreamTimeouts.Add(1)
		f.log.Debug("upstream attempt", "server", s, "name", q.name, "err", err)
		u.pref.CompareAndSwap(uint32(idx), uint32((idx+1)%n))
	}
	f.st.upstreamFailures.Add(1)
	return nil, fmt.Errorf("ask upstream for %q: %d attempts: %w", q.name, f.cfg.Upstream.Attempts, err)
}

func (u *upstream) conn(s netip.AddrPort) net.PacketConn {
	if s.Addr().Is4() {
		return u.f.cfg.Upstream.UDP4
	}
	return u.f.cfg.Upstream.UDP6
}

func (u *upstream) exchangeUDP(ctx context.Context, q *query, s netip.AddrPort) ([]byte, error) {
	pq := &pendingQuery{server: s, q: q, ch: make(chan []byte, 1)}
	u.register(pq)
	defer u.unregister(pq)
	setID(q.wire, pq.id)
	if err := u.send(q.wire, s); err != nil {
		return nil, err
	}
	t := time.NewTimer(u.f.cfg.Upstream.AttemptTimeout)
	defer t.Stop()
	select {
	case resp := <-pq.ch:
		return resp, nil
	case <-t.C:
		return nil, fmt.Errorf("ask %s: %w", s, errTimeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// register gives pq a fresh random id no other pending attempt uses.
func (u *upstream) register(pq *pendingQuery) {
	var b [2]byte
	for {
		rand.Read(b[:])
		id := binary.BigEndian.Uint16(b[:])
		u.mu.Lock()
		if _, taken := u.pending[id]; !taken {
			pq.id = id
			u.pending[id] = pq
			u.mu.Unlock()
			return
		}
		u.mu.Unlock()
	}
}

func (u *upstream) unregister(pq *pendingQuery) {
	u.take(pq)
}

// take removes pq from pending and reports whether it was there: the
// caller won the attempt.
func (u *upstream) take(pq *pendingQuery) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pending[pq.id] == pq {
		delete(u.pending, pq.id)
		return true
	}
	return false
}

// exchangeAsync is exchange for a query over UDP without a goroutine
// waiting for it: each attempt is sent from the calling goroutine (or the
// goroutine of the attempt before), and done is called exactly once, with
// the reply (its id not rewritten) or an error, on the goroutine that
// settled it: the upstream reader's with the reply, an attempt timer's,
// or Run's when it stops (errStopped). It spares the query path two
// goroutine hand-offs, each a thread wake-up on a VM.
func (u *upstream) exchangeAsync(q *query, done func([]byte, error)) {
	f := u.f
	f.st.forwarded.Add(1)
	n := len(u.servers)
	start := int(u.pref.Load()) % n
	var attempt func(i int, lastErr error)
	attempt = func(i int, lastErr error) {
		if i == f.cfg.Upstream.Attempts {
			f.st.upstreamFailures.Add(1)
			done(nil, fmt.Errorf("ask upstream for %q: %d attempts: %w", q.name, f.cfg.Upstream.Attempts, lastErr))
			return
		}
		idx := (start + i) % n
		s := u.servers[idx]
		failed := func(err error) {
			f.st.upstreamTimeouts.Add(1)
			f.log.Debug("upstream attempt", "server", s, "name", q.name, "err", err)
			u.pref.CompareAndSwap(uint32(idx), uint32((idx+1)%n))
			attempt(i+1, err)
		}
		pq := &pendingQuery{server: s, q: q}
		pq.cb = func(resp []byte, err error) {
			switch {
			case errors.Is(err, errStopped):
				done(nil, err)
			case err != nil:
				failed(err)
			default:
				done(resp, nil)
			}
		}
		wire := u.registerAsync(pq)
		if wire == nil {
			done(nil, errStopped)
			return
		}
		if err := u.send(wire, s); err != nil {
			if u.take(pq) {
				pq.timer.Stop()
				failed(err)
			}
		}
	}
	attempt(0, nil)
}

// registerAsync registers pq with a fresh id and starts its attempt
// timer, both under u.mu (so whoever wins pq sees its timer), and returns
// the query to send: a copy of q.wire with the id, its own, since the
// timer may start the next attempt while this one is being sent. It
// returns nil once abortAll ran.
func (u *upstream) registerAsync(pq *pendingQuery) []byte {
	var b [2]byte
	wire := bytes.Clone(pq.q.wire)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopped {
		return nil
	}
	for {
		rand.Read(b[:])
		id := binary.BigEndian.Uint16(b[:])
		if _, taken := u.pending[id]; !taken {
			pq.id = id
			u.pending[id] = pq
			break
		}
	}
	pq.timer = time.AfterFunc(u.f.cfg.Upstream.AttemptTimeout, func() {
		if u.take(pq) {
			pq.cb(nil, fmt.Errorf("ask %s: %w", pq.server, errTimeout))
		}
	})
	return setID(wire, pq.id)
}

// abortAll settles every async attempt still pending with errStopped, and
// every later one at once: Run calls it when it stops, so that no timer
// outlives it.
func (u *upstream) abortAll() {
	u.mu.Lock()
	u.stopped = true
	var aborted []*pendingQuery
	for id, pq := range u.pending {
		if pq.cb != nil {
			delete(u.pending, id)
			aborted = append(aborted, pq)
		}
	}
	u.mu.Unlock()
	for _, pq := range aborted {
		pq.timer.Stop()
		pq.cb(nil, errStopped)
	}
}

// send writes msg to s from the upstream socket of its family.
func (u *upstream) send(msg []byte, s netip.AddrPort) error {
	pc := u.conn(s)
	var err error
	if uc, ok := pc.(*net.UDPConn); ok {
		_, err = uc.WriteToUDPAddrPort(msg, s)
	} else {
		_, err = pc.WriteTo(msg, net.UDPAddrFromAddrPort(s))
	}
	if err != nil {
		return fmt.Errorf("send query to %s: %w", s, err)
	}
	return nil
}

// read receives replies on an upstream socket until it is closed.
func (u *upstream) read(ctx context.Context, pc net.PacketConn) error {
	buf := make([]byte, 65535)
	uc, _ := pc.(*net.UDPConn)
	var backoff time.Duration
	for {
		var (
			n   int
			src netip.AddrPort
			err error
		)
		if uc != nil {
			n, src, err = uc.ReadFromUDPAddrPort(buf)
		} else {
			var a net.Addr
			n, a, err = pc.ReadFrom(buf)
			src = addrPortOf(a)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("read upstream answers on %s: %w", pc.LocalAddr(), err)
			}
			u.f.logUpstream.warn(u.f, "read upstream answers", "local", pc.LocalAddr(), "err", err)
			if backoff = nextBackoff(backoff); !sleep(ctx, backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		u.deliver(buf[:n], plainAddrPort(src))
	}
}

// deliver hands msg to the attempt it answers: same id, same server, same
// question. Anything else is counted as spoofed and dropped.
func (u *upstream) deliver(msg []byte, src netip.AddrPort) {
	if len(msg) < 12 || len(msg) > MaxUDPSize {
		// Longer than any client may ask for (the size sent upstream is
		// clamped): no resolver sends it, and it would not be bounded.
		u.f.st.spoofed.Add(1)
		return
	}
	id := binary.BigEndian.Uint16(msg)
	u.mu.Lock()
	pq := u.pending[id]
	u.mu.Unlock()
	if pq == nil || pq.server != src || !matchReply(msg, id, pq.q) {
		u.f.st.spoofed.Add(1)
		return
	}
	u.mu.Lock()
	if u.pending[id] == pq {
		delete(u.pending, id)
	} else {
		pq = nil // answered already
	}
	u.mu.Unlock()
	if pq == nil {
		u.f.st.spoofed.Add(1)
		return
	}
	if pq.cb != nil {
		pq.timer.Stop()
		pq.cb(bytes.Clone(msg), nil)
		return
	}
	pq.ch <- bytes.Clone(msg)
}

func (u *upstream) exchangeTCP(ctx context.Context, q *query, s netip.AddrPort) ([]byte, error) {
	f := u.f
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Upstream.AttemptTimeout)
	defer cancel()
	c, err := f.cfg.Upstream.DialTCP(ctx, s)
	if err != nil {
		// No TCP socket (the pool may be empty): UDP still may do.
		f.log.Debug("dial upstream tcp, asking over udp", "server", s, "err", err)
		return u.exchangeUDP(ctx, q, s)
	}
	defer c.Close()
	f.st.upstreamTCP.Add(1)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	var b [2]byte
	rand.Read(b[:])
	id := binary.BigEndian.Uint16(b[:])
	setID(q.wire, id)
	out := make([]byte, 2+len(q.wire))
	binary.BigEndian.PutUint16(out, uint16(len(q.wire)))
	copy(out[2:], q.wire)
	if _, err := c.Write(out); err != nil {
		return nil, fmt.Errorf("send query to %s over tcp: %w", s, err)
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return nil, fmt.Errorf("read answer from %s over tcp: %w", s, err)
	}
	resp := make([]byte, binary.BigEndian.Uint16(b[:]))
	if _, err := io.ReadFull(c, resp); err != nil {
		return nil, fmt.Errorf("read answer from %s over tcp: %w", s, err)
	}
	if !matchReply(resp, id, q) {
		f.st.spoofed.Add(1)
		return nil, fmt.Errorf("read answer from %s over tcp: %w", s, errMalformed)
	}
	return resp, nil
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func nextBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return 5 * time.Millisecond
	}
	return min(2*d, time.Second)
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
