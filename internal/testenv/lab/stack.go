// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/record"
)

// Addresses of the lab network: the container's end and the test host's
// end of one veth pair, in namespaces of their own, so they never collide
// with anything on the machine.
var (
	HostAddr      = netip.MustParseAddr("10.254.77.1")
	ContainerAddr = netip.MustParseAddr("10.254.77.2")
	TestDomain    = "api.example.test"
	// HostRange is a block of addresses local to the test host (a local
	// route on its loopback), routed there from the container: names of
	// the lab's DNS server resolve to them, and RangePort answers on all.
	HostRange = netip.MustParsePrefix("10.254.80.0/22")
)

// Ports the test host serves.
const (
	EchoPort  = 8080
	OtherPort = 8081
	// RangePort serves "hello\n" on every address of HostRange.
	RangePort = 8082
)

// Stack is a running clearance for one lab "container": the test host
// with an echo server and a DNS server, the privileged verdict service,
// and the container's hub, all real processes started from the built
// binaries.
type Stack struct {
	Lab       *Lab
	Dir       string
	ID        string
	Container *NS
	Host      *NS

	Config      string // the configuration file both services read
	VerdictSock string
	HubSock     string
	IngestSock  string
	RuntimeRoot string
	PolicyDir   string
	Logs        string // directory of the services' logs

	hubCmd *exec.Cmd
}

// StackOptions tunes a stack.
type StackOptions struct {
	// Bin is the directory holding clearance-hub and clearance-verdict.
	Bin string
	// ID is the container id (default "labctr000001").
	ID string
	// Policy is the name of the container's YAML policy (default "lab").
	Policy string
	// PolicyDir, when set, is used instead of a fresh directory, so a
	// second stack can start from what an earlier one wrote.
	PolicyDir string
	// OnceTTL overrides verdict.once_ttl.
	OnceTTL time.Duration
	// NoHub leaves the hub to the caller (StartHub).
	NoHub bool
	// TCPReset sets ruleset.tcp_reject: reset.
	TCPReset bool
	// PolicyYAML, when set, is written as the container's policy file.
	PolicyYAML string
	// ExtraConfig is appended to the configuration file (top-level YAML
	// sections other than verdict, ruleset and hub, e.g. "dns:\n  …").
	ExtraConfig string
	// Mode is the runtime record's firewall mode (record.ModeObserve
	// asks for observe mode; the configuration decides).
	Mode string
	// DNS answers the test host's DNS server (UDP and TCP port 53 of
	// HostAddr); nil serves TestDomain → HostAddr only.
	DNS DNSAnswer
}

