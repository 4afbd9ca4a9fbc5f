// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Command clearance-oci-hook is clearance's OCI runtime hook (stages
// createRuntime and poststop). See clearance-oci-hook(1) and
// docs/oci-hook.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/terok-ai/clearance/internal/ocihook"
	"github.com/terok-ai/clearance/internal/sd"
)

func main() {
	sd.IgnoreSIGPIPE()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := ocihook.Command(ctx, os.Args[1:], os.Stdin, os.Stderr)
	stop()
	os.Exit(code)
}
