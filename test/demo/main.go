// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Command demo is `make demo`: clearance's main job on built-in defaults,
// step by step with timings, in two acts.
//
// Act 1 builds a throwaway "container" network namespace and a test host
// on a veth pair (no default route, no NAT), starts the real
// clearance-verdict and clearance-hub from ./bin, makes a blocked
// connection, shows the prompt a subscriber receives, answers Allow, and
// shows the retry passing.
//
// Act 2 (container.go) does it with a real podman container: the
// project's OCI hook and user units under a real systemd --user in a
// private mount namespace, and a real desktop prompt (Xvfb, dunst,
// clearance-notifier) whose Allow is invoked through dunst; the prompt's
// screenshot goes to ./demo-artifacts/prompt.png ($CLEARANCE_ARTIFACTS).
//
// Everything is removed at the end, also on failure or Ctrl-C. Needs root
// (namespaces, nftables, podman) and the Debian packages scripts/deps.sh
// installs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/render"
	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

var (
	start = time.Now()
	color = os.Getenv("NO_COLOR") == "" && isTTY()
)

func isTTY() bool {
	fi, err := os.Stdout.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func paint(code, s string) string {
	if !color {
		return s
	}
	return "\033[" + code + "m" + s + "\033[0m"
}

// step prints one numbered line: time since start, what happened, and how
// long it took.
func step(took time.Duration, format string, args ...any) {
	at := time.Since(start)
	fmt.Printf("%s %s %s\n", paint("2", fmt.Sprintf("[%7.1f ms]", float64(at)/1e6)),
		fmt.Sprintf(format, args...), paint("36", "("+human(took)+")"))
}

func detail(format string, args ...any) {
	fmt.Printf("              %s\n", paint("2", fmt.Sprintf(format, args...)))
}

func human(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func main() {
	bin := flag.String("bin", "bin", "directory of the built clearance binaries")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (it creates network namespaces and nftables rulesets); run: sudo make demo")
		os.Exit(1)
	}
	// Ctrl-C cancels ctx; the acts then clean up everything they made.
	// Further signals are swallowed until the cleanup is done.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	failed := false
	l := lab.New()
	err := run(ctx, l, *bin)
	t := time.Now()
	l.Close()
	step(time.Since(t), "cleaned up: services stopped, namespaces and veth gone")
	if err != nil {
		fmt.Fprintln(os.Stderr, paint("31", "act 1 failed: "+err.Error()))
		failed = true
	}
	fmt.Println()
	if ctx.Err() == nil {
		if err := actContainer(ctx, *bin); err != nil {
			fmt.Fprintln(os.Stderr, paint("31", "act 2 failed: "+err.Error()))
			failed = true
		}
	} else {
		fmt.Fprintln(os.Stderr, paint("31", "act 2 skipped: interrupted"))
		failed = true
	}
	if failed {
		fmt.Fprintln(os.Stderr, paint("31", "demo failed."))
		os.Exit(1)
	}
	fmt.Println(paint("32", "demo complete."))
}

func run(ctx context.Context, l *lab.Lab, bin string) error {
	fmt.Println(paint("1", "clearance demo — a container hits a blocked destination, its operator allows it"))
	fmt.Println()
	fmt.Println(paint("1", "act 1 — the real hub and verdict service, a network namespace as the container"))
	fmt.Println()

	t := time.Now()
	s, err := l.NewStack(ctx, lab.StackOptions{Bin: bin, NoHub: true})
	if err != nil {
		return err
	}
	step(time.Since(t), "lab ready: container netns (pid %d, %s) ↔ veth ↔ test host %s (echo :%d, DNS :53); no default route",
		s.Container.Pid, lab.ContainerAddr, lab.HostAddr, lab.EchoPort)
	detail("clearance-verdict (the privileged part) listening on %s", s.VerdictSock)

	t = time.Now()
	if err := s.StartHub(ctx, bin); err != nil {
		return err
	}
	step(time.Since(t), "clearance-hub %s: READY=1 — ruleset engaged (table inet clearance, default deny), NFLOG socket handed over", s.ID)
	detail("hub socket %s", s.HubSock)

	c, err := varlinkapi.Dial(ctx, s.HubSock)
	if err != nil {
		return err
	}
	defer c.Close()
	recv, err := orgterokclearance1.Subscribe().Send(ctx, c, varlink.More)
	if err != nil {
		return err
	}
	rpc, err := varlinkapi.Dial(ctx, s.HubSock)
	if err != nil {
		return err
	}
	defer rpc.Close()
	for {
		st, err := orgterokclearancehub1.Stats().Call(ctx, rpc)
		if err != nil {
			return err
		}
		if st.Subscribers > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	step(0, "a subscriber (what clearance-notifier or clearancectl watch does) is streaming org.terok.Clearance1.Subscribe")

	t = time.Now()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	addrs, err := s.Container.Resolve(rctx, netip.AddrPortFrom(lab.HostAddr, 53), lab.TestDomain)
	cancel()
	if err != nil || len(addrs) == 0 {
		return fmt.Errorf("resolve %s from the container: %v", lab.TestDomain, err)
	}
	step(time.Since(t), "container resolves %s → %s (the query goes to the DNS forwarder in its hub, which asks the resolver and remembers the name)", lab.TestDomain, addrs[0])

	t = time.Now()
	err = s.Connect(ctx, lab.EchoPort, 5*time.Second)
	if err == nil {
		return errors.New("the connection passed before any verdict")
	}
	blockedAt := time.Now()
	step(time.Since(t), "container connects to %s:%d → %s", lab.TestDomain, lab.EchoPort, paint("31", "refused: "+lastPart(err)))

	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var ev orgterokclearance1.ClearanceEvent
	for ev.Type != event.ConnectionBlocked {
		if ev, _, err = recv(ectx); err != nil {
			return fmt.Errorf("waiting for the prompt: %w", err)
		}
	}
	step(time.Since(blockedAt), "prompt at the subscriber (request %s):", ev.Request_id)
	p := render.Blocked(event.Event{Type: ev.Type, Container: ev.Container, RequestID: ev.Request_id, Dest: ev.Dest,
		Port: ev.Port, Proto: ev.Proto, Domain: ev.Domain, Dossier: ev.Dossier}, 1, time.Now())
	fmt.Printf("              %s\n", paint("1;33", "┌ "+p.Summary+"   [Allow] [Deny]"))
	for _, line := range strings.Split(p.Body, "\n") {
		fmt.Printf("              %s\n", paint("33", "│ "+line))
	}

	target := ev.Domain
	if target == "" {
		target = ev.Dest
	}
	t = time.Now()
	ok, err := orgterokclearance1.Verdict().Call(ctx, rpc, ev.Container, ev.Request_id, target, "allow")
	if err != nil || !ok {
		return fmt.Errorf("verdict: %v", err)
	}
	step(time.Since(t), "operator clicks Allow → Verdict(%s, %s, %s, allow) → ok; the element is in the kernel", ev.Container, ev.Request_id, target)
	for ev.Type != event.VerdictApplied {
		if ev, _, err = recv(ectx); err != nil {
			return fmt.Errorf("waiting for verdict_applied: %w", err)
		}
	}
	detail("subscribers saw verdict_applied ok=%v (the popup turns into \"Allowed: %s\")", ev.Ok, target)

	t = time.Now()
	if err := s.Connect(ctx, lab.EchoPort, 5*time.Second); err != nil {
		return fmt.Errorf("retry after allow: %w", err)
	}
	step(time.Since(t), "container retries %s:%d → %s", lab.TestDomain, lab.EchoPort, paint("32", "connected, got \"hello\""))

	// What the ruleset says now, from the privileged service.
	vc, err := varlinkapi.Dial(ctx, s.VerdictSock)
	if err == nil {
		verdict, reason, exp, _, comment, _, _, err := orgterokclearancefirewall1.Explain().Call(ctx, vc, s.ID, lab.HostAddr.String(), lab.EchoPort, "tcp")
		vc.Close()
		if err == nil {
			left := ""
			if exp > 0 {
				left = fmt.Sprintf(", expires in %s", time.Until(time.UnixMicro(exp)).Round(time.Second))
			}
			if comment != nil && *comment != "" {
				left += ", for " + *comment
			}
			detail("explain %s:%d → %s (%s%s)", lab.HostAddr, lab.EchoPort, verdict, reason, left)
		}
	}
	detail("audit trail (journal fields; with journald: journalctl MESSAGE_ID=… CLEARANCE_CONTAINER=%s):", s.ID)
	for _, line := range strings.Split(s.Tail("hub"), "\n") {
		if strings.Contains(line, "MESSAGE_ID=") {
			detail("  %s", shorten(line))
		}
	}
	return nil
}

func lastPart(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

func shorten(line string) string {
	if i := strings.Index(line, "msg="); i >= 0 {
		line = line[i:]
	}
	if len(line) > 150 {
		line = line[:147] + "..."
	}
	return line
}
