// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"fmt"
	"net/netip"

	"github.com/terok-ai/clearance/internal/config"
)

// FromConfig translates the shared configuration's ruleset and verdict
// sections into a service Config (without Backend, Bind, Shield, Level and
// Log, which the caller supplies).
func FromConfig(c *config.Config) (Config, error) {
	out := Config{
		PolicyDir:   c.Ruleset.PolicyDir,
		PolicyPath:  c.Ruleset.PolicyPath,
		Group:       uint16(c.Ruleset.NflogGroup),
		BlockPrefix: c.Ruleset.BlockPrefix,
		OnceTTL:     c.Verdict.OnceTTL,

		KeepEstablished:  c.Verdict.KeepEstablished,
		MaxConnsPerOwner: c.Verdict.MaxConnectionsPerOwner,
		DNSMark:          c.Ruleset.DNSMark,
		TCPReset:         c.Ruleset.TCPReject == config.TCPRejectReset,
		Observe:          ObservePolicy{Users: c.Observe.Users, Projects: c.Observe.Projects},
		AskPort:          uint16(c.Ask.Port),
	}
	switch c.Ruleset.Mode {
	case config.RulesetModeShield:
		out.Mode = ModeShield
	default:
		out.Mode = ModeBuiltin
	}
	for _, r := range c.Ruleset.Resolvers {
		a, err := netip.ParseAddr(r)
		if err != nil {
			return out, fmt.Errorf("ruleset.resolvers: %q: %w", r, err)
		}
		out.Resolvers = append(out.Resolvers, a.Unmap())
	}
	return out, nil
}
