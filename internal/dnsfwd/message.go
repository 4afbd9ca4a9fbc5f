// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package dnsfwd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/net/dns/dnsmessage"
)

// query is one client query, parsed and validated. It retains nothing of
// the client's buffer.
type query struct {
	id       uint16 // the client's id
	tcp      bool   // the client asked over TCP
	question dnsmessage.Question
	name     string               // question name, canonical
	opt      *dnsmessage.Resource // the client's OPT, nil without EDNS
	rd, cd   bool
	ad       bool // the client set AD: it understands the AD bit of the answer

	// wire is the query sent upstream, id zero: header flags, the question
	// as the client wrote it (case kept) and the client's OPT, UDP size
	// clamped to MaxUDPSize; nothing else of the client's message.
	wire []byte

	// pre is the policy's decision on the question name alone, made
	// before asking upstream (a denial is reported already).
	pre Decision

	// hit, when set, is the cached answer to resolve the query with
	// instead of asking upstream, once held, its elements, are learned.
	hit  *hit
	held []Element
}

var errMalformed = errors.New("malformed message")

// typeIXFR is the incremental zone transfer query type (RFC 1995).
const typeIXFR dnsmessage.Type = 251

// parseQuery validates a client message. It returns the query to resolve,
// or a reply to send at once (FORMERR, NOTIMP), or neither: the message is
// dropped (not a DNS query header: too short, or a response).
func parseQuery(msg []byte) (*query, []byte) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || h.Response {
		// Never answer an answer: two forwarders must not ping-pong.
		return nil, nil
	}
	if h.OpCode != 0 {
		return nil, errorReply(h.ID, h.RecursionDesired, nil, nil, dnsmessage.RCodeNotImplemented)
	}
	q, err := p.Question()
	if err != nil {
		return nil, errorReply(h.ID, h.RecursionDesired, nil, nil, dnsmessage.RCodeFormatError)
	}
	if _, err := p.Question(); !errors.Is(err, dnsmessage.ErrSectionDone) {
		return nil, errorReply(h.ID, h.RecursionDesired, nil, nil, dnsmessage.RCodeFormatError)
	}
	if err := p.SkipAllAnswers(); err != nil {
		return nil, errorReply(h.ID, h.RecursionDesired, &q, nil, dnsmessage.RCodeFormatError)
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return nil, errorReply(h.ID, h.RecursionDesired, &q, nil, dnsmessage.RCodeFormatError)
	}
	var opt *dnsmessage.Resource
	for {
		rh, err := p.AdditionalHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return nil, errorReply(h.ID, h.RecursionDesired, &q, opt, dnsmessage.RCodeFormatError)
		}
		if rh.Type != dnsmessage.TypeOPT {
			// TSIG and the like would not survive the new id anyway.
			if err := p.SkipAdditional(); err != nil {
				return nil, errorReply(h.ID, h.RecursionDesired, &q, opt, dnsmessage.RCodeFormatError)
			}
			continue
		}
		body, err := p.OPTResource()
		if err != nil || opt != nil || rh.Name.Length != 1 {
			// RFC 6891 6.1.1: more than one OPT, or an OPT not owned by
			// the root, is FORMERR.
			return nil, errorReply(h.ID, h.RecursionDesired, &q, nil, dnsmessage.RCodeFormatError)
		}
		opt = &dnsmessage.Resource{Header: rh, Body: &body}
	}
	if q.Type == dnsmessage.TypeAXFR || q.Type == typeIXFR {
		// Zone transfers span several messages: not for a stub forwarder.
		return nil, errorReply(h.ID, h.RecursionDesired, &q, opt, dnsmessage.RCodeNotImplemented)
	}
	out := &query{
		id:       h.ID,
		question: q,
		name:     canon(q.Name),
		opt:      opt,
		rd:       h.RecursionDesired,
		cd:       h.CheckingDisabled,
		ad:       h.AuthenticData,
	}
	if opt != nil && int(opt.Header.Class) > MaxUDPSize {
		opt.Header.Class = MaxUDPSize
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 64+int(q.Name.Length)+optLen(opt)), dnsmessage.Header{
		RecursionDesired: h.RecursionDesired,
		CheckingDisabled: h.CheckingDisabled,
		AuthenticData:    h.AuthenticData,
	})
	if out.wire, err = buildMessage(&b, &q, opt); err != nil {
		return nil, errorReply(h.ID, h.RecursionDesired, nil, nil, dnsmessage.RCodeFormatError)
	}
	return out, nil
}

func optLen(opt *dnsmessage.Resource) int {
	if opt == nil {
		return 0
	}
	n := 11
	for _, o := range opt.Body.(*dnsmessage.OPTResource).Options {
		n += 4 + len(o.Data)
	}
	return n
}

