// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/hub"
)

// BenchmarkIngestFanout10 measures the whole hub path in one process:
// producer lines on the ingest socket → hub → ten subscribers on real
// Unix sockets, with the audit log going to a discarding text handler.
func BenchmarkIngestFanout10(b *testing.B) {
	dir := b.TempDir()
	vl, err := net.Listen("unix", filepath.Join(dir, "hub.sock"))
	if err != nil {
		b.Fatal(err)
	}
	il, err := net.Listen("unix", filepath.Join(dir, "ingest.sock"))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(discard{}, nil))
	done := make(chan error, 1)
	ready := make(chan *hub.Hub, 1)
	go func() {
		done <- Run(ctx, Options{Container: "bench", Varlink: []net.Listener{vl}, Ingest: []net.Listener{il}, Log: log,
			Ready: func(h *hub.Hub) { ready <- h }})
	}()
	h := <-ready
	const subs = 10
	var wg sync.WaitGroup
	counts := make([]atomic.Int64, subs)
	for s := 0; s < subs; s++ {
		c, err := net.Dial("unix", filepath.Join(dir, "hub.sock"))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte(`{"method":"org.terok.Clearance1.Subscribe","more":true}` + "\x00"))
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<16)
			for counts[s].Load() < int64(b.N) {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				m, err := c.Read(buf)
				if err != nil {
					return
				}
				for _, x := range buf[:m] {
					if x == 0 {
						counts[s].Add(1)
					}
				}
			}
		}()
	}
	// Every subscriber counted before the first event (there is no replay).
	for h.Stats().Subscribers < subs {
		runtime.Gosched()
	}
	in, err := net.Dial("unix", filepath.Join(dir, "ingest.sock"))
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	b.ResetTimer()
	var sb strings.Builder
	for i := 0; i < b.N; i++ {
		fmt.Fprintf(&sb, `{"type":"pending","container":"bench","id":"bench:%d","dest":"198.51.100.%d","port":443,"proto":6,"domain":""}`+"\n", i, i%250+1)
		if i%64 == 63 || i == b.N-1 {
			in.Write([]byte(sb.String()))
			sb.Reset()
			// Pace to the slowest subscriber so the bounded queues do not drop.
			for {
				m := int64(b.N)
				for s := range counts {
					m = min(m, counts[s].Load())
				}
				if m >= int64(i-64) {
					break
				}
				time.Sleep(50 * time.Microsecond)
			}
		}
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
