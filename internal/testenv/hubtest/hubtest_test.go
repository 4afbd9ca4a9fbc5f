// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
)

func TestApplierAnswers(t *testing.T) {
	boom := errors.New("boom")
	once := hub.ApplyRequest{Action: "allow", Scope: hub.ScopeOnce, TTL: time.Hour}
	tests := []struct {
		name       string
		set        func(*Applier)
		req        hub.ApplyRequest
		want       hub.ApplyResult
		wantErr    error
		wantExpiry bool
	}{
		{name: "zero value answers OK", req: hub.ApplyRequest{Action: "deny"}, want: hub.ApplyResult{OK: true}},
		{name: "once with TTL expires", req: once, want: hub.ApplyResult{OK: true}, wantExpiry: true},
		{name: "refused", set: func(a *Applier) { a.Set(false, "nft: no", nil) }, req: once,
			want: hub.ApplyResult{Stderr: "nft: no"}},
		{name: "error", set: func(a *Applier) { a.Set(true, "", boom) }, req: once, wantErr: boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Applier{}
			if tt.set != nil {
				tt.set(a)
			}
			got, err := a.Apply(context.Background(), tt.req)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantExpiry != !got.Expires.IsZero() {
				t.Errorf("Expires = %v, want set: %v", got.Expires, tt.wantExpiry)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(hub.ApplyResult{}, "Expires")); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]hub.ApplyRequest{tt.req}, a.Calls()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWaitCallsWakesOnApply(t *testing.T) {
	a := &Applier{}
	go func() {
		for _, d := range []string{"a.example", "b.example"} {
			a.Apply(context.Background(), hub.ApplyRequest{Dest: d})
		}
	}()
	got := a.WaitCalls(t, 2)
	want := []hub.ApplyRequest{{Dest: "a.example"}, {Dest: "b.example"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestServe(t *testing.T) {
	for _, keep := range []bool{false, true} {
		name := map[bool]string{false: "socket removed on stop", true: "KeepSocket leaves a stale socket"}[keep]
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(testutil.ShortDir(t), "sub", "hub.sock")
			h := Serve(t, path, Options{Container: "ctr", KeepSocket: keep})
			c, err := varlinkapi.Dial(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := orgterokclearance1.Subscribe().Send(context.Background(), c, varlink.More); err != nil {
				t.Fatal(err)
			}
			h.WaitSubscribers(t, 1)
			if got := h.Hub.Stats().Container; got != "ctr" {
				t.Errorf("container = %q, want ctr", got)
			}
			h.Stop()
			h.Stop() // idempotent
			_, err = os.Stat(path)
			if exists := err == nil; exists != keep {
				t.Errorf("socket exists after Stop: %v, want %v (stat: %v)", exists, keep, err)
			}
			if keep {
				// A fork elsewhere in the process may hold a copy of the
				// listener until its exec: the socket must refuse soon,
				// and then for good.
				refused := func() bool {
					c2, err := varlinkapi.Dial(context.Background(), path)
					if err == nil {
						c2.Close()
					}
					return err != nil
				}
				if !testutil.Within(2*time.Second, refused) || !refused() {
					t.Errorf("dial of a stopped hub succeeded")
				}
			}
		})
	}
}

func TestServeGivenHub(t *testing.T) {
	a := &Applier{}
	h := hub.New(hub.Config{Container: "mine", Applier: a})
	s := Serve(t, filepath.Join(testutil.ShortDir(t), "hub.sock"), Options{Hub: h, Applier: a, Container: "ignored"})
	if s.Hub != h || s.Applier != a {
		t.Fatalf("Serve did not serve the given hub and applier")
	}
}
