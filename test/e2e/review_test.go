// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/testenv/testutil/vt"
)

// TestReviewOnATerminal runs the built clearancectl review on a
// pseudo-terminal, as its own session's controlling terminal (as sshd
// gives it one), against two containers' real hubs and verdict services:
// three blocked connections are allowed in one batch and then pass in the
// kernel. Line mode, through a pipe, denies the next one.
func TestReviewOnATerminal(t *testing.T) {
	requireLab(t)
	s1 := newStack(t, lab.StackOptions{})
	s2 := newStack(t, lab.StackOptions{ID: "labctr000002"})
	st1, st2 := subscribe(t, s1), subscribe(t, s2)
	blockedConnect(t, s1, lab.EchoPort)
	st1.next("connection_blocked")
	blockedConnect(t, s1, lab.OtherPort)
	st1.next("connection_blocked")
	blockedConnect(t, s2, lab.EchoPort)
	st2.next("connection_blocked")

	// s1's hub is found under XDG_RUNTIME_DIR, s2's through --glob.
	runtimeDir := filepath.Dir(filepath.Dir(filepath.Dir(s1.HubSock)))
	env := []string{"XDG_RUNTIME_DIR=" + runtimeDir, "TERM=xterm-256color", "PATH=" + os.Getenv("PATH")}
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatalf("pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	if err := setWinsize(ptmx, 120, 16); err != nil {
		t.Fatal(err)
	}
	screen := vt.New(120, 16)
	var raw strings.Builder
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(io.MultiWriter(screen, &raw), ptmx)
	}()
	cmd := exec.Command(filepath.Join(binDir, "clearancectl"), "review", "--glob", s2.HubSock)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	waitScreen := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			text := screen.Text()
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(text, w)
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %q on the screen:\n%s", want, text)
			}
			select {
			case <-screen.Changed():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	press := func(keys ...string) {
		t.Helper()
		for _, k := range keys {
			if _, err := io.WriteString(ptmx, k); err != nil {
				t.Fatal(err)
			}
			// The input's pacing, as in internal/ctl's review test: an
			// escape sequence must not run into the next key, and no
			// state says a key was read.
			time.Sleep(20 * time.Millisecond)
		}
	}

	host := lab.HostAddr.String()
	waitScreen("clearance review: 3 pending requests in 1 group on 2 hubs, by name",
		"[ ] "+host+"  (2 containers, 3 hits, oldest ",
		"labctr000001 (lab/", "8080/tcp", "8081/tcp", "labctr000002 (lab/")
	press("*", "a")
	waitScreen("3 selected", "Allow 3 requests: o once")
	press("c")
	waitScreen("Allow 3 requests in 2 containers (" + host + ":8080/tcp in labctr000001")
	press("y")
	waitScreen("allowed 3 of 3, until the container exits", "0 pending requests")
	for _, c := range []struct {
		s    *lab.Stack
		port int
	}{{s1, lab.EchoPort}, {s1, lab.OtherPort}, {s2, lab.EchoPort}} {
		if err := c.s.Connect(testutil.Context(t), c.port, 5*time.Second); err != nil {
			t.Errorf("%s port %d after the batch: %v", c.s.ID, c.port, err)
		}
	}
	for _, st := range []*stream{st1, st2} {
		if ev := st.next("verdict_applied"); !ev.Ok || !strings.Contains(ev.Reason, "via clearancectl") {
			t.Errorf("verdict_applied = %+v, want ok and the channel clearancectl", ev)
		}
	}

	press("q")
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("review exited with %v", waitErr)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("review did not quit; screen:\n%s", screen.Text())
	}
	tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil || tio.Lflag&unix.ECHO == 0 || tio.Lflag&unix.ICANON == 0 {
		t.Errorf("the terminal was left raw: %+v %v", tio, err)
	}
	tty.Close()
	<-copied
	if !strings.HasSuffix(raw.String(), "\x1b[?25h\x1b[?1049l") {
		t.Errorf("the main screen was not restored")
	}
	if u := screen.Unknown(); len(u) > 0 {
		t.Errorf("sequences beyond plain ANSI: %q", u)
	}

	// Line mode through a pipe: deny the next blocked connection once.
	blockedConnect(t, s2, lab.OtherPort)
	st2.next("connection_blocked")
	line := exec.Command(filepath.Join(binDir, "clearancectl"), "review", "--glob", s2.HubSock)
	line.Env = env
	line.Stdin = strings.NewReader("deny all\ny\n")
	out, err := line.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Deny 1 request in 1 container ("+host+":8081/tcp in labctr000002), once?") ||
		!strings.Contains(string(out), "denied 1 of 1, once, until ") {
		t.Fatalf("line mode: %v\n%s", err, out)
	}
	if ev := st2.next("verdict_applied"); !ev.Ok || ev.Action != "deny" {
		t.Errorf("verdict_applied = %+v", ev)
	}
	if err := s2.Connect(testutil.Context(t), lab.OtherPort, 2*time.Second); err == nil {
		t.Errorf("port %d passed after the deny", lab.OtherPort)
	}
}

// setWinsize sets a pseudo-terminal's size without (*os.File).Fd, which
// would put it in blocking mode.
func setWinsize(f *os.File, w, h int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(h), Col: uint16(w)})
	})
	if err != nil {
		return err
	}
	return serr
}
