// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package cli

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"syscall"
)

// EnvMemProfile names a directory. When it is set, SIGUSR1 makes the
// process write a snapshot of its scalar runtime/metrics into that
// directory (PROG-PID-N.metrics, one "name value" line each, N counting
// the signals), and SIGUSR2 writes the same and a heap profile
// (PROG-PID-N.heap.pprof, as of the last garbage collection: none is
// forced, so sampling does not change what is measured). The runtime
// samples one allocation per 512 KiB by default, too coarse for heaps of
// a few MiB: add GODEBUG=memprofilerate=4096 for profiles worth reading.
//
// It is a debugging aid for memory soaks (test/bench soak) and off by
// default: without it both signals keep their default action.
const EnvMemProfile = "CLEARANCE_DEBUG_MEMPROFILE"

// watchMemProfile writes into dir on every SIGUSR1 and SIGUSR2 (see
// [EnvMemProfile]) until the returned function is called.
func watchMemProfile(dir string, errw func(error)) (stop func()) {
	prog := filepath.Base(os.Args[0])
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	done := make(chan struct{})
	go func() {
		n := 0
		for {
			select {
			case <-done:
				return
			case s := <-sig:
				n++
				base := filepath.Join(dir, fmt.Sprintf("%s-%d-%d", prog, os.Getpid(), n))
				if err := WriteMemProfile(base, s == syscall.SIGUSR2); err != nil {
					errw(err)
				}
			}
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
	}
}

// WriteMemProfile writes base+".metrics" (every scalar runtime/metrics
// value, "name value" per line) and, with heap, first base+".heap.pprof"
// (the heap profile as of the last garbage collection). Each file appears
// complete or not at all: it is written under a temporary name and
// renamed, so a reader that sees the metrics file also sees the profile.
func WriteMemProfile(base string, heap bool) error {
	if heap {
		if err := writeAtomic(base+".heap.pprof", func(w *bufio.Writer) error {
			return pprof.Lookup("heap").WriteTo(w, 0)
		}); err != nil {
			return fmt.Errorf("write heap profile: %w", err)
		}
	}
	// The metrics are read after the profile is written, so they count
	// what writing it allocated.
	if err := writeAtomic(base+".metrics", writeMetrics); err != nil {
		return fmt.Errorf("write runtime metrics: %w", err)
	}
	return nil
}

func writeMetrics(w *bufio.Writer) error {
	var samples []metrics.Sample
	for _, d := range metrics.All() {
		if d.Kind == metrics.KindUint64 || d.Kind == metrics.KindFloat64 {
			samples = append(samples, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(samples)
	for _, s := range samples {
		switch s.Value.Kind() {
		case metrics.KindUint64:
			fmt.Fprintf(w, "%s %d\n", s.Name, s.Value.Uint64())
		case metrics.KindFloat64:
			fmt.Fprintf(w, "%s %g\n", s.Name, s.Value.Float64())
		}
	}
	return nil
}

func writeAtomic(path string, write func(*bufio.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	err = write(w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
