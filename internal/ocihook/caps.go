// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Capabilities that let a process inside the container get past its
// firewall: CAP_NET_ADMIN changes or deletes the container's nftables
// ruleset (the namespace belongs to the container's user namespace, where
// the capability counts), CAP_NET_RAW opens packet sockets, which send
// frames below the netfilter hooks the ruleset sits on. A --privileged
// container holds both.
const (
	CapNetAdmin = "CAP_NET_ADMIN"
	CapNetRaw   = "CAP_NET_RAW"
)

// FirewallCapabilities lists the capabilities [CheckCapabilities] refuses.
var FirewallCapabilities = []string{CapNetAdmin, CapNetRaw}

// ErrFirewallCapability is wrapped by the error of [CheckCapabilities]
// for a container holding a capability that defeats its firewall.
var ErrFirewallCapability = errors.New("the container holds a capability that defeats its firewall")

// NormalizeCapability returns the canonical name of a capability as
// written in configuration: upper case, with the CAP_ prefix
// ("net_raw" → "CAP_NET_RAW").
func NormalizeCapability(s string) string {
	s = strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(s, "CAP_") {
		s = "CAP_" + s
	}
	return s
}

// BundleCapabilities returns every capability the container's process may
// hold or gain, from the OCI bundle's config.json: the union of its
// bounding, effective, permitted, inheritable and ambient sets (a
// capability in the bounding set alone can still be gained by executing
// a file that carries it), sorted, in canonical form.
func BundleCapabilities(bundle string) ([]string, error) {
	if bundle == "" {
		return nil, errors.New("read capabilities: the state names no bundle")
	}
	b, err := readBounded(unix.AT_FDCWD, filepath.Join(bundle, "config.json"), maxBundleConfig, 0)
	if err != nil {
		return nil, fmt.Errorf("read bundle config: %w", err)
	}
	var spec struct {
		Process *struct {
			Capabilities *struct {
				Bounding    []string `json:"bounding"`
				Effective   []string `json:"effective"`
				Inheritable []string `json:"inheritable"`
				Permitted   []string `json:"permitted"`
				Ambient     []string `json:"ambient"`
			} `json:"capabilities"`
		} `json:"process"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("parse bundle config: %w", err)
	}
	if spec.Process == nil {
		return nil, errors.New("read capabilities: the bundle config has no process")
	}
	var out []string
	if c := spec.Process.Capabilities; c != nil {
		for _, set := range [][]string{c.Bounding, c.Effective, c.Inheritable, c.Permitted, c.Ambient} {
			for _, name := range set {
				if n := NormalizeCapability(name); !slices.Contains(out, n) {
					out = append(out, n)
				}
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// CheckCapabilities refuses a container holding one of
// [FirewallCapabilities] that allowed does not list. The error wraps
// [ErrFirewallCapability], names the capabilities and says how to start
// the container without them, or how an administrator allows them.
func CheckCapabilities(caps, allowed []string) error {
	var bad []string
	for _, c := range FirewallCapabilities {
		if slices.Contains(caps, c) && !slices.ContainsFunc(allowed, func(a string) bool { return NormalizeCapability(a) == c }) {
			bad = append(bad, c)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	what := strings.Join(bad, " and ")
	if slices.Contains(caps, "CAP_SYS_ADMIN") {
		what += " (a --privileged container?)"
	}
	var drop []string
	for _, c := range bad {
		drop = append(drop, "--cap-drop "+strings.TrimPrefix(c, "CAP_"))
	}
	return fmt.Errorf("%w: it holds %s, with which a process inside can change or bypass its egress firewall; "+
		"start it without (podman run %s, no --privileged), or let an administrator allow it in %s (hook.allow_capabilities)",
		ErrFirewallCapability, what, strings.Join(drop, " "), configHint)
}

// BundleNetnsPath returns the path of the existing network namespace the
// container joins, from the bundle's config.json (linux.namespaces, type
// "network", with a path), or "" when the runtime creates one for it.
func BundleNetnsPath(bundle string) (string, error) {
	if bundle == "" {
		return "", errors.New("read namespaces: the state names no bundle")
	}
	b, err := readBounded(unix.AT_FDCWD, filepath.Join(bundle, "config.json"), maxBundleConfig, 0)
	if err != nil {
		return "", fmt.Errorf("read bundle config: %w", err)
	}
	var spec struct {
		Linux *struct {
			Namespaces []struct {
				Type string `json:"type"`
				Path string `json:"path"`
			} `json:"namespaces"`
		} `json:"linux"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return "", fmt.Errorf("parse bundle config: %w", err)
	}
	if spec.Linux == nil {
		return "", nil
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == "network" {
			return ns.Path, nil
		}
	}
	return "", nil
}

// configHint names the system configuration file in messages.
const configHint = "/etc/clearance/clearance.yaml"
