// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/terok-ai/clearance/internal/sanitize"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// VerdictAdopter adopts mirrored verdicts through the verdict service's
// Adopt: into the relay user's own policy files (the service picks the
// file from the caller's kernel-verified uid), which that user's next
// containers start with. The service keeps out an allow its file denies.
type VerdictAdopter struct {
	// Socket is the verdict service (default verdictclient.DefaultSocket).
	Socket string
}

// Adopt implements [Adopter].
func (v VerdictAdopter) Adopt(ctx context.Context, a Always) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sock := v.Socket
	if sock == "" {
		sock = verdictclient.DefaultSocket
	}
	c, err := verdictclient.Dial(ctx, sock)
	if err != nil {
		return fmt.Errorf("verdict service: %w", err)
	}
	defer c.Close()
	comment := sanitize.String("always, fleet: "+a.By+" on "+a.Host+" at "+
		time.UnixMicro(a.AtUsec).UTC().Format(time.RFC3339), 200)
	ok, reason, err := c.Adopt(ctx, verdictclient.AdoptRequest{Policy: a.Policy, Action: a.Action, IP: a.IP, Name: a.Name,
		Proto: a.Proto, Port: int(a.Port), Comment: comment})
	if err != nil {
		return fmt.Errorf("verdict service: %w", err)
	}
	if !ok {
		return errors.New(reason)
	}
	return nil
}
