// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/sanitize"
)

// Limits on the OCI state a hook accepts. A runtime's state is a few
// kilobytes; anything near these limits is not a real runtime's.
const (
	// MaxStateSize is the largest state document read from stdin, in bytes.
	MaxStateSize = 256 << 10
	// MaxAnnotations is the largest number of annotations accepted.
	MaxAnnotations = 512
	// maxAnnotationKey bounds an annotation key, in bytes.
	maxAnnotationKey = 256
	// maxAnnotationValue bounds an annotation value, in bytes.
	maxAnnotationValue = 16 << 10
)

// ErrInvalidState is wrapped by every error of [ParseState].
var ErrInvalidState = errors.New("invalid OCI state")

// State is the OCI runtime state a hook receives on stdin
// (runtime-spec "state"). Unknown fields are ignored, so a newer runtime
// keeps working; the fields below are checked strictly.
type State struct {
	OCIVersion  string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Status      string            `json:"status"`
	Pid         int               `json:"pid,omitempty"`
	Bundle      string            `json:"bundle"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ParseState reads one OCI state document from r, reading at most
// [MaxStateSize]+1 bytes. It fails, wrapping [ErrInvalidState], on
// malformed JSON, a field of the wrong type, data after the document, an
// id that [record.ValidID] rejects (so an id can never name another path
// or unit), a negative pid, or oversized or too many annotations.
// Annotations is never nil in the result.
func ParseState(r io.Reader) (State, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxStateSize+1))
	if err != nil {
		return State{}, fmt.Errorf("read OCI state: %w", err)
	}
	if len(b) > MaxStateSize {
		return State{}, fmt.Errorf("%w: larger than %d bytes", ErrInvalidState, MaxStateSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var st State
	if err := dec.Decode(&st); err != nil {
		return State{}, fmt.Errorf("%w: %v", ErrInvalidState, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return State{}, fmt.Errorf("%w: trailing data after the state", ErrInvalidState)
	}
	if !record.ValidID(st.ID) {
		return State{}, fmt.Errorf("%w: container id %q: want 1..64 characters of [A-Za-z0-9_.-] starting with a letter or digit", ErrInvalidState, truncate(st.ID, 80))
	}
	if st.Pid < 0 {
		return State{}, fmt.Errorf("%w: pid %d", ErrInvalidState, st.Pid)
	}
	if len(st.Annotations) > MaxAnnotations {
		return State{}, fmt.Errorf("%w: %d annotations, at most %d", ErrInvalidState, len(st.Annotations), MaxAnnotations)
	}
	for k, v := range st.Annotations {
		if len(k) > maxAnnotationKey || len(v) > maxAnnotationValue {
			return State{}, fmt.Errorf("%w: annotation %q too long", ErrInvalidState, truncate(k, 80))
		}
	}
	if st.Annotations == nil {
		st.Annotations = map[string]string{}
	}
	return st, nil
}

// ID12 returns the short id clearance names the container by: the first
// 12 characters of its id (podman's short id), or the whole id if
// shorter. For a state from [ParseState] it satisfies [record.ValidID].
func (s State) ID12() string {
	if len(s.ID) > 12 {
		return s.ID[:12]
	}
	return s.ID
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Annotations the hook reads. The gate annotation itself is matched by
// the hooks.d JSON (packaging/oci/clearance.json); see docs/oci-hook.md.
const (
	// AnnotationEnable gates the hook: "true" in the annotation-gated
	// hooks.d file; "false" opts a container out of the always-on one.
	AnnotationEnable = "io.clearance.enable"
	// AnnotationPolicy names the container's YAML policy.
	AnnotationPolicy = "io.clearance.policy"
	// AnnotationName is a display name for the container.
	AnnotationName = "io.clearance.name"
	// AnnotationMode asks for the firewall mode: "enforce" (the
	// default) or "observe" (log and let through instead of blocking;
	// granted only where the system configuration's observe section
	// allows it, else the container runs enforced).
	AnnotationMode = "io.clearance.mode"
	// DossierPrefix starts the annotations that form the dossier shown
	// with every prompt ("dossier.project=x" → "project": "x").
	DossierPrefix = "dossier."
)

// Dossier bounds.
const (
	maxDossierEntries = 32
	maxDossierKey     = 64
	maxDossierValue   = 256
)

// Mode returns the firewall mode the container's io.clearance.mode
// annotation asks for: "" (none), record.ModeEnforce or
// record.ModeObserve (any case, surrounding space ignored). Any other
// value is an error: a misspelt mode must not pass unnoticed.
func (s State) Mode() (string, error) {
	v, ok := s.Annotations[AnnotationMode]
	if !ok {
		return "", nil
	}
	switch m := strings.ToLower(strings.TrimSpace(v)); m {
	case "", record.ModeEnforce:
		return "", nil
	case record.ModeObserve:
		return m, nil
	}
	return "", fmt.Errorf("annotation %s=%q: want %q or %q", AnnotationMode, sanitize.String(v, 64),
		record.ModeEnforce, record.ModeObserve)
}

// OptedOut reports whether the container's annotations switch clearance
// off (io.clearance.enable=false, 0 or no, any case).
func (s State) OptedOut() bool {
	switch strings.ToLower(strings.TrimSpace(s.Annotations[AnnotationEnable])) {
	case "false", "0", "no", "off":
		return true
	}
	return false
}
