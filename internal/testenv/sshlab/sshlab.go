// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package sshlab starts real OpenSSH servers on loopback for tests: each
// a "host" with a throwaway host key, one key-authorised user (the test's
// own), and its own runtime directory for the sessions it runs, plus an
// ssh client configuration in a temporary directory that reaches them by
// alias. Nothing of the machine's own sshd, ~/.ssh or known_hosts is read
// or written: the client runs with -F and its own known_hosts, the
// servers with their own configuration.
//
// As root, each sshd is a host of its own: it runs in a private mount
// namespace with a tmpfs on /run (OpenSSH's privilege separation directory
// /run/sshd is created there, not on the machine) and in a network
// namespace of its own, reached over a veth pair with a /30 of
// 10.200.0.0/13 and nothing else (no route out, no forwarding); as another
// user it runs unprivileged as that user on loopback. Everything is
// stopped in tb.Cleanup, by pid and by interface name.
package sshlab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// Lab is a set of hosts and the client configuration that reaches them.
type Lab struct {
	tb      testing.TB
	dir     string
	user    string
	key     string
	pub     []byte
	known   string
	cfgPath string
	hosts   []*Host
}

// Host is one sshd.
type Host struct {
	// Alias is the name the client configuration knows it by.
	Alias string
	// Addr is the address it listens on: 127.0.0.1, or as root the
	// inside of its veth pair.
	Addr string
	// Port is its port.
	Port int
	// RuntimeDir is XDG_RUNTIME_DIR of its sessions.
	RuntimeDir string

	cmd *exec.Cmd
	log string
}

// New prepares a lab: a client key and configuration. It fails (or skips
// outside CI) without ssh, sshd and ssh-keygen.
func New(tb testing.TB) *Lab {
	tb.Helper()
	testutil.RequireTool(tb, "ssh", "ssh-keygen")
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		testutil.Unavailable(tb, "/usr/sbin/sshd (Debian openssh-server)")
	}
	if os.Geteuid() == 0 {
		testutil.RequireTool(tb, "unshare", "nsenter", "ip")
	}
	u, err := user.Current()
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sshlab-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o700)
	l := &Lab{tb: tb, dir: dir, user: u.Username, key: filepath.Join(dir, "id_ed25519"),
		known: filepath.Join(dir, "known_hosts"), cfgPath: filepath.Join(dir, "ssh_config")}
	keygen(tb, l.key)
	l.pub, err = os.ReadFile(l.key + ".pub")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), l.pub, 0o600); err != nil {
		tb.Fatal(err)
	}
	l.writeClientConfig()
	return l
}

func keygen(tb testing.TB, path string) {
	tb.Helper()
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sshlab", "-f", path).CombinedOutput()
	if err != nil {
		tb.Fatalf("ssh-keygen: %v: %s", err, out)
	}
}

// SSHCommand is the client command line for clearancectl's
// --ssh-command: ssh with the lab's configuration only.
func (l *Lab) SSHCommand() string { return "ssh -F " + l.cfgPath }

// ConfigPath is the client configuration file.
func (l *Lab) ConfigPath() string { return l.cfgPath }

// User is the login name the hosts accept.
func (l *Lab) User() string { return l.user }

// AddHost starts an sshd known to the client as alias, whose sessions get
// XDG_RUNTIME_DIR=runtimeDir.
func (l *Lab) AddHost(alias, runtimeDir string) *Host {
	l.tb.Helper()
	hd := filepath.Join(l.dir, alias)
	if err := os.MkdirAll(hd, 0o700); err != nil {
		l.tb.Fatal(err)
	}
	hostKey := filepath.Join(hd, "host_ed25519")
	keygen(l.tb, hostKey)
	hpub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		l.tb.Fatal(err)
	}
	h := &Host{Alias: alias, RuntimeDir: runtimeDir, log: filepath.Join(hd, "sshd.log")}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		h.Port = freePort(l.tb)
		h.Addr = "127.0.0.1"
		var outer, inner, outerIf, innerIf string
		if os.Geteuid() == 0 {
			outer, inner = subnet()
			tag := randomHex(4)
			outerIf, innerIf, h.Addr = "sshl"+tag+"o", "sshl"+tag+"i", inner
		}
		cfg := filepath.Join(hd, "sshd_config")
		conf := strings.Join([]string{
			"Port " + strconv.Itoa(h.Port),
			"ListenAddress " + h.Addr,
			"HostKey " + hostKey,
			"PidFile none",
			"AuthorizedKeysFile " + filepath.Join(l.dir, "authorized_keys"),
			"AuthenticationMethods publickey",
			"PubkeyAuthentication yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"UsePAM no",
			"StrictModes no",
			"PermitRootLogin prohibit-password",
			"AllowUsers " + l.user,
			"X11Forwarding no",
			"AllowTcpForwarding no",
			"AllowAgentForwarding no",
			"PrintMotd no",
			"LogLevel VERBOSE",
			"SetEnv XDG_RUNTIME_DIR=" + runtimeDir,
			"",
		}, "\n")
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			l.tb.Fatal(err)
		}
		logf, err := os.Create(h.log)
		if err != nil {
			l.tb.Fatal(err)
		}
		if os.Geteuid() == 0 {
			// sshd binds its address once the veth's inner end has it.
			h.cmd = exec.Command("unshare", "-m", "-n", "--propagation", "private", "sh", "-c",
				`mount -t tmpfs -o mode=0755 sshlab /run && mkdir -m 0755 /run/sshd && ip link set lo up || exit 1
i=0; until ip -4 addr show dev "$2" 2>/dev/null | grep -q "inet "; do i=$((i+1)); [ $i -gt 500 ] && exit 1; sleep 0.02; done
exec /usr/sbin/sshd -D -e -f "$1"`, "sh", cfg, innerIf)
		} else {
			h.cmd = exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", cfg)
		}
		h.cmd.Stdout, h.cmd.Stderr = logf, logf
		if err := h.cmd.Start(); err != nil {
			logf.Close()
			l.tb.Fatalf("start sshd: %v", err)
		}
		logf.Close()
		exited := make(chan error, 1)
		go func() { exited <- h.cmd.Wait() }()
		if outerIf != "" {
			if err := veth(h.cmd.Process.Pid, outerIf, innerIf, outer, inner); err != nil {
				h.cmd.Process.Kill()
				<-exited
				exec.Command("ip", "link", "del", outerIf).Run()
				l.tb.Fatalf("sshd %s: %v", alias, err)
			}
		}
		if lastErr = waitListening(h.Addr, h.Port, exited); lastErr == nil {
			cmd := h.cmd
			l.tb.Cleanup(func() {
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
					cmd.Process.Kill()
					<-exited
				}
				if outerIf != "" {
					// Gone with the namespace already; by name in case not.
					exec.Command("ip", "link", "del", outerIf).Run()
				}
			})
			break
		}
		h.cmd.Process.Kill()
		<-exited
		if outerIf != "" {
			exec.Command("ip", "link", "del", outerIf).Run()
		}
	}
	if lastErr != nil {
		b, _ := os.ReadFile(h.log)
		l.tb.Fatalf("sshd %s did not come up: %v\n%s", alias, lastErr, b)
	}
	f, err := os.OpenFile(l.known, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		l.tb.Fatal(err)
	}
	fields := strings.Fields(string(hpub))
	fmt.Fprintf(f, "%s %s %s\n", alias, fields[0], fields[1])
	f.Close()
	l.hosts = append(l.hosts, h)
	l.writeClientConfig()
	return h
}

