// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Command clearance-verdict is clearance's privileged verdict service. See
// clearance-verdict --help, clearance-verdict(1) and docs/verdict.md.
package main

import (
	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/verdict"
)

func main() { cli.Main(verdict.Command) }
