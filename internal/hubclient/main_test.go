// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubclient

import (
	"os"
	"testing"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestMain fails the package if its tests leave a goroutine or a file
// descriptor behind.
func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }
