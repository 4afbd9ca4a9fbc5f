// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/testenv/hubtest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/testenv/testutil/vt"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// screenSession is "clearancectl review" running on a pseudo-terminal:
// keys go in as a terminal sends them, the screen is read through
// vt.Screen.
type screenSession struct {
	t    *testing.T
	raw  *syncBuffer // every byte the program wrote
	vt   *vt.Screen
	in   io.Writer
	tty  *os.File
	done chan struct{}
	code int
}

// startPTYReview runs review in-process on a w×h pseudo-terminal.
func startPTYReview(t *testing.T, rt string, w, h int, env map[string]string, args ...string) *screenSession {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		testutil.Unavailable(t, "no pseudo-terminal: %v", err)
	}
	setSize(t, ptmx, w, h)
	s := &screenSession{t: t, raw: &syncBuffer{}, vt: vt.New(w, h), in: ptmx, tty: tty, done: make(chan struct{})}
	copied := make(chan struct{})
	go func() {
		io.Copy(io.MultiWriter(s.raw, s.vt), ptmx)
		close(copied)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	e := map[string]string{"XDG_RUNTIME_DIR": rt, "TERM": "xterm-256color"}
	for k, v := range env {
		e[k] = v
	}
	go func() {
		defer close(s.done)
		r := newRunner(tty, tty, tty, envMap(e))
		r.recordRoot = ""
		r.rescan = 100 * time.Millisecond
		s.code = r.run(ctx, append([]string{"review"}, args...))
	}()
	t.Cleanup(func() {
		cancel()
		defer func() { t.Logf("last screen:\n%s", s.vt.Text()) }()
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			t.Errorf("review did not stop after cancel")
		}
		tty.Close()
		select {
		case <-copied:
		case <-time.After(20 * time.Second):
			t.Errorf("pty reader did not stop")
		}
		ptmx.Close()
	})
	return s
}

// setSize sets the window size of a pseudo-terminal. It avoids
// pty.Setsize, whose (*os.File).Fd would put the file in blocking mode:
// a blocked read could then not be released, and the terminal never
// closes.
func setSize(t *testing.T, f *os.File, w, h int) {
	t.Helper()
	err := terminalFd(f, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(h), Col: uint16(w)})
	})
	if err != nil {
		t.Fatalf("set the terminal size: %v", err)
	}
}

// press types keys as a terminal sends them.
func (s *screenSession) press(keys ...string) {
	s.t.Helper()
	for _, k := range keys {
		if _, err := io.WriteString(s.in, k); err != nil {
			s.t.Fatalf("press %q: %v", k, err)
		}
		// Keys come apart, as a person types them: an escape sequence
		// must not run into the next key. This pacing is the input's
		// timing, not a wait for a state (none says a key was read: the
		// terminal queues input asynchronously).
		time.Sleep(20 * time.Millisecond)
	}
}

// waitScreen waits until the screen shows every one of want.
func (s *screenSession) waitScreen(want ...string) string {
	s.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		text := s.vt.Text()
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(text, w)
		}
		if ok {
			return text
		}
		select {
		case <-s.vt.Changed():
		case <-time.After(100 * time.Millisecond):
		case <-timeout:
			s.t.Fatalf("timed out waiting for %q on the screen:\n%s", want, text)
		}
	}
}

// cursorLine is the screen line the cursor marker is on.
func cursorLine(text string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "> ") {
			return l
		}
	}
	return ""
}

// moveTo presses down until the cursor is on a line containing what.
func (s *screenSession) moveTo(what string) {
	s.t.Helper()
	s.press("\x1b[H") // Home
	for i := 0; i < 30; i++ {
		text := s.vt.Text()
		if strings.Contains(cursorLine(text), what) {
			return
		}
		s.press("\x1b[B")
		s.waitChange(text)
	}
	s.t.Fatalf("no line with %q to move to:\n%s", what, s.vt.Text())
}

