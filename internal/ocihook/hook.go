// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/sanitize"
	"github.com/terok-ai/clearance/internal/sockets"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// EngageMode says what createRuntime does when the ruleset cannot be
// engaged.
type EngageMode string

const (
	// EngageRequired aborts the container (exit 1) when the verdict
	// service is unreachable or refuses: a container that asked for
	// clearance never runs without its firewall. The default.
	EngageRequired EngageMode = "required"
	// EngageOptional logs the failure and lets the container run
	// unfirewalled (for hosts where the verdict service is optional, such
	// as terok-shield owning the ruleset).
	EngageOptional EngageMode = "optional"
	// EngageOff never calls the verdict service.
	EngageOff EngageMode = "off"
)

// ManagerMode chooses the service manager for root's containers.
type ManagerMode string

const (
	// ManagerAuto uses the owner's user manager; for host uid 0 that is
	// root's user manager if one runs (/run/user/0), else the system
	// manager. The default.
	ManagerAuto ManagerMode = "auto"
	// ManagerUser always uses the owner's user manager.
	ManagerUser ManagerMode = "user"
	// ManagerSystem always uses the system manager (rootful containers
	// only; a rootless container's owner cannot start system units).
	ManagerSystem ManagerMode = "system"
)

// Engager engages and disengages a container's ruleset;
// *verdictclient.Client implements it through the verdict service.
type Engager interface {
	EngageMode(ctx context.Context, container string, ns *os.File) (verdictclient.Engagement, error)
	Disengage(ctx context.Context, container string, ns *os.File) error
	Close() error
}

// Hook holds the hook's configuration and seams. The zero value with a
// Log is usable: every empty field takes the documented default. A Hook
// serves one hook invocation at a time.
type Hook struct {
	// RuntimeRoot is where runtime records live (record.Locate); default
	// "/run".
	RuntimeRoot string
	// UserRuntimeBase holds the users' runtime directories; default
	// "/run/user". The owner's is <UserRuntimeBase>/<uid>: its systemd
	// manager, and the hub's sockets (%t/clearance/<id12>/).
	UserRuntimeBase string
	// SystemRuntimeDir is %t of the system manager; default "/run".
	SystemRuntimeDir string
	// VerdictSocket is the verdict service; default
	// verdictclient.DefaultSocket.
	VerdictSocket string
	// Engage is the failure policy for the ruleset; default
	// EngageRequired.
	Engage EngageMode
	// Manager chooses the service manager; default ManagerAuto.
	Manager ManagerMode
	// HubWait bounds the wait for the hub to report READY=1 after its
	// socket started; default 10s. Exceeding it is logged, not fatal.
	HubWait time.Duration
	// UIDMap is the uid_map to derive the host uid from; default
	// /proc/self/uid_map.
	UIDMap string
	// EUID is the effective uid to map; default os.Geteuid(). For tests.
	EUID *int
	// ProcRoot is where /proc is mounted; default "/proc".
	ProcRoot string
	// SelfNetns identifies the hook's own network namespace (the
	// runtime's, normally the host's); nil means /proc/thread-self/ns/net.
	// A container in it shares the host's network (--network host): its
	// ruleset would firewall the host, so it is never engaged.
	SelfNetns *netns.ID
	// AllowCapabilities lists the capabilities of [FirewallCapabilities]
	// a container may hold all the same (hook.allow_capabilities of the
	// system configuration); a container holding any other of them is
	// refused.
	AllowCapabilities []string

	// RunWithoutUserManager lets a rootless container start although its
	// owner has no running systemd --user, firewalled but without prompts
	// (hook.without_user_manager: run). By default the hook refuses it:
	// nothing could start its hub.
	RunWithoutUserManager bool

	// DialManager and DialVerdict are seams for tests; nil means the
	// real D-Bus manager ([DialManager]) and verdict client.
	DialManager func(ctx context.Context, t ManagerTarget) (Manager, error)
	DialVerdict func(ctx context.Context, socket string) (Engager, error)

	// Log receives progress and failures; nil discards.
	Log *slog.Logger
}

