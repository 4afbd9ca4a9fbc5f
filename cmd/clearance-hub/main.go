// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Command clearance-hub serves one container's clearance hub. See
// clearance-hub --help and docs/architecture.md.
package main

import (
	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/hubd"
)

func main() { cli.Main(hubd.Command) }
