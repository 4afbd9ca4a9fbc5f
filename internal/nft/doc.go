// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package nft manages clearance's egress firewall in a container's network
// namespace through github.com/google/nftables (netlink only; the nft CLI is
// never executed by product code).
//
// # Ruleset
//
// In built-in mode ([Builtin] layout) [Firewall.Engage] installs, in one
// atomic batch:
//
//	table inet clearance {
//	  set resolver4      { type ipv4_addr; }                                   # and resolver6
//	  set deny4          { type ipv4_addr; flags timeout; }                    # whole hosts
//	  set deny4_port     { type ipv4_addr . inet_proto . inet_service; flags timeout; }
//	  set deny4_net      { type ipv4_addr; flags interval; }                   # CIDRs
//	  set deny4_netport  { type ipv4_addr . inet_proto . inet_service; flags interval; }
//	  …                                                                        # the same for allow, and v6
//	  set dns4           { type ipv4_addr; flags timeout; }                    # learned by the DNS forwarder
//	  set dns4_port      { type ipv4_addr . inet_proto . inet_service; flags timeout; }
//	  chain output { type filter hook output priority filter; policy drop;
//	    oifname "lo" accept
//	    ip daddr 127.0.0.0/8 accept; ip6 daddr ::1 accept   # queries redirected to the forwarder
//	    icmpv6 type { 130-136, 143 } accept                # neighbour discovery and MLD
//	    ct state established,related accept
//	    meta mark 0x636c7200 ip daddr @resolver4 udp dport 53 accept      # and tcp, and ip6 @resolver6
//	    udp dport 53 reject; tcp dport 53 reject with tcp reset           # no forwarder: fail fast
//	    ip daddr @deny4 drop                                              # all deny sets: silent, no prompt
//	    ip daddr . meta l4proto . th dport @deny4_port drop
//	    ip daddr @allow4 accept                                           # all allow sets, after the denies
//	    ip daddr @dns4 accept                                             # the learned sets last
//	    log prefix "CLEARANCE_BLOCKED: " group 100 queue-threshold 1 reject with icmpx admin-prohibited
//	  }
//	  chain input { type filter hook input priority filter; policy accept;
//	    meta l4proto tcp ct state new tcp flags & (fin|syn|rst|ack) != syn drop  # no mid-stream revival
//	  }
//	  chain dns { type nat hook output priority -100; policy accept;
//	    meta mark != 0x636c7200 udp dport 53 redirect to :PORT             # and tcp; see SetDNSPort
//	  }
//	}
//
// A new connection to a blocked destination fails at once with EHOSTUNREACH
// ("no route to host", from the icmpx admin-prohibited reject); to a denied
// one it times out (dropped without a trace).
//
// # DNS
//
// Every DNS query of the container (udp and tcp port 53, any address) is
// redirected to the container's DNS forwarder, which clearance-verdict
// binds on 127.0.0.1 and ::1 inside the namespace and hands to the hub
// ([Firewall.SetDNSPort] points the redirect at its port; Engage keeps the
// port of the ruleset it replaces). Only the forwarder's upstream sockets,
// which carry the mark (set by the privileged service; a container needs
// CAP_NET_ADMIN to set it), reach the resolvers. Until a forwarder exists,
// and whenever its listeners are gone, DNS fails at once instead of
// hanging. The forwarder adds the addresses of allowed names to the dns
// sets ([Firewall.Learn]) before it releases the answer; nothing else
// writes them.
//
// The nat chain rewrites the destination after the output hook has chosen
// the outgoing device, so the filter chain still sees the original device
// for a redirected query: the loopback-address rules, not oifname "lo",
// let it pass.
//
// # Ports
//
// A [Dest] is an address or CIDR, whole (every protocol and port) or one
// protocol and port. Whole destinations live in the host and _net sets,
// one-port destinations in the _port (hash, with timeouts) and _netport
// (interval concatenations, no timeouts) sets.
//
// # Why hash sets and interval sets
//
// Measured on kernel 6.18 with google/nftables v0.3.0: an interval set with
// the timeout flag accepts a per-element timeout only on the start element
// (a timeout on the end element fails with EINVAL), and when such a start
// expires its end element stays behind. The kernel also refuses nested
// intervals (EEXIST), so a timed 198.51.100.7 cannot sit inside a permanent
// 198.51.100.0/24 in one interval set. Single addresses, which is what
// verdicts are about, therefore live in plain hash sets with the timeout flag
// (clean expiry, no overlap); CIDRs, which come from the policy, live in
// interval sets without timeouts. A ttl on a CIDR fails with [ErrNoTimeout];
// a CIDR nested in a different element of its set fails with [ErrOverlap].
//
// # terok-shield mode
//
// With the [Shield] or [ShieldTiered] layout the Firewall writes into
// terok-shield's table inet terok_shield (interval sets, one per list and
// family). Engage only checks that table and sets exist, Disengage does
// nothing; the shield owns the ruleset and its DNS. Timeouts work only if
// the shield declared the set with the timeout flag; a one-port verdict
// covers the whole host (the shield's sets have no ports).
//
// # Network namespaces
//
// Open the connection with [Dial], which creates a lasting netlink socket
// from a thread that entered the namespace ([netns.Do]). Never use
// nftables.WithNetNSFd: it restores the thread's namespace after every
// operation, which fails with EPERM in a rootless user namespace.
//
// # Concurrency
//
// A [Firewall] serialises its own operations. Every read-modify-write
// (Apply, Revoke, Unlearn, Engage) reads the live sets first, so deleting an element
// that is not there never fails a batch; an element expiring in between is
// handled by one retry.
package nft
