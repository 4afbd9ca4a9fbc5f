// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"log/slog"
	"time"

	"github.com/terok-ai/clearance/internal/shieldexec"
	"github.com/terok-ai/clearance/internal/verdict"
)

// shieldRunner runs terok-shield as the seed did; binary "" means next to
// this executable, then $PATH.
func shieldRunner(binary string, timeout time.Duration, log *slog.Logger) verdict.ShieldRunner {
	if binary == "" {
		binary = shieldexec.FindShieldBinary()
	}
	return &shieldexec.Exec{Binary: binary, Timeout: timeout, Log: log}
}
