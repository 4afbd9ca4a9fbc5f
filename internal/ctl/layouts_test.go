// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
)

// seedOnly is a hub as the Python seed serves it: org.terok.Clearance1
// and org.varlink.service, no org.terok.ClearanceHub1.
type seedOnly struct {
	orgterokclearance1.VarlinkInterface
}

// startSeedHub serves a seed-like hub at path until the test ends.
func startSeedHub(t *testing.T, path string) {
	t.Helper()
	svc, err := varlink.NewService("terok", "terok-clearance", "0.8.0", "https://github.com/terok-ai/terok-clearance")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.RegisterInterface(orgterokclearance1.VarlinkNew(&seedOnly{})); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { (&varlinkapi.Server{Service: svc}).Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestDefaultGlobsFindEveryLayout: with no --glob, the hub commands find
// hubs in clearance's layout and in both of the seed's
// ($XDG_RUNTIME_DIR/terok/clearance/<id>.sock and <id>/hub.sock), and a
// hub of the seed itself, which has no Pending or Stats, is shown as such
// without failing the command.
func TestDefaultGlobsFindEveryLayout(t *testing.T) {
	rt := testutil.ShortDir(t)
	layouts := map[string]string{
		"aaaa00000001": filepath.Join(rt, "clearance", "aaaa00000001", "hub.sock"),
		"bbbb00000002": filepath.Join(rt, "terok", "clearance", "bbbb00000002.sock"),
		"cccc00000003": filepath.Join(rt, "terok", "clearance", "cccc00000003", "hub.sock"),
	}
	for id, path := range layouts {
		h := serveHub(t, path, nil, nil)
		h.Hub.Blocked(blockedEv("ctr-"+id, "192.0.2.1", id+".example", 443))
	}

	res := runCtl(t, rt, "pending", "--json")
	if res.code != ExitOK {
		t.Fatalf("pending: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	var rows []pendingJSON
	if err := json.Unmarshal([]byte(res.stdout), &rows); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.Hub+" "+r.Socket+" "+r.Domain)
	}
	sort.Strings(got)
	var want []string
	for id, path := range layouts {
		want = append(want, id+" "+path+" "+id+".example")
	}
	sort.Strings(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("pending across layouts (-want +got):\n%s", diff)
	}

	// The seed's own hub, in its own layout.
	startSeedHub(t, filepath.Join(rt, "terok", "clearance", "dddd00000004.sock"))
	res = runCtl(t, rt, "status", "--json")
	if res.code != ExitOK {
		t.Fatalf("status with a seed hub: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	var st []statusJSON
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, s := range st {
		states = append(states, s.Hub+" answers="+strconv.FormatBool(s.Answers)+" seed="+strconv.FormatBool(s.Seed))
	}
	if diff := cmp.Diff([]string{
		"aaaa00000001 answers=true seed=false", "bbbb00000002 answers=true seed=false",
		"cccc00000003 answers=true seed=false", "dddd00000004 answers=true seed=true",
	}, states); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if res := runCtl(t, rt, "status"); res.code != ExitOK || !strings.Contains(res.stdout, "seed hub (no stats)") {
		t.Errorf("status table: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = runCtl(t, rt, "pending")
	if res.code != ExitOK || !strings.Contains(res.stderr, "hub dddd00000004: a seed hub") {
		t.Errorf("pending with a seed hub: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

// TestNoHubsNamesEveryDefaultLayout: where no hub is found, the message
// says where clearancectl looked: all three default layouts.
func TestNoHubsNamesEveryDefaultLayout(t *testing.T) {
	rt := testutil.ShortDir(t)
	res := runCtl(t, rt, "status")
	for _, want := range []string{
		filepath.Join(rt, "clearance", "*", "hub.sock"),
		filepath.Join(rt, "terok", "clearance", "*.sock"),
		filepath.Join(rt, "terok", "clearance", "*", "hub.sock"),
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("status with no hubs does not name %s:\n%s", want, res.stdout)
		}
	}
}
