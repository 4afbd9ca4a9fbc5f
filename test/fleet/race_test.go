// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

//go:build race

package fleet

// raceBuild: the tests run with -race, so clearance-relay is built with
// it too (its data races then fail the test through the relay's exit).
const raceBuild = true
