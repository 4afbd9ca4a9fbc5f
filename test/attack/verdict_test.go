// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package attack

import (
	"context"
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
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/shieldexec"
	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
	"github.com/terok-ai/clearance/internal/verdict"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// rootContainer is a container of root: a namespace made by root, its
// record under root's runtime directory.
func rootContainer(t *testing.T, s *service, id string) (*lab.NS, record.Record) {
	t.Helper()
	testutil.RequireTool(t, "ip", "nsenter", "unshare")
	l := lab.New()
	t.Cleanup(l.Close)
	ns, err := l.Namespace("root-" + id)
	if err != nil {
		t.Fatal(err)
	}
	nid, err := netns.Identify(ns.File)
	if err != nil {
		t.Fatal(err)
	}
	rec := record.Record{ID: id + strings.Repeat("0", 52), ID12: id, Name: id, PID: ns.Pid,
		NetnsInode: nid.Ino, NetnsDev: nid.Dev, Dossier: map[string]string{}, CreatedUsec: time.Now().UnixMicro()}
	if err := record.Write(filepath.Dir(record.Locate(s.root, 0, id)), rec); err != nil {
		t.Fatal(err)
	}
	return ns, rec
}

// writeUserRecord writes rec under uid's runtime directory, owned by uid
// as the user's own hook would leave it.
func writeUserRecord(t *testing.T, s *service, uid int, rec record.Record) {
	t.Helper()
	path := record.Locate(s.root, uid, rec.ID12)
	if err := record.Write(filepath.Dir(path), rec); err != nil {
		t.Fatal(err)
	}
	for p := path; p != s.root; p = filepath.Dir(p) {
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
}

// tableIn reports whether table inet clearance exists in ns.
func tableIn(t *testing.T, ns *os.File) bool {
	t.Helper()
	conn, err := nft.Dial(int(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseLasting()
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == "clearance" {
			return true
		}
	}
	return false
}

// TestAttackShieldExecForeignContainer (item 1): in terok-shield exec
// mode, a user passed a namespace of its own, named another container,
// and root's terok-shield acted on that container; a destination such as
// "--state-dir=/tmp/x" reached the shield as an option. Now the shield
// acts only for root, only on a container a record names, with "--"
// before a destination that parsed.
func TestAttackShieldExecForeignContainer(t *testing.T) {
	testutil.RequireRoot(t)
	argv := filepath.Join(sharedDir(t), "argv")
	shield := filepath.Join(sharedDir(t), "terok-shield")
	script := "#!/bin/sh\nprintf '%s\\n' \"$*\" >> " + argv + "\nexit 0\n"
	if err := os.WriteFile(shield, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := startService(t, func(c *verdict.Config) {
		c.Mode, c.ShieldApply = verdict.ModeShield, verdict.ShieldApplyExec
		c.Shield = &shieldexec.Exec{Binary: shield, Log: testutil.Logger(t)}
	}, verdict.RunOptions{})
	_, victim := rootContainer(t, s, "rootvictim01")

	// The attacker's own container, and a record claiming root's
	// container's id for it.
	own := newUserContainer(t, attackerUID)
	writeUserRecord(t, s, attackerUID, record.Record{ID: victim.ID, ID12: "attacker0001", Name: "x", PID: own.pid,
		NetnsInode: own.id.Ino, NetnsDev: own.id.Dev, OwnerUID: attackerUID, Dossier: map[string]string{},
		CreatedUsec: time.Now().UnixMicro()})
	ac, err := clientAs(t, attackerUID, s.sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t)
	for _, id := range []string{"attacker0001", "rootvictim01"} {
		ok, stderr, err := ac.CompatApplyNS(ctx, id, "192.0.2.1", "allow", own.ns)
		if err != nil || ok {
			t.Errorf("attacker's Apply naming %s = %v, %q, %v; want refused", id, ok, stderr, err)
		}
		t.Logf("attacker naming %s: %s", id, stderr)
	}

	// Root's own verdicts: a destination that is an option is refused; a
	// good one reaches the shield with the record's id after "--".
	rc, err := clientAs(t, 0, s.sock)
	if err != nil {
		t.Fatal(err)
	}
	if ok, stderr, _ := rc.CompatApply(ctx, "rootvictim01", "--state-dir=/tmp/x", "allow"); ok {
		t.Errorf("Apply with dest --state-dir=/tmp/x succeeded: %q", stderr)
	}
	if ok, stderr, err := rc.CompatApply(ctx, "rootvictim01", "192.0.2.7", "allow"); err != nil || !ok {
		t.Fatalf("root's Apply = %v, %q, %v", ok, stderr, err)
	}
	b, _ := os.ReadFile(argv)
	if want := "allow -- " + victim.ID + " 192.0.2.7\n"; string(b) != want {
		t.Errorf("terok-shield ran with %q, want only %q", b, want)
	}
}

// TestAttackStandaloneConnectionFlood (item 2): without a service
// manager, 256 idle connections locked every other user out, and a user
// with subordinate uids could open them as many uids. Now one user (its
// subuids included) holds at most 16, a connection beyond is refused at
// once with a reason, idle ones are closed after the idle timeout, and
// another user's Engage works throughout.
func TestAttackStandaloneConnectionFlood(t *testing.T) {
	// Long enough that all 300 connections are open before the first
	// served ones time out, even on a loaded machine (dialling took 2 s
	// under load); else their freed slots serve more.
	const idle = 5 * time.Second
	s := startService(t, nil, verdict.RunOptions{IdleTimeout: idle})
	victim := newUserContainer(t, victimUID)

	// 300 connections from 20 of the attacker's subordinate uids, held
	// open without a word. Each is read from the moment it is dialled,
	// so how long it lived is measured from its own start, however slowly
	// a loaded machine dials the others.
	var refused, withReason, closedIdle int
	var mu sync.Mutex
	var wg sync.WaitGroup
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	start := time.Now()
	for i := 0; i < 300; i++ {
		c, err := dialAs(subUIDStart+i%20, s.sock)
		if err != nil {
			t.Fatalf("attacker connection %d: %v", i, err)
		}
		held = append(held, c)
		opened := time.Now()
		wg.Go(func() {
			c.SetReadDeadline(opened.Add(10 * idle))
			b, err := io.ReadAll(c)
			lived := time.Since(opened)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("an attacker connection stayed open past 10× the idle timeout: %v", err)
			case lived >= idle*9/10:
				closedIdle++
			default:
				refused++
				if strings.Contains(string(b), "too many connections") {
					withReason++
				}
			}
		})
	}
	t.Logf("300 attacker connections opened in %v", time.Since(start))

	// The victim's Engage goes through.
	vc, err := clientAs(t, victimUID, s.sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t)
	t0 := time.Now()
	if _, _, err := vc.Engage(ctx, "victim000001", victim.ns); err != nil {
		t.Fatalf("the victim's Engage during the flood: %v", err)
	}
	t.Logf("victim's Engage during the flood: %v", time.Since(t0))

	// What the attacker's connections got: 16 served (then closed when
	// idle, after the idle timeout), the rest refused at once (with the
	// reason, while the service is answering fewer than 64 refusals; the
	// others closed without a word).
	wg.Wait()
	t.Logf("attacker connections: %d refused at once (%d with the reason), %d closed when idle", refused, withReason, closedIdle)
	if closedIdle != verdict.DefaultMaxConnsPerOwner || refused != 300-verdict.DefaultMaxConnsPerOwner || withReason == 0 {
		t.Errorf("got %d served and %d refused (%d with the reason), want %d and %d", closedIdle, refused, withReason,
			verdict.DefaultMaxConnsPerOwner, 300-verdict.DefaultMaxConnsPerOwner)
	}
	// And the slots came back: the attacker connects again.
	ac, err := clientAs(t, attackerUID, s.sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ac.List(ctx, "nosuchctr001", newUserContainer(t, attackerUID).ns); err == nil ||
		strings.Contains(err.Error(), "too many") {
		t.Errorf("attacker's call after its connections closed: %v", err)
	}
}

// TestAttackListBounded (item 2): List on a table its caller filled with
// hundreds of thousands of elements cost seconds and a reply of tens of
// megabytes. Now a ruleset beyond verdict.MaxListElements is refused with
// a reason naming the count.
func TestAttackListBounded(t *testing.T) {
	testutil.RequireTool(t, "nsenter", "nft")
	s := startService(t, nil, verdict.RunOptions{})
	own := newUserContainer(t, attackerUID)
	ac, err := clientAs(t, attackerUID, s.sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t)
	if _, _, err := ac.Engage(ctx, "attacker0001", own.ns); err != nil {
		t.Fatal(err)
	}
	// What the owner of the namespace can do itself: fill its sets.
	n := verdict.MaxListElements + 5000
	var b strings.Builder
	b.WriteString("add element inet clearance allow4 {")
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "10.%d.%d.%d", (i>>16)&255, (i>>8)&255, i&255)
	}
	b.WriteString("}\n")
	f := filepath.Join(s.dir, "fill.nft")
	os.WriteFile(f, []byte(b.String()), 0o644)
	if out, err := exec.Command("nsenter", "--net=/proc/"+strconv.Itoa(own.pid)+"/ns/net", "nft", "-f", f).CombinedOutput(); err != nil {
		t.Fatalf("fill: %v\n%s", err, out)
	}
	t0 := time.Now()
	_, err = ac.List(ctx, "attacker0001", own.ns)
	var ff *fw1.FirewallFailed
	if !errors.As(err, &ff) || !strings.Contains(ff.Reason, strconv.Itoa(n)) {
		t.Fatalf("List of %d elements = %v, want FirewallFailed naming the count", n, err)
	}
	t.Logf("List of %d elements refused in %v: %s", n, time.Since(t0), ff.Reason)
}

// TestAttackHostNamespace (item 5, the service's half): a container
// sharing the host's network namespace got "policy drop" in the host's
// namespace. The service now refuses its own (the initial) namespace; a
// throwaway namespace stands in for the host.
func TestAttackHostNamespace(t *testing.T) {
	testutil.RequireTool(t, "ip", "nsenter", "unshare")
	l := lab.New()
	t.Cleanup(l.Close)
	host, err := l.Namespace("host")
	if err != nil {
		t.Fatal(err)
	}
	hostID, err := netns.Identify(host.File)
	if err != nil {
		t.Fatal(err)
	}
	s := startService(t, func(c *verdict.Config) { c.HostNetns = &hostID }, verdict.RunOptions{})
	rc, err := clientAs(t, 0, s.sock)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = rc.Engage(testutil.Context(t), "hostnet00001", host.File)
	var pd *fw1.PermissionDenied
	if !errors.As(err, &pd) || !strings.Contains(pd.Reason, "host's network namespace") {
		t.Errorf("Engage of the host's namespace = %v, want PermissionDenied", err)
	}
	if tableIn(t, host.File) {
		t.Error("the host's namespace got the ruleset")
	}
}

// TestAttackInformationLeaks (item 8): errors told a caller another
// user's uid and another pid's namespace; on the fd path a record's pid
// was never checked; policy files were world-readable outside the unit.
func TestAttackInformationLeaks(t *testing.T) {
	s := startService(t, nil, verdict.RunOptions{})
	rootNS, victim := rootContainer(t, s, "rootvictim01")
	ctx := testutil.Context(t)
	ac, err := clientAs(t, attackerUID, s.sock)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("PermissionDenied names no owner", func(t *testing.T) {
		_, _, err := ac.Engage(ctx, "rootvictim01", rootNS.File)
		var pd *fw1.PermissionDenied
		if !errors.As(err, &pd) {
			t.Fatalf("Engage of root's namespace = %v, want PermissionDenied", err)
		}
		if strings.Contains(pd.Reason, "owner") || strings.Contains(pd.Reason, "uid 0") {
			t.Errorf("reason tells who owns the namespace: %q", pd.Reason)
		}
	})
	t.Run("no other pid's namespace", func(t *testing.T) {
		// A record of the attacker's naming root's container process.
		writeUserRecord(t, s, attackerUID, record.Record{ID: "probe0000001", ID12: "probe0000001", Name: "x", PID: victim.PID,
			NetnsInode: 1, NetnsDev: 1, OwnerUID: attackerUID, Dossier: map[string]string{}, CreatedUsec: 1})
		_, _, err := ac.Engage(ctx, "probe0000001", nil)
		if err == nil || strings.Contains(err.Error(), "net:[") || strings.Contains(err.Error(), strconv.FormatUint(victim.NetnsInode, 10)) {
			t.Errorf("Engage = %v, want a refusal that names no namespace", err)
		}
	})
	t.Run("a record whose pid is elsewhere is ignored", func(t *testing.T) {
		own := newUserContainer(t, attackerUID)
		dir := verdict.UserPolicyDir(s.policyDir, attackerUID)
		os.MkdirAll(dir, 0o700)
		os.WriteFile(filepath.Join(dir, "mine.yaml"), []byte("allow:\n  - 192.0.2.77\n"), 0o600)
		for _, tc := range []struct {
			id       string
			pid      int
			wantPoli bool
		}{{"ownpid000001", own.pid, true}, {"rootpid00001", victim.PID, false}} {
			writeUserRecord(t, s, attackerUID, record.Record{ID: tc.id, ID12: tc.id, Name: "x", PID: tc.pid,
				NetnsInode: own.id.Ino, NetnsDev: own.id.Dev, OwnerUID: attackerUID, Policy: "mine",
				Dossier: map[string]string{}, CreatedUsec: 1})
			if _, _, err := ac.Engage(ctx, tc.id, own.ns); err != nil {
				t.Fatalf("Engage %s: %v", tc.id, err)
			}
			els, err := ac.List(ctx, tc.id, own.ns)
			if err != nil {
				t.Fatal(err)
			}
			got := len(els) == 1 && els[0].Dest == "192.0.2.77"
			if got != tc.wantPoli {
				t.Errorf("record with pid %d: policy applied = %v, want %v (%+v)", tc.pid, got, tc.wantPoli, els)
			}
			ac.Disengage(ctx, tc.id, own.ns)
		}
	})
	t.Run("policy files are private", func(t *testing.T) {
		old := syscall.Umask(0o022) // no unit's UMask=0077 here
		defer syscall.Umask(old)
		own := newUserContainer(t, attackerUID)
		writeUserRecord(t, s, attackerUID, record.Record{ID: "always000001", ID12: "always000001", Name: "x", PID: own.pid,
			NetnsInode: own.id.Ino, NetnsDev: own.id.Dev, OwnerUID: attackerUID, Policy: "always",
			Dossier: map[string]string{}, CreatedUsec: 1})
		if _, _, err := ac.Engage(ctx, "always000001", own.ns); err != nil {
			t.Fatal(err)
		}
		res, err := ac.Apply(ctx, verdictclient.ApplyRequest{Container: "always000001", IP: "192.0.2.8", Action: "allow", Scope: "always"}, own.ns)
		if err != nil || !res.OK {
			t.Fatalf("Apply always = %+v, %v", res, err)
		}
		file := filepath.Join(verdict.UserPolicyDir(s.policyDir, attackerUID), "always.yaml")
		for p, want := range map[string]os.FileMode{file: 0o600, filepath.Dir(file): 0o700} {
			if st, err := os.Stat(p); err != nil || st.Mode().Perm() != want {
				t.Errorf("%s: %v (%v), want mode %v", p, st.Mode().Perm(), err, want)
			}
		}
		// Another user cannot read it.
		vc := exec.Command("cat", file)
		vc.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: victimUID, Gid: victimUID}}
		if out, err := vc.CombinedOutput(); err == nil {
			t.Errorf("uid %d read another user's policy: %s", victimUID, out)
		}
	})
}

