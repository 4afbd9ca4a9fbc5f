// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/sockets"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// fakeManager is a service manager whose socket units listen for real:
// starting clearance-hub@X.socket binds the hub socket, and the first
// connection "activates" the service, which answers GetInfo.
type fakeManager struct {
	tb       testing.TB // its hub socket is closed when tb ends
	target   ManagerTarget
	mu       sync.Mutex
	states   map[string]string
	calls    []string
	ln       net.Listener
	failHub  bool // the service fails instead of becoming active
	startErr error
}

func (m *fakeManager) record(call string) {
	m.mu.Lock()
	m.calls = append(m.calls, call)
	m.mu.Unlock()
}

func (m *fakeManager) set(unit, state string) {
	m.mu.Lock()
	m.states[unit] = state
	m.mu.Unlock()
}

func (m *fakeManager) StartUnit(ctx context.Context, unit string) error {
	m.record("start " + unit)
	if m.startErr != nil {
		return m.startErr
	}
	id := unit[len("clearance-hub@") : len(unit)-len(".socket")]
	dir := sockets.HubDir(m.target.RuntimeDir, id)
	ln, err := sockets.BindHardened(filepath.Join(dir, sockets.HubSocketName), "hub")
	if err != nil {
		return err
	}
	m.ln = ln
	if m.tb != nil {
		m.tb.Cleanup(func() { ln.Close() })
	}
	u := HubUnits(id)
	m.set(u.Socket, "active")
	m.set(u.Ingest, "active")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if m.failHub {
				m.set(u.Service, "failed")
				c.Close()
				continue
			}
			m.set(u.Service, "active")
			go func() {
				defer c.Close()
				if _, err := bufio.NewReader(c).ReadString(0); err != nil {
					return
				}
				c.Write([]byte(`{"parameters":{"vendor":"fake"}}` + "\x00"))
			}()
		}
	}()
	return nil
}

func (m *fakeManager) StopUnit(ctx context.Context, unit string) error {
	m.record("stop " + unit)
	m.set(unit, "inactive")
	if m.ln != nil && filepath.Ext(unit) == ".socket" {
		m.ln.Close()
		m.ln = nil
	}
	return nil
}

func (m *fakeManager) ResetFailedUnit(ctx context.Context, unit string) error { return nil }

func (m *fakeManager) ActiveState(ctx context.Context, unit string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.states[unit]; ok {
		return s, nil
	}
	return "inactive", nil
}

func (m *fakeManager) Close() error { return nil }

type fakeEngager struct {
	mu         sync.Mutex
	container  string
	ns         netns.ID
	err        error
	existed    bool       // the table was there before: engaged_now false
	engages    int        // Engage calls
	disengaged []netns.ID // namespaces passed to Disengage

	grantObserve bool   // answer mode "observe"
	modeNote     string // else this note
}

func (e *fakeEngager) EngageMode(ctx context.Context, container string, ns *os.File) (verdictclient.Engagement, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.engages++
	e.container = container
	e.ns, _ = netns.Identify(ns)
	out := verdictclient.Engagement{Table: "inet clearance", EngagedNow: !e.existed, Mode: "enforce"}
	if e.grantObserve {
		out.Mode = "observe"
	} else if e.modeNote != "" {
		out.ModeNote = e.modeNote
	}
	return out, e.err
}

func (e *fakeEngager) Disengage(ctx context.Context, container string, ns *os.File) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	id, _ := netns.Identify(ns)
	e.disengaged = append(e.disengaged, id)
	return nil
}

func (e *fakeEngager) Close() error { return nil }

// env is a hook with a fake /proc, uid_map, manager and verdict service.
type env struct {
	hook     *Hook
	mgr      *fakeManager
	eng      *fakeEngager
	dialErr  error
	vdialErr error
	targets  []ManagerTarget
	pid      int
	nsID     netns.ID
	bundle   string
}

// podman's default capabilities (containers.conf), with the CAP_ prefix
// as they appear in the bundle.
var defaultCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT"}

