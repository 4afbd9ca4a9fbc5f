// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestCreateRuntimeMode: io.clearance.mode=observe goes into the record
// for the verdict service to judge; the hook says loudly when it was
// granted, and when it was refused (the container then runs enforced,
// not refused); a misspelt mode refuses the container with a clear
// error.
func TestCreateRuntimeMode(t *testing.T) {
	tests := []struct {
		name      string
		value     string
		grant     bool
		note      string
		wantErr   string
		wantMode  string
		wantInLog string
	}{
		{name: "granted", value: "observe", grant: true, wantMode: "observe", wantInLog: "OBSERVE MODE: its firewall is NOT ENFORCED"},
		{name: "refused falls back to enforce", value: " Observe ", note: "observe mode is not allowed for uid 0",
			wantMode: "observe", wantInLog: "observe mode refused; the container runs ENFORCED: observe mode is not allowed for uid 0"},
		{name: "enforce", value: "enforce", wantMode: ""},
		{name: "misspelt", value: "obsrve", wantErr: `annotation io.clearance.mode="obsrve": want "enforce" or "observe"`},
		{name: "control characters", value: "ob\x1bserve", wantErr: `io.clearance.mode="ob serve"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, "0 0 4294967295\n")
			e.bus(t, 0)
			var logs testutil.Buffer
			e.hook.Log = slog.New(slog.NewTextHandler(&logs, nil))
			e.eng.grantObserve, e.eng.modeNote = tt.grant, tt.note
			st := e.state()
			st.Annotations[AnnotationMode] = tt.value
			err := e.hook.CreateRuntime(testutil.Context(t), st)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("CreateRuntime = %v, want an error containing %q", err, tt.wantErr)
				}
				if e.eng.engages != 0 {
					t.Error("a refused container was engaged")
				}
				return
			}
			if err != nil {
				t.Fatalf("CreateRuntime: %v", err)
			}
			rec, err := record.Read(record.Locate(e.hook.RuntimeRoot, 0, "e8aec775a124"))
			if err != nil {
				t.Fatal(err)
			}
			if rec.Mode != tt.wantMode {
				t.Errorf("record mode %q, want %q", rec.Mode, tt.wantMode)
			}
			if tt.wantInLog != "" && !strings.Contains(logs.String(), tt.wantInLog) {
				t.Errorf("hook log lacks %q:\n%s", tt.wantInLog, logs.String())
			}
		})
	}
}
