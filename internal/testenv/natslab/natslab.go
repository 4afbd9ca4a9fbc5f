// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package natslab starts a real nats-server (Debian's nats-server package)
// for tests: on a free loopback port, JetStream stored in a temporary
// directory, and users with the permissions a clearance fleet gives its
// relays and operators (docs/fleet.md). The users are the server's own
// password users ([Start], [StartTLS] with mutual TLS), or, with
// [StartJWT], the production setup: operator mode with an operator, an
// account with JetStream and a system account (resolver MEMORY with the
// accounts preloaded), each user a JWT signed by the account in a
// credentials file ([Server.Creds]; [Server.WriteCreds] and
// [Server.WriteStrangerCreds] write expiring or foreign ones). Nothing of
// the machine's own NATS configuration is read. The server is stopped by
// pid in tb.Cleanup, and can be stopped and started again on the same port
// and store to test outages.
package natslab

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/testenv/testutil"
)

// Password is every lab user's password (not in operator mode).
const Password = "natslab-pw"

// User is one user of the lab, with its permissions: a password user, or
// in operator mode (StartJWT) a user JWT carrying the same permissions.
type User struct {
	Name string
	// Publish and Subscribe are the subjects the user may use; the
	// server refuses everything else.
	Publish, Subscribe []string
	// DenyPublish are subjects refused even when Publish allows them.
	DenyPublish []string
	// Responses lets the user answer requests sent to it.
	Responses bool
}

// RelayUser is the account of host's relay: it publishes its own host's
// subjects and answers verdict requests for its host only, and uses the
// JetStream key-value bucket.
func RelayUser(host string) User {
	return User{Name: "relay-" + host,
		Publish:     []string{"clearance." + host + ".>", "$JS.API.>", "$JS.FC.>", "$KV.clearance-always.>"},
		DenyPublish: []string{"clearance.*.*.decide.>"},
		Subscribe:   []string{"clearance." + host + ".*.decide.*", "clearance.fleet.pending", "clearance.fleet.presence", "_INBOX.>"},
		Responses:   true}
}

// OperatorUser is the account of an operator who may answer for hosts
// (a "*" answers for every host).
func OperatorUser(name string, hosts ...string) User {
	u := User{Name: name, Subscribe: []string{"clearance.>", "_INBOX.>"}, Publish: []string{"clearance.fleet.pending", "clearance.fleet.presence"}}
	for _, h := range hosts {
		u.Publish = append(u.Publish, "clearance."+h+".*.decide."+name)
	}
	return u
}

// Server is one nats-server.
type Server struct {
	tb    testing.TB
	dir   string
	Port  int
	conf  string
	log   string
	cmd   *exec.Cmd
	exit  chan struct{}
	users []User
	tls   bool
	jwt   *jwtLab // operator mode (StartJWT)

	// With TLS: the CA that signed the server's and the client's
	// certificates, and a client certificate and key (mutual TLS).
	CA, ClientCert, ClientKey string
}

// Start starts a server with users. It fails (skips outside CI) without
// /usr/sbin/nats-server.
func Start(tb testing.TB, users ...User) *Server { return startMode(tb, false, false, users) }

// StartTLS is Start with TLS required and client certificates verified
// (mutual TLS), from a throwaway CA.
func StartTLS(tb testing.TB, users ...User) *Server { return startMode(tb, true, false, users) }

func startMode(tb testing.TB, withTLS, withJWT bool, users []User) *Server {
	tb.Helper()
	bin := "/usr/sbin/nats-server"
	if _, err := os.Stat(bin); err != nil {
		testutil.Unavailable(tb, bin+" (Debian nats-server)")
	}
	dir, err := os.MkdirTemp("", "natslab-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{tb: tb, dir: dir, conf: filepath.Join(dir, "nats.conf"), log: filepath.Join(dir, "nats.log"), users: users, tls: withTLS}
	if withTLS {
		s.writeCerts()
	}
	if withJWT {
		s.jwt = newJWTLab(tb)
		s.writeAllCreds()
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		s.Port = freePort(tb)
		s.writeConf()
		if lastErr = s.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		tb.Fatalf("nats-server: %v\n%s", lastErr, s.Log())
	}
	tb.Cleanup(s.Stop)
	return s
}

func (s *Server) writeConf() {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: \"127.0.0.1:%d\"\nserver_name: natslab\n", s.Port)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  max_memory_store: 64MB\n  max_file_store: 256MB\n}\n", filepath.Join(s.dir, "js"))
	if s.tls {
		fmt.Fprintf(&b, "tls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: true\n}\n",
			filepath.Join(s.dir, "server.pem"), filepath.Join(s.dir, "server.key"), s.CA)
	}
	if s.jwt != nil {
		b.WriteString(s.writeJWTConf())
		if err := os.WriteFile(s.conf, []byte(b.String()), 0o600); err != nil {
			s.tb.Fatal(err)
		}
		return
	}
	b.WriteString("authorization {\n  users = [\n")
	for _, u := range s.users {
		fmt.Fprintf(&b, "    {user: %q, password: %q, permissions: {publish: {allow: %s, deny: %s}, subscribe: {allow: %s}",
			u.Name, Password, list(u.Publish), list(u.DenyPublish), list(u.Subscribe))
		if u.Responses {
			b.WriteString(", allow_responses: true")
		}
		b.WriteString("}}\n")
	}
	b.WriteString("  ]\n}\n")
	if err := os.WriteFile(s.conf, []byte(b.String()), 0o600); err != nil {
		s.tb.Fatal(err)
	}
}

func list(xs []string) string {
	if len(xs) == 0 {
		return "[]"
	}
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func (s *Server) start() error {
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	s.cmd = exec.Command("/usr/sbin/nats-server", "-c", s.conf)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	logf.Close()
	s.exit = make(chan struct{})
	cmd, exit := s.cmd, s.exit
	go func() { cmd.Wait(); close(exit) }()
	exited := false
	if testutil.Within(15*time.Second, func() bool {
		select {
		case <-exit:
			exited = true
			return true
		default:
		}
		return testutil.AcceptsTCP(s.Addr())
	}) {
		if exited {
			return fmt.Errorf("exited: %v", cmd.ProcessState)
		}
		return nil
	}
	cmd.Process.Kill()
	<-exit
	return fmt.Errorf("not listening on %s after 15 s", s.Addr())
}

// Addr is host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// URL is the server's URL for user: with its password, or in operator
// mode (StartJWT) without, the user being whoever the credentials file
// (Creds) says.
func (s *Server) URL(user string) string {
	scheme := "nats://"
	if s.tls {
		scheme = "tls://"
	}
	if s.jwt != nil {
		return scheme + s.Addr()
	}
	return scheme + user + ":" + Password + "@" + s.Addr()
}

// Log returns what the server logged so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s). Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.exit:
	default:
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exit:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.exit
		}
	}
	s.cmd = nil
}

// Restart starts the stopped server again, on the same port and store.
func (s *Server) Restart() {
	s.tb.Helper()
	if err := s.start(); err != nil {
		s.tb.Fatalf("nats-server restart: %v\n%s", err, s.Log())
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
