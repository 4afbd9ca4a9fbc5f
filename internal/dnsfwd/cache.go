// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"encoding/binary"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Bounds of the answer cache.
const (
	// DefaultCacheEntries is how many answers the cache keeps by default.
	DefaultCacheEntries = 1024
	// MaxCacheBytes bounds the bytes of all cached answers together.
	MaxCacheBytes = 1 << 20
	// MaxCacheAnswer is the largest answer cached; a longer one (over
	// TCP) is forwarded each time.
	MaxCacheAnswer = MaxUDPSize
	// NegativeCacheTTL caps how long a negative answer (NXDOMAIN, or
	// NOERROR without an answer record) is cached.
	NegativeCacheTTL = 30 * time.Second
	// maxCacheTTL caps how long any answer is cached, whatever its TTL.
	maxCacheTTL = 24 * time.Hour
)

// Key flag bits: what of the query, besides its question, changes the
// answer.
const (
	keyRD   = 1 << iota // recursion desired
	keyCD               // checking disabled (DNSSEC validation off)
	keyAD               // the client asked for the AD bit
	keyEDNS             // the query carried an OPT record
	keyDO               // DNSSEC OK
)

// cacheKey is what a cached answer answers: the question, its name
// canonical (so 0x20 case variants share an entry), and the query's flags.
type cacheKey struct {
	name   string
	qtype  dnsmessage.Type
	qclass dnsmessage.Class
	flags  uint8
}

// cacheEntry is one upstream answer, kept as received.
type cacheEntry struct {
	key cacheKey
	// msg is the upstream's reply, never modified: a hit copies it.
	msg []byte
	// ttls are the offsets of the TTL field of every record but OPT
	// (whose TTL field holds EDNS flags), to decrement on a hit.
	ttls []uint16
	// ans is msg parsed; shared by hits, read only.
	ans    *answer
	stored time.Time // when it arrived
	// expires is stored plus the smallest TTL of its records (capped):
	// no record of it is served at or after it.
	expires time.Time
	lruLink[cacheEntry]
}

// answerCache is a bounded LRU cache of upstream answers, one per
// forwarder (so per container). Safe for concurrent use.
type answerCache struct {
	mu    sync.Mutex
	max   int
	bytes int
	m     map[cacheKey]*cacheEntry
	lru   lruList[cacheEntry, *cacheEntry] // most recent first
}

func newAnswerCache(max int) *answerCache {
	return &answerCache{max: max, m: make(map[cacheKey]*cacheEntry)}
}

