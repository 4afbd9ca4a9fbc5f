// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package podmanlab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// Script is the container's command: it waits for the network to be wired
// (/ready), tries the test host once, waits for the verdict (/go2), tries
// again, prints both results ("attempt1 rc=…", "attempt2 rc=…"), and
// exits when told (/done), so the hub outlives the last look at it.
const Script = `until [ -e /ready ]; do sleep 0.05; done
nc -w 3 10.254.77.1 8080 </dev/null; echo "attempt1 rc=$?"
until [ -e /go2 ]; do sleep 0.05; done
nc -w 2 10.254.77.1 8080 </dev/null; echo "attempt2 rc=$?"
until [ -e /done ]; do sleep 0.05; done`

// Container is one container created with the project's hook enabled.
// Its fields are read-only.
type Container struct {
	Name string
	ID   string // 64 hex digits
	ID12 string // the id as the hook and the hub's units name it
	Pid  int    // the container's init, on the host

	env *Env
}

// NamesScript is the container's command for a test of names: it waits
// for /ready, resolves allowed.rot.test through its resolv.conf (busybox
// nslookup) and connects to the answer at once ("first"), then the same
// for api.rot.test ("prompt"), waits for /go2 and resolves api.rot.test
// again, now a new address, and connects ("next"). Each step prints
// "<step> addr=<address>" and "<step> rc=<nc's status>".
const NamesScript = `until [ -e /ready ]; do sleep 0.05; done
resolve() { nslookup "$1" 2>/dev/null | sed -n '/^Name:/,$ s/^Address:[[:space:]]*//p' | head -n 1; }
try() { a=$(resolve "$1"); echo "$2 addr=$a"; nc -w 3 "$a" 8082 </dev/null; echo "$2 rc=$?"; }
try allowed.rot.test first
try api.rot.test prompt
until [ -e /go2 ]; do sleep 0.05; done
try api.rot.test next
until [ -e /done ]; do sleep 0.05; done`

// CreateOptions are the extras of [Env.CreateInitWith].
type CreateOptions struct {
	// Annotations are "key=value" pairs added to [GateAnnotation].
	Annotations []string
	// Args are further podman create options (e.g. "--dns", "10.254.77.1").
	Args []string
	// Script is the container's sh -c command (default [Script]).
	Script string
}

// CreateInit runs podman create (with [GateAnnotation], the extra
// annotations "key=value" and [Script]) and podman init: the
// createRuntime hook runs and the container's process has not started.
// Close kills the container's init by pid if podman could not remove
// it.
func (e *Env) CreateInit(name string, annotations ...string) (*Container, error) {
	return e.CreateInitWith(name, CreateOptions{Annotations: annotations})
}

// CreateInitWith is [Env.CreateInit] with options.
func (e *Env) CreateInitWith(name string, o CreateOptions) (*Container, error) {
	args := []string{"create", "--name", name, "--network", "none", "--annotation", GateAnnotation}
	for _, a := range o.Annotations {
		args = append(args, "--annotation", a)
	}
	args = append(args, o.Args...)
	script := o.Script
	if script == "" {
		script = Script
	}
	if out, err := e.Podman(append(args, Image, "sh", "-c", script)...); err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	if out, err := e.Podman("init", name); err != nil {
		return nil, fmt.Errorf("podman init (the hook aborts the container on failure): %w\n%s", err, out)
	}
	c := &Container{env: e, Name: name}
	out, err := e.Podman("inspect", "-f", "{{.Id}}", name)
	if err != nil {
		return nil, err
	}
	c.ID = strings.TrimSpace(out)
	if len(c.ID) < 12 {
		return nil, fmt.Errorf("container id %q", c.ID)
	}
	c.ID12 = c.ID[:12]
	out, err = e.Podman("inspect", "-f", "{{.State.Pid}}", name)
	if err != nil {
		return nil, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || pid <= 1 {
		return nil, fmt.Errorf("container pid: %v %d", err, pid)
	}
	c.Pid = pid
	if start, err := startTime(pid); err == nil {
		e.mu.Lock()
		e.inits = append(e.inits, procID{pid, start})
		e.mu.Unlock()
	}
	return c, nil
}

// procID names one process: its pid and its start time.
type procID struct {
	pid   int
	start string
}

// kill SIGKILLs the process if it still runs.
func (p procID) kill() {
	if s, err := startTime(p.pid); err == nil && s == p.start {
		syscall.Kill(p.pid, syscall.SIGKILL)
	}
}

// startTime is a process's start time in clock ticks since boot (field
// 22 of /proc/<pid>/stat): with the pid, it names one process.
func startTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return f[19], nil
}

