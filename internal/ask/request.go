// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ask

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/terok-ai/clearance/internal/dnsname"
	"github.com/terok-ai/clearance/internal/sanitize"
)

// Limits of one question.
const (
	// MaxBody is the largest request body read, in bytes.
	MaxBody = 4096
	// MaxReason is the longest reason, in characters.
	MaxReason = sanitize.DefaultMax
)

// Question is what a container asks: a destination, a port and its
// reason. Its strings are checked and canonical.
type Question struct {
	// Dest is an IP address (canonical form) or a DNS name or wildcard
	// pattern (canonical form, see dnsname).
	Dest string
	// IsName is true when Dest is a name (or pattern).
	IsName bool
	// Port is 1..65535.
	Port uint16
	// Proto is "tcp" or "udp".
	Proto string
	// Reason is the container's reason as the operator sees it:
	// printable ASCII, at most MaxReason characters (sanitize.String).
	Reason string
	// Wait is how long to wait for the verdict; Server fills in its
	// default when the question names none.
	Wait time.Duration
	// waitSet is true when the question named a wait.
	waitSet bool
}

// inputError is a question that cannot be answered, with what is wrong.
type inputError struct {
	status int
	msg    string
}

func (e *inputError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &inputError{status: 400, msg: fmt.Sprintf(format, args...)}
}

// fields are the names a question may carry.
var fields = []string{"dest", "port", "proto", "reason", "wait"}

// parseQuestion decodes a request body of contentType (form or JSON)
// into a checked Question. maxWait bounds the wait parameter.
func parseQuestion(contentType string, body []byte, maxWait time.Duration) (Question, error) {
	if !utf8.Valid(body) {
		return Question{}, badRequest("the request body is not valid UTF-8")
	}
	mt := "application/x-www-form-urlencoded"
	if contentType != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(contentType); err != nil {
			return Question{}, &inputError{status: 415, msg: "unreadable Content-Type " + strconv.Quote(sanitize.String(contentType, 64))}
		}
	}
	var raw map[string]string
	var err error
	switch mt {
	case "application/x-www-form-urlencoded":
		raw, err = parseForm(body)
	case "application/json":
		raw, err = parseJSON(body)
	default:
		return Question{}, &inputError{status: 415, msg: "Content-Type " + strconv.Quote(sanitize.String(mt, 64)) +
			" not supported: send application/x-www-form-urlencoded (curl -d) or application/json"}
	}
	if err != nil {
		return Question{}, err
	}
	return check(raw, maxWait)
}

func parseForm(body []byte) (map[string]string, error) {
	vs, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, badRequest("malformed form: %s", sanitize.String(err.Error(), 128))
	}
	out := make(map[string]string, len(vs))
	for k, v := range vs {
		if !known(k) {
			return nil, badRequest("unknown field %s (want dest, port, proto, reason, wait)", strconv.Quote(sanitize.String(k, 64)))
		}
		if len(v) != 1 {
			return nil, badRequest("field %s given %d times", k, len(v))
		}
		out[k] = v[0]
	}
	return out, nil
}

func parseJSON(body []byte) (map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, badRequest("malformed JSON: %s", sanitize.String(err.Error(), 128))
	}
	if _, err := dec.Token(); !errors.Is(err, errEOF) {
		return nil, badRequest("trailing data after the JSON object")
	}
	if obj == nil {
		return nil, badRequest("the JSON body must be an object")
	}
	out := make(map[string]string, len(obj))
	for k, v := range obj {
		if !known(k) {
			return nil, badRequest("unknown field %s (want dest, port, proto, reason, wait)", strconv.Quote(sanitize.String(k, 64)))
		}
		switch v := v.(type) {
		case string:
			if k == "port" || k == "wait" {
				return nil, badRequest("field %s must be a number", k)
			}
			out[k] = v
		case json.Number:
			if k != "port" && k != "wait" {
				return nil, badRequest("field %s must be a string", k)
			}
			out[k] = v.String()
		default:
			return nil, badRequest("field %s has the wrong type", k)
		}
	}
	return out, nil
}

func known(k string) bool {
	for _, f := range fields {
		if k == f {
			return true
		}
	}
	return false
}

// check validates the raw fields of a question.
func check(raw map[string]string, maxWait time.Duration) (Question, error) {
	for _, k := range []string{"dest", "port", "reason"} {
		if _, ok := raw[k]; !ok {
			return Question{}, badRequest("missing field %s (dest, port and reason are required)", k)
		}
	}
	var q Question
	dest := raw["dest"]
	if err := printable("dest", dest); err != nil {
		return Question{}, err
	}
	if a, err := netip.ParseAddr(dest); err == nil {
		a = a.Unmap()
		if a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return Question{}, badRequest("dest %s is not a destination a connection can go to", dest)
		}
		q.Dest = a.String()
	} else {
		p, err := dnsname.ParsePattern(dest)
		if err != nil {
			return Question{}, badRequest("dest %s is neither an IP address nor a DNS name: %s", strconv.Quote(sanitize.String(dest, 64)),
				sanitize.String(err.Error(), 128))
		}
		q.Dest, q.IsName = p.String(), true
	}
	port, err := strictUint(raw["port"], 65535)
	if err != nil || port == 0 {
		return Question{}, badRequest("port must be a whole number 1..65535, got %s", strconv.Quote(sanitize.String(raw["port"], 16)))
	}
	q.Port = uint16(port)
	switch p, ok := raw["proto"]; strings.ToLower(p) {
	case "tcp":
		q.Proto = "tcp"
	case "udp":
		q.Proto = "udp"
	case "":
		if ok {
			return Question{}, badRequest("proto must be tcp or udp")
		}
		q.Proto = "tcp"
	default:
		return Question{}, badRequest("proto must be tcp or udp, got %s", strconv.Quote(sanitize.String(p, 16)))
	}
	reason := raw["reason"]
	if err := printable("reason", reason); err != nil {
		return Question{}, err
	}
	switch n := utf8.RuneCountInString(strings.TrimSpace(reason)); {
	case n == 0:
		return Question{}, badRequest("reason is empty: say why the container needs the destination")
	case n > MaxReason:
		return Question{}, badRequest("reason has %d characters, at most %d", n, MaxReason)
	}
	q.Reason = sanitize.String(strings.TrimSpace(reason), MaxReason)
	if w, ok := raw["wait"]; ok {
		secs, err := strictUint(w, uint64(maxWait/time.Second))
		if err != nil {
			return Question{}, badRequest("wait must be a whole number of seconds 0..%d, got %s", int(maxWait/time.Second),
				strconv.Quote(sanitize.String(w, 16)))
		}
		q.Wait, q.waitSet = time.Duration(secs)*time.Second, true
	}
	return q, nil
}

// printable refuses control characters and invisible format characters
// (bidirectional overrides, zero-width joiners): what the operator reads
// must be what the container sent.
func printable(field, s string) error {
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError {
			return badRequest("%s contains a control or invisible character (%U)", field, r)
		}
	}
	return nil
}

// strictUint parses a decimal number 0..max without sign, space or
// leading zeros beyond "0".
func strictUint(s string, max uint64) (uint64, error) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, errors.New("not a number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a number")
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > max {
		return 0, errors.New("out of range")
	}
	return n, nil
}
