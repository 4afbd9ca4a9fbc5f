// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nflog

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// Bounds of [ParseDNS]. A reply that exceeds them is not an error: the
// excess is ignored.
const (
	// MaxDNSAnswers is the most answers [ParseDNS] returns for one reply.
	MaxDNSAnswers = 32
	// maxDNSRecords is the most answer-section records ParseDNS reads.
	maxDNSRecords = 64
	// maxCNAMEChain is the longest CNAME chain ParseDNS follows.
	maxCNAMEChain = 8
	// MaxNameLen is the longest name (without trailing dot) ParseDNS accepts;
	// the DNS wire limit of 255 octets allows 253 characters.
	MaxNameLen = 253
)

// ErrNotDNSReply reports that a packet is not a UDP datagram from port 53
// carrying a DNS response.
var ErrNotDNSReply = errors.New("not a dns reply")

// Answer maps an address to the name an application asked for.
type Answer struct {
	// Name is the question's name, lower-case, without trailing dot. It
	// comes from the container and is untrusted: sanitise before display.
	Name string
	// Addr is an A (4-byte) or AAAA (16-byte) address reached from Name,
	// directly or through CNAME records in the same reply.
	Addr netip.Addr
	// TTL is the smallest TTL along the chain from Name to Addr, in seconds.
	TTL uint32
}

// ParseDNS parses a logged DNS reply: b is an IPv4 or IPv6 packet carrying a
// UDP datagram from port 53. It returns the A and AAAA answers that belong
// to the reply's (first) question, following CNAME chains within the
// message, so every [Answer] carries the name the application asked for.
// Records not reachable from the question are ignored, as are replies with
// a non-zero RCODE, which yield no answers and no error.
//
// When the reply is cut short (for example by the NFLOG copy range), the
// answers parsed before the cut are returned together with a non-nil error.
// ParseDNS never panics and does not retain b.
func ParseDNS(b []byte) ([]Answer, error) {
	p, payload, err := parsePacket(b)
	if err != nil {
		return nil, fmt.Errorf("parse dns reply: %w", err)
	}
	if p.Proto != ProtoUDP || p.SrcPort != 53 || p.Fragment {
		return nil, fmt.Errorf("parse dns reply: protocol %d port %d: %w", p.Proto, p.SrcPort, ErrNotDNSReply)
	}
	return parseDNSMessage(payload)
}

func parseDNSMessage(msg []byte) ([]Answer, error) {
	var parser dnsmessage.Parser
	h, err := parser.Start(msg)
	if err != nil {
		return nil, fmt.Errorf("parse dns header: %w", err)
	}
	if !h.Response {
		return nil, fmt.Errorf("parse dns header: query: %w", ErrNotDNSReply)
	}
	if h.RCode != dnsmessage.RCodeSuccess {
		return nil, nil
	}
	q, err := parser.Question()
	if errors.Is(err, dnsmessage.ErrSectionDone) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("parse dns question: %w", err)
	}
	qname, err := dnsName(q.Name)
	if err != nil {
		return nil, fmt.Errorf("parse dns question: %w", err)
	}
	if err := parser.SkipAllQuestions(); err != nil {
		return nil, fmt.Errorf("parse dns questions: %w", err)
	}

	type addrRR struct {
		owner string
		addr  netip.Addr
		ttl   uint32
	}
	type cnameRR struct {
		target string
		ttl    uint32
	}
	var (
		addrs  []addrRR
		cnames = map[string]cnameRR{}
		perr   error
	)
	for i := 0; i < maxDNSRecords; i++ {
		rh, err := parser.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			perr = fmt.Errorf("parse dns answer %d: %w", i, err)
			break
		}
		owner, nerr := dnsName(rh.Name)
		if rh.Class != dnsmessage.ClassINET || nerr != nil {
			if err := parser.SkipAnswer(); err != nil {
				perr = fmt.Errorf("parse dns answer %d: %w", i, err)
				break
			}
			continue
		}
		switch rh.Type {
		case dnsmessage.TypeA:
			r, err := parser.AResource()
			if err != nil {
				perr = fmt.Errorf("parse dns answer %d: %w", i, err)
				break
			}
			addrs = append(addrs, addrRR{owner, netip.AddrFrom4(r.A), rh.TTL})
		case dnsmessage.TypeAAAA:
			r, err := parser.AAAAResource()
			if err != nil {
				perr = fmt.Errorf("parse dns answer %d: %w", i, err)
				break
			}
			addrs = append(addrs, addrRR{owner, netip.AddrFrom16(r.AAAA), rh.TTL})
		case dnsmessage.TypeCNAME:
			r, err := parser.CNAMEResource()
			if err != nil {
				perr = fmt.Errorf("parse dns answer %d: %w", i, err)
				break
			}
			if target, err := dnsName(r.CNAME); err == nil {
				if _, dup := cnames[owner]; !dup {
					cnames[owner] = cnameRR{target, rh.TTL}
				}
			}
		default:
			if err := parser.SkipAnswer(); err != nil {
				perr = fmt.Errorf("parse dns answer %d: %w", i, err)
			}
		}
		if perr != nil {
			break
		}
	}

	// Walk the CNAME chain from the question: every name on it maps to the
	// question's name, with the smallest TTL seen on the way.
	chainTTL := map[string]uint32{qname: ^uint32(0)}
	for cur, ttl, i := qname, ^uint32(0), 0; i < maxCNAMEChain; i++ {
		c, ok := cnames[cur]
		if !ok {
			break
		}
		if _, seen := chainTTL[c.target]; seen {
			break // loop
		}
		ttl = min(ttl, c.ttl)
		chainTTL[c.target] = ttl
		cur = c.target
	}

	var out []Answer
	for _, a := range addrs {
		ttl, ok := chainTTL[a.owner]
		if !ok {
			continue
		}
		out = append(out, Answer{Name: qname, Addr: a.addr, TTL: min(ttl, a.ttl)})
		if len(out) == MaxDNSAnswers {
			break
		}
	}
	return out, perr
}

// dnsName converts a parsed name to the lower-case form without trailing
// dot. dnsmessage has already bounded the wire name to 255 octets.
func dnsName(n dnsmessage.Name) (string, error) {
	s := strings.TrimSuffix(n.String(), ".")
	if s == "" {
		return "", errors.New("empty name")
	}
	if len(s) > MaxNameLen {
		return "", fmt.Errorf("name of %d characters", len(s))
	}
	return asciiLower(s), nil
}

// asciiLower lower-cases A-Z only, leaving every other byte as it is (unlike
// strings.ToLower, which would rewrite invalid UTF-8).
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