// writeBundle writes an OCI bundle config.json holding caps in the
// bounding, effective and permitted sets, and a joined network namespace
// at netnsPath ("" for a new one).
func writeBundle(t *testing.T, dir string, caps []string, netnsPath string) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	c, _ := json.Marshal(caps)
	ns := `{"type":"network"}`
	if netnsPath != "" {
		ns = `{"type":"network","path":` + strconv.Quote(netnsPath) + `}`
	}
	b := `{"ociVersion":"1.0.2","process":{"capabilities":{"bounding":` + string(c) + `,"effective":` + string(c) +
		`,"permitted":` + string(c) + `}},"linux":{"namespaces":[{"type":"pid"},` + ns + `]}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

const testID = "e8aec775a12483c11de01996f5654378bce52a2c598606bd9bb22918e124ae49"

func newEnv(t *testing.T, uidMap string) *env {
	t.Helper()
	// Socket paths must fit sun_path: keep the tree short.
	dir, err := os.MkdirTemp("", "oh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{pid: 4242, eng: &fakeEngager{}}
	proc := filepath.Join(dir, "proc")
	os.MkdirAll(filepath.Join(proc, strconv.Itoa(e.pid), "ns"), 0o755)
	if err := os.Symlink("/proc/self/ns/net", filepath.Join(proc, strconv.Itoa(e.pid), "ns", "net")); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	e.nsID, _ = netns.Identify(f)
	f.Close()
	um := filepath.Join(dir, "uid_map")
	os.WriteFile(um, []byte(uidMap), 0o600)
	e.bundle = filepath.Join(dir, "bundle")
	writeBundle(t, e.bundle, defaultCaps, "")
	zero := 0
	// The "container" is in the test's own namespace; the hook is told
	// it runs elsewhere, as it does for a real container.
	elsewhere := netns.ID{Dev: 1, Ino: 1}
	e.hook = &Hook{
		RuntimeRoot: filepath.Join(dir, "run"), UserRuntimeBase: filepath.Join(dir, "run", "user"),
		SystemRuntimeDir: filepath.Join(dir, "sys"), UIDMap: um, EUID: &zero, ProcRoot: proc,
		HubWait: 5 * time.Second, Log: testutil.Logger(t), SelfNetns: &elsewhere,
	}
	e.hook.DialManager = func(ctx context.Context, tg ManagerTarget) (Manager, error) {
		e.targets = append(e.targets, tg)
		if e.dialErr != nil {
			return nil, e.dialErr
		}
		if e.mgr == nil {
			e.mgr = &fakeManager{states: map[string]string{}}
		}
		e.mgr.target, e.mgr.tb = tg, t
		return e.mgr, nil
	}
	e.hook.DialVerdict = func(ctx context.Context, socket string) (Engager, error) {
		if e.vdialErr != nil {
			return nil, e.vdialErr
		}
		return e.eng, nil
	}
	return e
}

// bus makes uid's user manager look reachable (a socket at
// <base>/<uid>/bus).
func (e *env) bus(t *testing.T, uid int) {
	d := filepath.Join(e.hook.UserRuntimeBase, strconv.Itoa(uid))
	os.MkdirAll(d, 0o700)
	ln, err := net.Listen("unix", filepath.Join(d, "bus"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
}

func (e *env) state() State {
	return State{ID: testID, Pid: e.pid, Bundle: e.bundle, Annotations: map[string]string{
		"io.clearance.enable": "true", "dossier.project": "proj", "dossier.task": "t\x07ask"}}
}

func TestCreateRuntimeRootful(t *testing.T) {
	e := newEnv(t, "0 0 4294967295\n")
	e.bus(t, 0)
	ctx := testutil.Context(t)
	if err := e.hook.CreateRuntime(ctx, e.state()); err != nil {
		t.Fatalf("CreateRuntime: %v", err)
	}
	path := record.Locate(e.hook.RuntimeRoot, 0, "e8aec775a124")
	rec, err := record.ReadOwned(path, uint32(os.Getuid()))
	if err != nil {
		t.Fatalf("read record: %v", err)
	}
	rec.CreatedUsec = 0
	want := record.Record{ID: testID, ID12: "e8aec775a124", Name: "e8aec775a124", PID: e.pid,
		NetnsInode: e.nsID.Ino, NetnsDev: e.nsID.Dev, OwnerUID: 0, Policy: "proj",
		Dossier: map[string]string{"project": "proj", "task": "t ask"}}
	if diff := cmp.Diff(want, rec); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
	if e.eng.container != "e8aec775a124" || e.eng.ns != e.nsID {
		t.Errorf("Engage(%q, %v), want (e8aec775a124, %v)", e.eng.container, e.eng.ns, e.nsID)
	}
	wantTarget := ManagerTarget{Scope: ScopeUser, RuntimeDir: filepath.Join(e.hook.UserRuntimeBase, "0")}
	if diff := cmp.Diff([]ManagerTarget{wantTarget}, e.targets); diff != "" {
		t.Errorf("manager targets (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"start clearance-hub@e8aec775a124.socket"}, e.mgr.calls); diff != "" {
		t.Errorf("manager calls (-want +got):\n%s", diff)
	}
	if s, _ := e.mgr.ActiveState(ctx, "clearance-hub@e8aec775a124.service"); s != "active" {
		t.Errorf("hub service %s, want active", s)
	}

	// poststop: units stopped, record and directories gone.
	e.targets = nil
	if err := e.hook.Poststop(ctx, State{ID: testID, Annotations: map[string]string{}}); err != nil {
		t.Fatalf("Poststop: %v", err)
	}
	if diff := cmp.Diff([]string{"start clearance-hub@e8aec775a124.socket",
		"stop clearance-hub@e8aec775a124.socket", "stop clearance-hub-ingest@e8aec775a124.socket",
		"stop clearance-hub@e8aec775a124.service"}, e.mgr.calls); diff != "" {
		t.Errorf("manager calls (-want +got):\n%s", diff)
	}
	for _, p := range []string{path, filepath.Dir(path), sockets.HubDir(wantTarget.RuntimeDir, "e8aec775a124")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after poststop (err %v)", p, err)
		}
	}
	// /run/clearance stays world-searchable for verdict.sock.
	if fi, err := os.Stat(filepath.Join(e.hook.RuntimeRoot, "clearance")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("runtime dir mode %v (err %v), want 0755", fi.Mode().Perm(), err)
	}
	// A second poststop (runtime retry) is harmless.
	if err := e.hook.Poststop(ctx, State{ID: testID}); err != nil {
		t.Errorf("second Poststop: %v", err)
	}
}

func TestCreateRuntimeRootless(t *testing.T) {
	e := newEnv(t, "         0       1001          1\n         1     100000      65536\n")
	e.bus(t, 1001)
	ctx := testutil.Context(t)
	if err := e.hook.CreateRuntime(ctx, e.state()); err != nil {
		t.Fatalf("CreateRuntime: %v", err)
	}
	path := filepath.Join(e.hook.RuntimeRoot, "user", "1001", "clearance", "e8aec775a124", "container.json")
	rec, err := record.Read(path)
	if err != nil {
		t.Fatalf("read record: %v", err)
	}
	if rec.OwnerUID != 1001 {
		t.Errorf("OwnerUID = %d, want 1001", rec.OwnerUID)
	}
	want := []ManagerTarget{{Scope: ScopeUser, RuntimeDir: filepath.Join(e.hook.UserRuntimeBase, "1001")}}
	if diff := cmp.Diff(want, e.targets); diff != "" {
		t.Errorf("manager targets (-want +got):\n%s", diff)
	}
	if err := e.hook.Poststop(ctx, State{ID: testID}); err != nil {
		t.Fatalf("Poststop: %v", err)
	}
	if _, err := os.Lstat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record dir left behind: %v", err)
	}
}

func TestCreateRuntimeFailures(t *testing.T) {
	engageErr := errors.New("permission denied: not the owner")
	tests := []struct {
		name       string
		setup      func(e *env)
		state      func(e *env) State
		wantErr    bool
		wantRecord bool
		wantStart  bool
	}{
		{name: "engage refused, required: abort and remove the record",
			setup: func(e *env) { e.eng.err = engageErr }, wantErr: true},
		{name: "verdict service absent, required: abort",
			setup: func(e *env) { e.vdialErr = os.ErrNotExist }, wantErr: true},
		{name: "verdict service absent, optional: run",
			setup:      func(e *env) { e.vdialErr = os.ErrNotExist; e.hook.Engage = EngageOptional },
			wantRecord: true, wantStart: true},
		{name: "engage off: never asks",
			setup:      func(e *env) { e.hook.Engage = EngageOff; e.vdialErr = errors.New("must not dial") },
			wantRecord: true, wantStart: true},
		{name: "no manager: tolerated",
			setup: func(e *env) { e.dialErr = errors.New("connection refused") }, wantRecord: true},
		{name: "start job refused: tolerated",
			setup: func(e *env) {
				e.mgr = &fakeManager{states: map[string]string{}, startErr: errors.New("unit not found")}
			}, wantRecord: true, wantStart: true},
		{name: "hub fails: tolerated",
			setup:      func(e *env) { e.mgr = &fakeManager{states: map[string]string{}, failHub: true} },
			wantRecord: true, wantStart: true},
		{name: "no pid: abort",
			state:   func(e *env) State { s := e.state(); s.Pid = 0; return s },
			wantErr: true},
		{name: "pid gone: abort",
			state:   func(e *env) State { s := e.state(); s.Pid = 4243; return s },
			wantErr: true},
		{name: "opted out: nothing happens",
			setup: func(e *env) { e.vdialErr = errors.New("must not dial") },
			state: func(e *env) State {
				s := e.state()
				s.Annotations[AnnotationEnable] = "false"
				return s
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, "0 0 4294967295\n")
			e.bus(t, 0)
			if tt.setup != nil {
				tt.setup(e)
			}
			st := e.state()
			if tt.state != nil {
				st = tt.state(e)
			}
			err := e.hook.CreateRuntime(testutil.Context(t), st)
			if (err != nil) != tt.wantErr {
				t.Fatalf("CreateRuntime err = %v, wantErr %v", err, tt.wantErr)
			}
			_, rerr := os.Stat(record.Locate(e.hook.RuntimeRoot, 0, "e8aec775a124"))
			if gotRecord := rerr == nil; gotRecord != tt.wantRecord {
				t.Errorf("record present = %v, want %v", gotRecord, tt.wantRecord)
			}
			started := e.mgr != nil && len(e.mgr.calls) > 0
			if started != tt.wantStart {
				t.Errorf("hub start attempted = %v, want %v", started, tt.wantStart)
			}
			if e.mgr != nil && e.mgr.ln != nil {
				e.mgr.ln.Close()
			}
		})
	}
}

func TestTarget(t *testing.T) {
	tests := []struct {
		name    string
		mode    ManagerMode
		uid     uint32
		bus     bool
		want    Scope
		wantErr bool
	}{
		{"root with a user manager", ManagerAuto, 0, true, ScopeUser, false},
		{"root without a user manager", ManagerAuto, 0, false, ScopeSystem, false},
		{"a user, even without a manager yet", ManagerAuto, 1001, false, ScopeUser, false},
		{"forced user", ManagerUser, 0, false, ScopeUser, false},
		{"forced system", ManagerSystem, 0, true, ScopeSystem, false},
		{"system for a rootless container", ManagerSystem, 1001, false, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, "0 0 4294967295\n")
			if tt.bus {
				e.bus(t, int(tt.uid))
			}
			e.hook.Manager = tt.mode
			e.hook.defaults()
			got, err := e.hook.target(tt.uid)
			if (err != nil) != tt.wantErr {
				t.Fatalf("target err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && got.Scope != tt.want {
				t.Errorf("scope = %v, want %v", got.Scope, tt.want)
			}
		})
	}
}
