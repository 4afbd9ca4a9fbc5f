// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package lab builds small throwaway networks of namespaces for clearance's
// end-to-end tests and its demo: a "container" network namespace with a
// process in it, a test host in another namespace, and a veth pair between
// them with no default route, no NAT and no forwarding, so traffic can only
// go between the two.
//
// Everything a Lab creates is removed by [Lab.Close]: namespaces die with
// the processes holding them (and their veths with them). Needs root.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/terok-ai/clearance/internal/netns"
)

// Lab owns the namespaces and processes it created.
type Lab struct {
	mu       sync.Mutex
	cleanups []func()
}

// New returns an empty lab.
func New() *Lab { return &Lab{} }

func (l *Lab) defer_(f func()) {
	l.mu.Lock()
	l.cleanups = append(l.cleanups, f)
	l.mu.Unlock()
}

// Close removes everything the lab created, newest first.
func (l *Lab) Close() {
	l.mu.Lock()
	cs := l.cleanups
	l.cleanups = nil
	l.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

// NS is a network namespace held open by a sleeping process.
type NS struct {
	Name string
	Pid  int      // the process in the namespace (what a container's init would be)
	File *os.File // an open /proc/<pid>/ns/net
}

// Namespace creates a network namespace with loopback up, held by a
// process of its own.
func (l *Lab) Namespace(name string) (*NS, error) {
	cmd := exec.Command("unshare", "--net", "sleep", "infinity")
	// No Pdeathsig: it fires when the forking *thread* exits, and threads
	// that entered a namespace (netns.Do) are made to exit on purpose.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start namespace holder: %w", err)
	}
	l.defer_(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return nil, err
	}
	// Wait until unshare has exec'd sleep in the new namespace.
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
		if err == nil && cur != self {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
			if string(comm) == "sleep\n" {
				break
			}
		}
		if time.Now().After(deadline) {
			return nil, errors.New("namespace holder did not start")
		}
		time.Sleep(2 * time.Millisecond)
	}
	f, err := netns.OpenPID(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	l.defer_(func() { f.Close() })
	ns := &NS{Name: name, Pid: cmd.Process.Pid, File: f}
	if err := ns.IP("link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return ns, nil
}

// IP runs `ip ARGS…` inside the namespace.
func (ns *NS) IP(args ...string) error {
	out, err := exec.Command("nsenter", append([]string{"--net=" + nsPath(ns), "ip"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %v in %s: %v: %s", args, ns.Name, err, out)
	}
	return nil
}

func nsPath(ns *NS) string { return "/proc/" + strconv.Itoa(ns.Pid) + "/ns/net" }

// Link connects a and b with a veth pair, addresses aAddr on a's end and
// bAddr on b's end (both with their prefix length), both up. No routes
// beyond the link's own prefix are added.
func (l *Lab) Link(a, b *NS, aAddr, bAddr netip.Prefix) error {
	var r [3]byte
	rand.Read(r[:])
	an, bn := "clab"+hex.EncodeToString(r[:]), "clbb"+hex.EncodeToString(r[:])
	out, err := exec.Command("ip", "link", "add", an, "netns", nsPath(a), "type", "veth",
		"peer", "name", bn, "netns", nsPath(b)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("add veth: %v: %s", err, out)
	}
	// The veth dies with either namespace; nothing else to clean up.
	for _, s := range []struct {
		ns   *NS
		dev  string
		addr netip.Prefix
	}{{a, an, aAddr}, {b, bn, bAddr}} {
		if err := s.ns.IP("addr", "add", s.addr.String(), "dev", s.dev); err != nil {
			return err
		}
		if err := s.ns.IP("link", "set", s.dev, "up"); err != nil {
			return err
		}
	}
	return nil
}

// Listen opens a listener inside the namespace. The returned listener is
// used from any goroutine: a socket stays in the namespace it was made in.
func (ns *NS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := netns.Do(int(ns.File.Fd()), func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket opens a packet socket inside the namespace.
func (ns *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := netns.Do(int(ns.File.Fd()), func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Dial connects from inside the namespace. The connect itself happens on a
// thread in the namespace, so its timing is the namespace's.
func (ns *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := netns.Do(int(ns.File.Fd()), func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Resolve sends a DNS query for name (type A) over UDP from inside the
// namespace to server and returns the answer's addresses.
func (ns *NS) Resolve(ctx context.Context, server netip.AddrPort, name string) ([]netip.Addr, error) {
	addrs, _, err := ns.Query(ctx, "udp", server, name, dnsmessage.TypeA)
	return addrs, err
}

// ErrNXDomain is returned by [NS.Query] for an NXDOMAIN answer.
var ErrNXDomain = errors.New("NXDOMAIN")

// Query sends one DNS query for name and qtype over network ("udp" or
// "tcp") from inside the namespace to server, and returns the A and AAAA
// addresses of the answer and its RCODE; NXDOMAIN is also ErrNXDomain.
func (ns *NS) Query(ctx context.Context, network string, server netip.AddrPort, name string, qtype dnsmessage.Type) ([]netip.Addr, dnsmessage.RCode, error) {
	c, err := ns.Dial(ctx, network, server.String())
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	return Exchange(c, network, name, qtype)
}

// Exchange sends one query for name and qtype on c (a connected "udp" or
// "tcp" socket) and reads the answer; see [NS.Query].
func Exchange(c net.Conn, network, name string, qtype dnsmessage.Type) ([]netip.Addr, dnsmessage.RCode, error) {
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 0x4242, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name + "."), Type: qtype, Class: dnsmessage.ClassINET}}}
	b, err := q.Pack()
	if err != nil {
		return nil, 0, err
	}
	buf := make([]byte, 65536)
	var n int
	if network == "tcp" {
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)); err != nil {
			return nil, 0, err
		}
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return nil, 0, err
		}
		n = int(binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return nil, 0, err
		}
	} else {
		if _, err := c.Write(b); err != nil {
			return nil, 0, err
		}
		if n, err = c.Read(buf); err != nil {
			return nil, 0, err
		}
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf[:n]); err != nil {
		return nil, 0, err
	}
	if m.ID != q.ID {
		return nil, 0, fmt.Errorf("answer id %#x, want %#x", m.ID, q.ID)
	}
	var out []netip.Addr
	for _, a := range m.Answers {
		switch r := a.Body.(type) {
		case *dnsmessage.AResource:
			out = append(out, netip.AddrFrom4(r.A))
		case *dnsmessage.AAAAResource:
			out = append(out, netip.AddrFrom16(r.AAAA))
		}
	}
	if m.RCode == dnsmessage.RCodeNameError {
		return out, m.RCode, ErrNXDomain
	}
	return out, m.RCode, nil
}

// ServeDNS answers A queries for the names in zone on addr (UDP and TCP)
// inside the namespace (TTL 300), until the lab closes; other names get
// NXDOMAIN.
func (l *Lab) ServeDNS(ns *NS, addr netip.AddrPort, zone map[string]netip.Addr) error {
	return l.ServeDNSFunc(ns, addr, func(name string, qtype dnsmessage.Type) ([]netip.Addr, uint32, bool) {
		ip, ok := zone[name]
		if !ok {
			return nil, 0, false
		}
		if qtype != dnsmessage.TypeA || !ip.Is4() {
			return nil, 300, true
		}
		return []netip.Addr{ip}, 300, true
	})
}

// DNSAnswer answers one question: the addresses for name (without the
// trailing dot) and qtype, the TTL of their records, and whether the
// name exists (false: NXDOMAIN). It is called from the server's
// goroutines, one at a time per transport.
type DNSAnswer func(name string, qtype dnsmessage.Type) (addrs []netip.Addr, ttl uint32, exists bool)

// ServeDNSFunc serves DNS on addr (UDP and TCP) inside the namespace,
// answering with answer, until the lab closes.
func (l *Lab) ServeDNSFunc(ns *NS, addr netip.AddrPort, answer DNSAnswer) error {
	pc, err := ns.ListenPacket("udp", addr.String())
	if err != nil {
		return err
	}
	l.defer_(func() { pc.Close() })
	ln, err := ns.Listen("tcp", addr.String())
	if err != nil {
		return err
	}
	l.defer_(func() { ln.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := dnsReply(buf[:n], answer); out != nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				for {
					var n [2]byte
					if _, err := io.ReadFull(c, n[:]); err != nil {
						return
					}
					q := make([]byte, binary.BigEndian.Uint16(n[:]))
					if _, err := io.ReadFull(c, q); err != nil {
						return
					}
					out := dnsReply(q, answer)
					if out == nil {
						return
					}
					c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...))
				}
			}()
		}
	}()
	return nil
}

