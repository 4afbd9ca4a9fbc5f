// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"bytes"
	"context"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// admit validates a client message and decides what to do with it: drop
// it (nil, nil), reply at once (nil, reply: FORMERR, NOTIMP, a denied
// name, REFUSED under overload, or an answer from the cache whose
// addresses the firewall has), or resolve it (q, nil). When it returns a
// query, it holds an in-flight slot that [Forwarder.resolve] releases.
func (f *Forwarder) admit(msg []byte, tcp bool) (*query, []byte) {
	q, reply := parseQuery(msg)
	if q == nil {
		f.st.malformed.Add(1)
		return nil, reply
	}
	q.tcp = tcp
	if f.cfg.Policy != nil {
		q.pre = f.cfg.Policy.Decide([]string{q.name})
		if q.pre.Deny {
			f.reportDenied(q, q.pre.DenyBy)
			if f.cfg.DenyMode != DenyPassAndDrop {
				return nil, f.denyReply(q, nil)
			}
		}
	}
	if h := f.cache.lookup(q, f.now(), maxReply(q)); h != nil {
		f.st.cacheHits.Add(1)
		// The policy is decided again and the addresses gated as for an
		// upstream answer; only an answer that need not wait for Learn
		// goes out from here, on the serving goroutine.
		r, held := f.finish(context.Background(), q, h.resp, h.ans, time.Now(), true)
		if held == nil {
			return nil, r
		}
		q.hit, q.held = h, held
		if !f.takeSlot() {
			return nil, replyFor(q, nil, dnsmessage.RCodeRefused)
		}
		return q, nil // upstream is not asked: no rate token
	}
	if !f.takeSlot() {
		return nil, replyFor(q, nil, dnsmessage.RCodeRefused)
	}
	if !f.limiter.allow() {
		<-f.inflight
		f.st.refused.Add(1)
		return nil, replyFor(q, nil, dnsmessage.RCodeRefused)
	}
	return q, nil
}

// takeSlot takes an in-flight slot, or counts a refusal.
func (f *Forwarder) takeSlot() bool {
	select {
	case f.inflight <- struct{}{}:
	default:
		f.st.refused.Add(1)
		return false
	}
	if n := int64(len(f.inflight)); n > f.st.inflightPeak.Load() {
		// A lost race only under-reports the peak by a little.
		f.st.inflightPeak.Store(n)
	}
	return true
}

// maxReply is the longest reply q's client takes: its EDNS payload size
// over UDP (512 without EDNS), 64 KiB over TCP.
func maxReply(q *query) int {
	switch {
	case q.tcp:
		return 0xffff
	case q.opt != nil:
		return max(512, int(q.opt.Header.Class))
	}
	return 512
}

// resolve asks upstream for q (or takes its cached answer), applies the
// policy to the answer and returns the reply for the client, or nil when
// ctx ended first. It releases q's in-flight slot.
func (f *Forwarder) resolve(ctx context.Context, q *query) []byte {
	defer func() { <-f.inflight }()
	if h := q.hit; h != nil {
		return f.hold(ctx, q, h.resp, h.ans, time.Now(), q.held)
	}
	resp, err := f.exchange(ctx, q)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		f.logUpstream.warn(f, "no upstream answer, sent SERVFAIL", "name", q.name, "err", err)
		return replyFor(q, nil, dnsmessage.RCodeServerFailure)
	}
	arrived := time.Now()
	a, err := parseAnswer(resp, q)
	if err != nil {
		f.st.malformed.Add(1)
		f.logMalformed.warn(f, "reject upstream answer, sent SERVFAIL", "name", q.name, "err", err)
		return replyFor(q, nil, dnsmessage.RCodeServerFailure)
	}
	// Whatever the policy says now: it is decided again on every hit.
	f.cache.store(q, bytes.Clone(resp), a, f.now())
	r, _ := f.finish(ctx, q, resp, a, arrived, false)
	return r
}

// resolveUDP is resolve for a query over UDP, without a goroutine of its
// own while upstream is asked ([upstream.exchangeAsync]): reply is called
// at most once, with the reply, on the goroutine that received upstream's
// answer unless the answer must wait for Learn (then on a goroutine of its
// own). It releases q's in-flight slot. A query answered from the cache
// that must wait for Learn goes through resolve instead.
func (f *Forwarder) resolveUDP(ctx context.Context, q *query, reply func([]byte)) {
	f.wg.Add(1)
	f.up.exchangeAsync(q, func(resp []byte, err error) {
		if ctx.Err() != nil {
			<-f.inflight
			f.wg.Done()
			return
		}
		if err != nil {
			f.logUpstream.warn(f, "no upstream answer, sent SERVFAIL", "name", q.name, "err", err)
			<-f.inflight
			f.wg.Done()
			reply(replyFor(q, nil, dnsmessage.RCodeServerFailure))
			return
		}
		arrived := time.Now()
		a, err := parseAnswer(resp, q)
		if err != nil {
			f.st.malformed.Add(1)
			f.logMalformed.warn(f, "reject upstream answer, sent SERVFAIL", "name", q.name, "err", err)
			<-f.inflight
			f.wg.Done()
			reply(replyFor(q, nil, dnsmessage.RCodeServerFailure))
			return
		}
		f.cache.store(q, bytes.Clone(resp), a, f.now())
		r, held := f.finish(ctx, q, resp, a, arrived, true)
		if held == nil {
			<-f.inflight
			f.wg.Done()
			reply(r)
			return
		}
		go func() {
			defer f.wg.Done()
			r := f.hold(ctx, q, resp, a, arrived, held)
			<-f.inflight
			if r != nil {
				reply(r)
			}
		}()
	})
}