func (h *Hook) defaults() {
	if h.RuntimeRoot == "" {
		h.RuntimeRoot = record.DefaultRuntimeRoot
	}
	if h.UserRuntimeBase == "" {
		h.UserRuntimeBase = "/run/user"
	}
	if h.SystemRuntimeDir == "" {
		h.SystemRuntimeDir = "/run"
	}
	if h.VerdictSocket == "" {
		h.VerdictSocket = verdictclient.DefaultSocket
	}
	if h.Engage == "" {
		h.Engage = EngageRequired
	}
	if h.Manager == "" {
		h.Manager = ManagerAuto
	}
	if h.HubWait <= 0 {
		h.HubWait = 10 * time.Second
	}
	if h.ProcRoot == "" {
		h.ProcRoot = "/proc"
	}
	if h.DialManager == nil {
		h.DialManager = DialManager
	}
	if h.DialVerdict == nil {
		h.DialVerdict = func(ctx context.Context, socket string) (Engager, error) {
			return verdictclient.Dial(ctx, socket)
		}
	}
	if h.Log == nil {
		h.Log = slog.New(slog.DiscardHandler)
	}
}

// hostUID is the host uid owning the container (the hook's own).
func (h *Hook) hostUID() (uint32, error) {
	euid := os.Geteuid()
	if h.EUID != nil {
		euid = *h.EUID
	}
	return HostUID(h.UIDMap, euid)
}

// target picks the service manager for the host uid.
func (h *Hook) target(uid uint32) (ManagerTarget, error) {
	user := ManagerTarget{Scope: ScopeUser, RuntimeDir: filepath.Join(h.UserRuntimeBase, strconv.FormatUint(uint64(uid), 10))}
	system := ManagerTarget{Scope: ScopeSystem, RuntimeDir: h.SystemRuntimeDir}
	switch h.Manager {
	case ManagerUser:
		return user, nil
	case ManagerSystem:
		if uid != 0 {
			return ManagerTarget{}, fmt.Errorf("choose manager: -manager system needs a rootful container (host uid %d)", uid)
		}
		return system, nil
	}
	if uid != 0 || user.Reachable() {
		return user, nil
	}
	return system, nil
}

