// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package sd

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// maxFieldName is journald's limit on the length of a field name.
const maxFieldName = 64

// fieldPrefix marks clearance's own journal fields.
const fieldPrefix = "CLEARANCE_"

// reserved are journal fields the handler sets itself; an attribute with
// one of these names gets the CLEARANCE_ prefix instead of overriding them.
var reserved = map[string]bool{
	"MESSAGE":           true,
	"PRIORITY":          true,
	"SYSLOG_IDENTIFIER": true,
	"CODE_FILE":         true,
	"CODE_LINE":         true,
	"CODE_FUNC":         true,
}

// EnvLog names the environment variable that forces the log handler
// [NewLogger] picks: "journal" (native journal entries, even when stderr
// is not the journal, e.g. under systemd-cat or in tests) or "stderr"
// (text on stderr, even under systemd). Any other value, or none, means
// automatic.
const EnvLog = "CLEARANCE_LOG"

// NewLogger returns the logger a clearance daemon logs through: a
// [JournalHandler] when stderr is connected to the journal
// ($JOURNAL_STREAM matches stderr) or the process was started by systemd
// ($INVOCATION_ID; journald may have been down when it started, so stderr
// is not the journal, yet the native protocol reaches it once it is back),
// plain text on stderr otherwise; $CLEARANCE_LOG ([EnvLog]) overrides the
// choice.
//
// The journal handler sends each entry as one datagram, so an entry logged
// while journald is stopped falls back to stderr (or is lost, if stderr is
// gone too), and the next one after journald returns reaches it. Daemons
// also ignore SIGPIPE (see [IgnoreSIGPIPE]), so a broken log stream never
// kills them. level may be changed at
// any time (io.systemd.service.SetLogLevel); nil means Info. identifier
// becomes SYSLOG_IDENTIFIER.
func NewLogger(level *slog.LevelVar, identifier string) *slog.Logger {
	var lv slog.Leveler = slog.LevelInfo
	if level != nil {
		lv = level
	}
	if useJournal(os.Getenv(EnvLog), journal.StderrIsJournalStream) {
		return slog.New(NewJournalHandler(&JournalOptions{
			Level:      lv,
			Identifier: identifier,
			AddSource:  true,
		}))
	}
	return slog.New(newTextHandler(os.Stderr, lv))
}

// useJournal decides between the journal and text on stderr: env is the
// value of $CLEARANCE_LOG, isStream reports whether stderr is the journal.
func useJournal(env string, isStream func() (bool, error)) bool {
	switch env {
	case "journal":
		return true
	case "stderr":
		return false
	}
	if os.Getenv("INVOCATION_ID") != "" {
		return true // started by systemd: the journal, even if it is down now
	}
	ok, _ := isStream()
	return ok
}

// IgnoreSIGPIPE makes writes to a closed pipe or socket fail with EPIPE
// instead of killing the process. Go kills a program that writes to a
// broken stdout or stderr unless SIGPIPE is ignored or handled; for a
// daemon whose stderr is the journal's stream, that is what stopping
// journald does, and systemd counts SIGPIPE as a clean exit, so
// Restart=on-failure would not even bring it back. Every clearance daemon
// calls this first.
func IgnoreSIGPIPE() { signal.Ignore(syscall.SIGPIPE) }

// newTextHandler is slog's text handler with names for clearance's extra
// levels (NOTICE, CRITICAL, ALERT, EMERG).
func newTextHandler(w io.Writer, level slog.Leveler) slog.Handler {
	return slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key != slog.LevelKey || len(groups) != 0 {
				return a
			}
			if l, ok := a.Value.Any().(slog.Level); ok {
				if name := levelName(l); name != "" {
					a.Value = slog.StringValue(name)
				}
			}
			return a
		},
	})
}

func levelName(l slog.Level) string {
	switch l {
	case LevelNotice:
		return "NOTICE"
	case LevelCritical:
		return "CRITICAL"
	case LevelAlert:
		return "ALERT"
	case LevelEmerg:
		return "EMERG"
	}
	return ""
}

// JournalOptions configures a [JournalHandler]. The zero value logs at
// Info and above through journal.Send, falling back to stderr.
type JournalOptions struct {
	// Level is the minimum level logged. Nil means slog.LevelInfo.
	Level slog.Leveler

	// Identifier is sent as SYSLOG_IDENTIFIER (e.g. "clearance-hub").
	// Empty means the field is not sent and journald derives one.
	Identifier string

	// AddSource sends CODE_FILE, CODE_LINE and CODE_FUNC of the logging
	// call.
	AddSource bool

	// Send writes one entry. Nil means journal.Send. Tests inject a
	// recorder here.
	Send func(message string, priority journal.Priority, fields map[string]string) error

	// Fallback receives the entry as a text line when Send fails, plus one
	// notice about the failure. Nil means os.Stderr.
	Fallback io.Writer
}

