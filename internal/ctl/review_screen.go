// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/event"
)

// The full-screen review draws with a handful of plain ANSI sequences
// every terminal emulator (and every ssh client) understands: the
// alternate screen, cursor home, erase to end of line and of screen, and
// SGR reverse/bold/colour. Nothing else: no mouse, no terminfo.
const (
	ansiEnter   = "\x1b[?1049h\x1b[?25l" // alternate screen, hide cursor
	ansiLeave   = "\x1b[?25h\x1b[?1049l" // show cursor, main screen
	ansiHome    = "\x1b[H"
	ansiEOL     = "\x1b[K"
	ansiEOS     = "\x1b[J"
	ansiReverse = "\x1b[7m"
	ansiReset   = "\x1b[0m"
)

// screenMode is what the full-screen review is waiting for.
type screenMode int

const (
	modeBrowse   screenMode = iota // moving and selecting
	modeScope                      // a/d pressed: choose the scope
	modeDuration                   // t pressed: typing a duration
	modeConfirm                    // y confirms the batch
	modeSending                    // the verdicts are on their way
	modeHelp                       // the key help
)

// screenRow is one line of the list: a group header or a request.
type screenRow struct {
	g  *reviewGroup
	it *reviewItem
}

// reviewScreen is the state of the full-screen review. It is owned by
// one goroutine (screen's loop); render is a pure function of it.
type reviewScreen struct {
	group    string
	color    bool
	now      time.Time
	m        *reviewModel
	rows     []screenRow
	cursor   int
	top      int
	selected map[string]bool
	mode     screenMode
	dec      reviewDecision
	batch    []*reviewItem
	input    string
	msg      string
	msgCol   string
	loading  bool
}

func newReviewScreen(group string, color bool) *reviewScreen {
	return &reviewScreen{group: group, color: color, selected: map[string]bool{}, loading: true,
		m: &reviewModel{}}
}

// setModel replaces the pending set, keeping the cursor on the same
// request or group and the selection of requests still pending.
func (s *reviewScreen) setModel(m *reviewModel) {
	var atKey, atGroup string
	if s.cursor < len(s.rows) {
		if r := s.rows[s.cursor]; r.it != nil {
			atKey = r.it.key
		} else {
			atGroup = r.g.id
		}
	}
	s.m, s.loading = m, false
	s.rows = s.rows[:0]
	live := map[string]bool{}
	s.cursor = min(s.cursor, max(0, len(m.items)+len(m.groups)-1))
	for _, g := range m.groups {
		if atGroup != "" && g.id == atGroup {
			s.cursor = len(s.rows)
		}
		s.rows = append(s.rows, screenRow{g: g})
		for _, it := range g.items {
			live[it.key] = true
			if atKey != "" && it.key == atKey {
				s.cursor = len(s.rows)
			}
			s.rows = append(s.rows, screenRow{g: g, it: it})
		}
	}
	for k := range s.selected {
		if !live[k] {
			delete(s.selected, k)
		}
	}
}

// targets is what a/d act on: the selection, else the request or group
// under the cursor.
func (s *reviewScreen) targets() []*reviewItem {
	var out []*reviewItem
	if len(s.selected) > 0 {
		for _, it := range s.m.items {
			if s.selected[it.key] {
				out = append(out, it)
			}
		}
		return out
	}
	if s.cursor >= len(s.rows) {
		return nil
	}
	if r := s.rows[s.cursor]; r.it != nil {
		return []*reviewItem{r.it}
	}
	return append(out, s.rows[s.cursor].g.items...)
}

// toggle selects or unselects the row under the cursor (a group: all
// of it, selected unless all of it already was).
func (s *reviewScreen) toggle() {
	if s.cursor >= len(s.rows) {
		return
	}
	r := s.rows[s.cursor]
	if r.it != nil {
		if s.selected[r.it.key] {
			delete(s.selected, r.it.key)
		} else {
			s.selected[r.it.key] = true
		}
		return
	}
	all := true
	for _, it := range r.g.items {
		all = all && s.selected[it.key]
	}
	for _, it := range r.g.items {
		if all {
			delete(s.selected, it.key)
		} else {
			s.selected[it.key] = true
		}
	}
}

