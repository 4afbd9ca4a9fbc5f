package nft

// SetNames names the sets of one list (allow or deny) for one address
// family.
type SetNames struct {
	// Host holds single addresses. In the built-in ruleset it is a hash set
	// with per-element timeouts; in terok-shield's table it is an interval
	// set that holds CIDRs as well.
	Host string
	// Net holds CIDR prefixes (an interval set). Empty means CIDRs go into
	// Host, which must then be an interval set.
	Net string
}

// names returns the distinct non-empty set names.
func (n SetNames) names() []string {
	if n.Net == "" || n.Net == n.Host {
		return []string{n.Host}
	}
	return []string{n.Host, n.Net}
}

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
	// Resolver4 and Resolver6 name the sets of DNS resolvers whose port 53
	// is open (built-in mode only; empty in shield layouts).
	Resolver4, Resolver6 string
}

// Builtin is clearance's own table, created by [Firewall.Engage]:
// hash sets allow4/allow6/deny4/deny6 (flags timeout) for single addresses
// and interval sets allow4_net/allow6_net/deny4_net/deny6_net for CIDRs.
var Builtin = Layout{
	Table:     "clearance",
	Owned:     true,
	Allow4:    SetNames{Host: "allow4", Net: "allow4_net"},
	Allow6:    SetNames{Host: "allow6", Net: "allow6_net"},
	Deny4:     SetNames{Host: "deny4", Net: "deny4_net"},
	Deny6:     SetNames{Host: "deny6", Net: "deny6_net"},
	Resolver4: "resolver4",
	Resolver6: "resolver6",
}

// Shield is terok-shield 0.6.x's table: interval sets allow_v4/allow_v6 and
// deny_v4/deny_v6. Note that in that ruleset the allow rule comes before the
// deny rule (an address in both sets is accepted); Apply keeps the two lists
// disjoint for exact matches.
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

// list returns the set names for a list ("allow"/"deny") and family.
func (l Layout) list(action string, v4 bool) SetNames {
	switch {
	case action == actionAllow && v4:
		return l.Allow4
	case action == actionAllow:
		return l.Allow6
	case v4:
		return l.Deny4
	default:
		return l.Deny6
	}
}

// target returns the set name that holds p-shaped entries of a list.
func (n SetNames) target(single bool) string {
	if single || n.Net == "" {
		return n.Host
	}
	return n.Net
}

// listSets returns every set name of the layout with its list and family,
// in rule order (deny before allow, v4 before v6, host before net).
func (l Layout) listSets() []setRef {
	var out []setRef
	for _, a := range []string{actionDeny, actionAllow} {
		for _, v4 := range []bool{true, false} {
			for _, n := range l.list(a, v4).names() {
				out = append(out, setRef{name: n, list: a, v4: v4})
			}
		}
	}
	return out
}

type setRef struct {
	name string
	list string
	v4   bool
}
