// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Command clearance-oci-hook is clearance's OCI runtime hook (stages
// createRuntime and poststop). See clearance-oci-hook(1) and
// docs/oci-hook.md.
package main

import (
	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/ocihook"
)

func main() { cli.Main(ocihook.Command) }