// dnsReply answers one query message, nil for garbage.
func dnsReply(msg []byte, answer DNSAnswer) []byte {
	var q dnsmessage.Message
	if q.Unpack(msg) != nil || len(q.Questions) != 1 {
		return nil
	}
	qq := q.Questions[0]
	r := dnsmessage.Message{Header: dnsmessage.Header{ID: q.ID, Response: true, Authoritative: true,
		RecursionDesired: q.RecursionDesired}, Questions: q.Questions}
	name := strings.TrimSuffix(strings.ToLower(qq.Name.String()), ".")
	addrs, ttl, ok := answer(name, qq.Type)
	if !ok {
		r.RCode = dnsmessage.RCodeNameError
	}
	for _, a := range addrs {
		h := dnsmessage.ResourceHeader{Name: qq.Name, Class: dnsmessage.ClassINET, TTL: ttl}
		if a.Is4() {
			h.Type = dnsmessage.TypeA
			r.Answers = append(r.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: a.As4()}})
		} else {
			h.Type = dnsmessage.TypeAAAA
			r.Answers = append(r.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
		}
	}
	out, err := r.Pack()
	if err != nil {
		return nil
	}
	return out
}

// Echo serves TCP on addr inside ns: every connection gets "hello\n".
func (l *Lab) Echo(ns *NS, addr string) error {
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		return err
	}
	l.defer_(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
	return nil
}

