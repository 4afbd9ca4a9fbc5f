// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package desktoplab starts a throwaway headless desktop for clearance's
// end-to-end tests and its demo: a virtual X server (Xvfb), a private
// session dbus-daemon and dunst, a real notification daemon, whose
// actions can be invoked without a mouse (`dunstctl context` with a dmenu
// picker script that chooses one action key) and whose screen can be
// captured (`import -window root`). See docs/test-machine.md §M9.3.
//
// Processes run on this machine, or wherever [Options.Command] puts them
// (the demo runs them in a private mount namespace). [Desktop.Close]
// stops them by pid.
//
// Needs Xvfb (xvfb), dbus-daemon, dunst and dunstctl (dunst) and import
// (imagemagick), and a font (fonts-dejavu-core).
package desktoplab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/terok-ai/clearance/internal/notify"
	"github.com/terok-ai/clearance/internal/testenv/notifytest"
)

// Tools lists the programs [Start] and the Desktop's methods run.
var Tools = []string{"Xvfb", "dbus-daemon", "dunst", "dunstctl", "import"}

// dunstrc configures dunst: the picker for `dunstctl context`, and popups
// large enough to read in a screenshot. Critical popups (clearance's
// prompts) never time out.
const dunstrc = `[global]
    dmenu = %s
    font = DejaVu Sans 11
    width = 460
    origin = top-right
    offset = 24x24
    frame_width = 2
    padding = 10
    horizontal_padding = 12
    show_indicators = yes
[urgency_critical]
    background = "#2b2b2b"
    foreground = "#ffffff"
    frame_color = "#e0a000"
    timeout = 0
`

// Options configures [Start]. Only Dir is required.
type Options struct {
	// Dir holds the configuration, the bus socket, the picker and the
	// logs. It must exist, stay until Close, and be reachable at the same
	// path by the processes Command starts and by the caller.
	Dir string
	// Command returns the command running argv with env (NAME=value
	// entries: DISPLAY, DBUS_SESSION_BUS_ADDRESS and HOME) as the only
	// desktop variables. nil: run it on this machine, in the caller's
	// environment less DISPLAY, DBUS_SESSION_BUS_ADDRESS, HOME and
	// XDG_CONFIG_HOME, plus env.
	Command func(env []string, argv ...string) *exec.Cmd
	// Pick is the action key the picker chooses when [Desktop.Context]
	// opens dunst's context menu. Default "allow".
	Pick string
	// Logger receives diagnostics. nil discards them.
	Logger *slog.Logger
}

// Desktop is a running Xvfb + dbus-daemon + dunst. Its methods are safe
// for concurrent use; Close stops everything.
type Desktop struct {
	// Display is the X display (":N"), BusAddr the session bus address
	// (for DBUS_SESSION_BUS_ADDRESS).
	Display, BusAddr string

	o     Options
	mu    sync.Mutex
	procs []*exec.Cmd // started, stopped newest first
	shots int
}

// Start starts Xvfb on a free display (it picks one: -displayfd), a
// private dbus-daemon, and dunst, and waits until dunst owns
// org.freedesktop.Notifications on the bus. On error everything started
// is stopped.
func Start(ctx context.Context, o Options) (d *Desktop, err error) {
	if o.Dir == "" {
		return nil, errors.New("desktoplab: no Dir")
	}
	if o.Pick == "" {
		o.Pick = "allow"
	}
	if o.Command == nil {
		o.Command = localCommand
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	d = &Desktop{o: o}
	defer func() {
		if err != nil {
			d.Close()
			d = nil
		}
	}()
	if err := d.startXvfb(ctx); err != nil {
		return d, err
	}
	if err := d.startBus(ctx); err != nil {
		return d, err
	}
	if err := d.startDunst(ctx); err != nil {
		return d, err
	}
	return d, nil
}

func localCommand(env []string, argv ...string) *exec.Cmd {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == "DISPLAY" || k == "DBUS_SESSION_BUS_ADDRESS" || k == "HOME" || k == "XDG_CONFIG_HOME"
	})
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// Env is what a program on this desktop needs: DISPLAY,
// DBUS_SESSION_BUS_ADDRESS and HOME (the Dir, where dunst's
// configuration is).
func (d *Desktop) Env() []string {
	var env []string
	if d.Display != "" {
		env = append(env, "DISPLAY="+d.Display)
	}
	if d.BusAddr != "" {
		env = append(env, "DBUS_SESSION_BUS_ADDRESS="+d.BusAddr)
	}
	return append(env, "HOME="+d.o.Dir)
}

