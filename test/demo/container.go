// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testenv/desktoplab"
	"github.com/terok-ai/clearance/internal/testenv/podmanlab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// containerName is the demo container's name in its private podman store.
const containerName = "clearance-demo"

// artifactsDir is where the screenshot goes: $CLEARANCE_ARTIFACTS, else
// ./demo-artifacts.
func artifactsDir() (string, error) {
	if d := os.Getenv("CLEARANCE_ARTIFACTS"); d != "" {
		return filepath.Abs(d)
	}
	return filepath.Abs("demo-artifacts")
}

// actContainer is act 2: a real podman container with the project's OCI
// hook and user units under a real systemd --user, in a private mount
// namespace (internal/testenv/podmanlab), and a real desktop prompt: Xvfb, a
// private dbus-daemon, dunst and clearance-notifier as a user service
// (internal/testenv/desktoplab). The Allow action is invoked through dunst.
// Everything is removed before it returns, also when it fails or ctx
// ends (Ctrl-C).
func actContainer(ctx context.Context, bin string) (err error) {
	start = time.Now()
	fmt.Println(paint("1", "act 2 — a real podman container, the OCI hook, the hub under systemd --user, a desktop prompt"))
	fmt.Println()
	var missing []string
	for _, tool := range append(append([]string{}, podmanlab.Tools...), desktoplab.Tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("act 2 needs %s on PATH (scripts/deps.sh installs them)", strings.Join(missing, ", "))
	}
	shots, err := artifactsDir()
	if err != nil {
		return err
	}

	e, err := podmanlab.New(ctx, podmanlab.Options{Bin: bin, Source: ".",
		Progress: func(took time.Duration, what string) { step(took, "%s", what) }})
	if err != nil {
		return fmt.Errorf("build the podman world: %w", err)
	}
	defer func() {
		if err != nil {
			// The logs go with the work dir: show them first.
			for _, n := range []string{"systemd", "verdict", "hub", "notifier"} {
				if s := e.Tail(n); s != "" {
					fmt.Fprintf(os.Stderr, "--- %s log:\n%s\n", n, s)
				}
			}
		}
		t := time.Now()
		cerr := e.Close()
		step(time.Since(t), "cleaned up: containers, image and store, services, desktop, systemd --user, mount namespace, veth, cgroups, work dir")
		err = errors.Join(err, cerr)
	}()

	t := time.Now()
	if err := os.Mkdir(e.Path("desktop"), 0o755); err != nil {
		return err
	}
	desk, err := desktoplab.Start(ctx, desktoplab.Options{Dir: e.Path("desktop"), Pick: "allow",
		Command: func(env []string, argv ...string) *exec.Cmd { return e.NSCmd(env, argv...) }})
	if err != nil {
		return fmt.Errorf("start the desktop: %w", err)
	}
	defer desk.Close()
	step(time.Since(t), "desktop in the namespace: Xvfb %s, a private dbus-daemon, dunst owns org.freedesktop.Notifications", desk.Display)

	t = time.Now()
	if err := e.StartNotifier("DBUS_SESSION_BUS_ADDRESS="+desk.BusAddr, "DISPLAY="+desk.Display); err != nil {
		return err
	}
	step(time.Since(t), "systemctl --user start clearance-notifier (the project's unit; READY=1): it watches %s/clearance/*/hub.sock", e.RuntimeDir())

	t = time.Now()
	mono := monotonic()
	c, err := e.CreateInit(containerName, "dossier.project=demo", "dossier.task=fetch-deps", "dossier.name=busy-agent")
	if err != nil {
		return err
	}
	step(time.Since(t), "podman create + init %s (annotation %s) → the OCI hook ran at createRuntime:", c.ID12, podmanlab.GateAnnotation)
	if b, err := e.NSCmd(nil, "cat", record.Locate("/run", e.UID(), c.ID12)).Output(); err == nil {
		if rec, err := record.Decode(b); err == nil {
			detail("runtime record %s (pid %d, owner uid %d, policy %q)", record.Locate("/run", e.UID(), c.ID12), rec.PID, rec.OwnerUID, rec.Policy)
		}
	}
	if out, err := exec.Command("nsenter", "-n", "-t", strconv.Itoa(c.Pid), "nft", "list", "table", "inet", "clearance").CombinedOutput(); err != nil {
		return fmt.Errorf("ruleset not engaged in the container: %v: %s", err, out)
	}
	detail("Engage → clearance-verdict: table inet clearance in the container's netns (default deny)")
	hub := "clearance-hub@" + c.ID12
	if s := e.Systemctl("is-active", hub+".service"); s != "active" {
		return fmt.Errorf("%s.service is %q after podman init, want active", hub, s)
	}
	ready := e.Systemctl("show", "-p", "ActiveEnterTimestampMonotonic", "--value", hub+".service")
	if us, err := strconv.ParseInt(ready, 10, 64); err == nil && us > 0 {
		detail("%s.socket started in systemd --user, the hook's first connection activated %s.service: READY=1 %s after podman create",
			hub, hub, human(time.Duration(us)*time.Microsecond-mono))
	}

	t = time.Now()
	if err := c.Wire(); err != nil {
		return err
	}
	step(time.Since(t), "root wires a veth: container %s ↔ test host %s (echo :%d); no default route, no NAT",
		podmanlab.ContainerAddr, podmanlab.HostAddr, podmanlab.EchoPort)

	// The notifier found the hub; then the demo subscribes too, to show
	// the events (what clearancectl watch does).
	t = time.Now()
	sock := e.HubSock(c.ID12)
	rpc, err := varlinkapi.Dial(ctx, sock)
	if err != nil {
		return err
	}
	defer rpc.Close()
	if err := waitSubscribers(ctx, rpc, 1); err != nil {
		return fmt.Errorf("clearance-notifier did not subscribe: %w (log: %s)", err, e.Tail("notifier"))
	}
	step(time.Since(t), "clearance-notifier subscribed to %s's hub", c.ID12)
	sc, err := varlinkapi.Dial(ctx, sock)
	if err != nil {
		return err
	}
	defer sc.Close()
	recv, err := orgterokclearance1.Subscribe().Send(ctx, sc, varlink.More)
	if err != nil {
		return err
	}
	if err := waitSubscribers(ctx, rpc, 2); err != nil {
		return err
	}

	t = time.Now()
	if out, err := e.Podman("start", c.Name); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	step(time.Since(t), "podman start: the container's process runs")
	t = time.Now()
	if err := c.Touch("ready"); err != nil {
		return err
	}
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ev, err := next(ectx, recv, event.ConnectionBlocked)
	if err != nil {
		return err
	}
	logs, err := c.WaitLog(ctx, "attempt1 rc=", 30*time.Second)
	if err != nil {
		return err
	}
	if !strings.Contains(logs, "attempt1 rc=1") {
		return fmt.Errorf("the first attempt was not refused:\n%s", logs)
	}
	step(time.Since(t), "the container's nc %s:%d → %s; the hub has request %s (NFLOG → hub → subscribers)",
		podmanlab.HostAddr, podmanlab.EchoPort, paint("31", "refused (attempt1 rc=1)"), ev.Request_id)

	t = time.Now()
	if err := desk.WaitDisplayed(ctx, 1, 20*time.Second); err != nil {
		return fmt.Errorf("%w (notifier log: %s)", err, e.Tail("notifier"))
	}
	shot := filepath.Join(shots, "prompt.png")
	if err := desk.Screenshot(ctx, shot); err != nil {
		return err
	}
	step(time.Since(t), "dunst shows clearance-notifier's popup; screenshot: %s", paint("1", shot))

	t = time.Now()
	if err := desk.Context(ctx); err != nil {
		return err
	}
	applied, err := next(ectx, recv, event.VerdictApplied)
	if err != nil {
		return err
	}
	if !applied.Ok || applied.Request_id != ev.Request_id {
		return fmt.Errorf("verdict_applied = %+v", applied)
	}
	step(time.Since(t), "Allow invoked through dunst (dunstctl context, the picker chose the allow line) → ActionInvoked → clearance-notifier → Verdict → hub: verdict_applied ok=true")
	for _, line := range strings.Split(strings.TrimSpace(desk.PickerInput()), "\n") {
		if line != "" {
			detail("dunst offered: %s", line)
		}
	}

	t = time.Now()
	if err := c.Touch("go2"); err != nil {
		return err
	}
	logs, err = c.WaitLog(ctx, "attempt2 rc=", 30*time.Second)
	if err != nil {
		return err
	}
	if !strings.Contains(logs, "hello") || !strings.Contains(logs, "attempt2 rc=0") {
		return fmt.Errorf("the retry after allow did not connect:\n%s", logs)
	}
	step(time.Since(t), "the container retries %s:%d → %s", podmanlab.HostAddr, podmanlab.EchoPort, paint("32", "connected, got \"hello\""))

	detail("audit trail, from the namespace's journald (journalctl MESSAGE_ID=… CLEARANCE_CONTAINER=%s):", c.ID12)
	for _, line := range strings.Split(e.Log("hub"), "\n") {
		if strings.Contains(line, "MESSAGE_ID=") && strings.Contains(line, "CLEARANCE_CONTAINER="+c.ID12) {
			detail("  %s", shorten(line))
			if i := strings.Index(line, "CLEARANCE_OPERATOR_UID="); i >= 0 {
				detail("    … %s", strings.Fields(line[i:])[0])
			}
		}
	}

	if err := c.Touch("done"); err != nil {
		return err
	}
	if out, err := e.Podman("wait", c.Name); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	t = time.Now()
	if out, err := e.Podman("rm", c.Name); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	units := []string{hub + ".service", hub + ".socket", "clearance-hub-ingest@" + c.ID12 + ".socket"}
	err = testutil.Poll(ctx, 30*time.Second, "poststop cleanup", func() (bool, string) {
		var states []string
		for _, u := range units {
			states = append(states, e.Systemctl("is-active", u))
		}
		_, rerr := os.Stat(e.RecordPath(c.ID12))
		_, serr := os.Stat(filepath.Dir(sock))
		ok := os.IsNotExist(rerr) && os.IsNotExist(serr) && strings.Join(states, ",") == "inactive,inactive,inactive"
		return ok, fmt.Sprintf("units %v, record %v, hub dir %v", states, rerr, serr)
	})
	if err != nil {
		return err
	}
	step(time.Since(t), "podman rm → the hook's poststop: %s.{service,socket} and the ingest socket stopped, record and hub directory gone", hub)
	return nil
}

// waitSubscribers waits until the hub counts n subscribers.
func waitSubscribers(ctx context.Context, rpc *varlink.Connection, n int64) error {
	var last string
	return testutil.Poll(ctx, 20*time.Second, fmt.Sprintf("%d subscribers", n), func() (bool, string) {
		st, err := orgterokclearancehub1.Stats().Call(ctx, rpc)
		if err != nil {
			last = err.Error()
			return false, last
		}
		return st.Subscribers >= n, fmt.Sprint(st.Subscribers)
	})
}

// next returns the next event of type typ from a Subscribe stream.
func next(ctx context.Context, recv func(context.Context) (orgterokclearance1.ClearanceEvent, uint64, error), typ string) (orgterokclearance1.ClearanceEvent, error) {
	for {
		ev, _, err := recv(ctx)
		if err != nil {
			return ev, fmt.Errorf("waiting for %s: %w", typ, err)
		}
		if ev.Type == typ {
			return ev, nil
		}
	}
}

// monotonic is CLOCK_MONOTONIC now, comparable with systemd's *Monotonic
// timestamps.
func monotonic() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}
