// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"encoding/json"
	"github.com/terok-ai/clearance/internal/record"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

func TestPendingJSON(t *testing.T) {
	rt := testutil.ShortDir(t)
	th := startHub(t, rt, "c1")
	ev := blockedEv("c1", "198.51.100.7", "api.example.com", 443)
	ev.Dossier = map[string]string{"project": "proj", "task": "t1"}
	id := th.Hub.Blocked(ev)
	th.Hub.Blocked(ev) // coalesced: count 2
	other := startHub(t, rt, "c2")
	id2 := other.Hub.Blocked(blockedEv("c2", "192.0.2.9", "", 53))

	res := runCtl(t, rt, "pending", "--json")
	if res.code != ExitOK {
		t.Fatalf("exit %d, stderr %s", res.code, res.stderr)
	}
	var got []pendingJSON
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
		t.Fatalf("decode %q: %v", res.stdout, err)
	}
	want := []pendingJSON{
		{Hub: "c1", Socket: th.Path, Container: "c1", RequestID: id, Dest: "198.51.100.7", Port: 443, Proto: 6,
			Domain: "api.example.com", Target: "api.example.com", Dossier: ev.Dossier, Count: 2},
		{Hub: "c2", Socket: other.Path, Container: "c2", RequestID: id2, Dest: "192.0.2.9", Port: 53, Proto: 6,
			Target: "192.0.2.9", Dossier: map[string]string{}, Count: 1},
	}
	opts := cmpopts.IgnoreFields(pendingJSON{}, "FirstSeenUsec", "LastSeenUsec")
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Errorf("pending --json (-want +got):\n%s", diff)
	}
	for _, p := range got {
		if p.FirstSeenUsec == 0 || p.LastSeenUsec < p.FirstSeenUsec {
			t.Errorf("%s: bad timestamps %d/%d", p.RequestID, p.FirstSeenUsec, p.LastSeenUsec)
		}
	}

	// --container narrows to one hub; the table names the destination.
	res = runCtl(t, rt, "pending", "--container", "c2")
	if res.code != ExitOK || !strings.Contains(res.stdout, "192.0.2.9:53/tcp") || strings.Contains(res.stdout, "api.example.com") {
		t.Errorf("pending --container c2: exit %d\n%s", res.code, res.stdout)
	}
	res = runCtl(t, rt, "pending")
	for _, s := range []string{"CONTAINER", "api.example.com:443/tcp (198.51.100.7)", "proj/t1", id, id2} {
		if !strings.Contains(res.stdout, s) {
			t.Errorf("pending table lacks %q:\n%s", s, res.stdout)
		}
	}
}

func TestPendingEmptyAndNoHubs(t *testing.T) {
	rt := testutil.ShortDir(t)
	res := runCtl(t, rt, "pending", "--json")
	if res.code != ExitOK || strings.TrimSpace(res.stdout) != "[]" {
		t.Errorf("no hubs: exit %d, stdout %q", res.code, res.stdout)
	}
	startHub(t, rt, "c1")
	res = runCtl(t, rt, "pending")
	if res.code != ExitOK || !strings.Contains(res.stdout, "no pending requests") {
		t.Errorf("empty hub: exit %d, stdout %q", res.code, res.stdout)
	}
}

func TestVerdictScopes(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		action string
		scope  string
		ttl    time.Duration
		out    string
	}{
		{"allow for an hour", []string{"allow", "ID", "--for", "1h"}, "allow", hub.ScopeOnce, time.Hour, "allowed api.example.com:443/tcp (c1), once, until"},
		{"allow with the default lifetime", []string{"allow", "ID"}, "allow", hub.ScopeOnce, 0, "allowed api.example.com:443/tcp (c1), once"},
		{"deny until exit, option first", []string{"deny", "--until-exit", "ID"}, "deny", hub.ScopeContainer, 0, "denied api.example.com:443/tcp (c1), until the container exits"},
		{"allow always, filtered", []string{"allow", "ID", "--always", "--container", "c1"}, "allow", hub.ScopeAlways, 0, "always"},
		{"deny for two days", []string{"deny", "ID", "--for=2d"}, "deny", hub.ScopeOnce, 48 * time.Hour, "denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := testutil.ShortDir(t)
			th := startHub(t, rt, "c1")
			startHub(t, rt, "c2") // a second hub that does not hold the id
			id := th.Hub.Blocked(blockedEv("c1", "198.51.100.7", "api.example.com", 443))
			args := append([]string(nil), tt.args...)
			for i, a := range args {
				if a == "ID" {
					args[i] = id
				}
			}
			res := runCtl(t, rt, args...)
			if res.code != ExitOK {
				t.Fatalf("exit %d: %s", res.code, res.stderr)
			}
			if !strings.Contains(res.stdout, tt.out) {
				t.Errorf("stdout %q lacks %q", res.stdout, tt.out)
			}
			want := []hub.ApplyRequest{{Container: "c1", Dest: "api.example.com", IP: "198.51.100.7", Port: 443,
				Proto: 6, Action: tt.action, Scope: tt.scope, TTL: tt.ttl}}
			if diff := cmp.Diff(want, th.Applier.Calls()); diff != "" {
				t.Errorf("applier calls (-want +got):\n%s", diff)
			}
			if n := len(th.Hub.Pending()); n != 0 {
				t.Errorf("%d requests still pending", n)
			}
		})
	}
}