// waitChange waits (briefly) for the screen to differ from before.
func (s *screenSession) waitChange(before string) {
	testutil.Within(2*time.Second, func() bool { return s.vt.Text() != before })
}

func (s *screenSession) wait() int {
	s.t.Helper()
	select {
	case <-s.done:
		return s.code
	case <-time.After(20 * time.Second):
		s.t.Fatalf("review did not exit; screen:\n%s", s.vt.Text())
	}
	return -1
}

// reviewHubs serves two real hubs (c1, c2) with recording appliers and
// four pending requests: api.example.com:443 from both (c1's three
// times), other.example:80 and a hostile name from c1... the hostile one
// from c2.
type reviewHubs struct {
	c1, c2   *hubtest.Hub
	fa1, fa2 *hubtest.Applier
	api1     string // c1's api.example.com request
	api2     string
	other    string // c1's other.example
	evil     string // c2's hostile name
}

func startReviewHubs(t *testing.T, rt string) *reviewHubs {
	t.Helper()
	h := &reviewHubs{fa1: &hubtest.Applier{}, fa2: &hubtest.Applier{}}
	h.c1 = startHubWith(t, rt, "c1", h.fa1, nil)
	h.c2 = startHubWith(t, rt, "c2", h.fa2, nil)
	ev := blockedEv("c1", "198.51.100.7", "api.example.com", 443)
	ev.Dossier = map[string]string{"project": "proj", "task": "t1", "name": "builder"}
	h.api1 = h.c1.Hub.Blocked(ev)
	h.c1.Hub.Blocked(ev)
	h.c1.Hub.Blocked(ev)
	h.api2 = h.c2.Hub.Blocked(blockedEv("c2", "198.51.100.8", "api.example.com", 443))
	h.other = h.c1.Hub.Blocked(blockedEv("c1", "203.0.113.5", "other.example", 80))
	h.evil = h.c2.Hub.Blocked(blockedEv("c2", "192.0.2.66", hostile, 443))
	return h
}