// Keys the screen understands besides printable runes.
const (
	keyRune = iota
	keyUp
	keyDown
	keyPgUp
	keyPgDn
	keyHome
	keyEnd
	keyEnter
	keyEsc
	keyTab
	keyBackspace
	keyCtrlC
	keyCtrlD
	keyCtrlL
)

type key struct {
	code int
	r    rune
}

// decodeKeys splits what the terminal sent into keys. An escape
// sequence or a UTF-8 character that is not complete yet (a read can end
// inside one, over a slow link) is returned as rest, to be completed by
// the next read. A lone ESC at the end is the Esc key: a sequence cut
// right after its ESC then reads as Esc and plain characters, which only
// ever cancel or do nothing. Unknown sequences are dropped.
func decodeKeys(b []byte) (keys []key, rest []byte) {
	var out []key
	for len(b) > 0 {
		c := b[0]
		switch {
		case c == 0x1b:
			if len(b) == 1 {
				return append(out, key{code: keyEsc}), nil
			}
			if b[1] != '[' && b[1] != 'O' {
				out = append(out, key{code: keyEsc})
				b = b[1:]
				continue
			}
			// CSI or SS3: parameters, then a final byte 0x40-0x7e.
			j := 2
			for j < len(b) && (b[j] < 0x40 || b[j] > 0x7e) {
				j++
			}
			if j == len(b) {
				if j > 16 {
					return out, nil // not a key: drop it
				}
				return out, b
			}
			seq := string(b[2:j]) + string(b[j])
			b = b[j+1:]
			switch seq {
			case "A":
				out = append(out, key{code: keyUp})
			case "B":
				out = append(out, key{code: keyDown})
			case "5~":
				out = append(out, key{code: keyPgUp})
			case "6~":
				out = append(out, key{code: keyPgDn})
			case "H", "1~", "7~":
				out = append(out, key{code: keyHome})
			case "F", "4~", "8~":
				out = append(out, key{code: keyEnd})
			case "Z":
				out = append(out, key{code: keyTab}) // shift-tab: the same toggle
			}
			continue
		case c == '\r' || c == '\n':
			out = append(out, key{code: keyEnter})
		case c == '\t':
			out = append(out, key{code: keyTab})
		case c == 0x7f || c == 0x08:
			out = append(out, key{code: keyBackspace})
		case c == 0x03:
			out = append(out, key{code: keyCtrlC})
		case c == 0x04:
			out = append(out, key{code: keyCtrlD})
		case c == 0x0c:
			out = append(out, key{code: keyCtrlL})
		case c < 0x20:
			// Other controls: ignored.
		default:
			if !utf8.FullRune(b) {
				return out, b
			}
			r, size := utf8.DecodeRune(b)
			if r != utf8.RuneError {
				out = append(out, key{code: keyRune, r: r})
			}
			b = b[size:]
			continue
		}
		b = b[1:]
	}
	return out, nil
}

// screenAction is what a key asks the loop to do besides redrawing.
type screenAction int

const (
	actNone screenAction = iota
	actQuit
	actRefresh
	actSend
	actRegroup
)

// listHeight is the number of list lines on a screen h lines high: the
// title line and two bottom lines are fixed.
func listHeight(h int) int { return max(1, h-3) }

