// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

var hubBin string

func TestMain(m *testing.M) {
	dir, err := testutil.Commands("clearance-hub")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hubBin = filepath.Join(dir, "clearance-hub")
	code := testutil.Main(m)
	testutil.RemoveCommands()
	os.Exit(code)
}

// emptyConfig returns a config file path holding no settings, so tests do
// not read the machine's /etc/clearance.
func emptyConfig(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "clearance.yaml")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func startHub(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(hubBin, append([]string{"-config", emptyConfig(t), "-watch", "off"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestSocketActivation(t *testing.T) {
	sa := testutil.RequireTool(t, "systemd-socket-activate")
	dir := t.TempDir()
	hubSock, ingestSock := filepath.Join(dir, "hub.sock"), filepath.Join(dir, "ingest.sock")
	cmd := exec.Command(sa, "-l", hubSock, "-l", ingestSock, "--fdname=varlink:ingest",
		hubBin, "-config", emptyConfig(t), "-watch", "off", "ctr1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	// systemd-socket-activate says "Listening on PATH as FD." for each
	// socket once it listens.
	listening := make(chan struct{}, 2)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			t.Log(sc.Text())
			if strings.HasPrefix(sc.Text(), "Listening on ") {
				listening <- struct{}{}
			}
		}
	}()
	for i := 0; i < 2; i++ {
		select {
		case <-listening:
		case <-time.After(10 * time.Second):
			t.Fatal("systemd-socket-activate did not listen")
		}
	}

	// The first connection activates the hub and gets a reply.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := varlinkapi.Dial(ctx, hubSock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var vendor, product, version, url string
	var ifaces []string
	if err := c.GetInfo(ctx, &vendor, &product, &version, &url, &ifaces); err != nil {
		t.Fatalf("GetInfo through activation: %v", err)
	}
	if product != "clearance-hub" {
		t.Fatalf("product = %q", product)
	}
	// The activated ingest socket feeds the activated hub: a subscriber
	// sees the event, and it is pending.
	sc, err := varlinkapi.Dial(ctx, hubSock)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	recv, err := orgterokclearance1.Subscribe().Send(ctx, sc, varlink.More)
	if err != nil {
		t.Fatal(err)
	}
	for {
		st, err := orgterokclearancehub1.Stats().Call(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if st.Subscribers == 1 {
			break
		}
	}
	in, err := net.Dial("unix", ingestSock)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(in, `{"type":"pending","container":"ctr1","id":"ctr1:1","dest":"198.51.100.7","port":443,"proto":6,"domain":""}`)
	in.Close()
	ev, _, err := recv(ctx)
	if err != nil || ev.Type != "connection_blocked" || ev.Request_id != "ctr1:1" {
		t.Fatalf("event through the activated ingest socket: %+v %v", ev, err)
	}
	reqs, err := orgterokclearancehub1.Pending().Call(ctx, c)
	if err != nil || len(reqs) != 1 || reqs[0].Request_id != "ctr1:1" {
		t.Fatalf("pending = %+v %v", reqs, err)
	}
}

// notifyListener is a NOTIFY_SOCKET the test reads sd_notify datagrams from.
func notifyListener(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch := make(chan string, 64)
	go func() {
		b := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(b)
			if err != nil {
				close(ch)
				return
			}
			for _, line := range strings.Split(string(b[:n]), "\n") {
				ch <- line
			}
		}
	}()
	return path, ch
}

func expectNotify(t *testing.T, ch <-chan string, prefix string) string {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case s, ok := <-ch:
			if !ok {
				t.Fatalf("notify socket closed before %s", prefix)
			}
			if strings.HasPrefix(s, prefix) {
				return s
			}
		case <-timeout:
			t.Fatalf("no %s from the hub", prefix)
		}
	}
}

func TestSystemdNotifyAndCleanShutdown(t *testing.T) {
	rt := t.TempDir()
	notifyPath, ch := notifyListener(t)
	cmd := startHub(t, []string{"XDG_RUNTIME_DIR=" + rt, "NOTIFY_SOCKET=" + notifyPath,
		"WATCHDOG_USEC=200000", "WATCHDOG_PID="}, "ctr2")
	// WATCHDOG_PID must name the hub itself; go-systemd accepts it unset.
	expectNotify(t, ch, "READY=1")
	sock := filepath.Join(rt, "clearance", "ctr2", "hub.sock")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("hub socket: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("hub dir: %v %v", fi, err)
	}
	expectNotify(t, ch, "WATCHDOG=1")

	// Two subscribers connected, then SIGTERM.
	for i := 0; i < 2; i++ {
		c, err := varlinkapi.Dial(context.Background(), sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := orgterokclearance1.Subscribe().Send(context.Background(), c, varlink.More); err != nil {
			t.Fatal(err)
		}
	}
	st := expectNotify(t, ch, "STATUS=")
	t.Logf("status: %s", st)
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	expectNotify(t, ch, "STOPPING=1")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("hub exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("hub did not exit after SIGTERM")
	}
	t.Logf("shutdown with 2 subscribers took %v", time.Since(start))
	if _, err := os.Stat(filepath.Dir(sock)); !os.IsNotExist(err) {
		t.Fatalf("hub directory left behind: %v", err)
	}
}

func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func TestHostileClientsMemoryBounded(t *testing.T) {
	rt := t.TempDir()
	notifyPath, ready := notifyListener(t)
	cmd := startHub(t, []string{"XDG_RUNTIME_DIR=" + rt, "NOTIFY_SOCKET=" + notifyPath}, "ctr3")
	expectNotify(t, ready, "READY=1")
	dir := filepath.Join(rt, "clearance", "ctr3")
	sock, ingestSock := filepath.Join(dir, "hub.sock"), filepath.Join(dir, "ingest.sock")
	ctx := context.Background()

	// A well-behaved subscriber that must keep receiving throughout.
	good, err := varlinkapi.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	recv, err := orgterokclearance1.Subscribe().Send(ctx, good, varlink.More)
	if err != nil {
		t.Fatal(err)
	}
	rpc, err := varlinkapi.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer rpc.Close()
	before := rssKiB(t, cmd.Process.Pid)

	// A subscriber that never reads.
	stuck, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	stuck.Write([]byte(`{"method":"org.terok.Clearance1.Subscribe","more":true}` + "\x00"))

	big := strings.Repeat("A", 4<<20) // over the 1 MiB message limit
	for i := 0; i < 1000; i++ {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		switch i % 5 {
		case 0:
			c.Write([]byte("{not json\x00"))
		case 1:
			c.Write([]byte(`{"method":"org.example.Nope.Nope"}` + "\x00"))
		case 2:
			c.Write([]byte(`{"method":"org.terok.Clearance1.Subscribe","more":true}` + "\x00"))
		case 3:
			if i%50 == 3 {
				c.Write([]byte(big))
			}
		}
		c.Close()
	}
	// Oversized ingest lines and a flood of events for the stuck subscriber.
	in, err := net.Dial("unix", ingestSock)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	w := bufio.NewWriter(in)
	w.WriteString(strings.Repeat("x", 1<<20) + "\n")
	w.WriteString("\xff\xfe not utf-8\n")
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(w, `{"type":"pending","container":"ctr3","id":"ctr3:%d","dest":"198.51.100.%d","port":443,"proto":6}`+"\n", i, i%250)
	}
	w.Flush()

	// The good subscriber still receives, and verdicts still work.
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		ev, _, err := recv(rctx)
		if err != nil {
			t.Fatalf("good subscriber: %v", err)
		}
		if ev.Request_id == "ctr3:19999" {
			break
		}
	}
	st, err := orgterokclearancehub1.Stats().Call(ctx, rpc)
	if err != nil {
		t.Fatal(err)
	}
	if st.Malformed < 2 {
		t.Errorf("malformed = %d, want the oversized and invalid lines counted", st.Malformed)
	}
	after := rssKiB(t, cmd.Process.Pid)
	t.Logf("RSS before %d KiB, after %d KiB; stats %+v", before, after, st)
	// Generous: the pending set holds 4096 requests at most, queues 128
	// events per subscriber, a message is capped at 1 MiB.
	if after-before > 48<<10 {
		t.Fatalf("RSS grew by %d KiB", after-before)
	}
}
