// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Command clearance-relay connects this host's clearance hubs to a NATS
// server for a fleet. See clearance-relay --help and docs/fleet.md.
package main

import (
	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/relay"
)

func main() { cli.Main(relay.Command) }
