// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package sd

import (
	"fmt"
	"log/slog"

	"github.com/coreos/go-systemd/v22/journal"
)

// slog levels for the syslog priorities slog has no name for. Together with
// slog's own four they give each syslog priority its own level, so
// [ParseLogLevel] and [Priority] are inverses.
const (
	LevelNotice   = slog.Level(2)  // between Info and Warn
	LevelCritical = slog.Level(12) // above Error
	LevelAlert    = slog.Level(16)
	LevelEmerg    = slog.Level(20)
)

// ParseLogLevel converts a syslog priority 0 (emerg) .. 7 (debug), as passed
// to io.systemd.service.SetLogLevel, to the slog level that logs exactly the
// messages of that priority and more severe ones.
func ParseLogLevel(priority int) (slog.Level, error) {
	switch priority {
	case 0:
		return LevelEmerg, nil
	case 1:
		return LevelAlert, nil
	case 2:
		return LevelCritical, nil
	case 3:
		return slog.LevelError, nil
	case 4:
		return slog.LevelWarn, nil
	case 5:
		return LevelNotice, nil
	case 6:
		return slog.LevelInfo, nil
	case 7:
		return slog.LevelDebug, nil
	}
	return 0, fmt.Errorf("parse log level: syslog priority %d out of range 0..7", priority)
}

// Priority maps an slog level to the journal (syslog) priority it is logged
// with: each level counts as the most severe priority whose threshold it
// reaches, e.g. Info+1 is still info, Warn-1 is notice.
func Priority(l slog.Level) journal.Priority {
	switch {
	case l >= LevelEmerg:
		return journal.PriEmerg
	case l >= LevelAlert:
		return journal.PriAlert
	case l >= LevelCritical:
		return journal.PriCrit
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= LevelNotice:
		return journal.PriNotice
	case l >= slog.LevelInfo:
		return journal.PriInfo
	}
	return journal.PriDebug
}