// TestAttackFdlessCallRefused (item 9): the service resolved a user's
// container by pid, which took CAP_SYS_PTRACE. A user's call without a
// namespace is now refused with the fix in the reason, and the packaged
// unit holds no CAP_SYS_PTRACE.
func TestAttackFdlessCallRefused(t *testing.T) {
	s := startService(t, nil, verdict.RunOptions{})
	own := newUserContainer(t, attackerUID)
	writeUserRecord(t, s, attackerUID, record.Record{ID: "fdless000001", ID12: "fdless000001", Name: "x", PID: own.pid,
		NetnsInode: own.id.Ino, NetnsDev: own.id.Dev, OwnerUID: attackerUID, Dossier: map[string]string{}, CreatedUsec: 1})
	ac, err := clientAs(t, attackerUID, s.sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t)
	_, _, err = ac.Engage(ctx, "fdless000001", nil)
	var pd *fw1.PermissionDenied
	if !errors.As(err, &pd) || pd.Reason != verdict.NoNamespaceReason {
		t.Errorf("Engage without a namespace = %v, want PermissionDenied %q", err, verdict.NoNamespaceReason)
	}
	ok, stderr, err := ac.CompatApply(ctx, "fdless000001", "192.0.2.1", "allow")
	if err != nil || ok || !strings.Contains(stderr, "pass the container's network namespace") {
		t.Errorf("seed Apply without a namespace = %v, %q, %v; want refused naming the fix", ok, stderr, err)
	}
	// With the namespace the same call works.
	if _, _, err := ac.Engage(ctx, "fdless000001", own.ns); err != nil {
		t.Errorf("Engage with the namespace: %v", err)
	}

	unit, err := os.ReadFile(filepath.Join(repoRoot, "units", "system", "clearance-verdict.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(unit), "\n") {
		if strings.HasPrefix(l, "CapabilityBoundingSet=") || strings.HasPrefix(l, "AmbientCapabilities=") {
			if strings.Contains(l, "CAP_SYS_PTRACE") {
				t.Errorf("the unit grants CAP_SYS_PTRACE: %s", l)
			}
		}
	}
}

// revokeLab is a container and a server namespace on a veth pair.
func revokeLab(t *testing.T) (ctr *lab.NS, addr netip.AddrPort, accepted <-chan net.Conn) {
	t.Helper()
	testutil.RequireTool(t, "ip", "nsenter", "unshare")
	l := lab.New()
	t.Cleanup(l.Close)
	ctr, err := l.Namespace("ctr")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := l.Namespace("srv")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Link(ctr, srv, netip.MustParsePrefix("10.254.81.1/30"), netip.MustParsePrefix("10.254.81.2/30")); err != nil {
		t.Fatal(err)
	}
	addr = netip.MustParseAddrPort("10.254.81.2:18444")
	ln, err := srv.Listen("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			ch <- c
		}
	}()
	return ctr, addr, ch
}

