// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		arg               string
		dest, port, label string
		bad               bool
	}{
		{arg: "build-1", dest: "build-1", label: "build-1"},
		{arg: "alice@build-1.example.org", dest: "alice@build-1.example.org", label: "build-1.example.org"},
		{arg: "alice@10.0.0.5:2222", dest: "alice@10.0.0.5", port: "2222", label: "10.0.0.5:2222"},
		{arg: "[::1]:22", dest: "::1", port: "22", label: "[::1]:22"},
		{arg: "bob@[2001:db8::1]", dest: "bob@2001:db8::1", label: "[2001:db8::1]"},
		{arg: "-oProxyCommand=sh", bad: true},
		{arg: "@host", bad: true},
		{arg: "-x@host", bad: true},
		{arg: "host:0", bad: true},
		{arg: "host:99999", bad: true},
		{arg: "host/evil", bad: true},
		{arg: "ho st", bad: true},
		{arg: "[nothex]:22", bad: true},
		{arg: "", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.arg, func(t *testing.T) {
			h, err := parseHost(tt.arg)
			if tt.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", h)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []string{h.dest, h.port, h.label}
			if diff := cmp.Diff([]string{tt.dest, tt.port, tt.label}, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestSplitGlobal(t *testing.T) {
	g, rest, err := splitGlobal([]string{"--host", "a", "--host=b:22", "--ssh-command", "ssh -F x", "--local", "pending", "--host", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "b:22"}, g.hosts); diff != "" {
		t.Errorf("hosts (-want +got):\n%s", diff)
	}
	if g.sshCommand != "ssh -F x" || !g.local {
		t.Errorf("options: %+v", g)
	}
	if diff := cmp.Diff([]string{"pending", "--host", "c"}, rest); diff != "" {
		t.Errorf("rest (-want +got):\n%s", diff)
	}
	if _, _, err := splitGlobal([]string{"--host"}); err == nil {
		t.Error("--host without a value accepted")
	}
	if _, _, err := splitGlobal([]string{"--local=yes", "status"}); err == nil {
		t.Error("--local=yes accepted")
	}
}

func TestRemoteUsageErrors(t *testing.T) {
	rt := testutil.ShortDir(t)
	for _, args := range [][]string{
		{"--host", "-oProxyCommand=x", "pending"},
		{"--host", "a", "--host", "a", "pending"},
		{"--host"},
	} {
		res := runCtl(t, rt, args...)
		if res.code != ExitUsage {
			t.Errorf("%q: exit %d, stderr %s", args, res.code, res.stderr)
		}
	}
}
