// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/sanitize"
)

// Producer event types that are not wire types themselves.
const (
	// TypePending is what a producer sends for a blocked connection; it
	// becomes [event.ConnectionBlocked].
	TypePending = "pending"
	// TypeShieldDownAll is what terok-shield 0.6.x sends when the shield is
	// taken down with allow-all; it becomes [event.ShieldDisengaged].
	TypeShieldDownAll = "shield_down_all"
)

// ErrMalformed matches (with [errors.Is]) every error [Parse] returns for a
// line that is not a usable event: invalid UTF-8, not JSON, not an object, a
// required field missing, or a field of the wrong type or out of range.
var ErrMalformed = errors.New("malformed event")

// ErrUnknownType matches (with [errors.Is]) the error [Parse] returns for a
// well-formed object whose "type" is not one the hub accepts from producers.
var ErrUnknownType = errors.New("unknown event type")

// MalformedError describes why a line was rejected. It matches
// [ErrMalformed].
type MalformedError struct {
	// Field is the offending member ("port", "container", …), or "" when the
	// line as a whole is bad.
	Field string
	// Reason says what is wrong, in a few words.
	Reason string
	// Err is the underlying decoding error, if any.
	Err error
}

func (e *MalformedError) Error() string {
	var b strings.Builder
	b.WriteString("malformed event")
	if e.Field != "" {
		fmt.Fprintf(&b, ": field %q", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Is reports whether target is [ErrMalformed].
func (e *MalformedError) Is(target error) bool { return target == ErrMalformed }

// Unwrap returns the underlying decoding error, if any.
func (e *MalformedError) Unwrap() error { return e.Err }

// UnknownTypeError names the producer type that was dropped. It matches
// [ErrUnknownType].
type UnknownTypeError struct {
	// Type is the producer's "type", sanitised (at most 64 characters); ""
	// when the member was missing or not a string.
	Type string
}

func (e *UnknownTypeError) Error() string {
	return "unknown event type " + strconv.Quote(e.Type)
}

// Is reports whether target is [ErrUnknownType].
func (e *UnknownTypeError) Is(target error) bool { return target == ErrUnknownType }

func malformed(field, reason string) error {
	return &MalformedError{Field: field, Reason: reason}
}

// Parse translates one producer line (newline-delimited JSON, see the
// package documentation) into a wire event, as the seed's hub does.
//
// Surrounding ASCII whitespace is ignored. Every string of the result,
// dossier values included, is sanitised with [sanitize.String] at
// [sanitize.DefaultMax]; the result is normalised, so Dossier is never nil.
// Errors match [ErrMalformed] or [ErrUnknownType]. Parse is safe for
// concurrent use and does not retain line.
func Parse(line []byte) (event.Event, error) {
	line = trimASCIISpace(line)
	if !utf8.Valid(line) {
		return event.Event{}, malformed("", "invalid UTF-8")
	}
	if !json.Valid(line) {
		var syntax struct{}
		return event.Event{}, &MalformedError{Reason: "not JSON", Err: json.Unmarshal(line, &syntax)}
	}
	if line[0] != '{' {
		return event.Event{}, malformed("", "not a JSON object")
	}

	// The members the hub reads, as raw JSON values; nil when missing. A
	// repeated member overrides an earlier one, as in every JSON decoder
	// the producers are tested against.
	var typ, container, id, dest, port, proto, domain, reason, dossierRaw []byte
	for it := (members{obj: line}); ; {
		key, val, ok := it.next()
		if !ok {
			break
		}
		switch string(keyBytes(key)) { // no allocation: compared in place
		case "type":
			typ = val
		case "container":
			container = val
		case "id":
			id = val
		case "dest":
			dest = val
		case "port":
			port = val
		case "proto":
			proto = val
		case "domain":
			domain = val
		case "reason":
			reason = val
		case "dossier":
			dossierRaw = val
		}
	}

	var ev event.Event
	switch t := rawType(typ); t {
	case TypePending:
		ev.Type = event.ConnectionBlocked
	case TypeShieldDownAll:
		ev.Type = event.ShieldDisengaged
	case event.ContainerStarted, event.ContainerExited, event.ShieldUp, event.ShieldDown, event.ShieldDisengaged:
		ev.Type = t
	default:
		return event.Event{}, &UnknownTypeError{Type: sanitize.String(t, 64)}
	}

	var err error
	if ev.Container, err = stringField("container", container, true); err != nil {
		return event.Event{}, err
	}
	switch ev.Type {
	case event.ConnectionBlocked:
		if ev.RequestID, err = stringField("id", id, true); err != nil {
			return event.Event{}, err
		}
		if ev.Dest, err = stringField("dest", dest, true); err != nil {
			return event.Event{}, err
		}
		if ev.Port, err = intField("port", port, math.MaxUint16); err != nil {
			return event.Event{}, err
		}
		if ev.Proto, err = intField("proto", proto, math.MaxUint8); err != nil {
			return event.Event{}, err
		}
		if ev.Domain, err = stringField("domain", domain, false); err != nil {
			return event.Event{}, err
		}
	case event.ContainerExited:
		if ev.Reason, err = stringField("reason", reason, false); err != nil {
			return event.Event{}, err
		}
	}
	ev.Dossier = dossier(dossierRaw)
	ev.Normalize()
	return ev, nil
}

// members iterates over the members of obj, a valid JSON object
// ([json.Valid], first byte '{'), so the scan needs no error handling. It
// allocates nothing.
type members struct {
	obj []byte
	i   int // 0 before the first call
}

// next returns the raw key (quoted) and raw value of the next member, or
// ok false after the last.
func (m *members) next() (key, val []byte, ok bool) {
	b := m.obj
	if m.i == 0 {
		m.i = skipSpace(b, 1)
	}
	i := m.i
	if b[i] == '}' {
		return nil, nil, false
	}
	kEnd := stringEnd(b, i)
	key = b[i:kEnd]
	i = skipSpace(b, kEnd) // at ':'
	i = skipSpace(b, i+1)
	vEnd := valueEnd(b, i)
	val = b[i:vEnd]
	i = skipSpace(b, vEnd)
	if b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	m.i = i
	return key, val, true
}

// stringEnd returns the index just past the string literal starting at
// b[i] == '"'.
func stringEnd(b []byte, i int) int {
	for j := i + 1; ; j++ {
		switch b[j] {
		case '\\':
			j++ // the escaped byte cannot end the string
		case '"':
			return j + 1
		}
	}
}

// valueEnd returns the index just past the JSON value starting at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; ; j++ {
			switch b[j] {
			case '"':
				j = stringEnd(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
	}
	// A number or a literal: up to the next delimiter.
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && !isJSONSpace(b[j]) {
		j++
	}
	return j
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isJSONSpace(b[i]) {
		i++
	}
	return i
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// keyBytes returns a member name's text as bytes, in place unless it
// has escapes.
func keyBytes(key []byte) []byte {
	if bytes.IndexByte(key, '\\') < 0 {
		return key[1 : len(key)-1]
	}
	s, _ := unquote(key)
	return []byte(s)
}

// keyText returns a member name as text.
func keyText(key []byte) string {
	s, err := unquote(key)
	if err != nil {
		return ""
	}
	return s
}

// rawType returns the producer's "type" when it is a JSON string, else "".
func rawType(v []byte) string {
	if len(v) == 0 || v[0] != '"' {
		return ""
	}
	s, err := unquote(v)
	if err != nil {
		return ""
	}
	return s
}

// unquote decodes a JSON string literal that has already been validated.
func unquote(v []byte) (string, error) {
	if len(v) >= 2 && bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1]), nil // no escapes: the bytes are the text
	}
	var s string
	err := json.Unmarshal(v, &s)
	return s, err
}

// stringField turns the raw value v of member name into sanitised text.
//
// Strings are kept; numbers keep their JSON text and booleans become
// "true"/"false" (the seed str()-ed whatever it got). JSON null is "" for an
// optional member and, like a missing member (nil v), an error for a
// required one (the seed produced "None"). Objects and arrays are errors.
func stringField(name string, v []byte, required bool) (string, error) {
	if v == nil || isNull(v) {
		if required {
			return "", malformed(name, "missing")
		}
		return "", nil
	}
	switch v[0] {
	case '{', '[':
		return "", malformed(name, "not a string")
	}
	s, err := scalarText(v)
	if err != nil {
		return "", &MalformedError{Field: name, Reason: "bad string", Err: err}
	}
	return sanitize.String(s, sanitize.DefaultMax), nil
}

// intField turns the raw value v of a required member into an integer in
// 0..maxVal.
//
// It accepts a JSON integer, an integral JSON number (443.0, 4.43e2) and a
// string holding a decimal integer ("443", " +443 "). It rejects booleans,
// null, fractions, other strings and out-of-range values, where the seed's
// int() truncated fractions, turned true into 1 and checked no range.
func intField(name string, v []byte, maxVal int64) (int64, error) {
	if v == nil || isNull(v) {
		return 0, malformed(name, "missing")
	}
	var n int64
	switch c := v[0]; {
	case c == '"':
		s, err := unquote(v)
		if err != nil {
			return 0, &MalformedError{Field: name, Reason: "bad string", Err: err}
		}
		i, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return 0, malformed(name, "not an integer")
		}
		n = i
	case c == '-' || (c >= '0' && c <= '9'):
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			n = i
			break
		}
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil || f != math.Trunc(f) || f < 0 || f > float64(maxVal) {
			return 0, malformed(name, fmt.Sprintf("not an integer in 0..%d", maxVal))
		}
		n = int64(f)
	default:
		return 0, malformed(name, "not an integer")
	}
	if n < 0 || n > maxVal {
		return 0, malformed(name, fmt.Sprintf("out of range 0..%d", maxVal))
	}
	return n, nil
}

