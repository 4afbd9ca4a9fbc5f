// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package cli is the one shape of clearance's five programs: each command
// package exports Command(ctx, args, stdio) returning the exit status,
// and each main is cli.Main(thatpkg.Command).
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// Stdio is what a command gets from its process: the standard streams and
// the environment. Tests pass buffers and a map lookup.
type Stdio struct {
	In       io.Reader
	Out, Err io.Writer
	// Getenv looks up an environment variable; nil means os.Getenv.
	Getenv func(string) string
}

// Env looks key up through Getenv.
func (s Stdio) Env(key string) string {
	if s.Getenv == nil {
		return os.Getenv(key)
	}
	return s.Getenv(key)
}

// OS is the process's own Stdio.
func OS() Stdio {
	return Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Getenv: os.Getenv}
}

// CommandFunc runs a program with args (without the program name) and
// returns its exit status. ctx ends on SIGTERM or SIGINT.
type CommandFunc func(ctx context.Context, args []string, stdio Stdio) int

// Main runs command with the process's arguments and streams, ends its
// context on SIGTERM or SIGINT, and exits with its status. With
// $CLEARANCE_DEBUG_MEMPROFILE set, SIGUSR2 writes memory profiles
// ([EnvMemProfile]).
func Main(command CommandFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	stopProfile := func() {}
	if dir := os.Getenv(EnvMemProfile); dir != "" {
		stopProfile = watchMemProfile(dir, func(err error) {
			fmt.Fprintf(os.Stderr, "%s: %s: %v\n", filepath.Base(os.Args[0]), EnvMemProfile, err)
		})
	}
	code := command(ctx, os.Args[1:], OS())
	stopProfile()
	stop()
	os.Exit(code)
}
