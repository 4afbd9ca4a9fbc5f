// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package notifier

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/cli"
	"github.com/terok-ai/clearance/internal/render"
	"github.com/terok-ai/clearance/internal/testenv/notifytest"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

func TestParseNotify(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    notifyArgs
		wantErr bool
	}{
		{"title only", []string{"Hello"},
			notifyArgs{title: "Hello", timeoutMS: -1, urgency: render.UrgencyNormal}, false},
		{"title and body", []string{"Hello", "World"},
			notifyArgs{title: "Hello", body: "World", timeoutMS: -1, urgency: render.UrgencyNormal}, false},
		{"actions, wait, timeout in seconds, urgency", []string{"T", "B", "--actions", "allow:Allow", "deny:Deny", "--wait", "--timeout", "2.5", "--urgency", "critical"},
			notifyArgs{title: "T", body: "B", wait: true, timeoutMS: 2500, urgency: render.UrgencyCritical,
				actions: []render.Action{{Key: "allow", Label: "Allow"}, {Key: "deny", Label: "Deny"}}}, false},
		{"options first, --actions= list", []string{"--actions=a:A,b:B", "-u", "low", "T"},
			notifyArgs{title: "T", timeoutMS: -1, urgency: render.UrgencyLow,
				actions: []render.Action{{Key: "a", Label: "A"}, {Key: "b", Label: "B"}}}, false},
		{"the seed's -t in milliseconds", []string{"-t", "5000", "T"},
			notifyArgs{title: "T", timeoutMS: 5000, urgency: render.UrgencyNormal}, false},
		{"a duration and never", []string{"T", "--timeout=1500ms"},
			notifyArgs{title: "T", timeoutMS: 1500, urgency: render.UrgencyNormal}, false},
		{"-- ends options", []string{"--", "-T-", "--body"},
			notifyArgs{title: "-T-", body: "--body", timeoutMS: -1, urgency: render.UrgencyNormal}, false},
		{"no title", []string{"--wait"}, notifyArgs{}, true},
		{"three positionals", []string{"a", "b", "c"}, notifyArgs{}, true},
		{"bad action", []string{"T", "--actions=allow"}, notifyArgs{}, true},
		{"bad urgency", []string{"T", "--urgency", "loud"}, notifyArgs{}, true},
		{"negative timeout", []string{"T", "--timeout", "-5"}, notifyArgs{}, true},
		{"unknown option", []string{"T", "--frobnicate"}, notifyArgs{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseNotify(tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseNotify(%q) error = %v, want error %v", tt.args, err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(notifyArgs{})); diff != "" {
				t.Errorf("parseNotify(%q) (-want +got):\n%s", tt.args, diff)
			}
		})
	}
}

// runNotify runs the notify command in-process in the background.
type cliRun struct {
	stdout, stderr bytes.Buffer
	code           int
	done           chan struct{}
}

func startNotify(ctx context.Context, args ...string) *cliRun {
	r := &cliRun{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.code = Command(ctx, append([]string{"notify"}, args...), cli.Stdio{Out: &r.stdout, Err: &r.stderr})
	}()
	return r
}

func (r *cliRun) wait(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		t.Fatal("notify command did not return")
	}
}