// CreateRuntime handles the createRuntime stage for st: record, ruleset,
// hub. It returns an error only when the container must not start.
func (h *Hook) CreateRuntime(ctx context.Context, st State) error {
	h.defaults()
	id12 := st.ID12()
	log := h.Log.With("container", id12, "stage", "createRuntime")
	if st.OptedOut() {
		log.Info("clearance disabled by annotation", "annotation", AnnotationEnable)
		return nil
	}
	if st.Pid <= 1 {
		return fmt.Errorf("createRuntime: state has no container pid (%d)", st.Pid)
	}
	mode, err := st.Mode()
	if err != nil {
		log.Error("container refused: "+err.Error(), "MESSAGE_ID", audit.MsgRefused)
		return fmt.Errorf("createRuntime: %w", err)
	}
	uid, err := h.hostUID()
	if err != nil {
		return fmt.Errorf("createRuntime: %w", err)
	}
	ns, err := os.Open(filepath.Join(h.ProcRoot, strconv.Itoa(st.Pid), "ns", "net"))
	if err != nil {
		return fmt.Errorf("open container netns: %w", err)
	}
	defer ns.Close()
	nsID, err := netns.Identify(ns)
	if err != nil {
		return fmt.Errorf("identify container netns: %w", err)
	}
	if h.Engage != EngageOff {
		// Refused whatever -engage says: the container would run with a
		// firewall it can take down itself.
		caps, err := BundleCapabilities(st.Bundle)
		if err != nil {
			return fmt.Errorf("cannot tell the container's capabilities, so it may not start (fail closed): %w", err)
		}
		if err := CheckCapabilities(caps, h.AllowCapabilities); err != nil {
			log.Error("container refused: "+err.Error(), "MESSAGE_ID", audit.MsgRefused, "capabilities", strings.Join(caps, ","))
			return err
		}
		if err := h.checkUserManager(uid); err != nil {
			log.Error("container refused: "+err.Error(), "MESSAGE_ID", audit.MsgRefused, "owner_uid", uid)
			return err
		}
	}
	shared, err := h.sharesOwnNetns(nsID)
	if err != nil {
		return err
	}

	rec := record.Record{
		ID: st.ID, ID12: id12, Name: displayName(st), PID: st.Pid,
		NetnsInode: nsID.Ino, NetnsDev: nsID.Dev, OwnerUID: uid,
		Dossier: Dossier(st.Annotations), Policy: PolicyName(st.Annotations),
		CreatedUsec: time.Now().UnixMicro(), Mode: mode,
	}
	if p, err := BundleNetnsPath(st.Bundle); err != nil {
		log.Warn("cannot tell whether the container joined an existing network namespace", "bundle", st.Bundle, "err", err)
	} else if filepath.IsAbs(p) && len(p) <= 4096 {
		rec.NetnsPath = p
	}
	if rs, err := BundleResolvers(st.Bundle); err != nil {
		// Not fatal: the configuration may name resolvers; without any,
		// the container's DNS is refused (fails closed).
		log.Warn("no resolvers from the bundle's resolv.conf", "bundle", st.Bundle, "err", err)
	} else {
		for _, a := range rs {
			rec.Resolvers = append(rec.Resolvers, a.String())
		}
	}
	path := record.Locate(h.RuntimeRoot, int(uid), id12)
	if uid == 0 {
		// /run/clearance also holds verdict.sock, which every user must
		// reach: never let the first hook create it private.
		if err := os.MkdirAll(filepath.Join(h.RuntimeRoot, "clearance"), 0o755); err != nil {
			return fmt.Errorf("create runtime dir: %w", err)
		}
	}
	if err := record.Write(filepath.Dir(path), rec); err != nil {
		return err
	}
	log.Info("runtime record written", "path", path, "pid", st.Pid, "netns", nsID.String(), "owner_uid", uid, "policy", rec.Policy,
		"resolvers", strings.Join(rec.Resolvers, ","))

	if shared {
		err = h.engageFailed(log, fmt.Errorf("%s; run it with a network of its own (not --network host), "+
			"or opt out with --annotation %s=false", hostNetnsReason, AnnotationEnable))
	} else {
		err = h.engage(ctx, log, id12, ns, &rec, path)
	}
	if err != nil {
		removeRecord(path)
		log.Error("container refused: "+err.Error(), "MESSAGE_ID", audit.MsgRefused)
		return err
	}

	if err := h.startHub(ctx, log, uid, id12); err != nil {
		// The ruleset is in place: blocked stays blocked, only the prompts
		// are missing. Let the container run.
		log.Warn("hub not started; the container runs firewalled but without prompts", "err", err)
	}
	return nil
}

// ErrNoUserManager is wrapped by the error that refuses a rootless
// container whose owner has no running systemd --user.
var ErrNoUserManager = errors.New("no systemd --user")

// checkUserManager refuses a container whose hub would have to start in a
// user manager that does not run (su, sudo -u, cron: no login, no
// linger): its ruleset would block with nobody ever asked. The system
// configuration may let it run all the same (RunWithoutUserManager).
// Root's containers are not refused: -manager auto falls back to the
// system manager, and -manager user is the administrator's own choice.
func (h *Hook) checkUserManager(uid uint32) error {
	t, err := h.target(uid)
	if uid == 0 || err != nil || t.Scope != ScopeUser || t.Reachable() || h.RunWithoutUserManager {
		return nil // a target error is startHub's to report
	}
	return fmt.Errorf("%w for uid %d (no manager at %s), so nothing could prompt for this container: "+
		"log in as that user, or run `loginctl enable-linger %d`, then start it again "+
		"(an administrator may let such containers run without prompts: hook.without_user_manager: run)",
		ErrNoUserManager, uid, t.RuntimeDir, uid)
}

// hostNetnsReason says why a container in the hook's own network
// namespace is not firewalled.
const hostNetnsReason = "the container shares the network namespace of its runtime (the host's): " +
	"its ruleset would firewall the host, and clearance firewalls only a network namespace of the container's own"