// handle applies one key and says what else to do.
func (s *reviewScreen) handle(k key, h int) screenAction {
	if k.code == keyCtrlC {
		return actQuit
	}
	switch s.mode {
	case modeHelp:
		s.mode = modeBrowse
		return actNone
	case modeSending:
		return actNone // the batch is on its way; keys wait
	case modeConfirm:
		if k.code == keyRune && (k.r == 'y' || k.r == 'Y') {
			s.mode = modeSending
			s.msg, s.msgCol = "sending "+plural(len(s.batch), "verdict")+"...", colDim
			return actSend
		}
		s.mode, s.batch = modeBrowse, nil
		s.msg, s.msgCol = "Cancelled; nothing sent.", ""
		return actNone
	case modeDuration:
		switch k.code {
		case keyEsc:
			s.mode, s.batch, s.msg = modeBrowse, nil, "Cancelled."
		case keyBackspace:
			if n := len(s.input); n > 0 {
				s.input = s.input[:n-1]
			}
		case keyEnter:
			ttl, err := parseDuration(s.input)
			if err != nil {
				s.msg, s.msgCol = clean(err.Error())+"; type it again or Esc.", colRed
				return actNone
			}
			s.dec.ttl, s.dec.scope = ttl, scopeOnce
			s.ask()
		case keyRune:
			if len(s.input) < 32 && k.r < 0x80 {
				s.input += string(k.r)
			}
		}
		return actNone
	case modeScope:
		if k.code != keyRune {
			if k.code == keyEsc {
				s.mode, s.batch, s.msg, s.msgCol = modeBrowse, nil, "Cancelled.", ""
			}
			return actNone
		}
		switch k.r {
		case 'o', '1':
			s.dec.scope = scopeOnce
			s.ask()
		case 't', '2':
			s.mode, s.input = modeDuration, ""
			s.msg, s.msgCol = "", ""
		case 'c', '3':
			s.dec.scope = scopeContainer
			s.ask()
		case 'A', '4':
			s.dec.scope = scopeAlways
			s.ask()
		case 'p':
			s.dec.anyPort = !s.dec.anyPort
		case 'q':
			s.mode, s.batch, s.msg, s.msgCol = modeBrowse, nil, "Cancelled.", ""
		}
		return actNone
	}
	// Browsing.
	page := listHeight(h)
	switch k.code {
	case keyUp:
		s.cursor--
	case keyDown:
		s.cursor++
	case keyPgUp:
		s.cursor -= page
	case keyPgDn:
		s.cursor += page
	case keyHome:
		s.cursor = 0
	case keyEnd:
		s.cursor = len(s.rows) - 1
	case keyTab:
		return actRegroup
	case keyCtrlL:
		return actRefresh
	case keyCtrlD:
		return actQuit
	case keyRune:
		switch k.r {
		case 'k':
			s.cursor--
		case 'j':
			s.cursor++
		case 'g':
			s.cursor = 0
		case 'G':
			s.cursor = len(s.rows) - 1
		case ' ', 'x':
			s.toggle()
			s.cursor++
		case '*':
			if len(s.selected) == len(s.m.items) {
				clear(s.selected)
			} else {
				for _, it := range s.m.items {
					s.selected[it.key] = true
				}
			}
		case 'a', 'd':
			s.batch = s.targets()
			if len(s.batch) == 0 {
				s.msg, s.msgCol = "Nothing to decide.", ""
				break
			}
			s.dec = reviewDecision{action: event.ActionAllow, scope: scopeOnce}
			if k.r == 'd' {
				s.dec.action = event.ActionDeny
			}
			s.mode, s.msg, s.msgCol = modeScope, "", ""
		case 'r':
			return actRefresh
		case '?', 'h':
			s.mode = modeHelp
		case 'q':
			return actQuit
		}
	}
	s.cursor = max(0, min(s.cursor, len(s.rows)-1))
	return actNone
}

// ask moves to the confirmation of the batch.
func (s *reviewScreen) ask() {
	s.mode = modeConfirm
	s.msg, s.msgCol = s.dec.question(s.batch, 3), colBold
}

