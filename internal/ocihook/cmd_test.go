// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"bytes"
	"strings"
	"testing"

	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

func TestCommandUsage(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  int
	}{
		{"no stage", nil, "", 2},
		{"unknown stage", []string{"prestart"}, `{"id":"abc"}`, 2},
		{"bad engage mode", []string{"-engage", "maybe", "poststop"}, `{"id":"abc"}`, 2},
		{"bad manager mode", []string{"-manager", "session", "poststop"}, `{"id":"abc"}`, 2},
		{"hostile id", []string{"createRuntime"}, `{"id":"../x","pid":5}`, 2},
		{"not json", []string{"poststop"}, `nope`, 2},
		{"opted out", []string{"createRuntime"}, `{"id":"abc","pid":5,"annotations":{"io.clearance.enable":"false"}}`, 0},
		{"help", []string{"-h"}, "", 0},
		{"two stages", []string{"createRuntime", "poststop"}, `{"id":"abc"}`, 2},
		{"stage from an unknown status", nil, `{"id":"abc","status":"running"}`, 2},
		{"stage from status, opted out", nil, `{"id":"abc","status":"creating","pid":5,"annotations":{"io.clearance.enable":"no"}}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			got := Command(testutil.Context(t), tt.args, cli.Stdio{In: strings.NewReader(tt.stdin), Err: &stderr})
			if got != tt.want {
				t.Errorf("exit %d, want %d; stderr:\n%s", got, tt.want, stderr.String())
			}
		})
	}
}