// sharesOwnNetns reports whether id is the hook's own network namespace.
func (h *Hook) sharesOwnNetns(id netns.ID) (bool, error) {
	self := h.SelfNetns
	if self == nil {
		f, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			return false, fmt.Errorf("open own netns: %w", err)
		}
		defer f.Close()
		own, err := netns.Identify(f)
		if err != nil {
			return false, fmt.Errorf("identify own netns: %w", err)
		}
		self = &own
	}
	return id == *self, nil
}

// engageFailed applies the engage failure policy to err: nil (logged)
// with -engage optional, else the error that aborts the container.
func (h *Hook) engageFailed(log *slog.Logger, err error) error {
	if h.Engage == EngageOptional {
		log.Warn("ruleset NOT engaged; the container runs without clearance's firewall (-engage optional)", "verdict_socket", h.VerdictSocket, "err", err)
		return nil
	}
	return fmt.Errorf("engage ruleset through %s (container aborted, fail closed): %w", h.VerdictSocket, err)
}

// engage asks the verdict service to install or verify the ruleset. When
// it installed it now, rec (at path) is marked so that poststop takes it
// down again from a namespace that outlives the container.
func (h *Hook) engage(ctx context.Context, log *slog.Logger, id12 string, ns *os.File, rec *record.Record, path string) error {
	if h.Engage == EngageOff {
		log.Info("ruleset not engaged (-engage off)")
		return nil
	}
	c, err := h.DialVerdict(ctx, h.VerdictSocket)
	if err != nil {
		return h.engageFailed(log, fmt.Errorf("verdict service unreachable: %w", err))
	}
	defer c.Close()
	e, err := c.EngageMode(ctx, id12, ns)
	if err != nil {
		return h.engageFailed(log, err)
	}
	log.Info("ruleset engaged", "table", e.Table, "created", e.EngagedNow, "mode", e.Mode)
	switch {
	case e.Observing():
		log.Warn("the container runs in OBSERVE MODE: its firewall is NOT ENFORCED; new connections are logged and let through",
			"annotation", AnnotationMode+"="+record.ModeObserve)
	case rec.Mode == record.ModeObserve:
		// Fall back to enforcing (the safe side), and say why.
		note := e.ModeNote
		if note == "" {
			note = "the verdict service did not grant it"
		}
		log.Warn("observe mode refused; the container runs ENFORCED: "+note, "annotation", AnnotationMode+"="+record.ModeObserve)
	}
	now := e.EngagedNow
	if now && rec.NetnsPath != "" {
		rec.Engaged = true
		if err := record.Write(filepath.Dir(path), *rec); err != nil {
			log.Warn("cannot mark the record: poststop will not take the ruleset down", "err", err)
		}
	}
	return nil
}

// startHub starts the hub's socket unit, connects once so it activates,
// and waits (bounded) until the service is active (READY=1).
func (h *Hook) startHub(ctx context.Context, log *slog.Logger, uid uint32, id12 string) error {
	t, err := h.target(uid)
	if err != nil {
		return err
	}
	m, err := h.DialManager(ctx, t)
	if err != nil {
		return err
	}
	defer m.Close()
	u := HubUnits(id12)
	if err := m.StartUnit(ctx, u.Socket); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, h.HubWait)
	defer cancel()
	if err := waitState(wctx, m, u.Socket, "active"); err != nil {
		return err
	}
	sock := filepath.Join(sockets.HubDir(t.RuntimeDir, id12), sockets.HubSocketName)
	if err := poke(wctx, sock); err != nil {
		return fmt.Errorf("activate hub: %w", err)
	}
	if err := waitState(wctx, m, u.Service, "active"); err != nil {
		return err
	}
	log.Info("hub ready", "unit", u.Service, "manager", t.Scope.String(), "socket", sock)
	return nil
}