// done shows a batch's outcome.
func (s *reviewScreen) done(summary string, details []string, failed int) {
	s.mode, s.batch = modeBrowse, nil
	clear(s.selected)
	s.msg, s.msgCol = summary, colGreen
	if s.dec.action == event.ActionDeny {
		s.msgCol = colYellow
	}
	if len(details) > 0 {
		s.msg += ": " + details[0]
		if len(details) > 1 {
			s.msg += " (and " + strconv.Itoa(len(details)-1) + " more)"
		}
	}
	if failed > 0 {
		s.msgCol = colRed
	}
}

// render draws a whole frame for a w×h terminal.
func (s *reviewScreen) render(buf *bytes.Buffer, w, h int) {
	if w < 20 {
		w = 20
	}
	if h < 5 {
		h = 5
	}
	cols := w - 1 // never write the last column: no autowrap surprises
	line := func(col, text string, reverse bool) {
		text = fit(text, cols)
		switch {
		case reverse:
			buf.WriteString(ansiReverse + text + ansiReset)
		case s.color && col != "":
			buf.WriteString("\x1b[" + col + "m" + text + ansiReset)
		default:
			buf.WriteString(text)
		}
		buf.WriteString(ansiEOL + "\r\n")
	}
	buf.WriteString(ansiHome)

	// Title.
	title := "clearance review: "
	switch {
	case s.loading:
		title += "asking the hubs..."
	default:
		if n := len(s.selected); n > 0 {
			title += strconv.Itoa(n) + " selected, "
		}
		title += plural(len(s.m.items), "pending request") + " in " + plural(len(s.m.groups), "group") +
			" on " + plural(s.m.hubs, "hub") + ", by " + s.group
	}
	line(colBold, title, false)

	// The list (or the help).
	lh := listHeight(h)
	if s.mode == modeHelp {
		help := strings.Split(reviewDescription, "\n")
		for i := 0; i < lh; i++ {
			if i < len(help) {
				line("", help[i], false)
			} else {
				line("", "", false)
			}
		}
	} else {
		s.top = max(0, min(s.top, s.cursor))
		if s.cursor >= s.top+lh {
			s.top = s.cursor - lh + 1
		}
		whatW := 0
		for _, it := range s.m.items {
			_, w := s.what(it)
			whatW = max(whatW, w)
		}
		whatW = min(whatW, max(20, cols/2))
		for i := s.top; i < s.top+lh; i++ {
			if i >= len(s.rows) {
				if i == 0 && !s.loading {
					line("", "  (nothing pending; r refreshes, q quits)", false)
					continue
				}
				line("", "", false)
				continue
			}
			r := s.rows[i]
			cur := i == s.cursor
			mark := "  "
			if cur {
				mark = "> "
			}
			if r.it == nil {
				all, some := true, false
				for _, it := range r.g.items {
					all = all && s.selected[it.key]
					some = some || s.selected[it.key]
				}
				box := "[ ]"
				switch {
				case all:
					box = "[x]"
				case some:
					box = "[-]"
				}
				line(colBold, mark+box+" "+r.g.label+"  ("+groupSummary(r.g, s.group, s.now)+")", cur)
				continue
			}
			box := "[ ]"
			if s.selected[r.it.key] {
				box = "[x]"
			}
			ago := "?"
			if !r.it.first.IsZero() {
				ago = age(s.now.Sub(r.it.first))
			}
			what, n := s.what(r.it)
			if n > whatW {
				what = fit(what, whatW)
				n = columns(what)
			}
			what += strings.Repeat(" ", whatW-n)
			line("", mark+"    "+box+" "+what+"  x"+strconv.FormatInt(r.it.req.Count, 10)+"  "+ago, cur)
		}
	}

	// Message and keys.
	msg := s.msg
	if msg == "" && len(s.m.problems) > 0 {
		msg = s.m.problems[0]
		if n := len(s.m.problems); n > 1 {
			msg += " (and " + strconv.Itoa(n-1) + " more)"
		}
	}
	line(s.msgCol, msg, false)
	var keys string
	verb := "Allow"
	if s.dec.action == event.ActionDeny {
		verb = "Deny"
	}
	switch s.mode {
	case modeBrowse:
		keys = "space select  * all  a allow  d deny  tab group  r refresh  ? help  q quit"
	case modeHelp:
		keys = "any key returns"
	case modeScope:
		port := "off"
		if s.dec.anyPort {
			port = "on"
		}
		keys = verb + " " + plural(len(s.batch), "request") + ": o once  t for a time  c until the container exits  A always  p every port [" +
			port + "]  Esc cancels"
	case modeDuration:
		keys = verb + " " + plural(len(s.batch), "request") + " for how long (30s, 15m, 1h, 2d, 1w)? " + s.input + "_"
	case modeConfirm:
		keys = "y confirms, any other key cancels"
	case modeSending:
		keys = "waiting for the hubs..."
	}
	buf.WriteString(fit(keys, cols) + ansiEOL + ansiEOS)
}

