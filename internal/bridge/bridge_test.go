// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// TestMain doubles as the far side: with BRIDGE_TEST_HUBS set, the test
// binary serves the hubs under that directory on stdin and stdout, as
// "clearancectl bridge" does.
func TestMain(m *testing.M) {
	if dir := os.Getenv("BRIDGE_TEST_HUBS"); dir != "" {
		err := Serve(context.Background(), os.Stdin, os.Stdout, ServerConfig{
			Hubs:   func() ([]Hub, error) { return globHubs(dir) },
			Rescan: 50 * time.Millisecond,
			Exec: func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
				fmt.Fprintf(stdout, "ran %s\n", strings.Join(args, " "))
				fmt.Fprintln(stderr, "a warning")
				return 7
			},
			Allowed: []string{"log"},
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func globHubs(dir string) ([]Hub, error) {
	m, err := filepath.Glob(filepath.Join(dir, "*", "hub.sock"))
	var out []Hub
	for _, p := range m {
		out = append(out, Hub{ID: filepath.Base(filepath.Dir(p)), Path: p})
	}
	return out, err
}

// echoHub serves an echo on dir/id/hub.sock.
func echoHub(t *testing.T, dir, id string) {
	t.Helper()
	os.MkdirAll(filepath.Join(dir, id), 0o700)
	ln, err := net.Listen("unix", filepath.Join(dir, id, "hub.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
}

func TestReadFrameRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"unknown type", []byte{'Z', 0, 0, 0, 1, 0, 0, 0, 0}},
		{"oversized payload", func() []byte {
			b := []byte{'D', 0, 0, 0, 1, 0, 0, 0, 0}
			binary.BigEndian.PutUint32(b[5:], MaxPayload+1)
			return b
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readFrame(bufio.NewReader(bytes.NewReader(tt.in)))
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("got %v, want ErrProtocol", err)
			}
		})
	}
	_, err := readFrame(bufio.NewReader(bytes.NewReader([]byte{'D', 0, 0, 0, 1, 0, 0, 0, 5, 'a'})))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated payload: %v", err)
	}
}

func TestServeRefusals(t *testing.T) {
	dir := testutil.ShortDir(t)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Serve(context.Background(), inR, outW, ServerConfig{
			Hubs:    func() ([]Hub, error) { return globHubs(dir) },
			Exec:    func(context.Context, []string, io.Writer, io.Writer) int { return 0 },
			Allowed: []string{"log"},
		})
		outW.Close()
	}()
	br := bufio.NewReader(outR)
	f, err := readFrame(br)
	if err != nil || f.typ != frameHubs || !strings.Contains(string(f.payload), `"hubs":[]`) {
		t.Fatalf("hello: %v %q", err, f.payload)
	}
	fw := newFrameWriter(inW)
	// A hub that is not offered (a path, or just unknown) is not opened.
	for _, id := range []string{"../../etc", "nosuch"} {
		fw.write(frameOpen, 1, []byte(id))
		f, err = readFrame(br)
		if err != nil || f.typ != frameClose || !strings.Contains(string(f.payload), "no hub") {
			t.Errorf("open %q: %v %c %q", id, err, f.typ, f.payload)
		}
	}
	// A command outside the allowed list is refused with status 2.
	fw.write(frameExec, 3, []byte(`["allow","x"]`))
	f, _ = readFrame(br)
	f2, _ := readFrame(br)
	if f.typ != frameStderr || !strings.Contains(string(f.payload), "not run through the bridge") || f2.typ != frameExit || string(f2.payload) != "2" {
		t.Errorf("exec refused: %c %q / %c %q", f.typ, f.payload, f2.typ, f2.payload)
	}
	fw.write(frameExec, 5, []byte(`not json`))
	f, _ = readFrame(br)
	f2, _ = readFrame(br)
	if f.typ != frameStderr || f2.typ != frameExit || string(f2.payload) != "2" {
		t.Errorf("exec malformed: %c %q / %c %q", f.typ, f.payload, f2.typ, f2.payload)
	}
	// A frame the far side never takes ends the session with an error.
	fw.write(frameHubs, 0, []byte(`{}`))
	select {
	case err := <-done:
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("Serve returned %v, want ErrProtocol", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	inW.Close()
}

func TestClientCarriesHubsAndCommands(t *testing.T) {
	hubs := testutil.ShortDir(t)
	local := testutil.ShortDir(t)
	echoHub(t, hubs, "c1")
	exe, _ := os.Executable()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, Config{Command: []string{"env", "BRIDGE_TEST_HUBS=" + hubs, exe}, Dir: local})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if h := c.Hello(); len(h.Hubs) != 1 || h.Hubs[0] != "c1" || h.UID != os.Getuid() {
		t.Errorf("hello %+v", h)
	}
	echo := func(id, msg string) {
		t.Helper()
		conn, err := net.Dial("unix", filepath.Join(local, id, "hub.sock"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		big := strings.Repeat(msg, 40000) // several frames
		go conn.Write([]byte(big))
		buf := make([]byte, len(big))
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != big {
			t.Fatalf("echo through %s: %v", id, err)
		}
	}
	echo("c1", "hello")
	// A hub that appears later gets its socket; one that goes loses it.
	echoHub(t, hubs, "c2")
	waitFile(t, filepath.Join(local, "c2", "hub.sock"), true)
	echo("c2", "again")
	os.RemoveAll(filepath.Join(hubs, "c1"))
	waitFile(t, filepath.Join(local, "c1", "hub.sock"), false)

	var out, errb bytes.Buffer
	code, err := c.Exec(ctx, []string{"log", "--json"}, &out, &errb)
	if err != nil || code != 7 || out.String() != "ran log --json\n" || errb.String() != "a warning\n" {
		t.Errorf("exec: %d %v %q %q", code, err, out.String(), errb.String())
	}
	code, err = c.Exec(ctx, []string{"allow", "x"}, &out, &errb)
	if err != nil || code != 2 {
		t.Errorf("exec of a refused command: %d %v", code, err)
	}
	c.Close()
	if _, err := os.Stat(filepath.Join(local, "c2", "hub.sock")); err == nil {
		t.Error("Close left a socket")
	}
	if c.Err() != nil {
		t.Errorf("Err after Close: %v", c.Err())
	}
}

func TestDialExplainsFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Dial(ctx, Config{Command: []string{"sh", "-c", "echo 'clearancectl: unknown command \"bridge\"' >&2; exit 2"}, Dir: testutil.ShortDir(t)})
	if err == nil || !strings.Contains(err.Error(), `unknown command "bridge"`) || !strings.Contains(err.Error(), "exit status 2") {
		t.Errorf("got %v", err)
	}
	// A far side that prints something else is a protocol error.
	_, err = Dial(ctx, Config{Command: []string{"sh", "-c", "echo Welcome to the server; sleep 1"}, Dir: testutil.ShortDir(t)})
	if err == nil || !errors.Is(err, ErrSessionEnded) {
		t.Errorf("garbage: %v", err)
	}
}

func waitFile(t *testing.T, path string, exist bool) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, fmt.Sprintf("%s: exist=%v", path, exist), func() bool {
		_, err := os.Stat(path)
		return (err == nil) == exist
	})
}
