// Package sshlab starts real OpenSSH servers on loopback for tests: each
// a "host" with a throwaway host key, one key-authorised user (the test's
// own), and its own runtime directory for the sessions it runs, plus an
// ssh client configuration in a temporary directory that reaches them by
// alias. Nothing of the machine's own sshd, ~/.ssh or known_hosts is read
// or written: the client runs with -F and its own known_hosts, the
// servers with their own configuration.
//
// As root, each sshd runs in a private mount namespace with a tmpfs on
// /run (OpenSSH's privilege separation directory /run/sshd is created
// there, not on the machine); as another user it runs unprivileged as
// that user. Everything is stopped in tb.Cleanup, by pid.
package sshlab

import (
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

	"github.com/terok-ai/clearance/internal/testutil"
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
	// Port is its loopback port.
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
		testutil.RequireTool(tb, "unshare")
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
		cfg := filepath.Join(hd, "sshd_config")
		conf := strings.Join([]string{
			"Port " + strconv.Itoa(h.Port),
			"ListenAddress 127.0.0.1",
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
			h.cmd = exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
				`mount -t tmpfs -o mode=0755 sshlab /run && mkdir -m 0755 /run/sshd && exec /usr/sbin/sshd -D -e -f "$1"`, "sh", cfg)
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
		if lastErr = waitListening(h.Port, exited); lastErr == nil {
			cmd := h.cmd
			l.tb.Cleanup(func() {
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
					cmd.Process.Kill()
					<-exited
				}
			})
			break
		}
		h.cmd.Process.Kill()
		<-exited
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
		fmt.Fprintf(&b, "Host %s\n  HostName 127.0.0.1\n  Port %d\n  HostKeyAlias %s\n\n", h.Alias, h.Port, h.Alias)
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

func waitListening(port int, exited <-chan error) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("sshd exited: %v", err)
		default:
		}
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("port %d not listening after 10 s", port)
}
