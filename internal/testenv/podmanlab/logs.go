// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podmanlab

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Tail returns the end of a log in the work dir's logs: "systemd",
// "verdict", "hub", "notifier" or "holder".
func (e *Env) Tail(name string) string {
	if name == "hub" {
		s := e.Log(name)
		if len(s) > 2000 {
			s = s[len(s)-2000:]
		}
		return strings.TrimSpace(s)
	}
	return Tail(e.Path("logs", name+".log"))
}

// Log returns the whole log name (see Tail). The hubs log to the
// namespace's journal: "hub" is their journal, one line per entry with its
// clearance fields.
func (e *Env) Log(name string) string {
	if name == "hub" {
		return e.hubJournal()
	}
	b, _ := os.ReadFile(e.Path("logs", name+".log"))
	return string(b)
}

// hubJournal renders the hubs' journal entries as "MESSAGE K=V …" lines.
func (e *Env) hubJournal() string {
	out, err := e.Journal("SYSLOG_IDENTIFIER=clearance-hub")
	if err != nil {
		return fmt.Sprintf("(journalctl: %v)", err)
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) != nil {
			continue
		}
		msg, _ := r["MESSAGE"].(string)
		b.WriteString(msg)
		keys := make([]string, 0, len(r))
		for k := range r {
			if k == "MESSAGE_ID" || strings.HasPrefix(k, "CLEARANCE_") {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%v", k, r[k])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// logFile opens the log name in the work dir's logs, closed by Close.
func (e *Env) logFile(name string) (*os.File, error) {
	f, err := os.OpenFile(e.Path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	e.defer_(func() error { f.Close(); return nil })
	return f, nil
}

// Tail returns the last 3000 bytes of the file at path, trimmed.
func Tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 3000 {
		f.Seek(fi.Size()-3000, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}
