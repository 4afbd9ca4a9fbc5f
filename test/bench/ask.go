// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/terok-ai/clearance/internal/config"
	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

func init() {
	measurements = append(measurements, struct {
		group string
		run   func(*bench) error
	}{"ask", (*bench).ask})
}

// ask: the container's ask endpoint in a lab namespace, with the built
// hub and verdict service. A POST /ask from inside the container → the
// connection_blocked prompt at a subscriber (ask_to_prompt); and the
// whole round trip with an operator who decides at once: POST → prompt
// → Decide (allow once, a verdict on the name alone) → the container
// reads 200 (ask_roundtrip). The rate limit is raised so that 500
// samples fit.
func (b *bench) ask() error {
	ctx := context.Background()
	lh, err := b.labHubWith(ctx, lab.StackOptions{Bin: b.bin,
		ExtraConfig: "ask:\n  rate_per_minute: 1000000\n  burst: 1000000\n"})
	if err != nil {
		return err
	}
	defer lh.close()
	s, recv, rpc := lh.stack, lh.recv, lh.rpc
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := orgterokclearancehub1.Stats().Call(ctx, rpc)
		if err == nil && st.Ask != nil && st.Ask.Serving {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the ask endpoint is not served: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var prompt, round []time.Duration
	for i := 0; i < 550; i++ {
		name := "b" + strconv.Itoa(i) + ".bench.test"
		body := "dest=" + name + "&port=443&reason=bench"
		c, err := s.Container.Dial(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(config.DefaultAskPort))
		if err != nil {
			return err
		}
		start := time.Now()
		fmt.Fprintf(c, "POST /ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s",
			len(body), body)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var id string
		for id == "" {
			ev, _, err := recv(wctx)
			if err != nil {
				cancel()
				c.Close()
				return fmt.Errorf("sample %d: %w", i, err)
			}
			if ev.Type == "connection_blocked" && ev.Domain == name {
				id = ev.Request_id
			}
		}
		cancel()
		atPrompt := time.Since(start)
		if ok, _, err := orgterokclearancehub1.Decide().Call(ctx, rpc, id, "allow", "once", 0, nil, nil); err != nil || !ok {
			c.Close()
			return fmt.Errorf("decide %d: %v", i, err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		total := time.Since(start)
		c.Close()
		if err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("sample %d: %v %v", i, resp, err)
		}
		if i >= 50 {
			prompt, round = append(prompt, atPrompt), append(round, total)
		}
	}
	report("ask_to_prompt_p50_us", float64(percentile(prompt, 50))/1e3, "us")
	report("ask_to_prompt_p99_us", float64(percentile(prompt, 99))/1e3, "us")
	report("ask_roundtrip_p50_ms", float64(percentile(round, 50))/1e6, "ms")
	report("ask_roundtrip_p99_ms", float64(percentile(round, 99))/1e6, "ms")
	return nil
}
