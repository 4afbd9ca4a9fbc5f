// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdictclient

import "context"

// WritePolicy writes content, a whole YAML policy, as the caller's policy
// name (root: the administrator's directory; any other uid: its own
// uid-<uid> directory), replacing an existing file only when replace is
// true. The service checks that the policy would load as a container
// starts with it. It returns the file written and whether it replaced
// one. Errors: *orgterokclearancefirewall1.InvalidPolicy,
// *PolicyExists, *PermissionDenied, *varlink.InvalidParameter (name).
func (c *Client) WritePolicy(ctx context.Context, name string, content []byte, replace bool) (path string, replaced bool, err error) {
	var out struct {
		Path     string `json:"path"`
		Replaced bool   `json:"replaced"`
	}
	err = c.callNoFDs(ctx, "WritePolicy", struct {
		Name    string `json:"name"`
		Content string `json:"content"`
		Replace bool   `json:"replace"`
	}{name, string(content), replace}, &out, nil)
	return out.Path, out.Replaced, err
}
