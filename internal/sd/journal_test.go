// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package sd

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/google/go-cmp/cmp"
)

type entry struct {
	Message  string
	Priority journal.Priority
	Fields   map[string]string
}

// recorder is an injectable journal send function.
type recorder struct {
	mu      sync.Mutex
	entries []entry
	err     error
}

func (r *recorder) send(msg string, pri journal.Priority, fields map[string]string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.entries = append(r.entries, entry{msg, pri, fields})
	return nil
}

func TestFieldName(t *testing.T) {
	tests := []struct {
		name   string
		prefix string
		key    string
		want   string
	}{
		{"lower-case key gets prefix", "", "container", "CLEARANCE_CONTAINER"},
		{"snake case", "", "request_id", "CLEARANCE_REQUEST_ID"},
		{"dash replaced", "", "request-id", "CLEARANCE_REQUEST_ID"},
		{"dot and space replaced", "", "a.b c", "CLEARANCE_A_B_C"},
		{"non-ASCII replaced per character", "", "größe", "CLEARANCE_GR__E"},
		{"CLEARANCE_ key passes", "", "CLEARANCE_DEST", "CLEARANCE_DEST"},
		{"CLEARANCE_ key ignores group", "verdict_", "CLEARANCE_DEST", "CLEARANCE_DEST"},
		{"MESSAGE_ID passes", "", "MESSAGE_ID", "MESSAGE_ID"},
		{"MESSAGE_ID ignores group", "g_", "MESSAGE_ID", "MESSAGE_ID"},
		{"valid journal field passes", "", "ERRNO", "ERRNO"},
		{"lower-case clearance prefix not doubled", "", "clearance_dest", "CLEARANCE_DEST"},
		{"reserved MESSAGE is prefixed", "", "MESSAGE", "CLEARANCE_MESSAGE"},
		{"reserved PRIORITY is prefixed", "", "PRIORITY", "CLEARANCE_PRIORITY"},
		{"reserved in lower case is prefixed", "", "priority", "CLEARANCE_PRIORITY"},
		{"leading underscore is not trusted", "", "_PID", "CLEARANCE__PID"},
		{"leading digit", "", "1X", "CLEARANCE_1X"},
		{"empty key", "", "", "CLEARANCE_"},
		{"group prefix", "verdict_", "dest", "CLEARANCE_VERDICT_DEST"},
		{"nested groups", "a_b_", "c", "CLEARANCE_A_B_C"},
		{"upper-case group and key stay", "HTTP_", "CODE", "HTTP_CODE"},
		{"long name cut to 64", "", strings.Repeat("x", 100), "CLEARANCE_" + strings.Repeat("X", 54)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FieldName(tt.prefix, tt.key)
			if got != tt.want {
				t.Fatalf("FieldName(%q, %q) = %q, want %q", tt.prefix, tt.key, got, tt.want)
			}
			if !validField(got) && !strings.HasPrefix(got, "CLEARANCE__") {
				t.Fatalf("FieldName(%q, %q) = %q is not a valid journal field", tt.prefix, tt.key, got)
			}
		})
	}
}

