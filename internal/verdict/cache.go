// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"sync"
	"time"

	"github.com/terok-ai/clearance/internal/netns"
)

// cacheIdle is how long an unused firewall connection is kept.
const cacheIdle = 10 * time.Second

// maxCached bounds the cached connections: each holds a file descriptor
// and pins a namespace, and a service shared by every user must not let
// one user's namespaces exhaust its descriptors. Beyond it, connections
// are opened per call and closed after it.
const maxCached = 128

// fwCache keeps one open firewall per network namespace while calls keep
// coming. Closing an nfnetlink socket that deleted set elements waits for
// an RCU grace period in the kernel while holding the namespace's nftables
// commit lock (15–25 ms on a 2-vCPU VM), so opening and closing one per
// call would make every verdict after the first replacement that slow.
//
// A cached connection pins its namespace, so it is closed after cacheIdle
// without use, and all are closed by [fwCache.closeAll]. The kernel never
// reuses a namespace's identity while it is pinned, so the key stays
// unambiguous. Safe for concurrent use.
type fwCache struct {
	mu sync.Mutex
	m  map[netns.ID]*cached
	wg sync.WaitGroup // closes in progress
}

type cached struct {
	fw    Firewall
	refs  int
	used  time.Time
	timer *time.Timer
	dead  bool // invalidated: close when refs drops to 0
}

// get returns the firewall of id, opening it with open when not cached,
// and a release func the caller must call when done.
func (c *fwCache) get(id netns.ID, open func() (Firewall, error)) (Firewall, func(), error) {
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[netns.ID]*cached)
	}
	e, ok := c.m[id]
	if !ok {
		c.mu.Unlock()
		fw, err := open()
		if err != nil {
			return nil, nil, err
		}
		c.mu.Lock()
		if e, ok = c.m[id]; ok { // lost a race: keep the other one
			c.closeLater(fw)
		} else if len(c.m) >= maxCached {
			c.mu.Unlock()
			return fw, func() {
				c.mu.Lock()
				defer c.mu.Unlock()
				c.closeLater(fw)
			}, nil
		} else {
			e = &cached{fw: fw}
			c.m[id] = e
		}
	}
	e.refs++
	c.mu.Unlock()
	return e.fw, func() { c.put(id, e) }, nil
}

func (c *fwCache) put(id netns.ID, e *cached) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	e.used = time.Now()
	if e.refs > 0 {
		return
	}
	if e.dead {
		c.closeLater(e.fw)
		return
	}
	if e.timer == nil {
		e.timer = time.AfterFunc(cacheIdle, func() { c.expire(id, e) })
	} else {
		e.timer.Reset(cacheIdle)
	}
}

func (c *fwCache) expire(id netns.ID, e *cached) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[id] != e || e.refs > 0 || time.Since(e.used) < cacheIdle {
		return
	}
	delete(c.m, id)
	c.closeLater(e.fw)
}

// invalidate drops id's firewall (after an error that may have left its
// connection unusable); it is closed once its current users are done.
func (c *fwCache) invalidate(id netns.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	if !ok {
		return
	}
	delete(c.m, id)
	if e.timer != nil {
		e.timer.Stop()
	}
	e.dead = true
	if e.refs == 0 {
		c.closeLater(e.fw)
	}
}

// closeLater closes fw in the background; c.mu is held.
func (c *fwCache) closeLater(fw Firewall) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fw.Close()
	}()
}

// closeAll closes every cached firewall and waits for all closes. The
// cache must not be in use.
func (c *fwCache) closeAll() {
	c.mu.Lock()
	for id, e := range c.m {
		if e.timer != nil {
			e.timer.Stop()
		}
		delete(c.m, id)
		c.closeLater(e.fw)
	}
	c.mu.Unlock()
	c.wg.Wait()
}
