// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ingest

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"strings"
	"unicode/utf8"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/sanitize"
)

// refOutcome is what the reference decides for a line.
type refOutcome int

const (
	refOK refOutcome = iota
	refMalformed
	refUnknownType
)

func (o refOutcome) String() string {
	return [...]string{"ok", "malformed", "unknown type"}[o]
}

// parseReference is an oracle for Parse written from the package
// documentation's wire format and field rules alone: encoding/json decodes
// the object into a map (so a repeated member overrides an earlier one),
// json.Number keeps numbers' text, math/big reads integer literals
// exactly. It calls nothing of this package, so FuzzParse compares two
// independent readings of the same rules. Only sanitize.String, the
// separately tested sanitiser the rules name, is shared.
func parseReference(line []byte) (event.Event, refOutcome) {
	// Python's bytes.strip(): space, \t, \n, \v, \f, \r.
	line = bytes.Trim(line, " \t\n\v\f\r")
	if !utf8.Valid(line) {
		return event.Event{}, refMalformed
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil || obj == nil {
		return event.Event{}, refMalformed // not JSON, or not an object (null too)
	}

	var producerType string
	if raw, ok := obj["type"]; ok {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			producerType = s
		}
	}
	var ev event.Event
	switch producerType {
	case "pending":
		ev.Type = event.ConnectionBlocked
	case "shield_down_all":
		ev.Type = event.ShieldDisengaged
	case "container_started", "container_exited", "shield_up", "shield_down", "shield_disengaged":
		ev.Type = producerType
	default:
		return event.Event{}, refUnknownType
	}

	ok := true
	text := func(name string, required bool) string {
		s, good := refText(obj, name, required)
		ok = ok && good
		return s
	}
	integer := func(name string, maxVal int64) int64 {
		n, good := refInt(obj[name], maxVal)
		ok = ok && good
		return n
	}
	ev.Container = text("container", true)
	switch ev.Type {
	case event.ConnectionBlocked:
		ev.RequestID = text("id", true)
		ev.Dest = text("dest", true)
		ev.Port = integer("port", 65535)
		ev.Proto = integer("proto", 255)
		ev.Domain = text("domain", false)
	case event.ContainerExited:
		ev.Reason = text("reason", false)
	}
	if !ok {
		return event.Event{}, refMalformed
	}

	ev.Dossier = map[string]string{}
	var dossier map[string]json.RawMessage
	if json.Unmarshal(obj["dossier"], &dossier) == nil && dossier != nil {
		for k, v := range dossier {
			ev.Dossier[k] = sanitize.String(refValueText(v), sanitize.DefaultMax)
		}
	}
	return ev, refOK
}

// refText applies the string rule to member name of obj: a string as it
// is, a number as its JSON text, a boolean as "true"/"false", null or a
// missing member as "" (malformed when required), an object or array
// malformed; then sanitised.
func refText(obj map[string]json.RawMessage, name string, required bool) (string, bool) {
	raw, present := obj[name]
	var v any
	if present {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if d.Decode(&v) != nil {
			return "", false
		}
	}
	var s string
	switch v := v.(type) {
	case nil:
		return "", !required
	case string:
		s = v
	case json.Number:
		s = string(v)
	case bool:
		s = map[bool]string{true: "true", false: "false"}[v]
	default:
		return "", false
	}
	return sanitize.String(s, sanitize.DefaultMax), true
}

// refInt applies the port/proto rule: a JSON integer, an integral JSON
// number (the value Python's json reads, a double) or a string holding a
// decimal integer (optional sign, surrounding white space), in 0..maxVal.
func refInt(raw json.RawMessage, maxVal int64) (int64, bool) {
	if raw == nil {
		return 0, false
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return 0, false
	}
	inRange := func(n *big.Int) (int64, bool) {
		if n.Sign() < 0 || n.Cmp(big.NewInt(maxVal)) > 0 {
			return 0, false
		}
		return n.Int64(), true
	}
	switch v := v.(type) {
	case string:
		s := strings.TrimSpace(v)
		digits := strings.TrimLeft(s, "+-")
		if len(s)-len(digits) > 1 || digits == "" || strings.Trim(digits, "0123456789") != "" {
			return 0, false
		}
		n, _ := new(big.Int).SetString(s, 10)
		return inRange(n)
	case json.Number:
		if !strings.ContainsAny(string(v), ".eE") {
			n, _ := new(big.Int).SetString(string(v), 10)
			return inRange(n)
		}
		f, err := v.Float64()
		if err != nil || math.IsInf(f, 0) || f != math.Trunc(f) || f < 0 || f > float64(maxVal) {
			return 0, false
		}
		return int64(f), true
	}
	return 0, false
}

// refValueText renders a dossier value: a string as it is, a number as
// its JSON text, a boolean as "true"/"false", null as "", an object or
// array as compact JSON.
func refValueText(raw json.RawMessage) string {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return ""
	}
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return string(v)
	case bool:
		return map[bool]string{true: "true", false: "false"}[v]
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return ""
	}
	return b.String()
}
