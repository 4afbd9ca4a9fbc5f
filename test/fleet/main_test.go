// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package fleet tests clearance beyond one machine with the real
// programs: clearancectl --host over a real OpenSSH server on loopback
// (internal/testenv/sshlab), and clearance-relay on a real nats-server.
//
// Each "host" is a runtime directory with real clearance-hub processes
// (-watch off, fed through their ingest sockets, verdicts applied by a
// stand-in for terok-shield in verdict.mode exec that records its calls).
package fleet

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

var binaries struct {
	once  sync.Once
	dir   string
	owned bool // built here (removed at exit), not inherited
	err   error
}

// envBin hands an inner test (managerlab.RunInner) the outer one's
// binaries.
const envBin = "CLEARANCE_FLEET_BIN"

// bin returns the path of a built program of ./cmd.
func bin(t *testing.T, name string) string {
	t.Helper()
	binaries.once.Do(func() {
		if d := os.Getenv(envBin); d != "" {
			binaries.dir = d
			return
		}
		binaries.dir, binaries.err = os.MkdirTemp("", "clearance-fleet-bin-")
		if binaries.err != nil {
			return
		}
		binaries.owned = true
		for _, c := range []string{"clearancectl", "clearance-hub", "clearance-relay", "clearance-verdict"} {
			if _, err := os.Stat("../../cmd/" + c); err != nil {
				continue
			}
			args := []string{"build", "-o", filepath.Join(binaries.dir, c)}
			if raceBuild && c == "clearance-relay" {
				args = append(args, "-race")
			}
			out, err := exec.Command("go", append(args, "../../cmd/"+c)...).CombinedOutput()
			if err != nil {
				binaries.err = fmt.Errorf("build %s: %v: %s", c, err, out)
				return
			}
		}
	})
	if binaries.err != nil {
		t.Fatal(binaries.err)
	}
	return filepath.Join(binaries.dir, name)
}

func TestMain(m *testing.M) {
	code := testutil.Main(m)
	if binaries.owned {
		os.RemoveAll(binaries.dir)
	}
	os.Exit(code)
}

// host is one machine's runtime directory with its hubs.
type host struct {
	rt     string // XDG_RUNTIME_DIR
	shield string // the stand-in's call log
	hubs   map[string]*hubProc
	// logTo is the hubs' CLEARANCE_LOG ("stderr" unless set).
	logTo string
}

type hubProc struct {
	cmd    *exec.Cmd
	sock   string
	ingest string
	exited chan struct{}
}

func newHost(t *testing.T) *host {
	t.Helper()
	h := &host{rt: testutil.ShortDir(t), hubs: map[string]*hubProc{}}
	h.shield = filepath.Join(h.rt, "shield.log")
	script := filepath.Join(h.rt, "shield")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$@\" >> "+h.shield+"\n"), 0o755)
	os.WriteFile(filepath.Join(h.rt, "clearance.yaml"),
		[]byte("verdict:\n  mode: exec\n  shield_binary: "+script+"\n"), 0o600)
	return h
}

// startHub runs a real clearance-hub for container id.
func (h *host) startHub(t *testing.T, id string) *hubProc {
	t.Helper()
	cmd := exec.Command(bin(t, "clearance-hub"), "-config", filepath.Join(h.rt, "clearance.yaml"), "-watch", "off", id)
	logTo := h.logTo
	if logTo == "" {
		logTo = "stderr"
	}
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+h.rt, "CLEARANCE_LOG="+logTo)
	logf, _ := os.Create(filepath.Join(h.rt, id+".log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	p := &hubProc{cmd: cmd, sock: filepath.Join(h.rt, "clearance", id, "hub.sock"),
		ingest: filepath.Join(h.rt, "clearance", id, "ingest.sock"), exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.stop() })
	// Up when both sockets accept: a socket file appears at
	// bind, a moment before listen, and a connection in that moment is
	// refused.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if testutil.Accepts(p.sock, p.ingest) {
			break
		}
		select {
		case <-p.exited:
			b, _ := os.ReadFile(filepath.Join(h.rt, id+".log"))
			t.Fatalf("hub %s exited: %s", id, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("hub %s did not come up", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.hubs[id] = p
	return p
}

func (p *hubProc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// kill ends the hub at once, as a crash would.
func (p *hubProc) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// block feeds one blocked connection into the hub, as terok-shield's
// NFLOG reader does, with the producer's request id.
func (p *hubProc) block(t *testing.T, container, reqID, dest string, port int) {
	t.Helper()
	c, err := net.Dial("unix", p.ingest)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, `{"type":"pending","container":%q,"id":%q,"dest":%q,"port":%d,"proto":6,"domain":""}`+"\n",
		container, reqID, dest, port)
}

func (h *host) shieldLog() string {
	b, _ := os.ReadFile(h.shield)
	return string(b)
}

// ctlResult is one clearancectl run.
type ctlResult struct {
	code           int
	stdout, stderr string
}

// ctl runs clearancectl with args, XDG_RUNTIME_DIR=rt, and the extra
// environment.
func ctl(t *testing.T, rt string, env []string, args ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(t, "clearancectl"), args...)
	cmd.Env = append(append(os.Environ(), "XDG_RUNTIME_DIR="+rt, "NO_COLOR=1"), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := ctlResult{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("clearancectl %v: %v", args, err)
	}
	return res
}

// lineReader collects a process's output lines for waits.
type lineReader struct {
	mu    sync.Mutex
	lines []string
	ch    chan struct{}
}

func newLineReader(r interface{ Read([]byte) (int, error) }) *lineReader {
	lr := &lineReader{ch: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lr.mu.Lock()
			lr.lines = append(lr.lines, sc.Text())
			lr.mu.Unlock()
			select {
			case lr.ch <- struct{}{}:
			default:
			}
		}
	}()
	return lr
}

// waitFor returns the first line containing every one of subs, failing
// the test after timeout.
func (lr *lineReader) waitFor(t *testing.T, timeout time.Duration, subs ...string) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		lr.mu.Lock()
		for _, l := range lr.lines {
			ok := true
			for _, s := range subs {
				if !strings.Contains(l, s) {
					ok = false
					break
				}
			}
			if ok {
				lr.mu.Unlock()
				return l
			}
		}
		lr.mu.Unlock()
		select {
		case <-lr.ch:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			lr.mu.Lock()
			all := strings.Join(lr.lines, "\n")
			lr.mu.Unlock()
			t.Fatalf("no line with %q after %v; got:\n%s", subs, timeout, all)
		}
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitTCP waits until port accepts connections, false when the process
// exited or 10 s passed.
func waitTCP(port int, exited <-chan struct{}) bool {
	up := false
	testutil.Within(10*time.Second, func() bool {
		select {
		case <-exited:
			return true // it will not come up
		default:
		}
		up = testutil.AcceptsTCP(fmt.Sprintf("127.0.0.1:%d", port))
		return up
	})
	return up
}
