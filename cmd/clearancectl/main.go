// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Command clearancectl is clearance's terminal channel: live prompts,
// the pending queue, verdicts, hub status and the audit trail. See
// clearancectl(1) and package [github.com/terok-ai/clearance/internal/ctl].
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/terok-ai/clearance/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
