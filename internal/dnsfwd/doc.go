// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package dnsfwd is the DNS forwarder of one container, run inside its
// clearance-hub: it answers the container's queries through the upstream
// resolvers and makes sure that the addresses of allowed names are in the
// firewall before the container hears of them.
//
// The package is pure Go and knows nothing of varlink, nftables or
// namespaces. It gets sockets, a [Policy] that says what a chain of names
// means, and a [Learner] that adds addresses to the allow sets. Every byte
// from the container and from upstream is parsed as hostile (with
// golang.org/x/net/dns/dnsmessage).
//
// # Wiring
//
// The privileged side creates, inside the container's network namespace,
// the client-facing sockets (UDP and TCP on 127.0.0.1 and ::1 at one port,
// where the ruleset redirects every query to port 53) and one marked
// upstream UDP socket per family, and hands them to the hub as file
// descriptors. The hub wraps them with [net.FilePacketConn] and
// [net.FileListener] and builds a [Config]:
//
//	fwd, err := dnsfwd.New(dnsfwd.Config{
//		UDP:      []net.PacketConn{udp4, udp6},
//		TCP:      []net.Listener{tcp4, tcp6},
//		Upstream: dnsfwd.Upstream{
//			Servers: resolvers, // []netip.AddrPort, port 53
//			UDP4:    marked4, UDP6: marked6,
//			DialTCP: func(ctx context.Context, s netip.AddrPort) (net.Conn, error) {
//				return dnsfwd.ConnectFile(ctx, pool.Take(), s) // a marked TCP socket
//			},
//		},
//		Policy:        policyAdapter,  // the container's policy: names → Decision
//		Learner:       verdictLearner, // one verdict-service call per batch
//		OnDenied:      reportDenied,
//		OnLearned:     auditLearned,
//		OnHoldTimeout: countMiss,
//		Log:           log,
//	})
//	err = fwd.Run(ctx) // on one of the hub's goroutines; closes every socket above when ctx ends
//
// and names blocked destinations with [Forwarder.Names]; when the operator
// allows a name, [Forwarder.Addrs] gives its current addresses. When
// elements leave the kernel other than by timing out (a verdict revoked,
// a set flushed, the ruleset installed anew), the hub calls
// [Forwarder.Forget], so the next answer needing them is held and learned
// again. [Forwarder.Stats] feeds the hub's own Stats.
//
// Ownership: [New] takes nothing over; once [Forwarder.Run] is called, the
// forwarder owns every socket in the Config and closes them all before
// Run returns. A conn returned by Upstream.DialTCP is closed by the
// forwarder after its one query. [ConnectFile] takes over the file it is
// given.
//
// # What an answer means
//
// A query must have exactly one question, opcode QUERY and QR clear.
// Anything else gets FORMERR or NOTIMP (zone transfers too) without
// upstream being asked; a message too short for a header, or a response,
// gets nothing (over TCP: the connection is closed). The query sent
// upstream is re-packed: a fresh random id (crypto/rand) per attempt, the
// header flags, the question exactly as the client wrote it (0x20 case
// kept) and the client's EDNS OPT (UDP size clamped to [MaxUDPSize]);
// nothing else. A reply is accepted only from the server asked, with the
// id and the question (compared without regard to case) of the attempt;
// anything else is dropped and counted as spoofed.
//
// The reply must parse completely, every section; otherwise the client
// gets SERVFAIL, since bytes the forwarder cannot read must not reach a
// parser that might read them differently. The chain is then followed
// from the question name through the CNAME records of the answer section:
// the question, each CNAME target in order, canonical (lower case, no
// trailing dot). A chain that loops, forks (one owner, two targets) or
// has more than 16 names is malformed: SERVFAIL.
//
// The [Policy] decides on the whole chain: the allowed name may be any
// link, the question or a CNAME target, and a denied link anywhere denies
// the answer, whatever else allows it. Before upstream is asked, the
// question name alone is decided, so that a denied question never leaves
// the container (except in pass-and-drop mode).
//
// The addresses learned are the A and AAAA records of the answer section
// whose owner is the chain's last name (4-in-6 mapped addresses as IPv4;
// 0.0.0.0 and :: never), whatever the RCODE. Records owned by other names
// (glue, additional or authority records, extra answers an upstream put
// in, an address beside a CNAME) are never learned and never named; they
// pass to the client unchanged. The reply released to the client is the
// upstream's bytes with only the id rewritten: no section is dropped.
//
// # Learning and holding
//
// For an allowed answer, each address under each [Grant] gives an
// [Element] (one per address, protocol and port; the longest timeout
// wins) with a timeout of max(TTL, MinTTL), at most MaxTTL, capped by
// Grant.Until; the TTL is the smallest on the chain. The forwarder keeps a
// table of what the kernel has (element → lower bound of its expiry):
//
//   - at least half the new timeout left: the answer is released at once;
//   - at least [HoldMargin] (30 s) left: released at once, and the element
//     is refreshed in the background (coalesced, in batches, one call at a
//     time, never holding an answer);
//   - otherwise the answer is held until one Learn call for all such
//     elements of the answer returns. An answer needing an element whose
//     Learn is already in flight waits for that call instead.
//
// A held answer goes out only after Learn returned nil. If Learn fails, or
// HoldMax (default 2 s) passes first, the client gets SERVFAIL, never an
// answer whose addresses are not allowed yet; the miss is counted
// (Stats.HoldTimeouts, Stats.LearnErrors), logged (rate-limited) and
// reported (OnHoldTimeout), and the elements are not considered learned.
//
// # Denied names
//
// An answer for a denied chain is counted, reported to OnDenied (never as
// a prompt) and, by [DenyMode], replaced by NXDOMAIN (the question and EDNS
// kept, answer and authority empty), by REFUSED, or passed unchanged
// (pass-and-drop: the firewall drops the connections). Nothing of a denied
// answer is learned. Names that match nothing pass unchanged.
//
// # Names
//
// For every NOERROR answer released, the forwarder remembers which
// question name each address of the chain's end was an answer for, for
// max(TTL, MinTTL) at most MaxTTL, up to 4 names per address (most recent
// first) and MaxNames addresses (least recently used dropped first), so a
// blocked connection can be announced by [Forwarder.Names] with the name
// the container asked for. Lookups are O(1).
//
// # Cache
//
// Answers are cached per forwarder (so per container: no container ever
// sees another's), as dnsmasq does, so a repeated question is answered
// without the upstream round trip. The key is the question name
// (canonical: 0x20 case variants share an entry), type and class, and
// the query's RD, CD and AD bits, whether it carried EDNS and its DO
// bit; a query whose OPT carries options (cookies, client subnet) is
// neither answered from nor stored in the cache. Only NOERROR and
// NXDOMAIN answers that parsed completely, are not truncated, are at most
// [MaxCacheAnswer] bytes and have at least one record with a TTL above 0
// are kept, for the smallest TTL of their records (negative answers, an
// NXDOMAIN or a NOERROR without answer records, for [NegativeCacheTTL] at
// most); SERVFAIL, REFUSED and every other error never are. The cache
// holds at most Config.CacheEntries answers (least recently used dropped
// first) and [MaxCacheBytes] bytes.
//
// A hit is the upstream's bytes with the client's id, the client's case
// of the question name, and every TTL (OPT excepted) less the whole
// seconds since it arrived, rounded up; an entry is dropped, never
// served, once its smallest TTL has passed (or the clock went back). A UDP
// client gets no hit longer than its payload size (512 bytes without
// EDNS). A hit is then treated exactly as an upstream answer: the policy
// decides its chain again (a name denied since is denied), and its
// addresses go through the learned table: when the kernel is known to
// have them for long enough, the hit is answered at once on the serving
// goroutine; otherwise (an element expired, or dropped by
// [Forwarder.Forget]) it is held until Learn returned, on a goroutine of
// its own, under MaxInFlight but not the upstream rate. Since an element
// is learned for max(TTL, MinTTL) from when its answer arrived, it outlives
// the cached answer unless removed behind the forwarder's back.
//
// # Goroutines
//
// A query over UDP asked upstream over UDP holds no goroutine while it
// waits: its attempt is sent from the serving goroutine, the upstream
// reader that receives the reply finishes it (policy, learned table,
// reply to the client) on the spot, and an attempt timer sends the next
// attempt. Only an answer that must wait for Learn gets a goroutine of
// its own. Each goroutine hand-off saved is a thread wake-up saved, which
// on a 2-vCPU VM is a good part of the cost of forwarding a datagram.
// TCP clients, and queries asked upstream over TCP, get a goroutine per
// query.
//
// # Bounds under load
//
// Memory is bounded whatever the container sends: at most MaxInFlight
// queries are resolved at once and at most Upstream.Rate queries per
// second (burst Upstream.Burst) go upstream; a query over either limit is
// answered REFUSED at once (cheap, and the stub fails fast instead of
// retrying into the flood) and counted in Stats.RefusedOverload. A pending
// UDP answer is at most MaxUDPSize bytes, a TCP one at most 64 KiB; TCP
// clients are capped at MaxTCPConns connections (one more is closed at
// once), MaxTCPPipeline outstanding queries each (further queries are not
// read until one is answered), [MaxQuerySize] bytes a query (a longer one
// closes the connection) and TCPIdleTimeout without a query. The name and
// learned tables are capped by MaxNames and MaxLearned.
package dnsfwd
