// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package bridge

import (
	"errors"
	"net"
	"sync"
)

// maxQueued bounds the bytes waiting to be written to one stream's local
// connection. A peer that reads slower than its hub writes loses that
// stream (it is closed, and a varlink client reconnects), never the other
// streams of the session, which share the transport.
const maxQueued = 8 << 20

// chunk is how much one read of a local connection sends.
const chunk = 32 << 10

// streams are the open streams of one session, each a local connection
// (a client's on the near side, a hub's on the far side) whose bytes are
// carried in D frames. Safe for concurrent use.
type streams struct {
	fw *frameWriter
	mu sync.Mutex
	m  map[uint32]*pipe
	wg sync.WaitGroup
}

func newStreams(fw *frameWriter) *streams {
	return &streams{fw: fw, m: map[uint32]*pipe{}}
}

// pipe is one stream.
type pipe struct {
	s    *streams
	id   uint32
	conn net.Conn

	mu      sync.Mutex
	queue   [][]byte
	queued  int
	closing bool // no more data will arrive; close after the queue drains
	gone    bool // torn down
	wake    chan struct{}
}

// attach carries conn on stream id until either side closes it. The
// session owns conn from now on.
func (s *streams) attach(id uint32, conn net.Conn) { s.open(id, conn, nil) }

// open is attach with announce run in between: after the stream is
// registered (so the peer's data for it is delivered, not dropped) and
// before conn is first read (so no D frame of the stream can precede
// what announce writes, the O frame that opens it on the far side). An
// announce error closes conn and unregisters the stream.
func (s *streams) open(id uint32, conn net.Conn, announce func() error) {
	p := &pipe{s: s, id: id, conn: conn, wake: make(chan struct{}, 1)}
	s.mu.Lock()
	if old := s.m[id]; old != nil {
		s.mu.Unlock()
		conn.Close()
		return
	}
	s.m[id] = p
	s.mu.Unlock()
	if announce != nil {
		if err := announce(); err != nil {
			s.mu.Lock()
			delete(s.m, id)
			s.mu.Unlock()
			conn.Close()
			return
		}
	}
	s.wg.Add(2)
	go p.readLoop()
	go p.writeLoop()
}

// deliver queues data for stream id's connection. Data for an unknown
// stream (closed meanwhile) is dropped.
func (s *streams) deliver(id uint32, data []byte) {
	s.mu.Lock()
	p := s.m[id]
	s.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.gone || p.closing {
		p.mu.Unlock()
		return
	}
	if p.queued+len(data) > maxQueued {
		p.mu.Unlock()
		p.teardown(true, "stream queue full: the reader is too slow")
		return
	}
	p.queue = append(p.queue, data)
	p.queued += len(data)
	p.mu.Unlock()
	p.signal()
}

// remoteClose ends stream id from the other side: what is queued is
// still written, then the connection closes.
func (s *streams) remoteClose(id uint32) {
	s.mu.Lock()
	p := s.m[id]
	s.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.signal()
}

// closeAll tears every stream down (the session ended) and waits for
// their goroutines.
func (s *streams) closeAll() {
	s.mu.Lock()
	ps := make([]*pipe, 0, len(s.m))
	for _, p := range s.m {
		ps = append(ps, p)
	}
	s.mu.Unlock()
	for _, p := range ps {
		p.teardown(false, "")
	}
	s.wg.Wait()
}

// count returns the number of open streams.
func (s *streams) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func (p *pipe) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// teardown closes the stream once; tell sends a C frame to the other side.
func (p *pipe) teardown(tell bool, why string) {
	p.mu.Lock()
	if p.gone {
		p.mu.Unlock()
		return
	}
	p.gone = true
	p.queue, p.queued = nil, 0
	p.mu.Unlock()
	p.s.mu.Lock()
	if p.s.m[p.id] == p {
		delete(p.s.m, p.id)
	}
	p.s.mu.Unlock()
	p.conn.Close()
	p.signal()
	if tell {
		p.s.fw.write(frameClose, p.id, []byte(why))
	}
}

func (p *pipe) readLoop() {
	defer p.s.wg.Done()
	buf := make([]byte, chunk)
	for {
		n, err := p.conn.Read(buf)
		if n > 0 {
			if werr := p.s.fw.write(frameData, p.id, buf[:n]); werr != nil {
				p.teardown(false, "")
				return
			}
		}
		if err != nil {
			why := ""
			if !errors.Is(err, net.ErrClosed) {
				why = "closed"
			}
			p.teardown(true, why)
			return
		}
	}
}

func (p *pipe) writeLoop() {
	defer p.s.wg.Done()
	for {
		p.mu.Lock()
		if p.gone {
			p.mu.Unlock()
			return
		}
		if len(p.queue) == 0 {
			if p.closing {
				p.mu.Unlock()
				p.teardown(false, "")
				return
			}
			p.mu.Unlock()
			<-p.wake
			continue
		}
		data := p.queue[0]
		p.queue[0] = nil
		p.queue = p.queue[1:]
		p.queued -= len(data)
		p.mu.Unlock()
		if _, err := p.conn.Write(data); err != nil {
			p.teardown(true, "write: "+err.Error())
			return
		}
	}
}