// what is an item's text in the list (the container under a name, the
// destination under a container) and its width in runes.
func (s *reviewScreen) what(it *reviewItem) (string, int) {
	if s.group == groupByName {
		return it.underName, it.underNameW
	}
	return it.underContainer, it.underContainerW
}

// fit cuts an inert string to at most n terminal columns, ending a cut
// string with "...".
func fit(s string, n int) string {
	if columns(s) <= n {
		return s
	}
	if n <= 3 {
		return strings.Repeat(".", max(0, n))
	}
	i, cols := 0, 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		w := runeWidth(r)
		if cols+w > n-3 {
			break
		}
		cols += w
		i += size
	}
	return s[:i] + "..."
}

// columns is the width of an inert string on a terminal.
func columns(s string) int {
	n := 0
	for _, r := range s {
		n += runeWidth(r)
	}
	return n
}

// runeWidth is how many columns a terminal gives r: 0 for combining
// marks, 2 for the wide and fullwidth ranges of East Asian scripts and
// emoji, 1 otherwise. Names and labels come from containers; a width
// counted short would let a line wrap and push the screen out of place.
func runeWidth(r rune) int {
	switch {
	case r < 0x300:
		return 1
	case unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r):
		return 0
	case r >= 0x1100 && r <= 0x115f, r >= 0x2e80 && r <= 0xa4cf && r != 0x303f, r >= 0xac00 && r <= 0xd7a3,
		r >= 0xf900 && r <= 0xfaff, r >= 0xfe30 && r <= 0xfe4f, r >= 0xff00 && r <= 0xff60, r >= 0xffe0 && r <= 0xffe6,
		r >= 0x1f300 && r <= 0x1f64f, r >= 0x1f900 && r <= 0x1f9ff, r >= 0x20000 && r <= 0x3fffd:
		return 2
	}
	return 1
}

// terminalFd runs f with f's file descriptor, without (*os.File).Fd
// (which would switch the file to blocking mode).
func terminalFd(f any, fn func(fd int) error) error {
	file, ok := f.(*os.File)
	if !ok {
		return errors.New("not a file")
	}
	rc, err := file.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// makeRaw puts the terminal f in raw mode (no echo, no line editing, no
// signals from keys: Ctrl-C arrives as a key) and returns the function
// that restores it.
func makeRaw(f any) (restore func(), err error) {
	var old *unix.Termios
	err = terminalFd(f, func(fd int) error {
		t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			return err
		}
		saved := *t
		old = &saved
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB
		t.Cflag |= unix.CS8
		t.Cc[unix.VMIN] = 1
		t.Cc[unix.VTIME] = 0
		return unix.IoctlSetTermios(fd, unix.TCSETS, t)
	})
	if err != nil {
		return nil, err
	}
	return func() {
		terminalFd(f, func(fd int) error { return unix.IoctlSetTermios(fd, unix.TCSETS, old) })
	}, nil
}

