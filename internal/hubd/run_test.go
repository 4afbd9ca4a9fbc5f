// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/hubd"
	"github.com/terok-ai/clearance/internal/testenv/hubtest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
)

// TestRunStopsEverything: with subscribers, producers and a hung-up
// client in flight, Run returns promptly when its context ends and leaves
// no goroutine behind.
func TestRunStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	vl, err := net.Listen("unix", filepath.Join(dir, "hub.sock"))
	if err != nil {
		t.Fatal(err)
	}
	il, err := net.Listen("unix", filepath.Join(dir, "ingest.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *hub.Hub, 1)
	done := make(chan error, 1)
	go func() {
		done <- hubd.Run(ctx, hubd.Options{Container: "c", Varlink: []net.Listener{vl}, Ingest: []net.Listener{il},
			Hub: hub.Config{Applier: &hubtest.Applier{}}, Log: testutil.Logger(t),
			Ready: func(h *hub.Hub) { ready <- h }})
	}()
	h := <-ready
	var conns []*varlink.Connection
	var first func(context.Context) (orgterokclearance1.ClearanceEvent, uint64, error)
	for i := 0; i < 3; i++ {
		c, err := varlinkapi.Dial(context.Background(), filepath.Join(dir, "hub.sock"))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		recv, err := orgterokclearance1.Subscribe().Send(context.Background(), c, varlink.More)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = recv
		}
	}
	// The subscribers must be counted before the producer writes (there
	// is no replay); then the events arrive.
	testutil.Eventually(t, 0, "3 subscribers", func() bool { return h.Stats().Subscribers == 3 })
	in, err := net.Dial("unix", filepath.Join(dir, "ingest.sock"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		fmt.Fprintf(in, `{"type":"pending","container":"c","id":"c:%d","dest":"198.51.100.1","port":1,"proto":6}`+"\n", i)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	for i := 0; i < 100; i++ {
		if _, _, err := first(rctx); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	t.Logf("Run returned %v after cancel with 3 subscribers and a producer connected", time.Since(start))
	in.Close()
	for _, c := range conns {
		c.Close()
	}
	// No event tells when the last goroutine has exited: poll.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		buf = buf[:runtime.Stack(buf, true)]
		var ours []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "clearance/internal") {
				ours = append(ours, g)
			}
		}
		t.Fatalf("%d goroutines before, %d after:\n%s", before, n, strings.Join(ours, "\n\n"))
	}
}