// buildMessage finishes b with question q and, if set, opt.
func buildMessage(b *dnsmessage.Builder, q *dnsmessage.Question, opt *dnsmessage.Resource) ([]byte, error) {
	if q != nil {
		if err := b.StartQuestions(); err != nil {
			return nil, err
		}
		if err := b.Question(*q); err != nil {
			return nil, err
		}
	}
	if opt != nil {
		if err := b.StartAdditionals(); err != nil {
			return nil, err
		}
		if err := b.OPTResource(opt.Header, *opt.Body.(*dnsmessage.OPTResource)); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// errorReply builds a reply with rcode and no records: the question q and
// an OPT if the query had one (opt, taken as a sign of EDNS, not echoed).
// It never fails: an unpackable question is left out.
func errorReply(id uint16, rd bool, q *dnsmessage.Question, opt *dnsmessage.Resource, rcode dnsmessage.RCode) []byte {
	h := dnsmessage.Header{
		ID:                 id,
		Response:           true,
		RecursionDesired:   rd,
		RecursionAvailable: true,
		RCode:              rcode,
	}
	var ropt *dnsmessage.Resource
	if opt != nil {
		ropt = &dnsmessage.Resource{Body: &dnsmessage.OPTResource{}}
		ropt.Header.SetEDNS0(MaxUDPSize, 0, false)
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 64), h)
	if msg, err := buildMessage(&b, q, ropt); err == nil {
		return msg
	}
	b = dnsmessage.NewBuilder(make([]byte, 0, 12), h)
	msg, _ := b.Finish() // a header alone always packs
	return msg
}

// replyFor builds an error reply to q, keeping its question (as the client
// wrote it) and, with EDNS, upstream's OPT if given, else a fresh one.
func replyFor(q *query, upOPT *dnsmessage.Resource, rcode dnsmessage.RCode) []byte {
	if upOPT == nil || q.opt == nil {
		return errorReply(q.id, q.rd, &q.question, q.opt, rcode)
	}
	h := dnsmessage.Header{ID: q.id, Response: true, RecursionDesired: q.rd, RecursionAvailable: true, RCode: rcode}
	b := dnsmessage.NewBuilder(make([]byte, 0, 64+optLen(upOPT)), h)
	if msg, err := buildMessage(&b, &q.question, upOPT); err == nil {
		return msg
	}
	return errorReply(q.id, q.rd, &q.question, q.opt, rcode)
}

// answer is what an upstream reply says about its question.
type answer struct {
	rcode dnsmessage.RCode
	tc    bool
	// chain is the question name then each CNAME target, canonical.
	chain []string
	// addrs are the A and AAAA records of the answer section owned by the
	// chain's last name, unmapped, each with the smallest TTL on its way.
	addrs []addrTTL
	opt   *dnsmessage.Resource // upstream's OPT, if any
}

type addrTTL struct {
	addr netip.Addr
	ttl  uint32
}

type cnameRR struct {
	owner, target string
	ttl           uint32
}

type addrRR struct {
	owner string
	addr  netip.Addr
	ttl   uint32
}

// parseAnswer parses an upstream reply to q. Every section must parse:
// bytes that dnsmessage cannot read are never passed to the client, whose
// parser might read them differently. A CNAME chain that loops, forks
// (two different targets for one owner) or exceeds maxChain is malformed
// too; so is an A or AAAA record of the wrong length in the answer
// section.
func parseAnswer(msg []byte, q *query) (*answer, error) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil, fmt.Errorf("parse answer header: %w", err)
	}
	if !h.Response || h.OpCode != 0 {
		return nil, fmt.Errorf("parse answer header: not a response: %w", errMalformed)
	}
	rq, err := p.Question()
	if err != nil {
		return nil, fmt.Errorf("parse answer question: %w", err)
	}
	if !sameQuestion(&rq, &q.question) {
		return nil, fmt.Errorf("parse answer question: another question: %w", errMalformed)
	}
	if _, err := p.Question(); !errors.Is(err, dnsmessage.ErrSectionDone) {
		return nil, fmt.Errorf("parse answer question: not exactly one: %w", errMalformed)
	}
	a := &answer{rcode: h.RCode, tc: h.Truncated}
	var (
		cnames  []cnameRR
		addrs   []addrRR
		prev    dnsmessage.Name
		prevStr string
	)
	owner := func(n dnsmessage.Name) string {
		if n.Length != prev.Length || !bytes.Equal(n.Data[:n.Length], prev.Data[:prev.Length]) {
			prev, prevStr = n, canon(n)
		}
		return prevStr
	}
	for i := 0; ; i++ {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse answer %d: %w", i, err)
		}
		if rh.Class != dnsmessage.ClassINET {
			if err := p.SkipAnswer(); err != nil {
				return nil, fmt.Errorf("parse answer %d: %w", i, err)
			}
			continue
		}
		switch rh.Type {
		case dnsmessage.TypeCNAME:
			r, err := p.CNAMEResource()
			if err != nil {
				return nil, fmt.Errorf("parse answer %d: %w", i, err)
			}
			cnames = append(cnames, cnameRR{owner(rh.Name), canon(r.CNAME), rh.TTL})
		case dnsmessage.TypeA:
			if rh.Length != 4 {
				return nil, fmt.Errorf("parse answer %d: A of %d bytes: %w", i, rh.Length, errMalformed)
			}
			r, err := p.AResource()
			if err != nil {
				return nil, fmt.Errorf("parse answer %d: %w", i, err)
			}
			addrs = append(addrs, addrRR{owner(rh.Name), netip.AddrFrom4(r.A), rh.TTL})
		case dnsmessage.TypeAAAA:
			if rh.Length != 16 {
				return nil, fmt.Errorf("parse answer %d: AAAA of %d bytes: %w", i, rh.Length, errMalformed)
			}
			r, err := p.AAAAResource()
			if err != nil {
				return nil, fmt.Errorf("parse answer %d: %w", i, err)
			}
			addrs = append(addrs, addrRR{owner(rh.Name), netip.AddrFrom16(r.AAAA).Unmap(), rh.TTL})
		default:
			if err := p.SkipAnswer(); err != nil {
				return nil, fmt.Errorf("parse answer %d: %w", i, err)
			}
		}
	}
	for i := 0; ; i++ {
		if _, err := p.AuthorityHeader(); errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("parse authority %d: %w", i, err)
		}
		if err := p.SkipAuthority(); err != nil {
			return nil, fmt.Errorf("parse authority %d: %w", i, err)
		}
	}
	for i := 0; ; i++ {
		rh, err := p.AdditionalHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse additional %d: %w", i, err)
		}
		if rh.Type == dnsmessage.TypeOPT && a.opt == nil {
			body, err := p.OPTResource()
			if err != nil {
				return nil, fmt.Errorf("parse additional %d: %w", i, err)
			}
			a.opt = &dnsmessage.Resource{Header: rh, Body: &body}
			continue
		}
		if err := p.SkipAdditional(); err != nil {
			return nil, fmt.Errorf("parse additional %d: %w", i, err)
		}
	}

	// Follow the chain from the question through the answer section.
	a.chain = append(make([]string, 0, 2), q.name)
	chainTTL := ^uint32(0)
	for cur := q.name; ; {
		next, ttl, found := "", uint32(0), false
		for _, c := range cnames {
			if c.owner != cur {
				continue
			}
			if found && c.target != next {
				return nil, fmt.Errorf("parse answer: %q has two cname targets: %w", cur, errMalformed)
			}
			if !found || c.ttl < ttl {
				ttl = c.ttl
			}
			next, found = c.target, true
		}
		if !found {
			break
		}
		for _, n := range a.chain {
			if n == next {
				return nil, fmt.Errorf("parse answer: cname loop at %q: %w", next, errMalformed)
			}
		}
		if len(a.chain) == maxChain {
			return nil, fmt.Errorf("parse answer: cname chain longer than %d: %w", maxChain, errMalformed)
		}
		a.chain = append(a.chain, next)
		chainTTL = min(chainTTL, ttl)
		cur = next
	}
	end := a.chain[len(a.chain)-1]
	for _, r := range addrs {
		if r.owner == end {
			a.addrs = append(a.addrs, addrTTL{r.addr, min(r.ttl, chainTTL)})
		}
	}
	return a, nil
}

