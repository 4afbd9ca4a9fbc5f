// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package testutil

import (
	"context"
	"log/slog"
	"sync"
)

// Recorder is a slog.Handler that keeps every record's attributes as
// strings, for tests that check what a component wrote to the audit
// trail. Safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	records []Record
}

// Record is one recorded log record.
type Record struct {
	Level   slog.Level
	Message string
	Attrs   map[string]string
}

// NewRecorder returns a logger writing to a new Recorder, and the Recorder.
func NewRecorder() (*slog.Logger, *Recorder) {
	r := &Recorder{}
	return slog.New(r), r
}

// Enabled implements slog.Handler: everything is recorded.
func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }

// Handle implements slog.Handler.
func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	m := make(map[string]string, rec.NumAttrs())
	rec.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	r.records = append(r.records, Record{Level: rec.Level, Message: rec.Message, Attrs: m})
	r.mu.Unlock()
	return nil
}

// WithAttrs implements slog.Handler.
func (r *Recorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorderView{Recorder: r, attrs: as}
}

// WithGroup implements slog.Handler; groups are flattened.
func (r *Recorder) WithGroup(string) slog.Handler { return r }

// recorderView is a Recorder with attributes added by WithAttrs.
type recorderView struct {
	*Recorder
	attrs []slog.Attr
}

func (v *recorderView) Handle(ctx context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(v.attrs...)
	return v.Recorder.Handle(ctx, rec)
}

func (v *recorderView) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorderView{Recorder: v.Recorder, attrs: append(append([]slog.Attr(nil), v.attrs...), as...)}
}

// With returns the records whose attribute key has value value, oldest
// first.
func (r *Recorder) With(key, value string) []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Record
	for _, rec := range r.records {
		if rec.Attrs[key] == value {
			out = append(out, rec)
		}
	}
	return out
}