// Path joins p to the Dir.
func (d *Desktop) Path(p ...string) string { return filepath.Join(append([]string{d.o.Dir}, p...)...) }

// start starts argv on the desktop in the background with its output in
// the log name, to be stopped by Close.
func (d *Desktop) start(name string, argv ...string) error {
	return d.adopt(name, d.o.Command(d.Env(), argv...))
}

// Log returns the output of "xvfb", "dbus" or "dunst".
func (d *Desktop) Log(name string) string {
	b, _ := os.ReadFile(d.Path(name + ".log"))
	return strings.TrimSpace(string(b))
}

func (d *Desktop) startXvfb(ctx context.Context) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := d.o.Command(nil, "Xvfb", "-displayfd", "3", "-screen", "0", "1280x800x24", "-nolisten", "tcp")
	cmd.ExtraFiles = []*os.File{w}
	if err := d.adopt("xvfb", cmd); err != nil {
		w.Close()
		return err
	}
	w.Close()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case n := <-line:
		if _, err := strconv.Atoi(n); err != nil {
			return fmt.Errorf("start Xvfb: no display number in its output (%q): %s", n, d.Log("xvfb"))
		}
		d.Display = ":" + n
		return nil
	case <-time.After(20 * time.Second):
		return fmt.Errorf("start Xvfb: not ready within 20s: %s", d.Log("xvfb"))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// adopt starts a command built by Options.Command with its output in the
// log name, to be stopped by Close.
func (d *Desktop) adopt(name string, cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	f, err := os.OpenFile(d.Path(name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmd.Args[0], err)
	}
	d.mu.Lock()
	d.procs = append(d.procs, cmd)
	d.mu.Unlock()
	return nil
}

func (d *Desktop) startBus(ctx context.Context) error {
	conf := d.Path("session.conf")
	if err := os.WriteFile(conf, notifytest.BusConfig(d.Path("bus")), 0o600); err != nil {
		return fmt.Errorf("write bus config: %w", err)
	}
	cmd := d.o.Command(nil, "dbus-daemon", "--config-file="+conf, "--nofork", "--nopidfile", "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	f, err := os.OpenFile(d.Path("dbus.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dbus-daemon: %w", err)
	}
	d.mu.Lock()
	d.procs = append(d.procs, cmd)
	d.mu.Unlock()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(s)
		io.Copy(io.Discard, out)
	}()
	select {
	case addr := <-line:
		if !strings.HasPrefix(addr, "unix:") {
			return fmt.Errorf("dbus-daemon address %q: %s", addr, d.Log("dbus"))
		}
		d.BusAddr = addr
		return nil
	case <-time.After(20 * time.Second):
		return fmt.Errorf("dbus-daemon not ready within 20s: %s", d.Log("dbus"))
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *Desktop) startDunst(ctx context.Context) error {
	picker := d.Path("picker.sh")
	// dunst writes one line per action, "#Allow (Blocked: host:443) [ID,allow]",
	// and runs the action of the line the picker prints.
	script := fmt.Sprintf("#!/bin/sh\ntee %s | grep -m1 ',%s\\]$'\n", d.Path("picker-input.txt"), d.o.Pick)
	if err := os.WriteFile(picker, []byte(script), 0o755); err != nil {
		return err
	}
	rc := d.Path(".config", "dunst", "dunstrc")
	if err := os.MkdirAll(filepath.Dir(rc), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(rc, fmt.Appendf(nil, dunstrc, picker), 0o644); err != nil {
		return err
	}
	c, err := notify.Dial(ctx, d.BusAddr, &notify.Config{Logger: d.o.Logger})
	if err != nil {
		return fmt.Errorf("dial the private bus: %w", err)
	}
	defer c.Disconnect()
	if c.Owner() != "" {
		return errors.New("a notification server already owns the private bus")
	}
	if err := d.start("dunst", "dunst", "-config", rc); err != nil {
		return err
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				return errors.New("bus connection lost")
			}
			if _, up := ev.(notify.DaemonRestarted); up {
				si, err := c.ServerInfo(ctx)
				d.o.Logger.Info("notification server", "info", si, "err", err)
				return nil
			}
		case <-timeout:
			return fmt.Errorf("dunst did not take the bus name within 20s: %s", d.Log("dunst"))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Run runs argv on the desktop (in its environment) and returns its
// combined output; it gives up after 20 s.
func (d *Desktop) Run(ctx context.Context, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := d.o.Command(d.Env(), argv...)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", argv[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		err = fmt.Errorf("%w (%w)", <-done, ctx.Err())
	}
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out.String())
	}
	return out.String(), nil
}