func (c *answerCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// keyOf returns the cache key of q, and false when q's answers are not
// cached: a query whose OPT carries options (cookies, client subnet and
// the like belong to one exchange).
func cacheKeyOf(q *query) (cacheKey, bool) {
	k := cacheKey{name: q.name, qtype: q.question.Type, qclass: q.question.Class}
	if q.rd {
		k.flags |= keyRD
	}
	if q.cd {
		k.flags |= keyCD
	}
	if q.ad {
		k.flags |= keyAD
	}
	if q.opt != nil {
		if len(q.opt.Body.(*dnsmessage.OPTResource).Options) > 0 {
			return cacheKey{}, false
		}
		k.flags |= keyEDNS
		if q.opt.Header.DNSSECAllowed() {
			k.flags |= keyDO
		}
	}
	return k, true
}

// hit is a cached answer made ready for one query: the reply bytes (id,
// question case and TTLs rewritten) and the parsed answer with its
// addresses' TTLs decremented.
type hit struct {
	resp []byte
	ans  *answer
}

// lookup returns the cached answer to q at now, ready to send, or nil.
// maxSize bounds the reply (a UDP client's payload size); an answer
// longer than that is not served from the cache.
func (c *answerCache) lookup(q *query, now time.Time, maxSize int) *hit {
	if c == nil {
		return nil
	}
	k, ok := cacheKeyOf(q)
	if !ok {
		return nil
	}
	c.mu.Lock()
	e := c.m[k]
	if e == nil {
		c.mu.Unlock()
		return nil
	}
	if !now.Before(e.expires) || now.Before(e.stored) {
		// Expired, or the clock went back: never serve past a TTL.
		c.remove(e)
		c.mu.Unlock()
		return nil
	}
	c.lru.moveToFront(e)
	c.mu.Unlock()
	// e.msg, e.ttls and e.ans are never modified: no lock needed.
	if len(e.msg) > maxSize {
		return nil
	}
	// Whole seconds elapsed, rounded up: a TTL served is never longer
	// than what is left of it.
	el := now.Sub(e.stored)
	elapsed := uint32((el + time.Second - 1) / time.Second)
	resp := make([]byte, len(e.msg))
	copy(resp, e.msg)
	if !copyQuestionCase(resp, &q.question.Name) {
		return nil
	}
	binary.BigEndian.PutUint16(resp, q.id)
	for _, off := range e.ttls {
		ttl := binary.BigEndian.Uint32(resp[off:])
		binary.BigEndian.PutUint32(resp[off:], ttl-min(ttl, elapsed))
	}
	a := *e.ans
	a.addrs = make([]addrTTL, len(e.ans.addrs))
	for i, r := range e.ans.addrs {
		a.addrs[i] = addrTTL{r.addr, r.ttl - min(r.ttl, elapsed)}
	}
	return &hit{resp: resp, ans: &a}
}

// store caches resp, q's upstream answer parsed as a, received at now.
// Only NOERROR and NXDOMAIN answers that are not truncated and whose
// records all have a TTL are kept; negative ones for at most
// NegativeCacheTTL.
func (c *answerCache) store(q *query, resp []byte, a *answer, now time.Time) {
	if c == nil || a.tc || len(resp) > MaxCacheAnswer || len(resp) < 12 {
		return
	}
	if a.rcode != dnsmessage.RCodeSuccess && a.rcode != dnsmessage.RCodeNameError {
		return
	}
	k, ok := cacheKeyOf(q)
	if !ok {
		return
	}
	ttls, minTTL, answers, ok := recordTTLs(resp)
	if !ok || len(ttls) == 0 {
		return // no record gives a TTL to keep it by
	}
	life := min(time.Duration(minTTL)*time.Second, maxCacheTTL)
	if a.rcode == dnsmessage.RCodeNameError || answers == 0 {
		life = min(life, NegativeCacheTTL)
	}
	if life <= 0 {
		return
	}
	e := &cacheEntry{key: k, msg: resp, ttls: ttls, ans: a, stored: now, expires: now.Add(life)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[k]; old != nil {
		c.remove(old)
	}
	c.m[k] = e
	c.bytes += len(e.msg)
	c.lru.pushFront(e)
	for len(c.m) > c.max || c.bytes > MaxCacheBytes {
		c.remove(c.lru.tail)
	}
}

// flush drops every entry.
func (c *answerCache) flush() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = make(map[cacheKey]*cacheEntry)
	c.lru, c.bytes = lruList[cacheEntry, *cacheEntry]{}, 0
}

// remove forgets e. The caller holds c.mu.
func (c *answerCache) remove(e *cacheEntry) {
	delete(c.m, e.key)
	c.bytes -= len(e.msg)
	c.lru.unlink(e)
}

// recordTTLs walks a DNS message and returns the offsets of the TTL field
// of every record but OPT, the smallest of those TTLs and how many
// records the answer section has. ok is false for a message that does not
// walk to its end exactly (the caller has parsed it with dnsmessage
// already; this is the second look that finds the offsets, and bounds
// every read on its own).
func recordTTLs(msg []byte) (offs []uint16, minTTL uint32, answers int, ok bool) {
	if len(msg) < 12 || len(msg) > 0xffff {
		return nil, 0, 0, false
	}
	qd := int(binary.BigEndian.Uint16(msg[4:]))
	an := int(binary.BigEndian.Uint16(msg[6:]))
	ns := int(binary.BigEndian.Uint16(msg[8:]))
	ar := int(binary.BigEndian.Uint16(msg[10:]))
	off := 12
	for range qd {
		if off = skipName(msg, off); off < 0 || off+4 > len(msg) {
			return nil, 0, 0, false
		}
		off += 4
	}
	minTTL = ^uint32(0)
	for i := range an + ns + ar {
		if off = skipName(msg, off); off < 0 || off+10 > len(msg) {
			return nil, 0, 0, false
		}
		typ := dnsmessage.Type(binary.BigEndian.Uint16(msg[off:]))
		rdlen := int(binary.BigEndian.Uint16(msg[off+8:]))
		if typ != dnsmessage.TypeOPT || i < an+ns {
			ttl := binary.BigEndian.Uint32(msg[off+4:])
			minTTL = min(minTTL, ttl)
			offs = append(offs, uint16(off+4))
		}
		off += 10 + rdlen
		if off > len(msg) {
			return nil, 0, 0, false
		}
	}
	if off != len(msg) {
		return nil, 0, 0, false
	}
	if len(offs) == 0 {
		minTTL = 0
	}
	return offs, minTTL, an, true
}

// skipName returns the offset after the name at off, or -1. A
// compression pointer ends a name; it is not followed.
func skipName(msg []byte, off int) int {
	for labels := 0; labels <= 128; labels++ {
		if off >= len(msg) {
			return -1
		}
		l := int(msg[off])
		switch l & 0xc0 {
		case 0x00:
			if l == 0 {
				return off + 1
			}
			off += 1 + l
		case 0xc0:
			if off+2 > len(msg) {
				return -1
			}
			return off + 2
		default:
			return -1
		}
	}
	return -1
}

// copyQuestionCase writes the letters of name (the client's question, in
// the client's case) over the question name of msg, which must be the
// same name but for ASCII case. It reports false when it is not.
func copyQuestionCase(msg []byte, name *dnsmessage.Name) bool {
	if len(msg) < 12 || binary.BigEndian.Uint16(msg[4:]) != 1 {
		return false
	}
	data := name.Data[:name.Length]
	off, i := 12, 0
	for {
		if off >= len(msg) {
			return false
		}
		l := int(msg[off])
		if l == 0 {
			// The root ends both: data is "." or ends with its last dot.
			return i == len(data) || (i == 0 && len(data) == 1 && data[0] == '.')
		}
		if l&0xc0 != 0 || off+1+l > len(msg) || i+l > len(data) {
			return false
		}
		for j := range l {
			if lower(msg[off+1+j]) != lower(data[i+j]) {
				return false
			}
			msg[off+1+j] = data[i+j]
		}
		i += l
		if i >= len(data) || data[i] != '.' {
			return false
		}
		i++
		off += 1 + l
	}
}
