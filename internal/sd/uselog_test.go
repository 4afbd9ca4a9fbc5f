// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package sd

import (
	"errors"
	"testing"
)

func TestUseJournal(t *testing.T) {
	stream := func() (bool, error) { return true, nil }
	noStream := func() (bool, error) { return false, nil }
	broken := func() (bool, error) { return false, errors.New("fstat failed") }
	tests := []struct {
		name       string
		env        string
		invocation string // $INVOCATION_ID
		isStream   func() (bool, error)
		want       bool
	}{
		{name: "started by systemd while journald was down", invocation: "0123abcd", isStream: noStream, want: true},
		{name: "started by systemd, forced stderr", env: "stderr", invocation: "0123abcd", isStream: noStream, want: false},
		{name: "auto, stderr is the journal", env: "", isStream: stream, want: true},
		{name: "auto, stderr is not the journal", env: "", isStream: noStream, want: false},
		{name: "auto, check fails", env: "", isStream: broken, want: false},
		{name: "forced journal", env: "journal", isStream: noStream, want: true},
		{name: "forced stderr", env: "stderr", isStream: stream, want: false},
		{name: "unknown value is automatic", env: "syslog", isStream: stream, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("INVOCATION_ID", tc.invocation)
			if got := useJournal(tc.env, tc.isStream); got != tc.want {
				t.Errorf("useJournal(%q) = %v, want %v", tc.env, got, tc.want)
			}
		})
	}
}
