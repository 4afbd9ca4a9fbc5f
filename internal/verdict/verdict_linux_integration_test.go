// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict_test

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

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"

	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/nflog"
	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
	"github.com/terok-ai/clearance/internal/verdict"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// Test addresses: a veth pair with both ends inside the "container"
// namespace (this kernel may lack the dummy driver) and no route out;
// packets to peerAddr never leave that namespace.
var (
	dummyAddr = netip.MustParseAddr("10.254.78.1")
	peerAddr  = netip.MustParseAddr("10.254.78.2")
)

const clientEnv = "CLEARANCE_VERDICT_TEST_CLIENT"

func TestMain(m *testing.M) {
	if os.Getenv(clientEnv) != "" {
		os.Exit(clientMain())
	}
	code := testutil.Main(m)
	testutil.RemoveCommands()
	os.Exit(code)
}

// clientMain is the re-executed test binary acting as an unprivileged
// caller: it makes one call and prints the outcome ("ok" or the error's
// type name).
func clientMain() int {
	sock, ctr, method := os.Getenv("CLRV_SOCK"), os.Getenv("CLRV_CONTAINER"), os.Getenv(clientEnv)
	var ns *os.File // a namespace to pass with the call, inherited as CLRV_NSFD
	if fd, err := strconv.Atoi(os.Getenv("CLRV_NSFD")); err == nil {
		ns = os.NewFile(uintptr(fd), "netns")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := verdictclient.Dial(ctx, sock)
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	defer c.Close()
	switch method {
	case "Engage":
		_, _, err = c.Engage(ctx, ctr, ns)
	case "Watch":
		var f *os.File
		f, _, err = c.Watch(ctx, ctr, ns)
		if f != nil {
			f.Close()
		}
	case "Apply":
		_, err = c.Apply(ctx, verdictclient.ApplyRequest{Container: ctr, IP: peerAddr.String(), Action: "allow", Scope: "once"}, ns)
	case "List":
		_, err = c.List(ctx, ctr, ns)
	case "Disengage":
		err = c.Disengage(ctx, ctr, ns)
	case "Forwarder":
		var f *verdictclient.Forwarder
		if f, err = c.Forwarder(ctx, ctr, ns); f != nil {
			f.Close()
		}
	case "UpstreamTCP":
		var fs []*os.File
		fs, err = c.UpstreamTCP(ctx, ctr, "ip4", 1, ns)
		for _, f := range fs {
			f.Close()
		}
	case "Learn":
		err = c.Learn(ctx, ctr, []verdictclient.Learned{{IP: peerAddr.String(), TTL: time.Minute}}, ns)
	case "Unlearn":
		err = c.Unlearn(ctx, ctr, []verdictclient.Learned{{IP: peerAddr.String()}}, ns)
	case "WritePolicy":
		var path string
		path, _, err = c.WritePolicy(ctx, os.Getenv("CLRV_POLICY"), []byte(os.Getenv("CLRV_CONTENT")), os.Getenv("CLRV_REPLACE") != "")
		if err == nil {
			fmt.Println("ok", path)
			return 0
		}
	case "CompatApply":
		var ok bool
		var stderr string
		ok, stderr, err = c.CompatApply(ctx, ctr, peerAddr.String(), "allow")
		if err == nil && !ok {
			fmt.Println("refused:", stderr)
			return 0
		}
	default:
		fmt.Println("unknown method", method)
		return 1
	}
	fmt.Println(errName(err))
	return 0
}

// errName names err's type for comparisons across processes.
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var (
		pd *fw1.PermissionDenied
		ns *fw1.NoSuchContainer
		sr *fw1.StaleRecord
		id *fw1.InvalidDestination
		ff *fw1.FirewallFailed
		ip *fw1.InvalidPolicy
		pe *fw1.PolicyExists
	)
	switch {
	case errors.As(err, &pd):
		return "PermissionDenied"
	case errors.As(err, &ns):
		return "NoSuchContainer"
	case errors.As(err, &sr):
		return "StaleRecord"
	case errors.As(err, &id):
		return "InvalidDestination"
	case errors.As(err, &ff):
		return "FirewallFailed"
	case errors.As(err, &ip):
		return "InvalidPolicy"
	case errors.As(err, &pe):
		return "PolicyExists"
	case varlinkapi.ErrorName(err) == "org.varlink.service.InvalidParameter":
		return "InvalidParameter"
	}
	return "other: " + err.Error()
}

