// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nft

import "slices"

// SetNames names the sets of one list (allow, deny, or learned) for one
// address family. Empty names are sets the layout does not have.
type SetNames struct {
	// Host holds single addresses, every port. In the built-in ruleset it
	// is a hash set with per-element timeouts; in terok-shield's table it
	// is an interval set that holds CIDRs as well.
	Host string
	// Net holds CIDR prefixes, every port (an interval set). Empty means
	// CIDRs go into Host, which must then be an interval set.
	Net string
	// HostPort holds address . protocol . port (a hash set with timeouts).
	// Empty means the layout cannot narrow a verdict to one port: such a
	// Dest is widened to the whole host.
	HostPort string
	// NetPort holds CIDR . protocol . port (an interval set of
	// concatenations).
	NetPort string
}

// names returns the distinct non-empty set names.
func (n SetNames) names() []string {
	var out []string
	for _, s := range []string{n.Host, n.Net, n.HostPort, n.NetPort} {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// kind says which shape of element a set holds.
func (n SetNames) kind(name string) setKind {
	switch name {
	case "":
		return kindNone
	case n.HostPort:
		return kindHostPort
	case n.NetPort:
		return kindNetPort
	case n.Net:
		if n.Net != n.Host {
			return kindNet
		}
	}
	return kindHost
}

type setKind int

const (
	kindNone setKind = iota
	kindHost
	kindNet
	kindHostPort
	kindNetPort
)

func (k setKind) interval() bool { return k == kindNet || k == kindNetPort }
func (k setKind) concat() bool   { return k == kindHostPort || k == kindNetPort }

// Layout says which table and sets a [Firewall] works on. Use [Builtin],
// [Shield] or [ShieldTiered], or a copy with names changed.
type Layout struct {
	// Table is the name of the inet table.
	Table string
	// Owned is true when clearance creates and deletes the table (built-in
	// mode). When false, [Firewall.Engage] only checks that the table and
	// sets exist, and [Firewall.Disengage] does nothing.
	Owned bool
	// Allow4, Allow6, Deny4 and Deny6 name the sets per list and family.
	Allow4, Allow6, Deny4, Deny6 SetNames
	// Learn4 and Learn6 name the sets of addresses the DNS forwarder
	// learned for allowed names (Host and HostPort only; built-in mode).
	Learn4, Learn6 SetNames
	// Resolver4 and Resolver6 name the sets of DNS resolvers the
	// forwarder's marked packets may reach (built-in mode only).
	Resolver4, Resolver6 string
	// NAT names the chain that redirects the container's DNS queries to
	// the forwarder (built-in mode only).
	NAT string
}

// Builtin is clearance's own table, created by [Firewall.Engage]: per list
// and family a hash set of addresses (allow4), of address . protocol . port
// (allow4_port), an interval set of CIDRs (allow4_net) and of CIDR .
// protocol . port (allow4_netport); the learned sets dns4 and dns4_port.
var Builtin = Layout{
	Table:     "clearance",
	Owned:     true,
	Allow4:    SetNames{Host: "allow4", Net: "allow4_net", HostPort: "allow4_port", NetPort: "allow4_netport"},
	Allow6:    SetNames{Host: "allow6", Net: "allow6_net", HostPort: "allow6_port", NetPort: "allow6_netport"},
	Deny4:     SetNames{Host: "deny4", Net: "deny4_net", HostPort: "deny4_port", NetPort: "deny4_netport"},
	Deny6:     SetNames{Host: "deny6", Net: "deny6_net", HostPort: "deny6_port", NetPort: "deny6_netport"},
	Learn4:    SetNames{Host: "dns4", HostPort: "dns4_port"},
	Learn6:    SetNames{Host: "dns6", HostPort: "dns6_port"},
	Resolver4: "resolver4",
	Resolver6: "resolver6",
	NAT:       "dns",
}

// Shield is terok-shield 0.6.x's table: interval sets allow_v4/allow_v6 and
// deny_v4/deny_v6. Note that in that ruleset the allow rule comes before the
// deny rule (an address in both sets is accepted); Apply keeps the two lists
// disjoint for exact matches. It has no port sets: a verdict for one port
// covers the whole host.
var Shield = Layout{
	Table:  "terok_shield",
	Allow4: SetNames{Host: "allow_v4"},
	Allow6: SetNames{Host: "allow_v6"},
	Deny4:  SetNames{Host: "deny_v4"},
	Deny6:  SetNames{Host: "deny_v6"},
}

// ShieldTiered is the newer tiered terok-shield table: allows go to the
// project tier (t40_project_allow_*), denies to the security tier
// (t20_security_deny_*).
var ShieldTiered = Layout{
	Table:  "terok_shield",
	Allow4: SetNames{Host: "t40_project_allow_v4"},
	Allow6: SetNames{Host: "t40_project_allow_v6"},
	Deny4:  SetNames{Host: "t20_security_deny_v4"},
	Deny6:  SetNames{Host: "t20_security_deny_v6"},
}

// List names of set elements.
const (
	// ListLearned marks elements the DNS forwarder learned (they allow).
	ListLearned = "learned"
)

// list returns the set names for a list ("allow", "deny" or "learned")
// and family.
func (l Layout) list(action string, v4 bool) SetNames {
	switch {
	case action == actionAllow && v4:
		return l.Allow4
	case action == actionAllow:
		return l.Allow6
	case action == ListLearned && v4:
		return l.Learn4
	case action == ListLearned:
		return l.Learn6
	case v4:
		return l.Deny4
	default:
		return l.Deny6
	}
}

// target returns the set name that holds d-shaped entries of a list, and
// d itself, widened to the whole host when the list has no port sets.
func (n SetNames) target(d Dest) (string, Dest) {
	if !d.Whole() {
		if d.Single() && n.HostPort != "" {
			return n.HostPort, d
		}
		if !d.Single() && n.NetPort != "" {
			return n.NetPort, d
		}
		if n.HostPort == "" && n.NetPort == "" {
			d = Dest{Prefix: d.Prefix} // no port sets at all: the whole host
		} else {
			return "", d
		}
	}
	if d.Single() || n.Net == "" {
		return n.Host, d
	}
	return n.Net, d
}

// listSets returns every set name of the layout with its list and family,
// in rule order: deny before allow before learned, v4 before v6, and
// within a list host, net, host-port, net-port.
func (l Layout) listSets() []setRef {
	var out []setRef
	for _, a := range []string{actionDeny, actionAllow, ListLearned} {
		for _, v4 := range []bool{true, false} {
			names := l.list(a, v4)
			for _, n := range names.names() {
				out = append(out, setRef{name: n, list: a, v4: v4, kind: names.kind(n)})
			}
		}
	}
	return out
}

type setRef struct {
	name string
	list string
	v4   bool
	kind setKind
}