// Pid is the sshd's process id.
func (h *Host) Pid() int { return h.cmd.Process.Pid }

// Log returns what the host's sshd logged so far.
func (h *Host) Log() string {
	b, _ := os.ReadFile(h.log)
	return string(b)
}

// Stop stops the host's sshd (sessions already open end with their
// clients).
func (h *Host) Stop() {
	h.cmd.Process.Signal(syscall.SIGTERM)
}

func (l *Lab) writeClientConfig() {
	var b strings.Builder
	for _, h := range l.hosts {
		fmt.Fprintf(&b, "Host %s\n  HostName %s\n  Port %d\n  HostKeyAlias %s\n\n", h.Alias, h.Addr, h.Port, h.Alias)
	}
	fmt.Fprintf(&b, "Host *\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  IdentityAgent none\n"+
		"  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"+
		"  BatchMode yes\n  ConnectTimeout 10\n  LogLevel ERROR\n  ControlMaster no\n  ControlPath none\n",
		l.user, l.key, l.known)
	if err := os.WriteFile(l.cfgPath, []byte(b.String()), 0o600); err != nil {
		l.tb.Fatal(err)
	}
}

func freePort(tb testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// subnet picks a /30 of 10.200.0.0/13 for a host's veth pair: the
// outer and inner address.
func subnet() (outer, inner string) {
	var b [4]byte
	rand.Read(b[:])
	n := binary.BigEndian.Uint32(b[:]) & (1<<17 - 1) // 2^17 /30s in a /13
	base := uint32(10)<<24 | uint32(200)<<16 | n<<2
	ip := func(v uint32) string { return fmt.Sprintf("%d.%d.%d.%d", v>>24, v>>16&255, v>>8&255, v&255) }
	return ip(base + 1), ip(base + 2)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// veth connects the network namespace of pid to this one: outerIf here
// with outer/30, innerIf there with inner/30, both up.
func veth(pid int, outerIf, innerIf, outer, inner string) error {
	p := strconv.Itoa(pid)
	// Wait until the process has left this namespace (unshare has run).
	ours, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return err
	}
	err = testutil.Poll(context.Background(), 10*time.Second, "sshd in a network namespace of its own", func() (bool, string) {
		theirs, err := os.Readlink("/proc/" + p + "/ns/net")
		if err != nil {
			return false, err.Error()
		}
		return theirs != ours, theirs
	})
	if err != nil {
		return err
	}
	for _, args := range [][]string{
		{"ip", "link", "add", outerIf, "type", "veth", "peer", "name", innerIf, "netns", p},
		{"ip", "addr", "add", outer + "/30", "dev", outerIf},
		{"ip", "link", "set", outerIf, "up"},
		{"nsenter", "-t", p, "-n", "ip", "link", "set", innerIf, "up"},
		{"nsenter", "-t", p, "-n", "ip", "addr", "add", inner + "/30", "dev", innerIf},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

func waitListening(addr string, port int, exited <-chan error) error {
	var gone error
	err := testutil.Poll(context.Background(), 10*time.Second, fmt.Sprintf("%s port %d listening", addr, port), func() (bool, string) {
		select {
		case err := <-exited:
			gone = fmt.Errorf("sshd exited: %v", err)
			return true, ""
		default:
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), 200*time.Millisecond)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	if gone != nil {
		return gone
	}
	return err
}
