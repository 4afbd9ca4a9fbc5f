// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import "strings"

// EscapeUnitInstance escapes s for use as the instance part of a unit
// name, exactly as systemd-escape(1) does without --path: "/" becomes "-",
// every byte outside [A-Za-z0-9:_.] (and "-" and "\" themselves) becomes
// \xNN, and so does a leading ".". The result names exactly one unit: it
// cannot contain "@", another unit type's suffix separator or a path
// separator, and %I in the unit file unescapes it back to s.
func EscapeUnitInstance(s string) string {
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c == '.' && i == 0, !unitChar(c):
			b.WriteString(`\x`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// unitChar reports whether c stands for itself in an escaped unit name.
func unitChar(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		c == ':' || c == '_' || c == '.'
}

// Units are the systemd units of one container's hub.
type Units struct {
	// Socket is clearance-hub@<instance>.socket (the varlink socket); the
	// hook starts it, and it pulls in Ingest.
	Socket string
	// Ingest is clearance-hub-ingest@<instance>.socket.
	Ingest string
	// Service is clearance-hub@<instance>.service.
	Service string
}

// HubUnits returns the units of the hub for container id12. The instance
// is id12 escaped with [EscapeUnitInstance].
func HubUnits(id12 string) Units {
	inst := EscapeUnitInstance(id12)
	return Units{
		Socket:  "clearance-hub@" + inst + ".socket",
		Ingest:  "clearance-hub-ingest@" + inst + ".socket",
		Service: "clearance-hub@" + inst + ".service",
	}
}
