// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package bridge

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config configures the near side of a bridge ([Dial]).
type Config struct {
	// Command is the transport to start, the far side's bridge at its
	// end, e.g. ["ssh", "-p", "2222", "--", "alice@host", "clearancectl",
	// "bridge"]. Its stdin and stdout carry the frames; its standard
	// error is kept (the last 4 KiB) to explain a failure.
	Command []string

	// Dir is the private directory (0700, owned by the caller) that gets
	// one <id>/hub.sock per remote hub. Dial creates it if needed;
	// Close removes the sockets it made.
	Dir string

	// Logger receives diagnostics (default: discarded).
	Logger *slog.Logger
}

// Client is the near side of one bridge session: a running transport
// command and a local socket per remote hub. Its methods are safe for
// concurrent use. Close ends it.
type Client struct {
	cfg   Config
	log   *slog.Logger
	cmd   *exec.Cmd
	stdin io.WriteCloser
	fw    *frameWriter
	st    *streams
	errb  *tailBuffer

	mu      sync.Mutex
	hello   Hello
	proxies map[string]*proxy
	nextID  uint32
	execs   map[uint32]*execCall
	closed  bool

	done    chan struct{} // closed when the session has ended
	err     error         // why, set before done closes
	waitErr error
	wg      sync.WaitGroup
}

type proxy struct {
	ln  net.Listener
	dir string
}

type execCall struct {
	stdout, stderr io.Writer
	exit           chan int
}

// ErrSessionEnded is returned by [Client.Exec] when the session ends
// before the command's exit status arrives.
var ErrSessionEnded = errors.New("bridge session ended")

// Dial starts cfg.Command and waits for the far side's first [Hello]
// (bounded by ctx). On success the remote hubs have local sockets in
// cfg.Dir. The error of a failed start names the transport's own
// explanation (ssh: "Permission denied (publickey)", "Could not resolve
// hostname", or the far side's "unknown command").
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Command) == 0 {
		return nil, errors.New("bridge: no transport command")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", cfg.Dir, err)
	}
	c := &Client{cfg: cfg, log: cfg.Logger, proxies: map[string]*proxy{}, execs: map[uint32]*execCall{},
		errb: &tailBuffer{max: 4096}, done: make(chan struct{}), nextID: 1}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.cmd = exec.Command(cfg.Command[0], cfg.Command[1:]...)
	// The transport gets its own process group: a Ctrl-C at the terminal
	// reaches clearancectl, which ends the session in order.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.cmd.Stderr = c.errb
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Command[0], err)
	}
	c.fw = newFrameWriter(c.stdin)
	c.st = newStreams(c.fw)
	br := bufio.NewReaderSize(stdout, 2*MaxPayload)
	first := make(chan error, 1)
	go c.readLoop(br, first)
	select {
	case err := <-first:
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("no answer from the far side: %w", ctx.Err())
	}
}

// Hello returns the far side's newest announcement.
func (c *Client) Hello() Hello {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hello
}

// Done is closed when the session has ended (the transport exited or
// broke the protocol); [Client.Err] then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the session ended, nil while it runs.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Streams returns the number of open hub connections.
func (c *Client) Streams() int { return c.st.count() }

// Close ends the session: the far side sees its stdin end, the local
// sockets are removed, and the transport is waited for.
func (c *Client) Close() error {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.mu.Unlock()
	if !already {
		c.stdin.Close()
		c.removeProxies()
		c.st.closeAll()
	}
	// A transport still connecting does not read its stdin: stop it.
	t := time.NewTimer(2 * time.Second)
	select {
	case <-c.done:
	case <-t.C:
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
		<-c.done
	}
	t.Stop()
	c.wg.Wait()
	return nil
}

func (c *Client) removeProxies() {
	c.mu.Lock()
	ps := c.proxies
	c.proxies = map[string]*proxy{}
	c.mu.Unlock()
	for _, p := range ps {
		p.ln.Close()
		os.RemoveAll(p.dir)
	}
}

// readLoop dispatches the far side's frames until the transport ends.
// first receives nil after the first Hello, or the error that ended the
// session before one.
func (c *Client) readLoop(br *bufio.Reader, first chan<- error) {
	gotHello := false
	var err error
	for {
		var f frame
		f, err = readFrame(br)
		if err != nil {
			break
		}
		switch f.typ {
		case frameHubs:
			var h Hello
			if jerr := json.Unmarshal(f.payload, &h); jerr != nil {
				err = fmt.Errorf("%w: hubs frame: %v", ErrProtocol, jerr)
			} else if h.Version != Version {
				err = fmt.Errorf("the far side speaks bridge protocol %d, this clearancectl %d: install the same clearance version on both", h.Version, Version)
			}
			if err != nil {
				break
			}
			c.update(h)
			if !gotHello {
				gotHello = true
				first <- nil
			}
			continue
		case frameData:
			if e := c.execOf(f.stream); e != nil {
				e.stdout.Write(f.payload)
			} else {
				c.st.deliver(f.stream, f.payload)
			}
			continue
		case frameStderr:
			if e := c.execOf(f.stream); e != nil {
				e.stderr.Write(f.payload)
			}
			continue
		case frameExit:
			if e := c.takeExec(f.stream); e != nil {
				code, perr := strconv.Atoi(string(f.payload))
				if perr != nil {
					code = 1
				}
				e.exit <- code
			}
			continue
		case frameClose:
			if len(f.payload) > 0 {
				c.log.Debug("remote closed stream", "stream", f.stream, "reason", string(f.payload))
			}
			c.st.remoteClose(f.stream)
			continue
		default:
			err = fmt.Errorf("%w: frame type %q from the far side", ErrProtocol, f.typ)
		}
		break
	}
	// The session is over: stop the transport, then explain.
	c.stdin.Close()
	c.removeProxies()
	c.st.closeAll()
	c.waitErr = c.cmd.Wait()
	c.mu.Lock()
	execs := c.execs
	c.execs = map[uint32]*execCall{}
	closed := c.closed
	c.mu.Unlock()
	for _, e := range execs {
		close(e.exit)
	}
	c.err = c.explain(err, closed)
	if !gotHello {
		if c.err == nil {
			c.err = errors.New("the far side ended the session")
		}
		first <- c.err
	}
	close(c.done)
}

