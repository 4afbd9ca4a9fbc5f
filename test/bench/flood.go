// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

func init() {
	measurements = append(measurements, struct {
		group string
		run   func(*bench) error
	}{"flood", (*bench).flood})
}

// flood: the container sends blocked datagrams as fast as it can (aiming
// at 50 000/s) to ten destinations for ten seconds. Reports the rate
// reached, the hub's peak RSS, how many prompts subscribers saw (one per
// destination is the goal), the kernel's ENOBUFS drops, and whether a
// verdict given in the middle of the flood was applied.
func (b *bench) flood() error {
	ctx := context.Background()
	lh, err := b.labHub(ctx)
	if err != nil {
		return err
	}
	defer lh.close()
	s, recv, rpc := lh.stack, lh.recv, lh.rpc
	// Count distinct prompts (new request ids) as subscribers see them.
	var prompts, events atomic.Int64
	firstID := make(chan orgterokclearance1.ClearanceEvent, 1)
	go func() {
		seen := map[string]bool{}
		for {
			ev, _, err := recv(ctx)
			if err != nil {
				return
			}
			events.Add(1)
			if ev.Type == "connection_blocked" && !seen[ev.Request_id] {
				seen[ev.Request_id] = true
				prompts.Add(1)
				if os.Getenv("FLOOD_DEBUG") != "" {
					fmt.Fprintf(os.Stderr, "prompt %s %s:%d at %v\n", ev.Request_id, ev.Dest, ev.Port, time.Now().Format("15:04:05.000"))
				}
				select {
				case firstID <- ev:
				default:
				}
			}
		}
	}()

	const dests, dur, rate, senders = 10, 10 * time.Second, 50000, 3
	var sent atomic.Int64
	start := time.Now()
	done := make(chan struct{})
	for w := 0; w < senders; w++ {
		conn, err := s.Container.ListenPacket("udp4", "0.0.0.0:0")
		if err != nil {
			return err
		}
		defer conn.Close()
		go func() {
			defer func() { done <- struct{}{} }()
			next := time.Now()
			for i := 0; time.Since(start) < dur; {
				for j := 0; j < rate/senders/1000; j++ {
					dst := &net.UDPAddr{IP: net.IPv4(10, 254, 78, byte(10+i%dests)), Port: 9999}
					send(conn, dst)
					sent.Add(1)
					i++
				}
				next = next.Add(time.Millisecond)
				time.Sleep(time.Until(next))
			}
		}()
	}
	var peak float64
	var verdictErr error
	verdictDone := false
	for tick := time.NewTicker(100 * time.Millisecond); time.Since(start) < dur; <-tick.C {
		peak = max(peak, rssMiB(s.HubPID()))
		if !verdictDone && time.Since(start) > dur/2 {
			select {
			case ev := <-firstID:
				ok, err := orgterokclearance1.Verdict().Call(ctx, rpc, ev.Container, ev.Request_id, ev.Dest, "allow")
				if err == nil && !ok {
					err = errors.New("verdict not ok")
				}
				verdictErr, verdictDone = err, true
			default:
			}
		}
	}
	for w := 0; w < senders; w++ {
		<-done
	}
	elapsed := time.Since(start)
	time.Sleep(500 * time.Millisecond)
	peak = max(peak, rssMiB(s.HubPID()))
	st, err := orgterokclearancehub1.Stats().Call(ctx, rpc)
	if err != nil {
		return err
	}
	report("flood_sent_per_s", float64(sent.Load())/elapsed.Seconds(), "packets/s")
	report("flood_hub_peak_rss_mib", peak, "MiB")
	report("flood_prompts", float64(prompts.Load()), fmt.Sprintf("prompts (%d destinations)", dests))
	report("flood_events_to_subscriber", float64(events.Load()), "events")
	report("flood_nflog_enobufs", float64(st.Nflog_enobufs), "drops")
	switch {
	case !verdictDone:
		return errors.New("no prompt arrived to decide during the flood")
	case verdictErr != nil:
		return fmt.Errorf("verdict during the flood: %w", verdictErr)
	}
	report("flood_verdict_applied", 1, "(allowed mid-flood)")
	return nil
}
