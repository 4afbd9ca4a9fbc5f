// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// tcpWriteTimeout bounds one reply written to a TCP client; a client that
// does not read loses its connection.
const tcpWriteTimeout = 5 * time.Second

// peer is where a UDP query came from.
type peer struct {
	ap netip.AddrPort // for a *net.UDPConn
	a  net.Addr       // otherwise
}

// serveUDP answers the queries arriving on pc until it is closed.
func (f *Forwarder) serveUDP(ctx context.Context, pc net.PacketConn) error {
	buf := make([]byte, 65535)
	uc, _ := pc.(*net.UDPConn)
	var backoff time.Duration
	for {
		var (
			n   int
			src peer
			err error
		)
		if uc != nil {
			n, src.ap, err = uc.ReadFromUDPAddrPort(buf)
		} else {
			n, src.a, err = pc.ReadFrom(buf)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("serve dns on udp %s: %w", pc.LocalAddr(), err)
			}
			f.logServe.warn(f, "read dns query", "local", pc.LocalAddr(), "err", err)
			if backoff = nextBackoff(backoff); !sleep(ctx, backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		f.st.queriesUDP.Add(1)
		q, reply := f.admit(buf[:n], false)
		if reply != nil {
			f.sendUDP(pc, uc, src, reply)
			continue
		}
		if q == nil {
			continue
		}
		if q.hit == nil {
			f.resolveUDP(ctx, q, func(r []byte) { f.sendUDP(pc, uc, src, r) })
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			if r := f.resolve(ctx, q); r != nil {
				f.sendUDP(pc, uc, src, r)
			}
		}()
	}
}

func (f *Forwarder) sendUDP(pc net.PacketConn, uc *net.UDPConn, to peer, msg []byte) {
	f.st.answers.Add(1) // before: the client may read it before a count after
	var err error
	if uc != nil {
		_, err = uc.WriteToUDPAddrPort(msg, to.ap)
	} else {
		_, err = pc.WriteTo(msg, to.a)
	}
	if err != nil {
		f.log.Debug("send dns reply", "err", err)
	}
}

// serveTCP accepts client connections on ln until it is closed.
func (f *Forwarder) serveTCP(ctx context.Context, ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("serve dns on tcp %s: %w", ln.Addr(), err)
			}
			// EMFILE and the like: wait for a connection to go away.
			f.logServe.warn(f, "accept dns connection", "local", ln.Addr(), "err", err)
			if backoff = nextBackoff(backoff); !sleep(ctx, backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		select {
		case f.tcpSlots <- struct{}{}:
		default:
			f.st.refused.Add(1)
			c.Close()
			continue
		}
		f.st.tcpConns.Add(1)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.serveConn(ctx, c)
			f.st.tcpConns.Add(-1)
			<-f.tcpSlots
		}()
	}
}

// serveConn answers the length-prefixed queries of one TCP client,
// several at once, until the client closes, idles, sends something
// unparseable or ctx ends. It closes c.
func (f *Forwarder) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var (
		wmu      sync.Mutex
		handlers sync.WaitGroup
		pipeline = make(chan struct{}, f.cfg.MaxTCPPipeline)
	)
	// Replies still due go out before the connection closes: a client may
	// send its queries and then close its writing half.
	defer handlers.Wait()
	write := func(msg []byte) {
		b := make([]byte, 2+len(msg))
		binary.BigEndian.PutUint16(b, uint16(len(msg)))
		copy(b[2:], msg)
		wmu.Lock()
		defer wmu.Unlock()
		f.st.answers.Add(1)
		c.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
		if _, err := c.Write(b); err != nil {
			c.Close()
		}
	}
	var lenBuf [2]byte
	for {
		c.SetReadDeadline(time.Now().Add(f.cfg.TCPIdleTimeout))
		if n, err := io.ReadFull(c, lenBuf[:]); err != nil {
			var ne net.Error
			if n == 0 && errors.As(err, &ne) && ne.Timeout() && len(pipeline) > 0 && ctx.Err() == nil {
				continue // not idle: answers are still due
			}
			return
		}
		l := int(binary.BigEndian.Uint16(lenBuf[:]))
		if l > MaxQuerySize {
			f.st.queriesTCP.Add(1)
			f.st.malformed.Add(1)
			return
		}
		msg := make([]byte, l)
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		f.st.queriesTCP.Add(1)
		select {
		case pipeline <- struct{}{}:
		case <-ctx.Done():
			return
		}
		q, reply := f.admit(msg, true)
		if q == nil {
			<-pipeline
			if reply == nil {
				return // unparseable: the stream cannot be trusted further
			}
			write(reply)
			continue
		}
		handlers.Add(1)
		go func() {
			defer handlers.Done()
			defer func() { <-pipeline }()
			if r := f.resolve(ctx, q); r != nil {
				write(r)
			}
		}()
	}
}