// TestAttackConnectionOutlivesVerdict (item 7): an established connection
// outlived its "once" verdict's expiry (the hub then calls Revoke). Now
// Revoke cuts it: the container's next segment is refused (a reset, with
// tcp_reject reset) and never reaches the server.
func TestAttackConnectionOutlivesVerdict(t *testing.T) {
	ctr, addr, accepted := revokeLab(t)
	s := startService(t, func(c *verdict.Config) { c.TCPReset = true }, verdict.RunOptions{})
	rc, err := clientAs(t, 0, s.sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t)
	if _, _, err := rc.Engage(ctx, "outlive00001", ctr.File); err != nil {
		t.Fatal(err)
	}
	if res, err := rc.Apply(ctx, verdictclient.ApplyRequest{Container: "outlive00001", IP: addr.Addr().String(), Action: "allow",
		Scope: "once", TTL: time.Hour}, ctr.File); err != nil || !res.OK {
		t.Fatalf("Apply = %+v, %v", res, err)
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := ctr.Dial(dctx, "tcp", addr.String())
	if err != nil {
		t.Fatalf("connect while allowed: %v", err)
	}
	defer c.Close()
	sc := <-accepted
	if err := rc.Revoke(ctx, "outlive00001", addr.Addr().String(), "", 0, ctr.File); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("after the verdict\n"))
	if _, err := c.Read(make([]byte, 16)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the connection after Revoke: read = %v, want it reset", err)
	}
	sc.SetReadDeadline(time.Now())
	if n, _ := sc.Read(make([]byte, 64)); n > 0 {
		t.Errorf("the server received %d bytes after Revoke", n)
	}
}
