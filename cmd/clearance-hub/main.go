// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Command clearance-hub serves one container's clearance hub. See
// clearance-hub --help and docs/architecture.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/terok-ai/clearance/internal/hubd"
	"github.com/terok-ai/clearance/internal/sd"
)

func main() {
	sd.IgnoreSIGPIPE()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := hubd.Command(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}