// Wire connects the container's netns to a new test host serving "hello"
// on [EchoPort] at [HostAddr] (no default route, no NAT: the test host is
// all the container can reach). The test host and the veth go with
// Close (the veth also with the container).
func (c *Container) Wire() error {
	return c.wire(func(l *lab.Lab, _, host *lab.NS) error {
		return l.Echo(host, fmt.Sprintf("%s:%d", HostAddr, EchoPort))
	})
}

// WireNames is [Container.Wire] plus what a test of names needs on the
// test host: a DNS server on port 53 of [HostAddr] (UDP and TCP)
// answering with answer, the block [lab.HostRange] local to the test host
// and routed there from the container, and "hello" on [lab.RangePort] of
// every address of it.
func (c *Container) WireNames(answer lab.DNSAnswer) error {
	return c.wire(func(l *lab.Lab, ns, host *lab.NS) error {
		if err := ns.IP("route", "add", lab.HostRange.String(), "via", HostAddr.String()); err != nil {
			return err
		}
		if err := host.IP("route", "add", "local", lab.HostRange.String(), "dev", "lo"); err != nil {
			return err
		}
		if err := l.Echo(host, fmt.Sprintf("0.0.0.0:%d", lab.RangePort)); err != nil {
			return err
		}
		return l.ServeDNSFunc(host, netip.AddrPortFrom(HostAddr, 53), answer)
	})
}

// wire links the container's netns (ns) to a new test host and runs
// then while ns is open.
func (c *Container) wire(then func(l *lab.Lab, ns, host *lab.NS) error) error {
	l := c.env.lab
	host, err := l.Namespace("testhost-" + c.Name)
	if err != nil {
		return err
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", c.Pid))
	if err != nil {
		return err
	}
	defer f.Close()
	ns := &lab.NS{Name: c.Name, Pid: c.Pid, File: f}
	if err := l.Link(ns, host, netip.PrefixFrom(ContainerAddr, 30), netip.PrefixFrom(HostAddr, 30)); err != nil {
		return err
	}
	return then(l, ns, host)
}

// Touch creates a file in the container's root. In a rootless container
// that is done from inside its user namespace: its root (0555, owned by
// the user) is writable only with the capabilities of the container's
// root, and host root is not mapped there (EOVERFLOW).
func (c *Container) Touch(name string) error {
	if c.env.owner != nil {
		out, err := exec.Command("nsenter", "-U", "-m", "-t", strconv.Itoa(c.Pid), "--", "/bin/touch", "/"+name).CombinedOutput()
		if err != nil {
			return fmt.Errorf("touch /%s in the container: %w: %s", name, err, out)
		}
		return nil
	}
	return os.WriteFile(fmt.Sprintf("/proc/%d/root/%s", c.Pid, name), nil, 0o644)
}

// Logs returns the container's output so far.
func (c *Container) Logs() string {
	out, _ := c.env.Podman("logs", c.Name)
	return out
}

// WaitLog waits up to timeout until the container's output contains
// marker and returns it.
func (c *Container) WaitLog(ctx context.Context, marker string, timeout time.Duration) (string, error) {
	var logs string
	err := testutil.Poll(ctx, timeout, "container output "+marker, func() (bool, string) {
		logs = c.Logs()
		return strings.Contains(logs, marker), logs
	})
	return logs, err
}
