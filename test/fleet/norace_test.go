// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

//go:build !race

package fleet

const raceBuild = false