func TestVerdictErrors(t *testing.T) {
	rt := testutil.ShortDir(t)
	th := startHub(t, rt, "c1")
	id := th.Hub.Blocked(blockedEv("c1", "198.51.100.7", "api.example.com", 443))

	res := runCtl(t, rt, "allow", "nope-42")
	if res.code != ExitNotFound || !strings.Contains(res.stderr, "nope-42 is not pending on any hub") {
		t.Errorf("unknown id: exit %d, stderr %q", res.code, res.stderr)
	}
	if len(th.Applier.Calls()) != 0 {
		t.Errorf("applier called for an unknown id")
	}

	th.Applier.Set(false, "nft: \x1b[31mNo such file\u202e or directory", nil)
	res = runCtl(t, rt, "allow", id)
	if res.code != ExitRefused || !strings.Contains(res.stderr, "the firewall refused to allow api.example.com:443/tcp (c1): nft:") ||
		!strings.Contains(res.stderr, "still pending") {
		t.Errorf("refused: exit %d, stderr %q", res.code, res.stderr)
	}
	assertInert(t, "refusal message", res.stderr)
	if len(th.Hub.Pending()) != 1 {
		t.Errorf("a refused verdict must leave the request pending")
	}

	// Usage errors.
	for _, args := range [][]string{
		{"allow"},
		{"allow", id, "--for", "1h", "--always"},
		{"deny", id, "--for", "0s"},
		{"deny", id, "--for", "soon"},
		{"allow", id, "extra"},
		{"frobnicate"},
		{},
	} {
		if res := runCtl(t, rt, args...); res.code != ExitUsage {
			t.Errorf("%q: exit %d, want %d", args, res.code, ExitUsage)
		}
	}

	// The id held by a hub that stopped answering is not "unknown".
	th.Stop()
	res = runCtl(t, rt, "allow", id)
	if res.code == ExitOK {
		t.Errorf("allow on a stopped hub succeeded")
	}
}

func TestStatusJSON(t *testing.T) {
	rt := testutil.ShortDir(t)
	th := startHub(t, rt, "c1")
	th.Hub.Blocked(blockedEv("c1", "198.51.100.7", "api.example.com", 443))
	th.Hub.Blocked(blockedEv("c1", "198.51.100.8", "", 80))
	th2 := startHub(t, rt, "c2")

	res := runCtl(t, rt, "status", "--json")
	if res.code != ExitOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	var got []statusJSON
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
		t.Fatal(err)
	}
	want := []statusJSON{
		{Hub: "c1", Socket: th.Path, Answers: true, Container: "c1", Pending: 2, EventsIn: 2, Ruleset: "external", Mode: "enforce"},
		{Hub: "c2", Socket: th2.Path, Answers: true, Container: "c2", Ruleset: "external", Mode: "enforce"},
	}
	opts := cmpopts.IgnoreFields(statusJSON{}, "StartedUsec", "EventsOut")
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Errorf("status --json (-want +got):\n%s", diff)
	}

	res = runCtl(t, rt, "status", "--container", "nothere")
	if res.code != ExitNotFound {
		t.Errorf("status of an unknown container: exit %d", res.code)
	}
	res = runCtl(t, rt, "status")
	if res.code != ExitOK || !strings.Contains(res.stdout, "SUBSCRIBERS") || !strings.Contains(res.stdout, "c2") {
		t.Errorf("status table: exit %d\n%s", res.code, res.stdout)
	}
}

