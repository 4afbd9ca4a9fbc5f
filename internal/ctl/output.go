// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/render"
)

func getuid() int { return os.Getuid() }

// colorEnabled reports whether w is a terminal that may get colour: the
// NO_COLOR convention (any non-empty value disables colour) and TERM=dumb
// are honoured, and nothing that is not a terminal gets colour.
func colorEnabled(w io.Writer, env func(string) string) bool {
	if env("NO_COLOR") != "" || env("TERM") == "dumb" {
		return false
	}
	return isTerminal(w)
}

// isTerminal reports whether w is a file open on a terminal. It avoids
// (*os.File).Fd, which would switch the file to blocking mode and so
// defeat read deadlines on a terminal shared with stdin.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var terr error
	if err := rc.Control(func(fd uintptr) {
		_, terr = unix.IoctlGetTermios(int(fd), unix.TCGETS)
	}); err != nil {
		return false
	}
	return terr == nil
}

// ANSI colours used by clearancectl. They are written only by paint, and
// only when colour is enabled.
const (
	colRed    = "31"
	colGreen  = "32"
	colYellow = "33"
	colDim    = "2"
	colBold   = "1"
)

// paint wraps s in an SGR colour when colour is on. s must already be
// inert (see clean).
func (r *runner) paint(col, s string) string {
	if !r.color || col == "" {
		return s
	}
	return "\x1b[" + col + "m" + s + "\x1b[0m"
}

// clean makes a string from a hub (or from the file system) inert on a
// terminal. Every untrusted string printed outside JSON passes through it.
func clean(s string) string { return render.Terminal(s) }

// cleanLong is clean with a larger cap, for diagnostic text (firewall
// stderr) that may legitimately be a few hundred bytes.
func cleanLong(s string) string { return render.Inert(strings.TrimSpace(s), 1024) }

// table renders rows as left-aligned columns separated by two spaces.
// Cells must already be inert. Widths count runes.
type table struct {
	head []string
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer, r *runner) {
	width := make([]int, len(t.head))
	for i, h := range t.head {
		width[i] = visibleLen(h)
	}
	for _, row := range t.rows {
		for i, c := range row {
			if n := visibleLen(c); i < len(width) && n > width[i] {
				width[i] = n
			}
		}
	}
	line := func(cells []string, head bool) {
		var b strings.Builder
		for i, c := range cells {
			if i == len(cells)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", width[i]-visibleLen(c)+2))
		}
		s := strings.TrimRight(b.String(), " ")
		if head {
			s = r.paint(colBold, s)
		}
		fmt.Fprintln(w, s)
	}
	line(t.head, true)
	for _, row := range t.rows {
		line(row, false)
	}
}

// visibleLen counts the runes of s that take a column: the SGR sequences
// paint adds are skipped (cells carry no other escape: they are inert).
func visibleLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && s[j] != 'm' {
				j++
			}
			i = j + 1
			continue
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
		n++
	}
	return n
}

// writeJSON writes v as indented JSON followed by a newline. Every
// non-ASCII character is escaped (\uXXXX), so values stay exact for
// scripts but the bytes on a terminal are plain ASCII: no escape
// sequence, no bidi override can take effect (control characters are
// already escaped by encoding/json).
func writeJSON(w io.Writer, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err := w.Write(asciiJSON(buf.Bytes()))
	return err
}

// asciiJSON escapes every non-ASCII rune of valid JSON as \uXXXX (UTF-16
// surrogate pairs above U+FFFF). Outside strings JSON has no non-ASCII
// bytes, so a byte-level pass is correct.
func asciiJSON(b []byte) []byte {
	ascii := true
	for _, c := range b {
		if c >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return b
	}
	out := make([]byte, 0, len(b)+32)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r < 0x80 && size == 1:
			out = append(out, b[0])
		case r == utf8.RuneError && size <= 1:
			out = append(out, `\ufffd`...)
		case r > 0xffff:
			r -= 0x10000
			out = fmt.Appendf(out, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
		default:
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		b = b[size:]
	}
	return out
}

// protoName is the lower-case protocol name for tables ("tcp", "udp", or
// the number).
func protoName(p int64) string { return strings.ToLower(event.ProtoName(p)) }

// endpoint renders "target:port/proto" from untrusted parts.
func endpoint(target string, port, proto int64) string {
	s := clean(target)
	if s == "" {
		s = "?"
	}
	if port > 0 {
		s = render.HostPort(s, port) // [2001:db8::1]:443
	}
	if proto > 0 {
		s += "/" + protoName(proto)
	}
	return s
}

// age renders a duration for humans: "12s", "5m", "3h", "2d".
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d"
}

// usecTime converts CLOCK_REALTIME microseconds; 0 is the zero time.
func usecTime(us int64) time.Time {
	if us <= 0 {
		return time.Time{}
	}
	return time.UnixMicro(us)
}

// clock renders t as local time, with the date when it is not today.
func clock(t, now time.Time) string {
	t = t.Local()
	n := now.Local()
	if t.Year() == n.Year() && t.YearDay() == n.YearDay() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04:05")
}
