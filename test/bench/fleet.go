// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/relay"
	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

func init() {
	measurements = append(measurements, struct {
		group string
		run   func(*bench) error
	}{"fleet", (*bench).fleet})
}

// fleetProc is a process the fleet measurement started.
type fleetProc struct{ cmd *exec.Cmd }

func (p *fleetProc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

func startProc(name string, env []string, args ...string) (*fleetProc, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &fleetProc{cmd: cmd}, nil
}

func waitPath(path string) error {
	for i := 0; i < 10000; i++ {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("%s did not appear", path)
}

// fleet: Debian's nats-server on loopback with JetStream, two hosts
// (a real hub each, verdicts applied by a stand-in firewall in exec mode)
// with their relays, and an operator connection. Measures a blocked
// request from the hub's ingest socket to the operator's subscription, a
// verdict's round trip from the operator through NATS, the relay and the
// hub and back, an "always" verdict on host A until it is in host B's
// policy file (through B's verdict service) and until a container of B
// engaged at that moment holds the element (as root only), and the
// relay's RSS.
func (b *bench) fleet() error {
	natsBin := "/usr/sbin/nats-server"
	if _, err := os.Stat(natsBin); err != nil {
		return errors.New("nats-server not installed (Debian nats-server)")
	}
	dir, err := os.MkdirTemp("", "clearance-bench-fleet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o700)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := filepath.Join(dir, "nats.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listen: \"127.0.0.1:%d\"\njetstream { store_dir: %q }\n", port, filepath.Join(dir, "js"))), 0o600)
	ns, err := startProc(natsBin, nil, "-c", conf)
	if err != nil {
		return err
	}
	defer ns.stop()
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			c.Close()
			break
		}
		if i > 500 {
			return errors.New("nats-server did not come up")
		}
		time.Sleep(10 * time.Millisecond)
	}

	root := os.Geteuid() == 0
	type benchHost struct {
		rt, hubDir, ingest, verdictSock, policyDir string
	}
	hosts := map[string]*benchHost{}
	for _, name := range []string{"alpha", "beta"} {
		h := &benchHost{rt: filepath.Join(dir, name)}
		os.Mkdir(h.rt, 0o700)
		cfg := filepath.Join(h.rt, "clearance.yaml")
		os.WriteFile(cfg, []byte("verdict:\n  mode: exec\n  shield_binary: /bin/true\n"), 0o600)
		id := "ctr" + name
		h.hubDir = filepath.Join(h.rt, "clearance", id)
		if err := record.Write(h.hubDir, record.Record{ID: id + strings.Repeat("0", 64-len(id)), ID12: id, PID: os.Getpid(),
			NetnsInode: 1, NetnsDev: 1, Policy: "benchpolicy"}); err != nil {
			return err
		}
		hub, err := startProc(filepath.Join(b.bin, "clearance-hub"), []string{"XDG_RUNTIME_DIR=" + h.rt}, "-config", cfg, "-watch", "off", id)
		if err != nil {
			return err
		}
		defer hub.stop()
		h.ingest = filepath.Join(h.hubDir, "ingest.sock")
		if err := waitPath(h.ingest); err != nil {
			return err
		}
		args := []string{"--config", cfg, "--url", url, "--host", name}
		if root {
			h.verdictSock, h.policyDir = filepath.Join(h.rt, "verdict.sock"), filepath.Join(h.rt, "policy")
			v, err := startProc(filepath.Join(b.bin, "clearance-verdict"), nil, "--config", emptyConfig(h.rt),
				"--socket", h.verdictSock, "--policy-dir", h.policyDir, "--runtime-root", filepath.Join(h.rt, "run"))
			if err != nil {
				return err
			}
			defer v.stop()
			if err := waitPath(h.verdictSock); err != nil {
				return err
			}
			args = append(args, "--verdict-socket", h.verdictSock)
		} else {
			args = append(args, "--no-adopt")
		}
		rl, err := startProc(filepath.Join(b.bin, "clearance-relay"), []string{"XDG_RUNTIME_DIR=" + h.rt}, args...)
		if err != nil {
			return err
		}
		defer rl.stop()
		if name == "alpha" {
			defer func() { report("relay_rss_mib", rssMiB(rl.cmd.Process.Pid), "MiB") }()
		}
		hosts[name] = h
	}

	op, err := relay.DialOperator(url, "", "bench")
	if err != nil {
		return err
	}
	defer op.Close()
	seen := make(chan relay.Blocked, 1024)
	if _, err := op.Conn().Subscribe(op.Subjects().Blocked("alpha", "*"), func(m *nats.Msg) {
		var bl relay.Blocked
		if json.Unmarshal(m.Data, &bl) == nil && !bl.Replay {
			seen <- bl
		}
	}); err != nil {
		return err
	}
	op.Conn().Flush()
	// Wait until alpha's relay follows its hub and answers.
	ctx := context.Background()
	for i := 0; ; i++ {
		m, err := op.Conn().Request(op.Subjects().FleetPending(), nil, time.Second)
		if err == nil && json.Unmarshal(m.Data, &[]relay.Blocked{}) == nil {
			if m2, err := op.Conn().Request(op.Subjects().Decide("alpha", "ctralpha", "bench"), []byte(`{"request_id":"probe","action":"allow"}`), time.Second); err == nil &&
				strings.Contains(string(m2.Data), relay.ErrUnknownRequest) {
				break
			}
		}
		if i > 100 {
			return errors.New("alpha's relay does not follow its hub")
		}
		time.Sleep(100 * time.Millisecond)
	}

	feed := func(h *benchHost, id, dest string) error {
		c, err := net.Dial("unix", h.ingest)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = fmt.Fprintf(c, `{"type":"pending","container":%q,"id":%q,"dest":%q,"port":443,"proto":6,"domain":""}`+"\n",
			filepath.Base(h.hubDir), id, dest)
		return err
	}
	var block, verdict []time.Duration
	const n = 300
	for i := 0; i < n; i++ {
		id := "fb:" + strconv.Itoa(i)
		start := time.Now()
		if err := feed(hosts["alpha"], id, fmt.Sprintf("198.51.%d.%d", 100+i/250, i%250+1)); err != nil {
			return err
		}
		var got relay.Blocked
		for got.RequestID != id {
			select {
			case got = <-seen:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("request %s never reached the operator", id)
			}
		}
		block = append(block, time.Since(start))
		start = time.Now()
		rep, err := op.Decide(ctx, "alpha", "ctralpha", relay.DecideRequest{RequestID: id, Action: "allow", HubStarted: got.HubStarted})
		if err != nil || !rep.OK {
			return fmt.Errorf("verdict %s: %v %+v", id, err, rep)
		}
		verdict = append(verdict, time.Since(start))
	}
	report("relay_block_to_remote_subscriber_p50_ms", float64(percentile(block, 50))/1e6, "ms")
	report("relay_block_to_remote_subscriber_p99_ms", float64(percentile(block, 99))/1e6, "ms")
	report("relay_verdict_roundtrip_p50_ms", float64(percentile(verdict, 50))/1e6, "ms")
	report("relay_verdict_roundtrip_p99_ms", float64(percentile(verdict, 99))/1e6, "ms")

	if !root {
		fmt.Fprintln(os.Stderr, "bench fleet: always_propagation_ms needs root (a verdict service per host)")
		return nil
	}
	// beta's next container: a lab network namespace with its runtime
	// record and a verdict service reading beta's policy directory. Its
	// ruleset is removed before each verdict and engaged as soon as the
	// entry is in the file, as a container started at that moment would.
	l := lab.New()
	defer l.Close()
	next, err := l.NewStack(ctx, lab.StackOptions{Bin: b.bin, ID: "benchnext001", Policy: "benchpolicy",
		PolicyDir: hosts["beta"].policyDir, NoHub: true})
	if err != nil {
		return err
	}
	vc := func(f func(*verdictclient.Client) error) error {
		c, err := verdictclient.Dial(ctx, next.VerdictSock)
		if err != nil {
			return err
		}
		defer c.Close()
		return f(c)
	}
	var prop, toFile []time.Duration
	policyB := filepath.Join(hosts["beta"].policyDir, "benchpolicy.yaml")
	for i := 0; i < 30; i++ {
		id := "al:" + strconv.Itoa(i)
		dest := fmt.Sprintf("203.0.113.%d", i+1)
		if err := vc(func(c *verdictclient.Client) error { return c.Disengage(ctx, next.ID, next.Container.File) }); err != nil {
			return err
		}
		if err := feed(hosts["alpha"], id, dest); err != nil {
			return err
		}
		var got relay.Blocked
		for got.RequestID != id {
			select {
			case got = <-seen:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("request %s never reached the operator", id)
			}
		}
		start := time.Now()
		rep, err := op.Decide(ctx, "alpha", "ctralpha", relay.DecideRequest{RequestID: id, Action: "allow", Scope: "always"})
		if err != nil || !rep.OK {
			return fmt.Errorf("always %s: %v %+v", id, err, rep)
		}
		for {
			data, _ := os.ReadFile(policyB)
			if strings.Contains(string(data), dest+":443/tcp") {
				break
			}
			if time.Since(start) > 20*time.Second {
				return fmt.Errorf("always verdict %s never reached beta's policy", dest)
			}
			time.Sleep(500 * time.Microsecond)
		}
		toFile = append(toFile, time.Since(start))
		found := false
		err = vc(func(c *verdictclient.Client) error {
			if _, _, err := c.Engage(ctx, next.ID, next.Container.File); err != nil {
				return err
			}
			els, err := c.List(ctx, next.ID, next.Container.File)
			for _, e := range els {
				found = found || e.List == "allow" && e.Dest == dest
			}
			return err
		})
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("beta's next container lacks %s", dest)
		}
		prop = append(prop, time.Since(start))
	}
	report("always_propagation_to_policy_ms", float64(percentile(toFile, 50))/1e6, "ms")
	report("always_propagation_ms", float64(percentile(prop, 50))/1e6, "ms")
	report("always_propagation_p99_ms", float64(percentile(prop, 99))/1e6, "ms")
	return nil
}
