// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

func init() {
	measurements = append(measurements,
		struct {
			group string
			run   func(*bench) error
		}{"firewall", (*bench).firewall},
		struct {
			group string
			run   func(*bench) error
		}{"verdict_instance", (*bench).verdictInstance},
	)
}

// firewall: the real kernel path in a lab namespace. A UDP datagram sent
// in the container → NFLOG → hub → subscriber; and Verdict → element in
// the kernel (the hub replies after the verdict service's netlink batch is
// acknowledged).
func (b *bench) firewall() error {
	ctx := context.Background()
	lh, err := b.labHub(ctx)
	if err != nil {
		return err
	}
	defer lh.close()
	s, recv, rpc := lh.stack, lh.recv, lh.rpc
	pc, err := s.Container.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return err
	}
	defer pc.Close()
	time.Sleep(200 * time.Millisecond)

	wait := func(port int) (orgterokclearance1.ClearanceEvent, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		for {
			ev, _, err := recv(ctx)
			if err != nil {
				return ev, err
			}
			if ev.Type == "connection_blocked" && ev.Port == int64(port) {
				return ev, nil
			}
		}
	}
	var nflog []time.Duration
	for i := 0; i < 2000; i++ {
		dst := &net.UDPAddr{IP: net.IPv4(10, 254, 78, byte(2+i%250)), Port: 20000 + i}
		start := time.Now()
		if err := send(pc, dst); err != nil {
			return err
		}
		if _, err := wait(dst.Port); err != nil {
			return fmt.Errorf("nflog sample %d: %w", i, err)
		}
		if i >= 100 {
			nflog = append(nflog, time.Since(start))
		}
	}
	report("nflog_to_subscriber_p50_us", float64(percentile(nflog, 50))/1e3, "us")
	report("nflog_to_subscriber_p99_us", float64(percentile(nflog, 99))/1e3, "us")

	var verdicts []time.Duration
	for i := 0; i < 200; i++ {
		port := 40000 + i
		dst := &net.UDPAddr{IP: net.IPv4(10, 254, 78, byte(2+i)), Port: port}
		if err := send(pc, dst); err != nil {
			return err
		}
		ev, err := wait(port)
		if err != nil {
			return fmt.Errorf("verdict sample %d: %w", i, err)
		}
		start := time.Now()
		ok, err := orgterokclearance1.Verdict().Call(ctx, rpc, ev.Container, ev.Request_id, ev.Dest, "allow")
		if err != nil || !ok {
			return fmt.Errorf("verdict %d: %v", i, err)
		}
		verdicts = append(verdicts, time.Since(start))
	}
	report("verdict_to_kernel_p50_ms", float64(percentile(verdicts, 50))/1e6, "ms")
	report("verdict_to_kernel_p99_ms", float64(percentile(verdicts, 99))/1e6, "ms")
	return nil
}

// verdictInstance: clearance-verdict started per connection, as
// clearance-verdict.socket (Accept=yes) does: its RSS during a call and
// how long it lives for one Apply (connect → exit after the hub hangs up).
func (b *bench) verdictInstance() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root")
	}
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		return err
	}
	l := lab.New()
	defer l.Close()
	ctx := context.Background()
	s, err := l.NewStack(ctx, lab.StackOptions{Bin: b.bin, NoHub: true})
	if err != nil {
		return err
	}
	sock := filepath.Join(s.Dir, "accept.sock")
	vbin, _ := filepath.Abs(filepath.Join(b.bin, "clearance-verdict"))
	cmd := exec.Command(sa, "--accept", "-l", sock, vbin, "-config", s.Config, "-runtime-root", s.RuntimeRoot,
		"-policy-dir", s.PolicyDir)
	if err := l.Start(cmd, filepath.Join(s.Logs, "accept.log")); err != nil {
		return err
	}
	if err := waitFile(sock); err != nil {
		return err
	}
	// Engage once so Apply measures a steady state.
	if c, err := verdictclient.Dial(ctx, sock); err == nil {
		c.Engage(ctx, s.ID, nil)
		c.Close()
	}
	var rss []float64
	var life, apply []time.Duration
	for i := 0; i < 20; i++ {
		start := time.Now()
		c, err := verdictclient.Dial(ctx, sock)
		if err != nil {
			return err
		}
		res, err := c.Apply(ctx, verdictclient.ApplyRequest{Container: s.ID, IP: fmt.Sprintf("10.254.79.%d", i+1),
			Action: "allow", Scope: "once", TTL: time.Minute}, nil)
		if err != nil || !res.OK {
			c.Close()
			return fmt.Errorf("apply through an instance: %v %+v", err, res)
		}
		apply = append(apply, time.Since(start))
		pid := childOf(cmd.Process.Pid)
		if pid > 0 {
			rss = append(rss, rssMiB(pid))
		}
		c.Close()
		for pid > 0 && alive(pid) && time.Since(start) < 10*time.Second {
			time.Sleep(100 * time.Microsecond)
		}
		life = append(life, time.Since(start))
	}
	var maxRSS float64
	for _, r := range rss {
		maxRSS = max(maxRSS, r)
	}
	report("verdict_instance_rss_mib", maxRSS, "MiB")
	report("verdict_apply_new_instance_p50_ms", float64(percentile(apply, 50))/1e6, "ms")
	report("verdict_instance_lifetime_ms", float64(percentile(life, 50))/1e6, "ms")
	return nil
}

// send sends one datagram; EPERM is the ruleset refusing it (after
// logging it to NFLOG), which is the point.
func send(pc net.PacketConn, dst net.Addr) error {
	if _, err := pc.WriteTo([]byte("x"), dst); err != nil && !errors.Is(err, syscall.EPERM) {
		return err
	}
	return nil
}

// labHub is a lab stack whose container can send to the whole of
// 10.254.78.0/24 (on a link that never leaves its namespace), with a
// subscriber and a call connection on its hub.
type labHub struct {
	stack *lab.Stack
	recv  func(context.Context) (orgterokclearance1.ClearanceEvent, uint64, error)
	rpc   *varlink.Connection
	close func()
}

func (b *bench) labHub(ctx context.Context) (*labHub, error) {
	return b.labHubWith(ctx, lab.StackOptions{Bin: b.bin})
}

// labHubWith is labHub with stack options (Bin set by the caller).
func (b *bench) labHubWith(ctx context.Context, o lab.StackOptions) (*labHub, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root")
	}
	l := lab.New()
	fail := func(err error) (*labHub, error) { l.Close(); return nil, err }
	s, err := l.NewStack(ctx, o)
	if err != nil {
		return fail(err)
	}
	if err := s.Container.OnLink(netip.MustParsePrefix("10.254.78.1/24")); err != nil {
		return fail(err)
	}
	c, err := varlinkapi.Dial(ctx, s.HubSock)
	if err != nil {
		return fail(err)
	}
	recv, err := orgterokclearance1.Subscribe().Send(ctx, c, varlink.More)
	if err != nil {
		c.Close()
		return fail(err)
	}
	rpc, err := varlinkapi.Dial(ctx, s.HubSock)
	if err != nil {
		c.Close()
		return fail(err)
	}
	return &labHub{stack: s, recv: recv, rpc: rpc, close: func() { rpc.Close(); c.Close(); l.Close() }}, nil
}

func waitFile(path string) error {
	for i := 0; i < 5000; i++ {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("%s did not appear", path)
}

// childOf returns a child process of ppid, or 0.
func childOf(ppid int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			return pid
		}
	}
	return 0
}

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && !strings.HasPrefix(strings.TrimSpace(string(b)[i+1:]), "Z")
}