func TestStatusReportsSilentHub(t *testing.T) {
	rt := testutil.ShortDir(t)
	th := startHub(t, rt, "c1")
	// Stop serving but leave a stale socket file behind (the seed's
	// hubs do that).
	th.Stop()
	res := runCtl(t, rt, "status", "--json")
	if res.code != ExitFailure {
		t.Errorf("exit %d, want %d", res.code, ExitFailure)
	}
	var got []statusJSON
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Answers || got[0].Error == "" {
		t.Errorf("status of a dead hub = %+v", got)
	}
}

func TestHostileStringsInPending(t *testing.T) {
	rt := testutil.ShortDir(t)
	th := startHub(t, rt, "c1")
	ev := blockedEv("c1", "198.51.100.7", hostile, 443)
	ev.Dossier = map[string]string{"project": "\x1b[1mp\u202e", "task": hostile, "name": "n\x1b]8;;http://x\x07"}
	// Publish takes events as a producer sends them: nothing here cleans
	// them, so the hostile bytes really reach the wire.
	ev.RequestID = "c1:1"
	th.Hub.Publish(ev)

	res := runCtl(t, rt, "pending")
	if res.code != ExitOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	assertInert(t, "pending table", res.stdout)
	for _, line := range strings.Split(res.stdout, "\n") {
		if len(line) > 2048 {
			t.Errorf("a %d-byte line: 10 KiB names must be capped", len(line))
		}
	}
	if !strings.Contains(res.stdout, "evil") {
		t.Errorf("the hostile name is not shown at all:\n%s", res.stdout)
	}

	res = runCtl(t, rt, "pending", "--json")
	assertInert(t, "pending --json", res.stdout)
	var got []pendingJSON
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Domain != hostile || got[0].Dossier["task"] != hostile {
		t.Errorf("JSON must keep values exact")
	}
}

// TestStatusListsContainersWithoutHub: a container with a runtime record
// but no hub (down, failed, or its socket gone) is listed, and status
// exits 1: before, it said "no hubs found" and 0.
func TestStatusListsContainersWithoutHub(t *testing.T) {
	rt := testutil.ShortDir(t)
	th := startHub(t, rt, "c1")
	rec := record.Record{ID: "0123456789ab" + strings.Repeat("0", 52), ID12: "0123456789ab", PID: 4242, NetnsInode: 1, NetnsDev: 1,
		OwnerUID: uint32(os.Getuid()), Dossier: map[string]string{}}
	if err := record.Write(filepath.Join(rt, "clearance", rec.ID12), rec); err != nil {
		t.Fatal(err)
	}
	res := runCtl(t, rt, "status", "--json")
	if res.code != ExitFailure {
		t.Errorf("exit %d, want %d", res.code, ExitFailure)
	}
	var got []statusJSON
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Hub != "0123456789ab" || got[0].Answers || !strings.Contains(got[0].Error, "hub down") ||
		got[1].Socket != th.Path || !got[1].Answers {
		t.Errorf("status = %+v", got)
	}
	res = runCtl(t, rt, "status")
	if res.code != ExitFailure || !strings.Contains(res.stdout, "hub down") {
		t.Errorf("status table: exit %d\n%s", res.code, res.stdout)
	}
}

// TestStatusFindsSystemHubs: the hubs of rootful containers under the
// system manager (/run/clearance/<id12>/hub.sock) are found next to the
// caller's own, without --glob. (test/packaging TestOperatorGroup checks
// a member and a non-member against the real units.)
func TestStatusFindsSystemHubs(t *testing.T) {
	rt, sys := testutil.ShortDir(t), testutil.ShortDir(t)
	own := startHub(t, rt, "c1")
	root := serveHub(t, filepath.Join(sys, "0123456789ab", "hub.sock"), nil, nil)
	res := runWith(t, func(r *runner) { r.systemHubs = sys }, rt, "status", "--json")
	if res.code != ExitOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	var got []statusJSON
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, s := range got {
		paths = append(paths, s.Socket)
	}
	if diff := cmp.Diff([]string{root.Path, own.Path}, paths); diff != "" {
		t.Errorf("hubs found (-want +got):\n%s", diff)
	}
	if strings.Contains(res.stderr, "not a member") {
		t.Errorf("a reachable system hub was reported as denied: %s", res.stderr)
	}
}