// waitState polls unit until it reaches want. "failed" (or "inactive"
// after having left it, for want "active") ends the wait with an error.
func waitState(ctx context.Context, m Manager, unit, want string) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		s, err := m.ActiveState(ctx, unit)
		if err != nil {
			return err
		}
		if s == want {
			return nil
		}
		if s == "failed" && want != "failed" {
			return fmt.Errorf("%s failed", unit)
		}
		last = s
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to be %s (is %s): %w", unit, want, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// poke connects to the hub's varlink socket and asks
// org.varlink.service.GetInfo: the connection activates the service, and
// the reply proves the hub serves.
func poke(ctx context.Context, path string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte(`{"method":"org.varlink.service.GetInfo"}` + "\x00")); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for got := 0; ; {
		n, err := c.Read(buf[got:])
		got += n
		if i := strings.IndexByte(string(buf[:got]), 0); i >= 0 {
			if strings.Contains(string(buf[:i]), `"error"`) {
				return fmt.Errorf("GetInfo: %s", buf[:i])
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read GetInfo reply: %w", err)
		}
		if got == len(buf) {
			return nil // a long reply is a reply
		}
	}
}

// Poststop handles the poststop stage for st: stop the hub's units and
// remove the record. Failures are logged and returned; the container is
// gone either way.
func (h *Hook) Poststop(ctx context.Context, st State) error {
	h.defaults()
	id12 := st.ID12()
	log := h.Log.With("container", id12, "stage", "poststop")
	if st.OptedOut() {
		return nil
	}
	uid, err := h.hostUID()
	if err != nil {
		return fmt.Errorf("poststop: %w", err)
	}
	var errs []error
	t, err := h.target(uid)
	if err == nil {
		err = h.stopHub(ctx, log, t, id12)
	}
	if err != nil {
		errs = append(errs, err)
	}
	path := record.Locate(h.RuntimeRoot, int(uid), id12)
	if rec, err := record.ReadOwned(path, uid); err == nil && rec.Engaged && rec.NetnsPath != "" {
		if err := h.disengageShared(ctx, log, uid, rec); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeRecord(path); err != nil {
		errs = append(errs, err)
	} else {
		log.Info("runtime record removed", "path", path)
	}
	if t.RuntimeDir != "" {
		if err := sockets.RemoveDirIfEmpty(sockets.HubDir(t.RuntimeDir, id12)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// disengageShared takes the ruleset createRuntime installed down from a
// network namespace that outlives the container (rec.NetnsPath: a pod's,
// another container's, a named one), unless another running container of
// the same owner still uses it; that one then inherits the duty.
func (h *Hook) disengageShared(ctx context.Context, log *slog.Logger, uid uint32, rec record.Record) error {
	log = log.With("netns_path", rec.NetnsPath)
	f, err := os.Open(rec.NetnsPath)
	if err != nil {
		log.Info("the joined network namespace is gone; nothing to disengage", "err", err)
		return nil
	}
	defer f.Close()
	id, err := netns.Identify(f)
	if err != nil || id.Ino != rec.NetnsInode || id.Dev != rec.NetnsDev {
		log.Info("the path names another network namespace now; nothing to disengage")
		return nil
	}
	if heir := h.liveRecordIn(uid, id, rec.ID12); heir != nil {
		heir.rec.Engaged = true
		if err := record.Write(filepath.Dir(heir.path), heir.rec); err != nil {
			return fmt.Errorf("hand the ruleset over to container %s: %w", heir.rec.ID12, err)
		}
		log.Info("ruleset stays: another container still uses the namespace", "heir", heir.rec.ID12)
		return nil
	}
	c, err := h.DialVerdict(ctx, h.VerdictSocket)
	if err != nil {
		return fmt.Errorf("disengage the joined namespace: verdict service unreachable: %w", err)
	}
	defer c.Close()
	if err := c.Disengage(ctx, rec.ID12, f); err != nil {
		return fmt.Errorf("disengage the joined namespace: %w", err)
	}
	log.Info("ruleset taken down from the joined network namespace")
	return nil
}

// liveRecord is a record found on disk.
type liveRecord struct {
	path string
	rec  record.Record
}

// liveRecordIn returns the record of another running container of uid
// (other than id12) whose process is in the network namespace id, or nil.
func (h *Hook) liveRecordIn(uid uint32, id netns.ID, id12 string) *liveRecord {
	dir := filepath.Dir(filepath.Dir(record.Locate(h.RuntimeRoot, int(uid), id12)))
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	for _, e := range ents {
		if e.Name() == id12 || !record.ValidID(e.Name()) {
			continue
		}
		p := record.Locate(h.RuntimeRoot, int(uid), e.Name())
		r, err := record.ReadOwned(p, uid)
		if err != nil || r.NetnsInode != id.Ino || r.NetnsDev != id.Dev {
			continue
		}
		f, err := os.Open(filepath.Join(h.ProcRoot, strconv.Itoa(r.PID), "ns", "net"))
		if err != nil {
			continue
		}
		got, err := netns.Identify(f)
		f.Close()
		if err == nil && got == id {
			return &liveRecord{path: p, rec: r}
		}
	}
	return nil
}

// stopHub stops the hub's sockets and service and waits (bounded) until
// they are inactive, then clears any failed state so no trace is left.
func (h *Hook) stopHub(ctx context.Context, log *slog.Logger, t ManagerTarget, id12 string) error {
	if !t.Reachable() {
		log.Info("no service manager to stop the hub with", "manager", t.Scope.String(), "runtime_dir", t.RuntimeDir)
		return nil
	}
	m, err := h.DialManager(ctx, t)
	if err != nil {
		return err
	}
	defer m.Close()
	u := HubUnits(id12)
	var errs []error
	// Sockets first, so nothing re-activates the service meanwhile.
	for _, unit := range []string{u.Socket, u.Ingest, u.Service} {
		if err := m.StopUnit(ctx, unit); err != nil {
			errs = append(errs, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, h.HubWait)
	defer cancel()
	for _, unit := range []string{u.Service, u.Socket, u.Ingest} {
		if err := waitStopped(wctx, m, unit); err != nil {
			errs = append(errs, err)
		}
		m.ResetFailedUnit(ctx, unit) // a unit that did not fail has nothing to reset
	}
	if len(errs) == 0 {
		log.Info("hub stopped", "unit", u.Service, "manager", t.Scope.String())
	}
	return errors.Join(errs...)
}

func waitStopped(ctx context.Context, m Manager, unit string) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s, err := m.ActiveState(ctx, unit)
		if err != nil {
			return err
		}
		if s == "inactive" || s == "failed" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to stop (is %s): %w", unit, s, ctx.Err())
		case <-tick.C:
		}
	}
}

// removeRecord removes the record at path and its directory if empty. A
// missing record is not an error.
func removeRecord(path string) error {
	if path == "" {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove record: %w", err)
	}
	return sockets.RemoveDirIfEmpty(filepath.Dir(path))
}

// Dossier returns the container's dossier from its dossier.* annotations:
// the key without the prefix, which must be 1..64 characters of
// [A-Za-z0-9_.-]; the value sanitised like every string from a container
// (printable ASCII, 256 characters). At most 32 entries are kept, by key
// order. Never nil.
func Dossier(ann map[string]string) map[string]string {
	keys := make([]string, 0, len(ann))
	for k := range ann {
		if rest, ok := strings.CutPrefix(k, DossierPrefix); ok && record.ValidName(rest, maxDossierKey) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := make(map[string]string, min(len(keys), maxDossierEntries))
	for _, k := range keys {
		if len(out) == maxDossierEntries {
			break
		}
		out[strings.TrimPrefix(k, DossierPrefix)] = sanitize.String(ann[k], maxDossierValue)
	}
	return out
}

// PolicyName returns the container's policy: the io.clearance.policy
// annotation, else dossier.project, if it is a valid policy name (1..128
// characters of [A-Za-z0-9_.-], starting with a letter or digit); else ""
// (the verdict service's default policy). Podman's OCI state carries no
// image name, so the image cannot be the fallback.
func PolicyName(ann map[string]string) string {
	for _, k := range []string{AnnotationPolicy, DossierPrefix + "project"} {
		if v := ann[k]; record.ValidName(v, 128) {
			return v
		}
	}
	return ""
}

// displayName is the record's name: io.clearance.name, else
// dossier.name, else the short id; sanitised.
func displayName(st State) string {
	for _, k := range []string{AnnotationName, DossierPrefix + "name"} {
		if v := strings.TrimSpace(st.Annotations[k]); v != "" {
			return sanitize.String(v, 256)
		}
	}
	return st.ID12()
}
