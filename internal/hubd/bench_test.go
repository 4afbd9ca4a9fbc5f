// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hubd

import (
	"bytes"
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
//
// "paced" holds the producer back until the slowest subscriber is within
// 64 events of it, so it measures the rate at which every subscriber gets
// every event; its dropped_% must be 0 by construction, and an event the
// hub loses fails the run instead of stalling it. "unpaced" writes as
// fast as the ingest socket takes lines: the hub's bounded queues drop
// the oldest events of subscribers that fall behind, and delivered_% says
// how many arrived. Both report per-subscriber delivered events/s.
func BenchmarkIngestFanout10(b *testing.B) {
	b.Run("paced", func(b *testing.B) { benchIngestFanout(b, 10, true) })
	b.Run("unpaced", func(b *testing.B) { benchIngestFanout(b, 10, false) })
}

// benchStall is how long a benchmark waits for a subscriber to make
// progress before it calls the event lost.
const benchStall = 10 * time.Second

func benchIngestFanout(b *testing.B, subs int, paced bool) {
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
	log := slog.New(slog.NewTextHandler(discard{}, nil))
	done := make(chan error, 1)
	ready := make(chan *hub.Hub, 1)
	go func() {
		done <- Run(ctx, Options{Container: "bench", Varlink: []net.Listener{vl}, Ingest: []net.Listener{il}, Log: log,
			Ready: func(h *hub.Hub) { ready <- h }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("hub: %v", err)
		}
	}()
	h := <-ready
	var wg sync.WaitGroup
	counts := make([]atomic.Int64, subs)
	conns := make([]net.Conn, subs)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		wg.Wait()
	}()
	for s := 0; s < subs; s++ {
		c, err := net.Dial("unix", filepath.Join(dir, "hub.sock"))
		if err != nil {
			b.Fatal(err)
		}
		conns[s] = c
		if _, err := c.Write([]byte(`{"method":"org.terok.Clearance1.Subscribe","more":true}` + "\x00")); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<16)
			for {
				m, err := c.Read(buf) // ends when the deferred Close runs
				if err != nil {
					return
				}
				counts[s].Add(int64(bytes.Count(buf[:m], []byte{0})))
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

	// accounted is how many of the subs*n fan-outs have reached a
	// subscriber or been dropped by the hub.
	dropped0 := h.Stats().Dropped
	delivered := func() int64 {
		var d int64
		for s := range counts {
			d += counts[s].Load()
		}
		return d
	}
	dropped := func() int64 { return int64(h.Stats().Dropped - dropped0) }
	// waitFor polls until ok holds, failing the benchmark when no
	// subscriber made progress for benchStall.
	waitFor := func(what string, ok func() bool) {
		last, since := delivered(), time.Now()
		for !ok() {
			if d := delivered(); d != last {
				last, since = d, time.Now()
			} else if time.Since(since) > benchStall {
				got := make([]int64, subs)
				for s := range counts {
					got[s] = counts[s].Load()
				}
				b.Fatalf("%s: no progress for %v: subscribers got %v of %d events each, hub dropped %d: events lost",
					what, benchStall, got, b.N, dropped())
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	slowest := func() int64 {
		m := int64(b.N)
		for s := range counts {
			m = min(m, counts[s].Load())
		}
		return m
	}

	b.ResetTimer()
	var sb strings.Builder
	for i := 0; i < b.N; i++ {
		fmt.Fprintf(&sb, `{"type":"pending","container":"bench","id":"bench:%d","dest":"198.51.100.%d","port":443,"proto":6,"domain":""}`+"\n", i, i%250+1)
		if i%64 == 63 || i == b.N-1 {
			if _, err := in.Write([]byte(sb.String())); err != nil {
				b.Fatal(err)
			}
			sb.Reset()
			if paced {
				waitFor("paced", func() bool { return slowest() >= int64(i-64) })
			}
		}
	}
	total := int64(subs) * int64(b.N)
	waitFor("drain", func() bool { return delivered()+dropped() >= total })
	b.StopTimer()
	d, x := delivered(), dropped()
	if d+x != total {
		b.Fatalf("subscribers got %d and the hub dropped %d of %d fan-outs", d, x, total)
	}
	if paced && x != 0 {
		b.Errorf("paced run dropped %d events", x)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(d)/float64(subs)/b.Elapsed().Seconds(), "delivered/s")
	b.ReportMetric(100*float64(d)/float64(total), "delivered_%")
	b.ReportMetric(100*float64(x)/float64(total), "dropped_%")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
