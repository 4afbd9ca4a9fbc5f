// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nft

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Integrity is what [Firewall.Verify] found in the namespace.
type Integrity string

const (
	// Intact: the table is the one Engage builds for the ruleset.
	Intact Integrity = "intact"
	// Altered: the table is there, but a chain, a chain's policy or a
	// rule of it is not what Engage built (changed in the namespace by a
	// process holding CAP_NET_ADMIN there).
	Altered Integrity = "altered"
	// Missing: there is no table.
	Missing Integrity = "missing"
	// Outdated: the table is one clearance built, whole, but for another
	// ruleset (another version, configuration or mode): Engage rebuilds
	// it, and nobody tampered with it.
	Outdated Integrity = "outdated"
)

// Verify checks, without reading any set's elements (cheap enough to run
// every few seconds), that the built-in table is there as Engage built it
// for rs: the output chain with its drop policy and exactly the rules it
// was built with (first and last rule carry the ruleset's fingerprint and
// the rule count), the input chain and the DNS redirect chain. For a
// layout the shield owns, only the table's presence is checked.
func (f *Firewall) Verify(rs Ruleset) (Integrity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.verify(rs)
}

func (f *Firewall) verify(rs Ruleset) (Integrity, error) {
	t, err := f.table()
	if err != nil {
		return "", err
	}
	if t == nil {
		return Missing, nil
	}
	if !f.layout.Owned {
		return Intact, nil
	}
	rs, err = rs.withDefaults()
	if err != nil {
		return "", fmt.Errorf("verify: %w", err)
	}
	chains, err := f.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return "", fmt.Errorf("list chains: %w", err)
	}
	have := map[string]*nftables.Chain{}
	for _, c := range chains {
		if c.Table != nil && c.Table.Name == t.Name {
			have[c.Name] = c
		}
	}
	out, in := have["output"], have["input"]
	if out == nil || in == nil || out.Policy == nil || *out.Policy != nftables.ChainPolicyDrop ||
		out.Hooknum == nil || *out.Hooknum != *nftables.ChainHookOutput {
		return Altered, nil
	}
	if f.layout.NAT != "" && have[f.layout.NAT] == nil {
		return Altered, nil
	}
	rules, err := f.conn.GetRules(t, out)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return "", fmt.Errorf("list chain output: %w", err)
	}
	if len(rules) == 0 || !strings.HasSuffix(ruleComment(rules[len(rules)-1]), countSuffix(len(rules))) ||
		!strings.HasPrefix(ruleComment(rules[0]), fingerprintPrefix) {
		return Altered, nil
	}
	outdated := ruleComment(rules[0]) != fingerprint(rs) || ruleComment(rules[len(rules)-1]) != lastComment(rs, len(rules))
	inRules, err := f.conn.GetRules(t, in)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return "", fmt.Errorf("list chain input: %w", err)
	}
	if len(inRules) != 1 {
		return Altered, nil
	}
	if outdated {
		return Outdated, nil
	}
	return Intact, nil
}