// JournalHandler is a [slog.Handler] that writes native journal entries:
// MESSAGE, PRIORITY (from the level, see [Priority]), SYSLOG_IDENTIFIER
// and one field per attribute.
//
// # Field names
//
// Attribute keys that start with CLEARANCE_, and MESSAGE_ID, are used as
// they are. Any other key that already is a valid journal field name
// (upper-case letters, digits and '_', not starting with '_' or a digit, at
// most 64 characters, and not one the handler sets itself) is used as it
// is too, so standard fields such as ERRNO work. Every other key is
// upper-cased, each character outside [A-Z0-9_] is replaced by '_', and it
// is prefixed with CLEARANCE_: "container" becomes CLEARANCE_CONTAINER,
// "request-id" CLEARANCE_REQUEST_ID. Groups prefix their attributes' keys
// with the group name and '_' before that mapping (CLEARANCE_* and
// MESSAGE_ID keys ignore groups). Names are cut to 64 characters.
//
// When Send fails (no journald, say), the entry is written as text to the
// fallback writer instead, so nothing is lost silently.
//
// A JournalHandler is immutable and safe for concurrent use; WithAttrs and
// WithGroup return new handlers sharing the same options.
type JournalHandler struct {
	opts     *JournalOptions
	state    *journalState
	fields   []field // pre-rendered attributes from WithAttrs
	prefix   string  // group prefix, e.g. "verdict_"
	fallback slog.Handler
}

type journalState struct {
	warnOnce sync.Once
}

type field struct{ name, value string }

// NewJournalHandler returns a handler writing to the journal as configured
// by opts (nil means the zero [JournalOptions]).
func NewJournalHandler(opts *JournalOptions) *JournalHandler {
	o := JournalOptions{}
	if opts != nil {
		o = *opts
	}
	if o.Level == nil {
		o.Level = slog.LevelInfo
	}
	if o.Send == nil {
		o.Send = journal.Send
	}
	if o.Fallback == nil {
		o.Fallback = os.Stderr
	}
	return &JournalHandler{
		opts:     &o,
		state:    &journalState{},
		fallback: newTextHandler(o.Fallback, o.Level),
	}
}

// Enabled reports whether l reaches the configured level.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.opts.Level.Level()
}

// Handle sends r as one journal entry, or writes it to the fallback when
// sending fails.
func (h *JournalHandler) Handle(ctx context.Context, r slog.Record) error {
	fields := make(map[string]string, len(h.fields)+r.NumAttrs()+4)
	if h.opts.Identifier != "" {
		fields["SYSLOG_IDENTIFIER"] = h.opts.Identifier
	}
	if h.opts.AddSource && r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		fields["CODE_FILE"] = f.File
		fields["CODE_LINE"] = strconv.Itoa(f.Line)
		fields["CODE_FUNC"] = f.Function
	}
	for _, f := range h.fields {
		fields[f.name] = f.value
	}
	r.Attrs(func(a slog.Attr) bool {
		for _, f := range appendAttr(nil, h.prefix, a) {
			fields[f.name] = f.value
		}
		return true
	})
	err := h.opts.Send(r.Message, Priority(r.Level), fields)
	if err == nil {
		return nil
	}
	h.state.warnOnce.Do(func() {
		wr := slog.NewRecord(time.Now(), slog.LevelWarn, "journal unavailable, logging to stderr", 0)
		wr.AddAttrs(slog.Any("err", err))
		_ = newTextHandler(h.opts.Fallback, slog.LevelDebug).Handle(ctx, wr)
	})
	return h.fallback.Handle(ctx, r)
}

// WithAttrs returns a handler that adds attrs to every entry.
func (h *JournalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	h2 := *h
	h2.fields = append([]field(nil), h.fields...)
	for _, a := range attrs {
		h2.fields = appendAttr(h2.fields, h.prefix, a)
	}
	h2.fallback = h.fallback.WithAttrs(attrs)
	return &h2
}

// WithGroup returns a handler that prefixes later attributes' keys with
// name.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + name + "_"
	h2.fallback = h.fallback.WithGroup(name)
	return &h2
}

// appendAttr renders a (flattening groups) under prefix and appends the
// resulting fields to dst.
func appendAttr(dst []field, prefix string, a slog.Attr) []field {
	if a.Equal(slog.Attr{}) {
		return dst // the zero Attr is ignored, as slog requires
	}
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p = prefix + a.Key + "_"
		}
		for _, ga := range v.Group() {
			dst = appendAttr(dst, p, ga)
		}
		return dst
	}
	var s string
	switch v.Kind() {
	case slog.KindTime:
		s = v.Time().Format(time.RFC3339Nano)
	default:
		s = v.String()
	}
	return append(dst, field{name: FieldName(prefix, a.Key), value: s})
}

// FieldName maps an slog attribute key, under a group prefix ("" or
// "group_"), to its journal field name as described on [JournalHandler].
func FieldName(prefix, key string) string {
	if strings.HasPrefix(key, fieldPrefix) || key == "MESSAGE_ID" {
		return truncate(sanitize(key))
	}
	name := prefix + key
	if validField(name) && !reserved[name] {
		return name
	}
	name = sanitize(strings.ToUpper(name))
	if !strings.HasPrefix(name, fieldPrefix) || reserved[name] {
		name = fieldPrefix + name
	}
	return truncate(name)
}

// validField reports whether journald accepts name as is.
func validField(name string) bool {
	if name == "" || len(name) > maxFieldName {
		return false
	}
	if c := name[0]; c == '_' || (c >= '0' && c <= '9') {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !fieldChar(name[i]) {
			return false
		}
	}
	return true
}

func fieldChar(c byte) bool {
	return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
}

// sanitize replaces every character outside [A-Z0-9_] with '_'.
func sanitize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r < 0x80 && fieldChar(byte(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func truncate(s string) string {
	if len(s) > maxFieldName {
		return s[:maxFieldName]
	}
	return s
}