// container is a process in a network namespace of its own, with an
// interface holding dummyAddr.
type container struct {
	pid int
	id  netns.ID
}

func startContainer(t *testing.T) *container {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "nsenter", "sleep")
	cmd := exec.Command("sleep", "3600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start container: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	c := &container{pid: cmd.Process.Pid}
	f, err := netns.OpenPID(c.pid)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if c.id, err = netns.Identify(f); err != nil {
		t.Fatal(err)
	}
	nsPath := "--net=/proc/" + strconv.Itoa(c.pid) + "/ns/net"
	for _, args := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", "cv0", "type", "veth", "peer", "name", "cv1"},
		{"ip", "addr", "add", dummyAddr.String() + "/24", "dev", "cv0"},
		{"ip", "link", "set", "cv1", "up"},
		{"ip", "link", "set", "cv0", "up"},
	} {
		if out, err := exec.Command("nsenter", append([]string{nsPath}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	return c
}

// nsFile opens the container's namespace; closed at cleanup.
func (c *container) nsFile(t *testing.T) *os.File {
	t.Helper()
	f, err := netns.OpenPID(c.pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// rec returns a correct record of the container under id.
func (c *container) rec(id string) record.Record {
	return record.Record{
		ID: id + "0000", ID12: id, Name: "test-" + id, PID: c.pid,
		NetnsInode: c.id.Ino, NetnsDev: c.id.Dev, OwnerUID: 0,
		Dossier: map[string]string{}, Policy: "testpolicy", CreatedUsec: time.Now().UnixMicro(),
	}
}

// writeRecord writes rec where the service looks for uid's container id.
func writeRecord(t *testing.T, root string, uid int, rec record.Record) string {
	t.Helper()
	path := record.Locate(root, uid, rec.ID12)
	if err := record.Write(filepath.Dir(path), rec); err != nil {
		t.Fatal(err)
	}
	return path
}

// env is a running verdict service on a real socket.
type env struct {
	root, policyDir, sock string
	svc                   *verdict.Service
}

// startService serves a verdict service on a socket in dir (a fresh temp
// dir when ""). The socket is 0666 so other uids can connect.
func startService(t testing.TB, dir string) *env {
	t.Helper()
	return startServiceWith(t, dir, nil)
}

// startServiceWith is startService with the Config changed by edit.
func startServiceWith(t testing.TB, dir string, edit func(*verdict.Config)) *env {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	e := &env{root: filepath.Join(dir, "run"), policyDir: filepath.Join(dir, "policy"), sock: filepath.Join(dir, "verdict.sock")}
	os.MkdirAll(e.policyDir, 0o755)
	cfg := verdict.Config{
		RuntimeRoot: e.root, PolicyDir: e.policyDir, OnceTTL: time.Hour,
		Resolvers: []netip.Addr{dummyAddr}, Log: testutil.Logger(t),
	}
	if edit != nil {
		edit(&cfg)
	}
	var err error
	e.svc, err = verdict.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := verdict.Listen(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- verdict.Run(ctx, e.svc, verdict.Socket{Listener: ln}, verdict.RunOptions{Log: testutil.Logger(t)})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return e
}

func (e *env) dial(t testing.TB) *verdictclient.Client {
	t.Helper()
	c, err := verdictclient.Dial(testutil.Context(t), e.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tableExists checks the container's namespace directly, not through the
// service.
func tableExists(t *testing.T, c *container, name string) bool {
	t.Helper()
	f := c.nsFile(t)
	conn, err := nft.Dial(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseLasting()
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == name {
			return true
		}
	}
	return false
}

func TestIntegrationEngageApplyWatch(t *testing.T) {
	ctr := startContainer(t)
	e := startService(t, "")
	writeRecord(t, e.root, 0, ctr.rec("c0ffee000001"))
	// Names go to the forwarder, not the ruleset; port-scoped entries are
	// elements of the _port sets.
	os.WriteFile(filepath.Join(e.policyDir, "testpolicy.yaml"), []byte("allow:\n  - 192.0.2.7\n  - github.com:443/tcp\n  - 192.0.2.8:22/tcp\ndeny:\n  - 198.51.100.0/24\n  - '*.example.net'\n"), 0o644)
	ctx := testutil.Context(t)
	c := e.dial(t)

	table, now, err := c.Engage(ctx, "c0ffee000001", nil)
	if err != nil {
		t.Fatalf("Engage: %v", err)
	}
	if table != "clearance" || !now {
		t.Errorf("Engage = (%q, %v), want (clearance, true)", table, now)
	}
	if !tableExists(t, ctr, "clearance") {
		t.Fatal("table inet clearance missing in the container's namespace after Engage")
	}
	if _, now, err = c.Engage(ctx, "c0ffee000001", nil); err != nil || now {
		t.Errorf("second Engage = (now %v, %v), want (false, nil)", now, err)
	}

	els, err := c.List(ctx, "c0ffee000001", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, el := range els {
		d := el.Dest
		if el.Port != nil {
			d += ":" + strconv.Itoa(int(*el.Port)) + "/" + *el.Proto
		}
		got[d] = el.List + " " + el.Set
	}
	want := map[string]string{"192.0.2.7": "allow allow4", "192.0.2.8:22/tcp": "allow allow4_port", "198.51.100.0/24": "deny deny4_net"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("elements from the policy (-want +got):\n%s", diff)
	}

	t.Run("watch receives a blocked packet", func(t *testing.T) {
		f, group, err := c.Watch(ctx, "c0ffee000001", nil)
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		if group != nft.DefaultGroup {
			t.Errorf("group %d, want %d", group, nft.DefaultGroup)
		}
		r, err := nflog.NewReader(f, testutil.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		recs := make(chan nflog.Record, 16)
		rctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Run(rctx, func(rec nflog.Record) {
				select {
				case recs <- rec:
				default:
				}
			})
		}()
		defer func() { cancel(); r.Close(); wg.Wait() }()

		ns := ctr.nsFile(t)
		send := func() {
			err := netns.Do(int(ns.Fd()), func() error {
				conn, err := net.Dial("udp4", peerAddr.String()+":9")
				if err != nil {
					return err
				}
				defer conn.Close()
				conn.Write([]byte("x")) // rejected locally; the error is expected
				return nil
			})
			if err != nil {
				t.Fatalf("send from the container: %v", err)
			}
		}
		send()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case rec := <-recs:
				p, err := nflog.ParsePacket(rec.Payload)
				if err != nil {
					t.Fatalf("parse record: %v", err)
				}
				if rec.Prefix != nft.DefaultBlockPrefix || p.Dst != peerAddr || p.DstPort != 9 {
					t.Logf("skipping record %q to %v:%d", rec.Prefix, p.Dst, p.DstPort)
					continue
				}
				return
			case <-deadline:
				t.Fatal("no NFLOG record within 10s")
			case <-time.After(500 * time.Millisecond):
				send()
			}
		}
	})

	t.Run("apply once expires", func(t *testing.T) {
		res, err := c.Apply(ctx, verdictclient.ApplyRequest{Container: "c0ffee000001", IP: peerAddr.String(), Action: "allow", Scope: "once", TTL: time.Second}, nil)
		if err != nil || !res.OK {
			t.Fatalf("Apply = %+v, %v", res, err)
		}
		if res.Expires.IsZero() {
			t.Error("once verdict without expiry")
		}
		el := findElement(t, c, "c0ffee000001", peerAddr.String())
		if el == nil || el.List != "allow" || el.Timeout_sec != 1 {
			t.Fatalf("element after Apply once = %+v, want allow with 1s timeout", el)
		}
		x, err := c.Explain(ctx, "c0ffee000001", peerAddr.String(), 9, "udp", nil)
		if err != nil || x.Reason != "allowed" {
			t.Errorf("Explain = %+v, %v, want allowed", x, err)
		}
		testutil.Eventually(t, 10*time.Second, "condition", func() bool { return findElement(t, c, "c0ffee000001", peerAddr.String()) == nil })
	})

	t.Run("apply container scope and revoke", func(t *testing.T) {
		res, err := c.Apply(ctx, verdictclient.ApplyRequest{Container: "c0ffee000001", IP: "203.0.113.9", Action: "deny", Scope: "container"}, nil)
		if err != nil || !res.OK || !res.Expires.IsZero() {
			t.Fatalf("Apply = %+v, %v", res, err)
		}
		if el := findElement(t, c, "c0ffee000001", "203.0.113.9"); el == nil || el.List != "deny" || el.Timeout_sec != 0 {
			t.Fatalf("element = %+v, want permanent deny", el)
		}
		if err := c.Revoke(ctx, "c0ffee000001", "203.0.113.9", "", 0, nil); err != nil {
			t.Fatal(err)
		}
		if el := findElement(t, c, "c0ffee000001", "203.0.113.9"); el != nil {
			t.Fatalf("element after Revoke = %+v", el)
		}
	})

	t.Run("apply always writes the policy", func(t *testing.T) {
		res, err := c.Apply(ctx, verdictclient.ApplyRequest{Container: "c0ffee000001", IP: "192.0.2.99", Action: "allow", Scope: "always"}, nil)
		if err != nil || !res.OK {
			t.Fatalf("Apply = %+v, %v", res, err)
		}
		b, err := os.ReadFile(filepath.Join(e.policyDir, "testpolicy.yaml"))
		if err != nil || !strings.Contains(string(b), "192.0.2.99") {
			t.Fatalf("policy after always = %q, %v", b, err)
		}
	})

	t.Run("compat apply", func(t *testing.T) {
		ok, stderr, err := c.CompatApply(ctx, "c0ffee000001", "192.0.2.55", "allow")
		if err != nil || !ok {
			t.Fatalf("CompatApply = %v, %q, %v", ok, stderr, err)
		}
		if el := findElement(t, c, "c0ffee000001", "192.0.2.55"); el == nil || el.Timeout_sec != 3600 {
			t.Fatalf("element = %+v, want allow with the 1h default TTL", el)
		}
		ok, stderr, err = c.CompatApply(ctx, "c0ffee000001", "example.com", "allow")
		if err != nil || ok || stderr == "" {
			t.Errorf("CompatApply(domain) = %v, %q, %v; want ok=false with a reason", ok, stderr, err)
		}
		ok, _, err = c.CompatApply(ctx, "nosuchctr", "192.0.2.55", "allow")
		if err != nil || ok {
			t.Errorf("CompatApply(unknown container) = %v, %v; want ok=false", ok, err)
		}
	})

	t.Run("invalid parameters", func(t *testing.T) {
		_, err := c.Apply(ctx, verdictclient.ApplyRequest{Container: "c0ffee000001", IP: "not-an-ip", Action: "allow", Scope: "once"}, nil)
		if name := errName(err); name != "InvalidDestination" {
			t.Errorf("Apply(not-an-ip) = %s", name)
		}
		_, err = c.Apply(ctx, verdictclient.ApplyRequest{Container: "c0ffee000001", IP: "192.0.2.1", Action: "allow", Scope: "forever"}, nil)
		if err == nil {
			t.Error("Apply(scope forever) succeeded")
		}
	})

	if err := c.Disengage(ctx, "c0ffee000001", nil); err != nil {
		t.Fatal(err)
	}
	if tableExists(t, ctr, "clearance") {
		t.Error("table still exists after Disengage")
	}
}

func TestIntegrationNetnsFD(t *testing.T) {
	ctr := startContainer(t)
	other := startContainer(t)
	e := startService(t, "")
	ctx := testutil.Context(t)
	c := e.dial(t)

	// No record at all: the passed namespace is enough.
	if _, now, err := c.Engage(ctx, "fdonly000001", ctr.nsFile(t)); err != nil || !now {
		t.Fatalf("Engage with fd = %v, %v", now, err)
	}
	if !tableExists(t, ctr, "clearance") {
		t.Fatal("table missing after Engage with a passed namespace")
	}
	// A record naming another namespace than the one passed.
	writeRecord(t, e.root, 0, other.rec("mismatch0001"))
	if _, _, err := c.Engage(ctx, "mismatch0001", ctr.nsFile(t)); errName(err) != "StaleRecord" {
		t.Errorf("Engage with a contradicting record = %v, want StaleRecord", err)
	}
	// A descriptor that is not a network namespace.
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	if _, _, err := c.Engage(ctx, "fdonly000001", devnull); errName(err) != "PermissionDenied" {
		t.Errorf("Engage with /dev/null = %v, want PermissionDenied", err)
	}
	// The connection stays usable after refusals.
	if _, err := c.List(ctx, "fdonly000001", ctr.nsFile(t)); err != nil {
		t.Errorf("List with fd: %v", err)
	}
}

func TestIntegrationStaleRecords(t *testing.T) {
	ctr := startContainer(t)
	// A process in a namespace of its own. Not the test's own pid: the
	// service runs in this process, and a namespace goroutine that ran on
	// the main thread leaves /proc/<pid>/ns/net (the thread group leader's)
	// in whatever namespace it entered last, which may be ctr's.
	other := startContainer(t)
	e := startService(t, "")
	ctx := testutil.Context(t)
	c := e.dial(t)

	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		setup func(id string)
		want  string
	}{
		{"correct record", func(id string) { writeRecord(t, e.root, 0, ctr.rec(id)) }, "ok"},
		{"no record", func(id string) {}, "NoSuchContainer"},
		{"wrong inode (pid reused)", func(id string) {
			r := ctr.rec(id)
			r.NetnsInode++
			writeRecord(t, e.root, 0, r)
		}, "StaleRecord"},
		{"pid of a process in another namespace", func(id string) {
			r := ctr.rec(id)
			r.PID = other.pid
			writeRecord(t, e.root, 0, r)
		}, "StaleRecord"},
		{"pid 1", func(id string) {
			r := ctr.rec(id)
			writeRecord(t, e.root, 0, r)
			rewrite(t, record.Locate(e.root, 0, id), `"pid":`+strconv.Itoa(ctr.pid), `"pid":1`)
		}, "StaleRecord"},
		{"missing pid", func(id string) {
			r := ctr.rec(id)
			r.PID = gone.Process.Pid
			writeRecord(t, e.root, 0, r)
		}, "NoSuchContainer"},
		{"missing netns fields", func(id string) {
			writeRecord(t, e.root, 0, ctr.rec(id))
			rewrite(t, record.Locate(e.root, 0, id), `"netns_inode":`+strconv.FormatUint(ctr.id.Ino, 10)+`,`, ``)
		}, "StaleRecord"},
		{"record for another id", func(id string) {
			r := ctr.rec("someoneelse1")
			path := record.Locate(e.root, 0, id)
			if err := record.Write(filepath.Dir(path), r); err != nil {
				t.Fatal(err)
			}
		}, "StaleRecord"},
		{"wrong owner uid in record", func(id string) {
			r := ctr.rec(id)
			r.OwnerUID = 1000
			writeRecord(t, e.root, 0, r)
		}, "StaleRecord"},
		{"record owned by another user", func(id string) {
			path := writeRecord(t, e.root, 0, ctr.rec(id))
			os.Chown(path, 4321, 4321)
		}, "StaleRecord"},
		{"symlinked record", func(id string) {
			real := writeRecord(t, e.root, 0, ctr.rec("realrecord01"))
			path := record.Locate(e.root, 0, id)
			os.MkdirAll(filepath.Dir(path), 0o700)
			os.Symlink(real, path)
		}, "StaleRecord"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("stale%07d", i)
			tt.setup(id)
			_, _, err := c.Engage(ctx, id, nil)
			if got := errName(err); got != tt.want {
				t.Errorf("Engage = %s (%v), want %s", got, err, tt.want)
			}
		})
	}
}

// rewrite replaces old by new in the file at path (bypassing Write's
// validation, as a forger would).
func rewrite(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s does not contain %q: %s", path, old, b)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestIntegrationOtherUIDDenied(t *testing.T) {
	ctr := startContainer(t)
	const nobody = 65534
	// A directory every uid can traverse, with a copy of the test binary
	// nobody can execute.
	dir, err := os.MkdirTemp("", "clrverdict-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	e := startService(t, dir)
	exe := filepath.Join(dir, "client.test")
	copyFile(t, mustExecutable(t), exe, 0o755)

	// nobody has a record for its "own" id that points at root's
	// container, with the true namespace identity.
	r := ctr.rec("stolen000001")
	path := writeRecord(t, e.root, nobody, r)
	for p := path; p != e.root; p = filepath.Dir(p) {
		os.Chown(p, nobody, nobody)
	}
	writeRecord(t, e.root, 0, ctr.rec("rootctr00001"))

	for _, method := range []string{"Engage", "Watch", "Apply", "List", "Disengage", "Forwarder", "UpstreamTCP", "Learn", "Unlearn"} {
		for _, tc := range []struct {
			id     string
			passNS bool // pass root's container's namespace (inherited) with the call
			want   string
		}{
			{"stolen000001", false, "PermissionDenied"}, // a record naming a namespace nobody does not own
			{"rootctr00001", false, "PermissionDenied"}, // no namespace passed: only root may resolve by record
			{"stolen000001", true, "PermissionDenied"},  // a namespace nobody could get hold of, but does not own
		} {
			name := method + " " + tc.id
			if tc.passNS {
				name += " with root's namespace"
			}
			t.Run(name, func(t *testing.T) {
				cmd := exec.Command(exe)
				cmd.Env = []string{clientEnv + "=" + method, "CLRV_SOCK=" + e.sock, "CLRV_CONTAINER=" + tc.id}
				if tc.passNS {
					cmd.ExtraFiles = []*os.File{ctr.nsFile(t)}
					cmd.Env = append(cmd.Env, "CLRV_NSFD=3")
				}
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("client: %v\n%s", err, out)
				}
				if got := strings.TrimSpace(string(out)); got != tc.want {
					t.Errorf("%s(%s) as uid %d = %q, want %s", method, tc.id, nobody, got, tc.want)
				}
			})
		}
	}
	t.Run("CompatApply refused", func(t *testing.T) {
		cmd := exec.Command(exe)
		cmd.Env = []string{clientEnv + "=CompatApply", "CLRV_SOCK=" + e.sock, "CLRV_CONTAINER=stolen000001"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "refused: permission denied") {
			t.Errorf("CompatApply as nobody = %q, %v", out, err)
		}
	})
	if tableExists(t, ctr, "clearance") {
		t.Error("a refused caller created the table")
	}
}

func mustExecutable(t *testing.T) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func findElement(t *testing.T, c *verdictclient.Client, ctr, dest string) *fw1.Element {
	t.Helper()
	els, err := c.List(testutil.Context(t), ctr, nil)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, el := range els {
		if el.Dest == dest {
			return &el
		}
	}
	return nil
}

func TestIntegrationSocketActivatedPerConnection(t *testing.T) {
	testutil.RequireRoot(t)
	ssa := testutil.RequireTool(t, "systemd-socket-activate")
	ctr := startContainer(t)
	dir := t.TempDir()
	writeRecord(t, filepath.Join(dir, "run"), 0, ctr.rec("activated001"))
	binDir, err := testutil.Commands("clearance-verdict")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "clearance-verdict")
	cfg := filepath.Join(dir, "clearance.yaml")
	os.WriteFile(cfg, nil, 0o600)
	sock := filepath.Join(dir, "verdict.sock")
	cmd := exec.Command(ssa, "--accept", "-l", sock, bin, "--config", cfg,
		"--runtime-root", filepath.Join(dir, "run"), "--policy-dir", filepath.Join(dir, "policy"))
	cmd.Stdout, cmd.Stderr = testWriter{t}, testWriter{t}

	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	testutil.Eventually(t, 10*time.Second, "the service accepts", func() bool { return testutil.Accepts(sock) })

	ctx := testutil.Context(t)
	for i := range 2 {
		c, err := varlinkapi.Dial(ctx, sock)
		if err != nil {
			t.Fatal(err)
		}
		var vendor, product, version, url string
		var ifaces []string
		if err := c.GetInfo(ctx, &vendor, &product, &version, &url, &ifaces); err != nil {
			t.Fatalf("connection %d: GetInfo: %v", i, err)
		}
		if product != verdict.Product || !contains(ifaces, "org.terok.ClearanceFirewall1") || !contains(ifaces, "org.terok.ClearanceVerdict1") {
			t.Errorf("GetInfo = %s %v", product, ifaces)
		}
		// A second call on the same connection is served by the same instance.
		_, err = fw1.List().Call(ctx, c, "nosuchctr001")
		if errName(err) != "NoSuchContainer" {
			t.Errorf("List = %v, want NoSuchContainer", err)
		}
		// Engage and Watch work through an activated connection, fd passing
		// included.
		vc := verdictclient.FromConn(c)
		if _, _, err := vc.Engage(ctx, "activated001", nil); err != nil {
			t.Fatalf("connection %d: Engage: %v", i, err)
		}
		f, _, err := vc.Watch(ctx, "activated001", nil)
		if err != nil {
			t.Fatalf("connection %d: Watch: %v", i, err)
		}
		f.Close()
		kids := children(cmd.Process.Pid)
		if len(kids) != 1 {
			t.Errorf("connection %d: %d instances running, want 1", i, len(kids))
		}
		c.Close()
		testutil.Eventually(t, 10*time.Second, "condition", func() bool { return len(children(cmd.Process.Pid)) == 0 })
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// children lists the live (non-zombie) child processes of pid.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if pp, _ := strconv.Atoi(f[1]); pp == pid {
			out = append(out, p)
		}
	}
	return out
}

// BenchmarkApply measures one scoped Apply over a real socket, from the
// call to the reply, which is sent after the element is in the kernel
// (verdict_to_kernel).
func BenchmarkApply(b *testing.B) {
	testutil.RequireRoot(b)
	cmd := exec.Command("sleep", "3600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	f, err := netns.OpenPID(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	id, _ := netns.Identify(f)
	f.Close()
	ctr := &container{pid: cmd.Process.Pid, id: id}
	e := startService(b, "")
	writeRecord2(b, e.root, ctr.rec("bench0000001"))
	ctx := context.Background()
	c := e.dial(b)
	if _, _, err := c.Engage(ctx, "bench0000001", nil); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		// Cycle through 250 addresses, so the set stays at a realistic size
		// (Apply reads the set first) and every call replaces an element.
		ip := netip.AddrFrom4([4]byte{10, 200, 0, byte(i % 250)})
		res, err := c.Apply(ctx, verdictclient.ApplyRequest{Container: "bench0000001", IP: ip.String(), Action: "allow", Scope: "once", TTL: time.Minute}, nil)
		if err != nil || !res.OK {
			b.Fatalf("Apply: %+v %v", res, err)
		}
	}
}

func writeRecord2(tb testing.TB, root string, rec record.Record) {
	path := record.Locate(root, 0, rec.ID12)
	if err := record.Write(filepath.Dir(path), rec); err != nil {
		tb.Fatal(err)
	}
}

// fakeShield records terok-shield invocations.
type fakeShield struct {
	mu    sync.Mutex
	calls [][3]string
}

func (f *fakeShield) Apply(ctx context.Context, container, dest, action string) (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, [3]string{container, dest, action})
	if dest == "fail.example" {
		return false, "shield says no"
	}
	return true, ""
}

func TestIntegrationShieldExecMode(t *testing.T) {
	ctr := startContainer(t)
	dir := t.TempDir()
	fs := &fakeShield{}
	svc, err := verdict.New(verdict.Config{
		RuntimeRoot: filepath.Join(dir, "run"), PolicyDir: filepath.Join(dir, "policy"),
		Mode: verdict.ModeShield, ShieldApply: verdict.ShieldApplyExec, Shield: fs, Log: testutil.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	writeRecord(t, filepath.Join(dir, "run"), 0, ctr.rec("shieldctr001"))
	ln, err := verdict.Listen(filepath.Join(dir, "v.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testutil.Context(t))
	done := make(chan error, 1)
	go func() { done <- verdict.Run(ctx, svc, verdict.Socket{Listener: ln}, verdict.RunOptions{}) }()
	t.Cleanup(func() { cancel(); <-done })
	c, err := verdictclient.Dial(ctx, filepath.Join(dir, "v.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// The seed's call: a domain is passed on (canonical), and the
	// container is named by its record, never by the caller's string.
	if ok, stderr, err := c.CompatApply(ctx, "shieldctr001", "API.example.com.", "allow"); err != nil || !ok {
		t.Fatalf("CompatApply = %v, %q, %v", ok, stderr, err)
	}
	if ok, stderr, _ := c.CompatApply(ctx, "shieldctr001", "fail.example", "deny"); ok || stderr != "shield says no" {
		t.Errorf("failing CompatApply = %v, %q", ok, stderr)
	}
	// An unauthorized container never reaches terok-shield.
	if ok, _, _ := c.CompatApply(ctx, "unknownctr01", "192.0.2.1", "allow"); ok {
		t.Error("CompatApply for an unknown container succeeded")
	}
	// Neither does a destination that is no address, prefix or name
	// (issue 9: "--state-dir=/tmp/x" reached the shield).
	for _, dest := range []string{"--state-dir=/tmp/x", "-h", "a b", ""} {
		if ok, stderr, _ := c.CompatApply(ctx, "shieldctr001", dest, "allow"); ok || !strings.Contains(stderr, "invalid destination") {
			t.Errorf("CompatApply(dest %q) = %v, %q; want an invalid destination", dest, ok, stderr)
		}
	}
	// Nor a container known only by the namespace passed: exec mode acts
	// only on a container a record names.
	if ok, stderr, _ := c.CompatApplyNS(ctx, "fdonly000001", "192.0.2.1", "allow", ctr.nsFile(t)); ok || !strings.Contains(stderr, "no runtime record") {
		t.Errorf("CompatApply without a record = %v, %q", ok, stderr)
	}
	want := [][3]string{{"shieldctr0010000", "api.example.com", "allow"}, {"shieldctr0010000", "fail.example", "deny"}}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if diff := cmp.Diff(want, fs.calls); diff != "" {
		t.Errorf("terok-shield calls (-want +got):\n%s", diff)
	}
}
