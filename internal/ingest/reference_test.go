// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ingest

import (
	"encoding/json"
	"math"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/sanitize"
)

// parseReference is Parse built on encoding/json's own object decoding
// instead of the allocation-free member scanner. FuzzParse checks that the
// two always agree.
func parseReference(line []byte) (event.Event, bool) {
	ev, err := Parse(line) // for the error cases, which need no scanner
	if err != nil {
		return event.Event{}, false
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(trimASCIISpace(line), &raw) != nil {
		return event.Event{}, false
	}
	out := event.Event{Type: ev.Type}
	var err2 error
	str := func(name string, required bool) string {
		s, err := stringField(name, raw[name], required)
		if err != nil {
			err2 = err
		}
		return s
	}
	out.Container = str("container", true)
	switch ev.Type {
	case event.ConnectionBlocked:
		out.RequestID = str("id", true)
		out.Dest = str("dest", true)
		var err error
		if out.Port, err = intField("port", raw["port"], math.MaxUint16); err != nil {
			err2 = err
		}
		if out.Proto, err = intField("proto", raw["proto"], math.MaxUint8); err != nil {
			err2 = err
		}
		out.Domain = str("domain", false)
	case event.ContainerExited:
		out.Reason = str("reason", false)
	}
	if err2 != nil {
		return event.Event{}, false
	}
	out.Dossier = map[string]string{}
	if d := raw["dossier"]; len(d) > 0 && d[0] == '{' {
		var m map[string]json.RawMessage
		if json.Unmarshal(d, &m) != nil {
			return event.Event{}, false
		}
		for k, v := range m {
			out.Dossier[k] = sanitize.String(valueText(v), sanitize.DefaultMax)
		}
	}
	return out, true
}
