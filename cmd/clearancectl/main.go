// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Command clearancectl is clearance's terminal channel: live prompts,
// the pending queue, verdicts, hub status and the audit trail. See
// clearancectl(1) and package [github.com/terok-ai/clearance/internal/ctl].
package main

import (
	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/ctl"
)

func main() { cli.Main(ctl.Command) }
