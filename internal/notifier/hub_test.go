// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
)

// TestStreamCancelRacesData: cancelling a Subscribe stream while events
// arrive must end the receive. varlink/go's context handling alone can
// miss it (seen with GOMAXPROCS=1); DialInterruptible's interrupt makes it certain.
func TestStreamCancelRacesData(t *testing.T) {
	th := startHubAt(t, filepath.Join(testutil.ShortDir(t), "x", "hub.sock"), "c")
	for i := 0; i < 300; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		c, interrupt, err := varlinkapi.DialInterruptible(ctx, th.Path)
		if err != nil {
			t.Fatal(err)
		}
		stop := context.AfterFunc(ctx, interrupt)
		defer stop()
		recv, err := orgterokclearance1.Subscribe().Send(ctx, c, varlink.More)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			for {
				_, _, err := recv(ctx)
				if err != nil {
					done <- err
					return
				}
			}
		}()
		if i%2 == 1 { // with and without data in flight
			th.Hub.Publish(blockedEvent("c", "192.0.2.1", "x.example", nil))
		}
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("iteration %d: recv not interrupted", i)
		}
		c.Close()
	}
}