// termSize is the size of terminal f, 80×24 when it cannot be read.
func termSize(f any) (w, h int) {
	w, h = 80, 24
	terminalFd(f, func(fd int) error {
		ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
		if err == nil && ws.Col > 0 && ws.Row > 0 {
			w, h = int(ws.Col), int(ws.Row)
		}
		return err
	})
	return w, h
}

// readKeys delivers the terminal's keys until EOF or ctx ends (see
// releaseRead for how a blocked read is released).
func readKeys(ctx context.Context, in io.Reader) <-chan []key {
	out := make(chan []key)
	stop := releaseRead(ctx, in)
	go func() {
		defer close(out)
		defer stop()
		buf := make([]byte, 256)
		var rest []byte
		for {
			n, err := in.Read(buf)
			if n > 0 {
				var keys []key
				keys, rest = decodeKeys(append(rest, buf[:n]...))
				rest = append([]byte(nil), rest...)
				select {
				case out <- keys:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return out
}

// screen is the full-screen review on the terminal of stdin and stdout.
func (rv *review) screen(ctx context.Context) int {
	r := rv.r
	restore, err := makeRaw(r.stdin)
	if err != nil {
		fmt.Fprintf(r.stderr, "clearancectl: raw terminal: %v; using line mode\n", err)
		return rv.lineMode(ctx)
	}
	defer restore()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	io.WriteString(r.stdout, ansiEnter)
	defer io.WriteString(r.stdout, ansiLeave)

	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)

	s := newReviewScreen(rv.group, r.color)
	keys := readKeys(ctx, r.stdin)
	models := make(chan *reviewModel, 1)
	results := make(chan []reviewResult, 1)
	fetching := false
	refresh := func() {
		if fetching {
			return
		}
		fetching = true
		group := rv.group
		go func() {
			m := rv.fetch(ctx, group)
			select {
			case models <- m:
			case <-ctx.Done():
			}
		}()
	}
	var (
		frame, last bytes.Buffer
		sending     int
	)
	draw := func() {
		w, h := termSize(r.stdout)
		s.now = r.now()
		frame.Reset()
		s.render(&frame, w, h)
		if bytes.Equal(frame.Bytes(), last.Bytes()) {
			return
		}
		r.stdout.Write(frame.Bytes())
		last.Reset()
		last.Write(frame.Bytes())
	}
	refresh()
	draw()
	tick := time.NewTicker(r.rescan)
	defer tick.Stop()
	defer func() {
		// Quitting does not wait for a batch on its way: its calls are
		// abandoned (the hubs' audit says what was applied), and their
		// goroutine is collected so none is left behind.
		cancel()
		for ; sending > 0; sending-- {
			<-results
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ExitOK
		case ks, ok := <-keys:
			if !ok {
				return ExitOK
			}
			for _, k := range ks {
				_, h := termSize(r.stdout)
				switch s.handle(k, h) {
				case actQuit:
					return ExitOK
				case actRefresh:
					last.Reset() // redraw everything (Ctrl-L)
					refresh()
				case actRegroup:
					if rv.group == groupByName {
						rv.group = groupByContainer
					} else {
						rv.group = groupByName
					}
					s.group = rv.group
					s.m.regroup(rv.group)
					s.setModel(s.m)
					s.cursor, s.top = 0, 0
				case actSend:
					batch, d := s.batch, s.dec
					sending++
					go func() {
						res := decideBatch(ctx, batch, d)
						results <- res
					}()
				}
			}
		case m := <-models:
			fetching = false
			if m.group != rv.group {
				m.regroup(rv.group) // tab was pressed meanwhile
			}
			s.setModel(m)
		case res := <-results:
			sending--
			summary, details, failed := r.summarise(s.dec, res)
			s.done(summary, details, failed)
			refresh()
		case <-winch:
			last.Reset()
		case <-tick.C:
			refresh()
		}
		draw()
	}
}
