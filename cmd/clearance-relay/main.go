// Command clearance-relay connects this host's clearance hubs to a NATS
// server for a fleet. See clearance-relay --help and docs/fleet.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/terok-ai/clearance/internal/relay"
	"github.com/terok-ai/clearance/internal/sd"
)

func main() {
	sd.IgnoreSIGPIPE()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := relay.Command(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}
