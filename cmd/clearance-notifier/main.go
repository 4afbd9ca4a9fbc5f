// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Command clearance-notifier shows clearance prompts as desktop
// notifications: it follows every per-container hub of the user, turns
// blocked connections into Allow/Deny popups and sends the choice back.
// "clearance-notifier notify" shows a one-off notification.
//
// See clearance-notifier(1) and package internal/notifier.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/terok-ai/clearance/internal/notifier"
	"github.com/terok-ai/clearance/internal/sd"
)

func main() {
	sd.IgnoreSIGPIPE()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := notifier.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
