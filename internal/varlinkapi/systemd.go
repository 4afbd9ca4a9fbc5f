// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package varlinkapi

import (
	"context"
	"log/slog"
	"os"

	"github.com/terok-ai/clearance/internal/sd"
	"github.com/terok-ai/clearance/internal/varlinkapi/iosystemdservice"
)

// SystemdService implements io.systemd.service, as systemd's own varlink
// services do: Ping, SetLogLevel and GetEnvironment.
//
// Register it with iosystemdservice.VarlinkNew.
type SystemdService struct {
	iosystemdservice.VarlinkInterface

	// Level is changed by SetLogLevel. Nil makes SetLogLevel a no-op
	// that still succeeds.
	Level *slog.LevelVar

	// Allowed, if set, decides whether the caller of SetLogLevel and
	// GetEnvironment may use them; nil allows everyone who can connect.
	Allowed func(c *iosystemdservice.VarlinkCall) bool
}

// Ping implements io.systemd.service.Ping.
func (s *SystemdService) Ping(ctx context.Context, c iosystemdservice.VarlinkCall) error {
	return c.ReplyPing(ctx)
}

// SetLogLevel implements io.systemd.service.SetLogLevel (syslog levels 0–7).
func (s *SystemdService) SetLogLevel(ctx context.Context, c iosystemdservice.VarlinkCall, level int64) error {
	if s.Allowed != nil && !s.Allowed(&c) {
		return c.ReplyPermissionDenied(ctx)
	}
	l, err := sd.ParseLogLevel(int(level))
	if err != nil {
		return c.ReplyInvalidParameter(ctx, "level")
	}
	if s.Level != nil {
		s.Level.Set(l)
	}
	return c.ReplySetLogLevel(ctx)
}

// GetEnvironment implements io.systemd.service.GetEnvironment.
func (s *SystemdService) GetEnvironment(ctx context.Context, c iosystemdservice.VarlinkCall) error {
	if s.Allowed != nil && !s.Allowed(&c) {
		return c.ReplyPermissionDenied(ctx)
	}
	env := os.Environ()
	if env == nil {
		env = []string{}
	}
	return c.ReplyGetEnvironment(ctx, env)
}