// sameQuestion reports whether two questions are the same, names compared
// without regard to ASCII case.
func sameQuestion(a, b *dnsmessage.Question) bool {
	if a.Type != b.Type || a.Class != b.Class || a.Name.Length != b.Name.Length {
		return false
	}
	for i := 0; i < int(a.Name.Length); i++ {
		if lower(a.Name.Data[i]) != lower(b.Name.Data[i]) {
			return false
		}
	}
	return true
}

// matchReply reports whether msg is a response to the upstream query of q
// sent with id: QR set, opcode QUERY, the id, and the same question. It
// parses only the header and question.
func matchReply(msg []byte, id uint16, q *query) bool {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || !h.Response || h.OpCode != 0 || h.ID != id {
		return false
	}
	rq, err := p.Question()
	return err == nil && sameQuestion(&rq, &q.question)
}

// canon returns the canonical form of a name: ASCII lower case, no
// trailing dot, the root as "". dnsmessage has rejected labels containing
// dots, so the form is unambiguous.
func canon(n dnsmessage.Name) string {
	l := int(n.Length)
	if l > 0 && n.Data[l-1] == '.' {
		l--
	}
	var b [255]byte
	for i := 0; i < l; i++ {
		b[i] = lower(n.Data[i])
	}
	return string(b[:l])
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// setID returns msg with its id replaced, in place.
func setID(msg []byte, id uint16) []byte {
	binary.BigEndian.PutUint16(msg, id)
	return msg
}