// finish applies the policy to a, the answer resp carries for q, and
// returns the reply for the client (resp with q's id, or a made-up one),
// nil when ctx ended first. With nowait, when the answer must wait for
// Learn, it returns the elements to wait for instead, having changed
// nothing but queued refreshes: the caller passes them to
// [Forwarder.hold] where it may block.
func (f *Forwarder) finish(ctx context.Context, q *query, resp []byte, a *answer, arrived time.Time, nowait bool) ([]byte, []Element) {
	d := q.pre
	if f.cfg.Policy != nil && len(a.chain) > 1 {
		d = f.cfg.Policy.Decide(a.chain)
	}
	switch {
	case d.Deny:
		if !q.pre.Deny {
			f.reportDenied(q, d.DenyBy)
		}
		if f.cfg.DenyMode != DenyPassAndDrop {
			return f.denyReply(q, a.opt), nil
		}
	case len(d.Allow) > 0 && len(a.addrs) > 0:
		if els := f.elements(q, a, d.Allow, f.now()); len(els) > 0 {
			if !nowait {
				return f.hold(ctx, q, resp, a, arrived, els), nil
			}
			if _, blocked := f.gate(ctx, q, els, arrived, true); blocked {
				return nil, els
			}
		}
	}
	return f.release(q, resp, a), nil
}

// hold waits until the kernel has els (see gate) and returns the reply
// for q: resp, SERVFAIL when that failed, nil when ctx ended first.
func (f *Forwarder) hold(ctx context.Context, q *query, resp []byte, a *answer, arrived time.Time, els []Element) []byte {
	if ok, _ := f.gate(ctx, q, els, arrived, false); !ok {
		if ctx.Err() != nil {
			return nil
		}
		return replyFor(q, a.opt, dnsmessage.RCodeServerFailure)
	}
	return f.release(q, resp, a)
}

// release returns resp, the answer a, as q's reply, remembering its names.
func (f *Forwarder) release(q *query, resp []byte, a *answer) []byte {
	if a.rcode == dnsmessage.RCodeSuccess {
		f.names.observe(q.name, a.addrs, f.now(), f.ttl)
	}
	return setID(resp, q.id)
}

// ttl is how long an address of an answer with DNS TTL secs is learned
// and remembered: max(TTL, MinTTL), at most MaxTTL.
func (f *Forwarder) ttl(secs uint32) time.Duration {
	return min(max(time.Duration(secs)*time.Second, f.cfg.MinTTL), f.cfg.MaxTTL)
}

// elements returns the elements to learn for the answer's addresses under
// grants: one per address, protocol and port, with the longest timeout
// the grants give. Expired grants and unspecified addresses give none.
func (f *Forwarder) elements(q *query, a *answer, grants []Grant, now time.Time) []Element {
	els := make([]Element, 0, len(a.addrs)*len(grants))
	var idx map[learnKey]int
	for _, r := range a.addrs {
		if r.addr.IsUnspecified() {
			continue
		}
		base := f.ttl(r.ttl)
		for _, g := range grants {
			timeout := base
			if !g.Until.IsZero() {
				left := g.Until.Sub(now)
				if left <= 0 {
					continue
				}
				timeout = min(timeout, left)
			}
			el := Element{Addr: r.addr, Proto: g.Proto, Port: g.Port, Timeout: timeout, Name: q.name, Rule: g.Rule}
			k := keyOf(&el)
			i := -1
			if idx != nil {
				if j, ok := idx[k]; ok {
					i = j
				}
			} else {
				for j := range els {
					if keyOf(&els[j]) == k {
						i = j
						break
					}
				}
			}
			if i >= 0 {
				if els[i].Timeout < timeout {
					els[i] = el
				}
				continue
			}
			els = append(els, el)
			if idx == nil && len(els) > 16 {
				idx = make(map[learnKey]int, cap(els))
				for j := range els {
					idx[keyOf(&els[j])] = j
				}
			} else if idx != nil {
				idx[k] = len(els) - 1
			}
		}
	}
	return els
}

func (f *Forwarder) reportDenied(q *query, rule string) {
	f.st.denied.Add(1)
	f.log.Debug("denied name", "name", q.name, "qtype", uint16(q.question.Type), "rule", rule, "mode", f.cfg.DenyMode)
	if f.cfg.OnDenied != nil {
		f.cfg.OnDenied(q.name, uint16(q.question.Type), rule)
	}
}

// denyReply is the reply to a denied query: NXDOMAIN or REFUSED by the
// mode, the question and EDNS kept, nothing else.
func (f *Forwarder) denyReply(q *query, upOPT *dnsmessage.Resource) []byte {
	rcode := dnsmessage.RCodeNameError
	if f.cfg.DenyMode == DenyRefused {
		rcode = dnsmessage.RCodeRefused
	}
	return replyFor(q, upOPT, rcode)
}
