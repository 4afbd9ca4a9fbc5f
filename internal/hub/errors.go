// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package hub

import (
	"fmt"
	"time"
)

// InvalidActionError: the action is neither "allow" nor "deny".
type InvalidActionError struct{ Action string }

func (e *InvalidActionError) Error() string { return fmt.Sprintf("invalid action %q", e.Action) }

// UnknownRequestError: the request id was never emitted, was already
// decided, or has been purged.
type UnknownRequestError struct{ RequestID string }

func (e *UnknownRequestError) Error() string { return fmt.Sprintf("unknown request %q", e.RequestID) }

// TupleMismatchError: the request id is known but was issued for another
// container or destination.
type TupleMismatchError struct {
	ExpectedContainer, ExpectedDest string
	GotContainer, GotDest           string
}

func (e *TupleMismatchError) Error() string {
	return fmt.Sprintf("request was issued for %s/%s, not %s/%s",
		e.ExpectedContainer, e.ExpectedDest, e.GotContainer, e.GotDest)
}

// ApplyFailedError: the firewall refused or failed to apply the verdict.
// The request has been restored.
type ApplyFailedError struct{ Action, Stderr string }

func (e *ApplyFailedError) Error() string {
	return fmt.Sprintf("apply %s: %s", e.Action, e.Stderr)
}

// InvalidScopeError: the scope is not once, container or always.
type InvalidScopeError struct{ Scope string }

func (e *InvalidScopeError) Error() string { return fmt.Sprintf("invalid scope %q", e.Scope) }

// AlreadyDecidedError: the request was decided already (by another
// operator or channel) a short while ago; returned by [Hub.Decide] (the
// seed's Verdict keeps its UnknownRequest).
type AlreadyDecidedError struct {
	RequestID string
	Action    string
	By        Operator
	At        time.Time
}

func (e *AlreadyDecidedError) Error() string {
	return fmt.Sprintf("request %q was already decided: %s %s", e.RequestID, e.Action, e.By.Describe())
}