func TestJournalHandler(t *testing.T) {
	when := time.Date(2026, 11, 27, 10, 0, 0, 5, time.UTC)
	tests := []struct {
		name string
		log  func(l *slog.Logger)
		want []entry
	}{
		{
			name: "info with attributes",
			log: func(l *slog.Logger) {
				l.Info("verdict applied", "container", "web-1", "port", 443, "CLEARANCE_ACTION", "allow", "MESSAGE_ID", "0123abcd")
			},
			want: []entry{{"verdict applied", journal.PriInfo, map[string]string{
				"SYSLOG_IDENTIFIER":   "clearance-hub",
				"CLEARANCE_CONTAINER": "web-1",
				"CLEARANCE_PORT":      "443",
				"CLEARANCE_ACTION":    "allow",
				"MESSAGE_ID":          "0123abcd",
			}}},
		},
		{
			name: "levels map to priorities",
			log: func(l *slog.Logger) {
				ctx := context.Background()
				l.Debug("d")
				l.Info("i")
				l.Log(ctx, LevelNotice, "n")
				l.Warn("w")
				l.Error("e")
				l.Log(ctx, LevelCritical, "c")
			},
			want: []entry{
				{"d", journal.PriDebug, map[string]string{"SYSLOG_IDENTIFIER": "clearance-hub"}},
				{"i", journal.PriInfo, map[string]string{"SYSLOG_IDENTIFIER": "clearance-hub"}},
				{"n", journal.PriNotice, map[string]string{"SYSLOG_IDENTIFIER": "clearance-hub"}},
				{"w", journal.PriWarning, map[string]string{"SYSLOG_IDENTIFIER": "clearance-hub"}},
				{"e", journal.PriErr, map[string]string{"SYSLOG_IDENTIFIER": "clearance-hub"}},
				{"c", journal.PriCrit, map[string]string{"SYSLOG_IDENTIFIER": "clearance-hub"}},
			},
		},
		{
			name: "WithAttrs, WithGroup and group values",
			log: func(l *slog.Logger) {
				l.With("container", "c1").WithGroup("verdict").With("dest", "1.2.3.4").
					Info("m", slog.Group("scope", "kind", "once"), "CLEARANCE_REQUEST_ID", "r1", slog.Group("", "inline", "x"))
			},
			want: []entry{{"m", journal.PriInfo, map[string]string{
				"SYSLOG_IDENTIFIER":            "clearance-hub",
				"CLEARANCE_CONTAINER":          "c1",
				"CLEARANCE_VERDICT_DEST":       "1.2.3.4",
				"CLEARANCE_VERDICT_SCOPE_KIND": "once",
				"CLEARANCE_REQUEST_ID":         "r1",
				"CLEARANCE_VERDICT_INLINE":     "x",
			}}},
		},
		{
			name: "value kinds",
			log: func(l *slog.Logger) {
				l.Info("m", "err", errors.New("boom"), "at", when, "ok", true, "d", 1500*time.Millisecond, "lv", slog.LevelWarn)
			},
			want: []entry{{"m", journal.PriInfo, map[string]string{
				"SYSLOG_IDENTIFIER": "clearance-hub",
				"CLEARANCE_ERR":     "boom",
				"CLEARANCE_AT":      "2026-11-27T10:00:00.000000005Z",
				"CLEARANCE_OK":      "true",
				"CLEARANCE_D":       "1.5s",
				"CLEARANCE_LV":      "WARN",
			}}},
		},
		{
			name: "reserved keys cannot override",
			log: func(l *slog.Logger) {
				l.Info("real", "MESSAGE", "fake", "PRIORITY", "0", "SYSLOG_IDENTIFIER", "sshd")
			},
			want: []entry{{"real", journal.PriInfo, map[string]string{
				"SYSLOG_IDENTIFIER":           "clearance-hub",
				"CLEARANCE_MESSAGE":           "fake",
				"CLEARANCE_PRIORITY":          "0",
				"CLEARANCE_SYSLOG_IDENTIFIER": "sshd",
			}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			h := NewJournalHandler(&JournalOptions{Level: slog.LevelDebug, Identifier: "clearance-hub", Send: rec.send})
			tt.log(slog.New(h))
			if diff := cmp.Diff(tt.want, rec.entries); diff != "" {
				t.Fatalf("unexpected entries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestJournalHandlerSource(t *testing.T) {
	rec := &recorder{}
	slog.New(NewJournalHandler(&JournalOptions{AddSource: true, Send: rec.send})).Info("m")
	if len(rec.entries) != 1 {
		t.Fatalf("got %d entries, want 1", len(rec.entries))
	}
	f := rec.entries[0].Fields
	if !strings.HasSuffix(f["CODE_FILE"], "journal_test.go") || f["CODE_LINE"] == "" || !strings.HasSuffix(f["CODE_FUNC"], "TestJournalHandlerSource") {
		t.Fatalf("unexpected source fields: %v", f)
	}
	if _, ok := f["SYSLOG_IDENTIFIER"]; ok {
		t.Fatalf("SYSLOG_IDENTIFIER sent without an identifier: %v", f)
	}
}

func TestJournalHandlerLevel(t *testing.T) {
	rec := &recorder{}
	var lv slog.LevelVar
	lv.Set(slog.LevelWarn)
	l := slog.New(NewJournalHandler(&JournalOptions{Level: &lv, Send: rec.send}))
	l.Info("dropped")
	lv.Set(slog.LevelDebug) // as SetLogLevel(7) would
	l.Debug("kept")
	var got []string
	for _, e := range rec.entries {
		got = append(got, e.Message)
	}
	if diff := cmp.Diff([]string{"kept"}, got); diff != "" {
		t.Fatalf("unexpected messages (-want +got):\n%s", diff)
	}
}

func TestJournalHandlerFallback(t *testing.T) {
	var buf bytes.Buffer
	rec := &recorder{err: errors.New("sendmsg: no such file or directory")}
	l := slog.New(NewJournalHandler(&JournalOptions{Send: rec.send, Fallback: &buf})).With("container", "c1")
	l.Info("first", "dest", "1.2.3.4")
	l.Warn("second")
	out := buf.String()
	for _, want := range []string{
		`msg="journal unavailable, logging to stderr" err="sendmsg: no such file or directory"`,
		`level=INFO msg=first container=c1 dest=1.2.3.4`,
		`level=WARN msg=second container=c1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("fallback output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "journal unavailable"); n != 1 {
		t.Errorf("failure notice written %d times, want once:\n%s", n, out)
	}
}

func TestLogLevels(t *testing.T) {
	tests := []struct {
		priority int
		want     slog.Level
	}{
		{0, LevelEmerg}, {1, LevelAlert}, {2, LevelCritical}, {3, slog.LevelError},
		{4, slog.LevelWarn}, {5, LevelNotice}, {6, slog.LevelInfo}, {7, slog.LevelDebug},
	}
	for _, tt := range tests {
		t.Run(levelCase(tt.priority), func(t *testing.T) {
			got, err := ParseLogLevel(tt.priority)
			if err != nil || got != tt.want {
				t.Fatalf("ParseLogLevel(%d) = %v, %v; want %v", tt.priority, got, err, tt.want)
			}
			if p := Priority(got); int(p) != tt.priority {
				t.Fatalf("Priority(%v) = %d, want %d", got, p, tt.priority)
			}
		})
	}
	for _, bad := range []int{-1, 8, 100} {
		if _, err := ParseLogLevel(bad); err == nil {
			t.Errorf("ParseLogLevel(%d) succeeded, want an error", bad)
		}
	}
	// In-between levels round to the priority whose threshold they reach.
	for l, want := range map[slog.Level]journal.Priority{
		slog.LevelDebug - 4: journal.PriDebug,
		slog.LevelInfo - 1:  journal.PriDebug,
		slog.LevelInfo + 1:  journal.PriInfo,
		slog.LevelWarn - 1:  journal.PriNotice,
		slog.LevelError - 1: journal.PriWarning,
		LevelEmerg + 10:     journal.PriEmerg,
	} {
		if got := Priority(l); got != want {
			t.Errorf("Priority(%v) = %d, want %d", l, got, want)
		}
	}
}

func levelCase(i int) string { return "syslog " + string(rune('0'+i)) }

func TestNewLoggerText(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "") // stderr is not the journal
	var lv slog.LevelVar
	l := NewLogger(&lv, "clearance-test")
	if _, ok := l.Handler().(*JournalHandler); ok {
		t.Fatal("NewLogger chose the journal handler without JOURNAL_STREAM")
	}
	if l.Enabled(context.Background(), slog.LevelDebug) {
		t.Fatal("debug enabled at level Info")
	}
	lv.Set(slog.LevelDebug)
	if !l.Enabled(context.Background(), slog.LevelDebug) {
		t.Fatal("LevelVar change not honoured")
	}
}

func TestTextLevelNames(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(newTextHandler(&buf, slog.LevelDebug))
	l.Log(context.Background(), LevelNotice, "n")
	l.Log(context.Background(), LevelCritical, "c")
	if out := buf.String(); !strings.Contains(out, "level=NOTICE msg=n") || !strings.Contains(out, "level=CRITICAL msg=c") {
		t.Fatalf("unexpected text output:\n%s", out)
	}
}
