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
	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/notifier"
)

func main() { cli.Main(notifier.Command) }