func TestNotifyCommand(t *testing.T) {
	bus := notifytest.NewBus(t)
	srv := notifytest.NewServer(t, bus.Addr, fullCaps)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", bus.Addr)

	t.Run("prints the id", func(t *testing.T) {
		r := startNotify(t.Context(), "CLI test", "Body text")
		r.wait(t)
		c := waitNotify(t, srv, "CLI test")
		if want := strconv.FormatUint(uint64(c.ID), 10) + "\n"; r.code != ExitOK || r.stdout.String() != want || r.stderr.Len() != 0 {
			t.Fatalf("exit %d, stdout %q, stderr %q; want 0, %q, empty", r.code, r.stdout.String(), r.stderr.String(), want)
		}
		if c.Body != "Body text" || c.Timeout != -1 {
			t.Errorf("Notify body %q timeout %d", c.Body, c.Timeout)
		}
	})

	t.Run("--wait prints the chosen action", func(t *testing.T) {
		r := startNotify(t.Context(), "Pick one", "--actions", "allow:Allow", "deny:Deny", "--wait")
		c := waitNotify(t, srv, "Pick one")
		if diff := cmp.Diff([]string{"allow", "Allow", "deny", "Deny"}, c.Actions); diff != "" {
			t.Errorf("actions (-want +got):\n%s", diff)
		}
		if err := srv.Invoke(c.ID, "allow"); err != nil {
			t.Fatal(err)
		}
		r.wait(t)
		if r.code != ExitOK || r.stdout.String() != "allow\n" || r.stderr.Len() != 0 {
			t.Errorf("exit %d, stdout %q, stderr %q; want 0, %q, empty", r.code, r.stdout.String(), r.stderr.String(), "allow\n")
		}
	})

	t.Run("--wait dismissed exits 3", func(t *testing.T) {
		r := startNotify(t.Context(), "Dismiss me", "--actions", "ok:OK", "--wait")
		c := waitNotify(t, srv, "Dismiss me")
		if err := srv.Dismiss(c.ID, 2); err != nil {
			t.Fatal(err)
		}
		r.wait(t)
		if r.code != ExitNoAction || r.stdout.Len() != 0 {
			t.Errorf("exit %d, stdout %q; want 3 and nothing", r.code, r.stdout.String())
		}
	})

	t.Run("--wait with --timeout gives up and closes the popup", func(t *testing.T) {
		r := startNotify(t.Context(), "Expire me", "--actions", "ok:OK", "--wait", "--timeout", "0.2")
		c := waitNotify(t, srv, "Expire me")
		r.wait(t)
		if r.code != ExitNoAction || r.stdout.Len() != 0 || c.Timeout != 200 {
			t.Errorf("exit %d, stdout %q, timeout sent %d; want 3, nothing, 200", r.code, r.stdout.String(), c.Timeout)
		}
		if _, err := srv.WaitFor(func(calls []notifytest.Call) bool {
			for _, x := range calls {
				if x.Method == "CloseNotification" && x.ID == c.ID {
					return true
				}
			}
			return false
		}, 10*time.Second); err != nil {
			t.Error(err)
		}
	})

	t.Run("--wait interrupted exits 130", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		r := startNotify(ctx, "Interrupt me", "--wait")
		waitNotify(t, srv, "Interrupt me")
		cancel()
		r.wait(t)
		if r.code != ExitInterrupted {
			t.Errorf("exit %d, want %d", r.code, ExitInterrupted)
		}
	})

	t.Run("usage errors exit 2", func(t *testing.T) {
		r := startNotify(t.Context())
		r.wait(t)
		if r.code != ExitUsage || !strings.Contains(r.stderr.String(), "missing TITLE") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr.String())
		}
	})
}

// binary returns the built clearance-notifier.
func binary(t testing.TB) string {
	t.Helper()
	dir, err := testutil.Commands("clearance-notifier")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "clearance-notifier")
}

func TestMain(m *testing.M) {
	if os.Getenv(envScanChild) != "" {
		os.Exit(scanChild())
	}
	code := testutil.Main(m)
	testutil.RemoveCommands()
	os.Exit(code)
}

// envWithout returns the environment without the named variables.
func envWithout(names ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			drop = drop || k == n
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

// TestNotifyHeadlessBinary runs the built binary without a session bus:
// like the seed it prints 0 with an empty stderr and exits 0; with --wait
// it exits 4.
func TestNotifyHeadlessBinary(t *testing.T) {
	bin := binary(t)
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr bool
	}{
		{"no bus prints 0", []string{"notify", "Summary only"}, 0, "0\n", false},
		{"no bus with body and -t", []string{"notify", "-t", "1000", "CLI test", "Body text"}, 0, "0\n", false},
		{"no bus with --wait exits 4", []string{"notify", "T", "--wait"}, 4, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, tt.args...)
			cmd.Env = envWithout("DBUS_SESSION_BUS_ADDRESS", "DISPLAY")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode || stdout.String() != tt.wantStdout || (stderr.Len() > 0) != tt.wantStderr {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, stderr written %v",
					code, stdout.String(), stderr.String(), tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}
