// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package orgterokclearancehub1

//go:generate go run github.com/varlink/go/cmd/varlink-go-interface-generator org.terok.ClearanceHub1.varlink
