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
//	  set resolver4  { type ipv4_addr; }                  # and resolver6
//	  set deny4      { type ipv4_addr; flags timeout; }   # single addresses: deny4/deny6/allow4/allow6
//	  set deny4_net  { type ipv4_addr; flags interval; }  # CIDRs: deny4_net/deny6_net/allow4_net/allow6_net
//	  chain output { type filter hook output priority filter; policy drop;
//	    oifname "lo" accept
//	    ct state established,related accept
//	    ip daddr @resolver4 udp dport 53 accept           # and tcp, and ip6 @resolver6
//	    ip daddr @deny4 drop                              # all deny sets: silent, no prompt
//	    ip daddr @allow4 accept                           # all allow sets, after the denies
//	    log prefix "CLEARANCE_BLOCKED: " group 100 queue-threshold 1 reject with icmpx admin-prohibited
//	  }
//	  chain input { type filter hook input priority filter; policy accept;
//	    ip saddr @resolver4 udp sport 53 log prefix "CLEARANCE_DNS: " group 100 queue-threshold 1
//	  }
//	}
//
// A new connection to a blocked destination fails at once with EHOSTUNREACH
// ("no route to host", from the icmpx admin-prohibited reject); to a denied
// one it times out (dropped without a trace).
//
// # Why two sets per list and family
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
// nothing; the shield owns the ruleset. Timeouts work only if the shield
// declared the set with the timeout flag.
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
// (Apply, Revoke, Engage) reads the live sets first, so deleting an element
// that is not there never fails a batch; an element expiring in between is
// handled by one retry.
package nft
