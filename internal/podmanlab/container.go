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

	"github.com/terok-ai/clearance/internal/lab"
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

// CreateInit runs podman create (with [GateAnnotation], the extra
// annotations "key=value" and [Script]) and podman init: the
// createRuntime hook runs and the container's process has not started.
// Close kills the container's init by pid if podman could not remove
// it.
func (e *Env) CreateInit(name string, annotations ...string) (*Container, error) {
	args := []string{"create", "--name", name, "--network", "none", "--annotation", GateAnnotation}
	for _, a := range annotations {
		args = append(args, "--annotation", a)
	}
	if out, err := e.Podman(append(args, Image, "sh", "-c", Script)...); err != nil {
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
	return l.Echo(host, fmt.Sprintf("%s:%d", HostAddr, EchoPort))
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
	err := WaitFor(ctx, timeout, "container output "+marker, func() (bool, string) {
		logs = c.Logs()
		return strings.Contains(logs, marker), logs
	})
	return logs, err
}