// Count returns `dunstctl count what` ("displayed", "waiting", "history").
func (d *Desktop) Count(ctx context.Context, what string) (int, error) {
	out, err := d.Run(ctx, "dunstctl", "count", what)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(out))
}

// WaitDisplayed polls (dunstctl has no change notification) until dunst
// displays at least n popups, for at most timeout.
func (d *Desktop) WaitDisplayed(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := d.Count(ctx, "displayed")
		if err == nil && c >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dunst: %d popups displayed (%v) after %s, want %d", c, err, timeout, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Screenshot captures the whole screen (import -window root) as a PNG at
// path, a path of the caller's (it is taken in Dir and copied).
func (d *Desktop) Screenshot(ctx context.Context, path string) error {
	d.mu.Lock()
	d.shots++
	tmp := d.Path(fmt.Sprintf("shot-%d.png", d.shots))
	d.mu.Unlock()
	if _, err := d.Run(ctx, "import", "-window", "root", tmp); err != nil {
		return err
	}
	defer os.Remove(tmp)
	b, err := os.ReadFile(tmp)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Context runs `dunstctl context`: dunst hands the actions of its popups
// to the picker, which chooses the line of [Options.Pick], and dunst
// emits ActionInvoked for it, as a click on that button does.
func (d *Desktop) Context(ctx context.Context) error {
	_, err := d.Run(ctx, "dunstctl", "context")
	return err
}

// PickerInput is what dunst offered the picker at the last Context.
func (d *Desktop) PickerInput() string {
	b, _ := os.ReadFile(d.Path("picker-input.txt"))
	return string(b)
}

// CloseAll closes every popup (dunstctl close-all); they go to dunst's
// history.
func (d *Desktop) CloseAll(ctx context.Context) error {
	_, err := d.Run(ctx, "dunstctl", "close-all")
	return err
}

// History returns the summaries in dunst's history.
func (d *Desktop) History(ctx context.Context) ([]string, error) {
	var h struct {
		Data [][]struct {
			Summary struct {
				Data string `json:"data"`
			} `json:"summary"`
		} `json:"data"`
	}
	out, err := d.Run(ctx, "dunstctl", "history")
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		return nil, fmt.Errorf("parse dunstctl history: %w: %s", err, out)
	}
	var s []string
	for _, group := range h.Data {
		for _, n := range group {
			s = append(s, n.Summary.Data)
		}
	}
	return s, nil
}

// Close stops dunst, the bus and Xvfb (SIGTERM, SIGKILL after 5 s) and
// waits for them. It is idempotent.
func (d *Desktop) Close() {
	d.mu.Lock()
	procs := d.procs
	d.procs = nil
	d.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		cmd := procs[i]
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
}