// TempDir makes a private directory removed when the lab closes.
func (l *Lab) TempDir() (string, error) {
	d, err := os.MkdirTemp("", "clearance-lab-")
	if err != nil {
		return "", err
	}
	l.defer_(func() { os.RemoveAll(d) })
	return d, os.Chmod(d, 0o755)
}

// Start runs a command until the lab closes (SIGTERM, then SIGKILL after
// 5 s), with its output appended to logFile.
func (l *Lab) Start(cmd *exec.Cmd, logFile string) error {
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = f, f
		l.defer_(func() { f.Close() })
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	l.defer_(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return nil
}

// WaitSocket waits until a Unix socket at path accepts connections.
func WaitSocket(ctx context.Context, path string) error {
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", filepath.Base(path), err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// OnLink makes every address of prefix reachable on a link inside ns (a
// veth pair whose both ends stay in ns), so the container can send to
// many destinations that never leave its namespace. addr is ns's own
// address on that link, inside prefix.
func (ns *NS) OnLink(addr netip.Prefix) error {
	var r [3]byte
	rand.Read(r[:])
	a, b := "clxa"+hex.EncodeToString(r[:]), "clxb"+hex.EncodeToString(r[:])
	if err := ns.IP("link", "add", a, "type", "veth", "peer", "name", b); err != nil {
		return err
	}
	if err := ns.IP("addr", "add", addr.String(), "dev", a); err != nil {
		return err
	}
	if err := ns.IP("link", "set", a, "up"); err != nil {
		return err
	}
	return ns.IP("link", "set", b, "up")
}

// SendUDP sends one datagram from inside ns.
func (ns *NS) SendUDP(dst netip.AddrPort, payload []byte) error {
	c, err := ns.Dial(context.Background(), "udp", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write(payload)
	return err
}