func TestReviewPTYSelectAllowDeny(t *testing.T) {
	rt := testutil.ShortDir(t)
	h := startReviewHubs(t, rt)
	s := startPTYReview(t, rt, 160, 20, nil)

	text := s.waitScreen("clearance review: 4 pending requests in 3 groups on 2 hubs, by name",
		"[ ] api.example.com  (2 containers, 4 hits, oldest ",
		"[ ] c1 (proj/t1 · builder)  443/tcp  198.51.100.7",
		"[ ] c2  443/tcp  198.51.100.8",
		"[ ] other.example  (1 container, 1 hit, oldest ",
		"space select  * all  a allow  d deny")
	if !regexp.MustCompile(`c1 \(proj/t1 · builder\)  443/tcp  198\.51\.100\.7 +x3  \d+s`).MatchString(text) {
		t.Errorf("c1's request lacks its count and age:\n%s", text)
	}

	// Select the api.example.com group; a cancelled confirmation sends
	// nothing.
	s.moveTo("api.example.com  (")
	s.press(" ")
	s.waitScreen("2 selected", "[x] api.example.com", "[x] c1 (proj/t1", "[x] c2  443/tcp")
	s.press("a")
	s.waitScreen("Allow 2 requests: o once  t for a time  c until the container exits  A always")
	s.press("t")
	s.waitScreen("Allow 2 requests for how long (30s, 15m, 1h, 2d, 1w)? _")
	s.press("x", "y", "z", "\r")
	s.waitScreen(`invalid duration "xyz"`)
	s.press("\x7f", "\x7f", "\x7f", "1", "h", "\r")
	s.waitScreen("Allow 2 requests in 2 containers (api.example.com:443/tcp in c1, api.example.com:443/tcp in c2), for 1h0m0s?",
		"y confirms, any other key cancels")
	s.press("n")
	s.waitScreen("Cancelled; nothing sent.")
	if n := len(h.fa1.Calls()) + len(h.fa2.Calls()); n != 0 {
		t.Fatalf("%d verdicts sent without confirmation", n)
	}

	// Confirmed once: both hubs get their verdict.
	s.press("a", "t", "1", "h", "\r")
	s.waitScreen("for 1h0m0s?")
	s.press("y")
	s.waitScreen("allowed 2 of 2, once, until ", "clearance review: 2 pending requests in 2 groups on 2 hubs, by name")
	want := func(fa *hubtest.Applier, c, ip string) {
		t.Helper()
		calls := fa.Calls()
		if len(calls) != 1 || calls[0].Container != c || calls[0].Dest != "api.example.com" || calls[0].IP != ip ||
			calls[0].Action != "allow" || calls[0].Scope != hub.ScopeOnce || calls[0].TTL != time.Hour {
			t.Errorf("%s's applier got %+v, want one allow of api.example.com for 1h", c, calls)
		}
	}
	want(h.fa1, "c1", "198.51.100.7")
	want(h.fa2, "c2", "198.51.100.8")
	for _, th := range []*hubtest.Hub{h.c1, h.c2} {
		if ids := pendingIDs(th.Hub); ids[h.api1] || ids[h.api2] {
			t.Errorf("an allowed request is still pending: %v", ids)
		}
	}

	// Deny the request under the cursor until the container exits, every
	// port.
	s.moveTo("c1  80/tcp")
	s.press("d")
	s.waitScreen("Deny 1 request: o once")
	s.press("p")
	s.waitScreen("p every port [on]")
	s.press("c")
	s.waitScreen("Deny 1 request in 1 container (other.example:80/tcp in c1), until the container exits, every port?")
	s.press("y")
	s.waitScreen("denied 1 of 1, until the container exits, every port", "1 pending request in 1 group")
	if calls := h.fa1.Calls(); len(calls) != 2 || calls[1].Action != "deny" || calls[1].Scope != hub.ScopeContainer ||
		!calls[1].AnyPort || calls[1].Dest != "other.example" {
		t.Errorf("c1's applier got %+v", calls)
	}

	// Tab groups by container; the hostile name is inert on the screen.
	s.press("\t")
	text = s.waitScreen("by container", "[ ] c2  (1 request, 1 hit, oldest ")
	if !strings.Contains(text, "evil") || !strings.Contains(text, "AAAA") {
		t.Errorf("the hostile name is not shown:\n%s", text)
	}
	for _, bad := range []string{"\x1b]0;owned", "\x1b[31mevil", "\x1b[2J", "\u202e", "\u009b", "\x07"} {
		if strings.Contains(s.raw.String(), bad) {
			t.Errorf("the terminal received %q", bad)
		}
	}
	if u := s.vt.Unknown(); len(u) > 0 {
		t.Errorf("sequences beyond plain ANSI: %q", u)
	}

	// Another channel decides while the confirmation waits: the batch
	// reports it and applies nothing.
	s.moveTo("c2  (")
	s.press("d", "A")
	s.waitScreen("Deny 1 request in 1 container (", "), always (written to the container's policy)?")
	alice := hub.WithOperator(context.Background(), hub.Operator{UID: 1000, User: "alice", Channel: "notifier"})
	if _, err := h.c2.Hub.Decide(alice, h.evil, "allow", hub.ScopeOnce, 0, false); err != nil {
		t.Fatal(err)
	}
	s.press("y")
	s.waitScreen("denied 0 of 1; 1 no longer pending: ", "already allowed by alice (uid 1000) via notifier")
	if calls := h.fa2.Calls(); len(calls) != 2 || calls[1].Action != "allow" {
		t.Errorf("c2's applier got %+v, want alice's allow only", calls)
	}
	s.waitScreen("0 pending requests", "(nothing pending; r refreshes, q quits)")

	s.press("q")
	if code := s.wait(); code != ExitOK {
		t.Errorf("exit %d", code)
	}
	if !strings.HasSuffix(s.raw.String(), ansiLeave) {
		t.Errorf("the main screen was not restored: output ends %q", tail(s.raw.String(), 40))
	}
	var tio *unix.Termios
	err := terminalFd(s.tty, func(fd int) (err error) {
		tio, err = unix.IoctlGetTermios(fd, unix.TCGETS)
		return err
	})
	if err != nil || tio.Lflag&unix.ECHO == 0 || tio.Lflag&unix.ICANON == 0 {
		t.Errorf("the terminal was left raw: %+v %v", tio, err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestReviewPTYManyAndResize: more requests than lines scroll with the
// cursor; * selects all; a smaller terminal is followed; Ctrl-C quits.
func TestReviewPTYManyAndResize(t *testing.T) {
	rt := testutil.ShortDir(t)
	th := startHub(t, rt, "c1")
	for i := 0; i < 30; i++ {
		th.Hub.Blocked(blockedEv("c1", fmt.Sprintf("192.0.2.%d", i+1), fmt.Sprintf("h%02d.example", i), 443))
	}
	s := startPTYReview(t, rt, 80, 12, map[string]string{"NO_COLOR": "1"})
	s.waitScreen("30 pending requests in 30 groups on 1 hub", "h00.example")
	text := s.vt.Text()
	if strings.Contains(text, "h29.example") || len(strings.Split(text, "\n")) != 12 {
		t.Errorf("30 groups on a 12-line screen:\n%s", text)
	}
	s.press("\x1b[F") // End
	text = s.waitScreen("h29.example")
	if strings.Contains(text, "h00.example") || !strings.Contains(cursorLine(text), "c1  443/tcp") {
		t.Errorf("End did not scroll to the last request:\n%s", text)
	}
	s.press("?")
	s.waitScreen("Reviews the requests pending on every hub at once", "any key returns")
	s.press("k") // up, had it not closed the help
	s.waitScreen("space select  * all")
	if !strings.Contains(cursorLine(s.vt.Text()), "c1  443/tcp  192.0.2.30") {
		t.Errorf("the key that closed the help also moved:\n%s", s.vt.Text())
	}
	s.press("*")
	s.waitScreen("30 selected")
	s.press("*")
	s.waitChange(text)
	if text := s.waitScreen("on 1 hub, by name"); strings.Contains(text, "selected") {
		t.Errorf("* twice left a selection:\n%s", text)
	}

	// A narrower terminal: lines are cut, never wrapped.
	setSize(t, s.tty, 40, 8)
	s.press("r")
	fits := func() bool {
		lines := strings.Split(s.vt.Text(), "\n")
		long := false
		for _, l := range lines[:8] {
			long = long || len([]rune(l)) > 39
		}
		return !long && !strings.Contains(strings.Join(lines[8:], ""), "example")
	}
	if !testutil.Within(10*time.Second, fits) {
		t.Fatalf("the screen does not fit 40x8:\n%s", s.vt.Text())
	}
	s.press("\x03")
	if code := s.wait(); code != ExitOK {
		t.Errorf("Ctrl-C: exit %d", code)
	}
	if n := len(pendingIDs(th.Hub)); n != 30 {
		t.Errorf("%d pending after quitting, want 30 (nothing decided)", n)
	}
}

// runReviewLines runs review with input as standard input (not a
// terminal: line mode).
func runReviewLines(t *testing.T, rt, input string, args ...string) ctlResult {
	t.Helper()
	var out, errb bytes.Buffer
	r := newRunner(strings.NewReader(input), &out, &errb, envMap(map[string]string{"XDG_RUNTIME_DIR": rt}))
	r.recordRoot = ""
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := r.run(ctx, append([]string{"review"}, args...))
	res := ctlResult{code: code, stdout: out.String(), stderr: errb.String()}
	t.Logf("review %v <<%q → %d\nstdout:\n%s\nstderr:\n%s", args, input, code, res.stdout, res.stderr)
	return res
}

func TestReviewLineMode(t *testing.T) {
	rt := testutil.ShortDir(t)
	h := startReviewHubs(t, rt)
	in := strings.Join([]string{
		// 1 is the hostile name (its label starts with a space), 2 and 3
		// api.example.com in c1 and c2, 4 other.example.
		"allow 2-3 for 1h",
		"n", // cancelled
		"allow 2,3,3 for 1h",
		"yes",
		"allow 3",    // decided in this review already
		"deny 4 fr",  // bad scope
		"deny 4 for", // no duration
		"deny 4 for 0s",
		"deny 9",
		"deny 0-1",
		"deny 4 once until-exit",
		"frobnicate",
		"group",
		"deny 4 until-exit any-port",
		"y",
		"list",
		"group container",
		"deny all",
		"", // not a confirmation: blank lines are skipped
	}, "\n") + "\n"
	res := runReviewLines(t, rt, in)
	if res.code != ExitOK {
		t.Errorf("exit %d", res.code)
	}
	for _, want := range []string{
		"4 pending requests in 3 groups on 2 hubs, grouped by name:",
		"api.example.com  (2 containers, 4 hits, oldest ",
		"  2  c1 (proj/t1 · builder)  443/tcp  198.51.100.7  x3  ",
		"  3  c2                      443/tcp  198.51.100.8  x1  ",
		"Allow 2 requests in 2 containers (api.example.com:443/tcp in c1, api.example.com:443/tcp in c2), for 1h0m0s? Type y",
		"Cancelled; nothing sent.",
		"allowed 2 of 2, once, until ",
		"Already decided in this review: 3.",
		"Nothing to decide.",
		`unknown scope "fr" (once, for DURATION, until-exit, always, any-port).`,
		"for needs a duration (30s, 15m, 1h, 2d, 1w).",
		`duration "0s" must be at least 1s.`,
		"no request 9: the listing has 4 (type list to look again).",
		`invalid selection "0-1" (numbers and ranges, e.g. 1,3-5, or all).`,
		"one scope only: once, for DURATION, until-exit or always.",
		`Unknown command "frobnicate" (type help).`,
		"Usage: group name|container",
		"Deny 1 request in 1 container (other.example:80/tcp in c1), until the container exits, every port?",
		"denied 1 of 1, until the container exits, every port",
		"1 pending request in 1 group on 2 hubs, grouped by name:",
		"1 pending request in 1 group on 2 hubs, grouped by container:",
		"c2  (1 request, 1 hit, oldest ",
		"Deny 1 request in 1 container ( [31mevil ]0;owned  [2J gnp.exe AAAA",
		"End of input: nothing sent.",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	assertInert(t, "line-mode output", res.stdout)
	if c1, c2 := h.fa1.Calls(), h.fa2.Calls(); len(c1) != 2 || len(c2) != 1 || c1[0].TTL != time.Hour ||
		c2[0].TTL != time.Hour || c1[1].Action != "deny" || c1[1].Scope != hub.ScopeContainer || !c1[1].AnyPort {
		t.Errorf("appliers got c1 %+v, c2 %+v", c1, c2)
	}
	if ids := pendingIDs(h.c2.Hub); !ids[h.evil] {
		t.Errorf("the unconfirmed deny was applied")
	}
}

// TestReviewLineModeFailures: a refused verdict and a hub that does not
// answer make the exit status 1, and are named.
func TestReviewLineModeFailures(t *testing.T) {
	rt := testutil.ShortDir(t)
	fa := &hubtest.Applier{}
	th := startHubWith(t, rt, "c1", fa, nil)
	id := th.Hub.Blocked(blockedEv("c1", "198.51.100.7", "api.example.com", 443))
	dead := startHub(t, rt, "c9")
	dead.Stop() // a stale socket: a crashed hub
	fa.Set(false, "nft: no such table", nil)
	res := runReviewLines(t, rt, "allow 1\ny\n")
	if res.code != ExitFailure {
		t.Errorf("exit %d, want %d", res.code, ExitFailure)
	}
	for _, want := range []string{"allowed 0 of 1; 1 failed", "  api.example.com:443/tcp in c1: the firewall refused: nft: no such table"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if !strings.Contains(res.stderr, "clearancectl: hub c9: ") {
		t.Errorf("the silent hub is not named: %q", res.stderr)
	}
	if !pendingIDs(th.Hub)[id] {
		t.Errorf("a refused request is no longer pending")
	}
	// No hubs at all.
	res = runReviewLines(t, testutil.ShortDir(t), "")
	if res.code != ExitOK || !strings.Contains(res.stdout, "No hubs found (looked for ") {
		t.Errorf("no hubs: exit %d, %q", res.code, res.stdout)
	}
}

func TestReviewUsage(t *testing.T) {
	rt := testutil.ShortDir(t)
	for _, args := range [][]string{{"review", "extra"}, {"review", "--group", "port"}, {"review", "--nope"}} {
		if res := runCtl(t, rt, args...); res.code != ExitUsage || !strings.Contains(res.stderr, "clearancectl") {
			t.Errorf("%v: exit %d, %q", args, res.code, res.stderr)
		}
	}
	res := runCtl(t, rt, "review", "--help")
	if res.code != ExitOK || !strings.Contains(res.stdout, "Usage: clearancectl review") || !strings.Contains(res.stdout, "--line-mode") {
		t.Errorf("--help: exit %d, %q", res.code, res.stdout)
	}
	assertInert(t, "usage", runCtl(t, rt, "review", "--group", "\x1b[2J").stderr)
}

func TestDecodeKeys(t *testing.T) {
	got, rest := decodeKeys([]byte("j\x1b[A\x1b[B\x1bOA\x1b[5~\x1b[6~\x1b[H\x1b[F\x1b[1~\x1b[4~\t\x1b[Z\r\x7f\x03\x04\x1b[99xq\x1b"))
	want := []key{{keyRune, 'j'}, {code: keyUp}, {code: keyDown}, {code: keyUp}, {code: keyPgUp}, {code: keyPgDn},
		{code: keyHome}, {code: keyEnd}, {code: keyHome}, {code: keyEnd}, {code: keyTab}, {code: keyTab},
		{code: keyEnter}, {code: keyBackspace}, {code: keyCtrlC}, {code: keyCtrlD}, {keyRune, 'q'}, {code: keyEsc}}
	if fmt.Sprint(got) != fmt.Sprint(want) || rest != nil {
		t.Errorf("decodeKeys = %v, rest %q\nwant        %v", got, rest, want)
	}
	if got, _ := decodeKeys([]byte("é\x1bx")); fmt.Sprint(got) != fmt.Sprint([]key{{keyRune, 'é'}, {code: keyEsc}, {keyRune, 'x'}}) {
		t.Errorf("decodeKeys(é ESC x) = %v", got)
	}
	// A read that ends inside a sequence or a character leaves it for the
	// next read: the keys are the same wherever the input is cut, except
	// right after an ESC (then Esc and plain characters, which cancel or
	// do nothing).
	in := []byte("a\x1b[Aé\x1b[5~b")
	whole, _ := decodeKeys(in)
	for cut := 1; cut < len(in); cut++ {
		first, rest := decodeKeys(in[:cut])
		second, rest := decodeKeys(append(rest, in[cut:]...))
		got := append(first, second...)
		if rest != nil {
			t.Errorf("cut at %d: rest %q", cut, rest)
		}
		if in[cut-1] == 0x1b {
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(whole) {
			t.Errorf("cut at %d: %v, want %v", cut, got, whole)
		}
	}
	// An endless sequence is dropped, not kept.
	if got, rest := decodeKeys([]byte("\x1b[" + strings.Repeat("1;", 20))); len(got) != 0 || rest != nil {
		t.Errorf("an overlong sequence: %v, rest %q", got, rest)
	}
}

func TestFitColumns(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdefghijkl", 8, "abcde..."},
		{"名前名前名前", 8, "名前..."}, // wide: 2 columns each
		{"e\u0301e\u0301e\u0301e\u0301", 4, "e\u0301e\u0301e\u0301e\u0301"},
		{"abc", 2, ".."},
	} {
		got := fit(tc.in, tc.n)
		if got != tc.want || columns(got) > tc.n {
			t.Errorf("fit(%q, %d) = %q (%d columns), want %q", tc.in, tc.n, got, columns(got), tc.want)
		}
	}
}

// BenchmarkReviewRender1k measures one refresh of the full-screen review
// with 1 000 pending requests on 50 hubs: grouping the hubs' answers,
// keeping the selection, and drawing a 200×50 frame
// (review_render_ms_1k_pending).
func BenchmarkReviewRender1k(b *testing.B) {
	var answers []hubPending
	now := time.Now()
	for hb := 0; hb < 50; hb++ {
		ref := hubRef{Path: fmt.Sprintf("/run/user/1000/clearance/c%02d/hub.sock", hb), ID: fmt.Sprintf("c%02d", hb)}
		var reqs []orgterokclearancehub1.PendingRequest
		for i := 0; i < 20; i++ {
			reqs = append(reqs, orgterokclearancehub1.PendingRequest{
				Container: ref.ID, Request_id: fmt.Sprintf("%s:%d", ref.ID, i),
				Dest: fmt.Sprintf("198.51.100.%d", i+1), Domain: fmt.Sprintf("host%03d.example", (hb*7+i)%300),
				Port: 443, Proto: 6, Count: int64(i + 1), Dossier: map[string]string{"project": "p", "task": ref.ID},
				First_seen_usec: now.Add(-time.Duration(i) * time.Minute).UnixMicro(),
			})
		}
		answers = append(answers, hubPending{hub: ref, reqs: reqs})
	}
	s := newReviewScreen(groupByName, true)
	s.setModel(buildReview(answers, "", groupByName))
	for _, it := range s.m.items[:100] {
		s.selected[it.key] = true
	}
	s.cursor = 500
	var buf bytes.Buffer
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.setModel(buildReview(answers, "", groupByName))
		s.now = now
		buf.Reset()
		s.render(&buf, 200, 50)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "review_render_ms_1k_pending")
	if len(s.m.items) != 1000 || len(s.selected) != 100 {
		b.Fatalf("%d items, %d selected", len(s.m.items), len(s.selected))
	}
}

// TestReviewLineModeContainerAlways: --container keeps one container's
// requests, and always reaches the hub as scope always.
func TestReviewLineModeContainerAlways(t *testing.T) {
	rt := testutil.ShortDir(t)
	h := startReviewHubs(t, rt)
	res := runReviewLines(t, rt, "allow all always\ny\n", "--container", "c1", "--group", "container")
	if res.code != ExitOK {
		t.Errorf("exit %d", res.code)
	}
	for _, want := range []string{
		"2 pending requests in 1 group on 2 hubs, grouped by container:",
		"c1  proj/t1 · builder  (2 requests, 4 hits, oldest ",
		"always (written to the container's policy)?",
		"allowed 2 of 2, always (written to the container's policy)",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(res.stdout, "c2") {
		t.Errorf("--container c1 shows c2's requests")
	}
	calls := h.fa1.Calls()
	if len(calls) != 2 || calls[0].Scope != hub.ScopeAlways || calls[1].Scope != hub.ScopeAlways || len(h.fa2.Calls()) != 0 {
		t.Errorf("appliers got c1 %+v, c2 %+v", calls, h.fa2.Calls())
	}
}