// dossier coerces the producer's dossier: anything but an object is {};
// values become text (see [valueText]) and are sanitised; keys are kept
// unchanged, as the seed's sanitize_mapping does.
func dossier(v []byte) map[string]string {
	if len(v) == 0 || v[0] != '{' {
		return map[string]string{}
	}
	out := make(map[string]string)
	for it := (members{obj: v}); ; {
		key, val, ok := it.next()
		if !ok {
			return out
		}
		out[keyText(key)] = sanitize.String(valueText(val), sanitize.DefaultMax)
	}
}

// valueText renders a dossier value as text: strings as themselves, numbers
// as their JSON text (8080 → "8080"), booleans "true"/"false", null "", and
// objects and arrays as compact JSON.
func valueText(v []byte) string {
	if isNull(v) {
		return ""
	}
	switch v[0] {
	case '{', '[':
		var b bytes.Buffer
		if json.Compact(&b, v) != nil {
			return ""
		}
		return b.String()
	}
	s, err := scalarText(v)
	if err != nil {
		return ""
	}
	return s
}

// scalarText renders a JSON string, number or boolean as text.
func scalarText(v []byte) (string, error) {
	if v[0] == '"' {
		return unquote(v)
	}
	// Numbers and true/false: their JSON text is the rendering.
	return string(v), nil
}

func isNull(v []byte) bool { return string(v) == "null" }

// trimASCIISpace strips what Python's bytes.strip() strips: space, \t, \n,
// \v, \f, \r.
func trimASCIISpace(b []byte) []byte {
	isSpace := func(c byte) bool { return c == ' ' || (c >= '\t' && c <= '\r') }
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}