// explain turns how the session ended into an operator's error.
func (c *Client) explain(readErr error, closed bool) error {
	if closed && (readErr == nil || errors.Is(readErr, io.EOF) || errors.Is(readErr, os.ErrClosed)) {
		return nil
	}
	msg := strings.TrimSpace(c.errb.String())
	var ee *exec.ExitError
	status := ""
	if errors.As(c.waitErr, &ee) {
		status = ee.String()
	}
	var parts []string
	if readErr != nil && !errors.Is(readErr, io.EOF) && !errors.Is(readErr, io.ErrUnexpectedEOF) {
		parts = append(parts, readErr.Error())
	}
	if msg != "" {
		parts = append(parts, msg)
	}
	if status != "" {
		parts = append(parts, "("+c.cfg.Command[0]+" "+status+")")
	}
	if len(parts) == 0 {
		return ErrSessionEnded
	}
	return fmt.Errorf("%w: %s", ErrSessionEnded, strings.Join(parts, " "))
}

// update makes the local sockets match the far side's hubs.
func (c *Client) update(h Hello) {
	want := map[string]bool{}
	for _, id := range h.Hubs {
		if ValidID(id) {
			want[id] = true
		}
	}
	c.mu.Lock()
	c.hello = h
	if c.closed {
		c.mu.Unlock()
		return
	}
	var gone []*proxy
	for id, p := range c.proxies {
		if !want[id] {
			gone = append(gone, p)
			delete(c.proxies, id)
		}
	}
	var add []string
	for id := range want {
		if c.proxies[id] == nil {
			add = append(add, id)
		}
	}
	c.mu.Unlock()
	for _, p := range gone {
		p.ln.Close()
		os.RemoveAll(p.dir)
	}
	for _, id := range add {
		dir := filepath.Join(c.cfg.Dir, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			c.log.Warn("local socket for remote hub", "hub", id, "err", err)
			continue
		}
		path := filepath.Join(dir, "hub.sock")
		os.Remove(path)
		ln, err := net.Listen("unix", path)
		if err != nil {
			c.log.Warn("local socket for remote hub", "hub", id, "err", err)
			continue
		}
		p := &proxy{ln: ln, dir: dir}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			ln.Close()
			os.RemoveAll(dir)
			continue
		}
		c.proxies[id] = p
		c.mu.Unlock()
		c.wg.Add(1)
		go c.accept(id, ln)
	}
}

// accept opens a stream to hub id for every local connection.
func (c *Client) accept(id string, ln net.Listener) {
	defer c.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		sid := c.newStream()
		// The O frame goes out before the connection is first read: a D
		// frame that overtook it would reach a stream the far side does
		// not know yet, and be dropped.
		c.st.open(sid, conn, func() error { return c.fw.write(frameOpen, sid, []byte(id)) })
	}
}

func (c *Client) newStream() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.nextID
	c.nextID += 2
	return id
}

func (c *Client) execOf(id uint32) *execCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.execs[id]
}

func (c *Client) takeExec(id uint32) *execCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.execs[id]
	delete(c.execs, id)
	return e
}

// Exec runs "clearancectl ARGS…" on the far side (only the commands its
// bridge allows), copying its output to stdout and stderr, and returns
// its exit status. stdout and stderr are written from the session's
// reader: they must not block for long. Ending ctx asks the far side to
// stop the command and returns ctx's error.
func (c *Client) Exec(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	b, _ := json.Marshal(args)
	if len(b) > MaxPayload {
		return 0, errors.New("bridge: command line too long")
	}
	e := &execCall{stdout: stdout, stderr: stderr, exit: make(chan int, 1)}
	sid := c.newStream()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, ErrSessionEnded
	}
	select {
	case <-c.done:
		c.mu.Unlock()
		return 0, c.sessionErr()
	default:
	}
	c.execs[sid] = e
	c.mu.Unlock()
	if err := c.fw.write(frameExec, sid, b); err != nil {
		c.takeExec(sid)
		return 0, fmt.Errorf("bridge: %w", err)
	}
	select {
	case code, ok := <-e.exit:
		if !ok {
			return 0, c.sessionErr()
		}
		return code, nil
	case <-ctx.Done():
		c.fw.write(frameClose, sid, nil)
		c.takeExec(sid)
		return 0, ctx.Err()
	}
}

func (c *Client) sessionErr() error {
	<-c.done
	if c.err != nil {
		return c.err
	}
	return ErrSessionEnded
}

// tailBuffer keeps the last max bytes written. Safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