// NewStack builds the network and starts the services. Close the lab to
// stop everything.
func (l *Lab) NewStack(ctx context.Context, o StackOptions) (*Stack, error) {
	if o.ID == "" {
		o.ID = "labctr000001"
	}
	if o.Policy == "" {
		o.Policy = "lab"
	}
	dir, err := l.TempDir()
	if err != nil {
		return nil, err
	}
	s := &Stack{Lab: l, Dir: dir, ID: o.ID, Logs: filepath.Join(dir, "logs"),
		VerdictSock: filepath.Join(dir, "verdict", "verdict.sock"), RuntimeRoot: filepath.Join(dir, "run"),
		PolicyDir: o.PolicyDir}
	if s.PolicyDir == "" {
		s.PolicyDir = filepath.Join(dir, "policy")
	}
	for _, d := range []string{s.Logs, s.RuntimeRoot, s.PolicyDir, filepath.Join(dir, "xdg")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}

	if s.Container, err = l.Namespace("container"); err != nil {
		return nil, err
	}
	if s.Host, err = l.Namespace("testhost"); err != nil {
		return nil, err
	}
	if err := l.Link(s.Container, s.Host, netip.PrefixFrom(ContainerAddr, 30), netip.PrefixFrom(HostAddr, 30)); err != nil {
		return nil, err
	}
	for _, p := range []int{EchoPort, OtherPort} {
		if err := l.Echo(s.Host, fmt.Sprintf("%s:%d", HostAddr, p)); err != nil {
			return nil, err
		}
	}
	if err := s.Container.IP("route", "add", HostRange.String(), "via", HostAddr.String()); err != nil {
		return nil, err
	}
	if err := s.Host.IP("route", "add", "local", HostRange.String(), "dev", "lo"); err != nil {
		return nil, err
	}
	if err := l.Echo(s.Host, fmt.Sprintf("0.0.0.0:%d", RangePort)); err != nil {
		return nil, err
	}
	if o.DNS != nil {
		err = l.ServeDNSFunc(s.Host, netip.AddrPortFrom(HostAddr, 53), o.DNS)
	} else {
		err = l.ServeDNS(s.Host, netip.AddrPortFrom(HostAddr, 53), map[string]netip.Addr{TestDomain: HostAddr})
	}
	if err != nil {
		return nil, err
	}
	if o.PolicyYAML != "" {
		if err := os.WriteFile(filepath.Join(s.PolicyDir, o.Policy+".yaml"), []byte(o.PolicyYAML), 0o600); err != nil {
			return nil, err
		}
	}

	// The runtime record, as the OCI hook writes it.
	id, err := netns.Identify(s.Container.File)
	if err != nil {
		return nil, err
	}
	rec := record.Record{ID: o.ID, ID12: o.ID[:min(12, len(o.ID))], Name: "lab", PID: s.Container.Pid,
		NetnsInode: id.Ino, NetnsDev: id.Dev, OwnerUID: uint32(os.Getuid()), Policy: o.Policy,
		Dossier:     map[string]string{"project": "lab", "task": "demo", "name": "busy-agent"},
		CreatedUsec: time.Now().UnixMicro(), Mode: o.Mode}
	if err := record.Write(filepath.Dir(record.Locate(s.RuntimeRoot, os.Getuid(), o.ID)), rec); err != nil {
		return nil, fmt.Errorf("write runtime record: %w", err)
	}

	tcpReject := "icmpx"
	if o.TCPReset {
		tcpReject = "reset"
	}
	ttl := "1h"
	if o.OnceTTL > 0 {
		ttl = o.OnceTTL.String()
	}
	s.Config = filepath.Join(dir, "clearance.yaml")
	cfg := fmt.Sprintf(`verdict:
  socket: %s
  once_ttl: %s
ruleset:
  resolvers: [%q]
  policy_dir: %s
  tcp_reject: %s
hub:
  runtime_dir: %s
%s`, s.VerdictSock, ttl, HostAddr.String(), s.PolicyDir, tcpReject, filepath.Join(dir, "xdg", "clearance"), o.ExtraConfig)
	if err := os.WriteFile(s.Config, []byte(cfg), 0o600); err != nil {
		return nil, err
	}

	v := exec.Command(filepath.Join(o.Bin, "clearance-verdict"), "-config", s.Config, "-socket", s.VerdictSock,
		"-runtime-root", s.RuntimeRoot, "-policy-dir", s.PolicyDir)
	if err := l.Start(v, filepath.Join(s.Logs, "verdict.log")); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := WaitSocket(wctx, s.VerdictSock); err != nil {
		return nil, fmt.Errorf("verdict service: %w (log: %s)", err, tail(filepath.Join(s.Logs, "verdict.log")))
	}
	s.HubSock = filepath.Join(dir, "xdg", "clearance", o.ID, "hub.sock")
	s.IngestSock = filepath.Join(dir, "xdg", "clearance", o.ID, "ingest.sock")
	if !o.NoHub {
		if err := s.StartHub(ctx, o.Bin); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// StartHub starts the container's hub and waits for its READY=1, which it
// sends once the ruleset is engaged and the NFLOG watch is up. It returns
// how long that took.
func (s *Stack) StartHub(ctx context.Context, bin string) error {
	notify := filepath.Join(s.Dir, "notify.sock")
	os.Remove(notify)
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		return err
	}
	s.Lab.defer_(func() { nc.Close() })
	ready := make(chan string, 16)
	go func() {
		b := make([]byte, 4096)
		for {
			n, _, err := nc.ReadFromUnix(b)
			if err != nil {
				return
			}
			select {
			case ready <- string(b[:n]):
			default:
			}
		}
	}()
	h := exec.Command(filepath.Join(bin, "clearance-hub"), "-config", s.Config, "-runtime-root", s.RuntimeRoot, s.ID)
	h.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify, "XDG_RUNTIME_DIR="+filepath.Join(s.Dir, "xdg"))
	if err := s.Lab.Start(h, filepath.Join(s.Logs, "hub.log")); err != nil {
		return err
	}
	s.hubCmd = h
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m := <-ready:
			if strings.Contains(m, "READY=1") {
				return nil
			}
		case <-timeout:
			return fmt.Errorf("hub not ready (log: %s)", tail(filepath.Join(s.Logs, "hub.log")))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// HubPID is the hub's process id.
func (s *Stack) HubPID() int {
	if s.hubCmd == nil || s.hubCmd.Process == nil {
		return 0
	}
	return s.hubCmd.Process.Pid
}

// Connect tries a TCP connection from the container to the test host.
func (s *Stack) Connect(ctx context.Context, port int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := s.Container.Dial(ctx, "tcp", fmt.Sprintf("%s:%d", HostAddr, port))
	if err != nil {
		return err
	}
	defer c.Close()
	b := make([]byte, 6)
	c.SetReadDeadline(time.Now().Add(timeout))
	if _, err := c.Read(b); err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if string(b) != "hello\n" {
		return fmt.Errorf("unexpected greeting %q", b)
	}
	return nil
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Tail returns the end of a service's log ("hub" or "verdict").
func (s *Stack) Tail(name string) string { return tail(filepath.Join(s.Logs, name+".log")) }
