// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package verdict

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/dnsname"
	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/flows"
	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/policy"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/iosystemdservice"
	fw1 "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearanceverdict1"
)

// Product identity reported by org.varlink.service.GetInfo.
const (
	Vendor  = "terok"
	Product = "clearance-verdict"
	URL     = "https://github.com/terok-ai/clearance"
)

// Version is set at link time
// (-ldflags "-X github.com/terok-ai/clearance/internal/verdict.Version=…").
var Version = "0.1.0-dev"

// Scopes of org.terok.ClearanceFirewall1.Apply.
const (
	ScopeOnce      = audit.ScopeOnce
	ScopeContainer = audit.ScopeContainer
	ScopeAlways    = audit.ScopeAlways
)

// Ruleset modes and how verdicts reach terok-shield.
const (
	ModeBuiltin = "builtin"
	ModeShield  = "terok-shield"

	// ShieldApplySets writes into terok-shield's sets with nftables.
	ShieldApplySets = "sets"
	// ShieldApplyExec runs terok-shield allow|deny, as the seed did.
	ShieldApplyExec = "exec"
)

// UserPolicyDir returns where policies of containers owned by uid live:
// <dir>/uid-<uid> (uid ≠ 0), or dir itself for root. "always" verdicts of a
// user are appended there, never to a file other users' containers read.
func UserPolicyDir(dir string, uid uint32) string {
	if uid == 0 {
		return dir
	}
	return filepath.Join(dir, "uid-"+strconv.FormatUint(uint64(uid), 10))
}

// Config configures a [Service]. Zero fields take the documented defaults.
type Config struct {
	// RuntimeRoot is where runtime records are found (see record.Locate);
	// "" means /run.
	RuntimeRoot string
	// PolicyDir is the administrator's policy directory
	// (policy.DefaultDir when ""), searched first. Engage loads the
	// container's policy by name from PolicyDir then PolicyPath and, for a
	// container owned by a user, <PolicyDir>/uid-<uid>/<name>.yaml on top
	// ([UserPolicyDir], policy.LoadLayered); "always" verdicts are
	// appended to that per-uid file (PolicyDir itself for root).
	PolicyDir string
	// PolicyPath lists the directories searched for policies and their
	// includes after PolicyDir, first hit winning; never written to. Nil
	// means policy.SharedDir (the shipped profiles); an empty non-nil
	// slice searches PolicyDir only.
	PolicyPath []string
	// Mode is ModeBuiltin (default) or ModeShield.
	Mode string
	// ShieldApply is ShieldApplySets (default) or ShieldApplyExec; only
	// used in ModeShield.
	ShieldApply string
	// Group is the NFLOG group (default 100).
	Group uint16
	// CopyRange is the bytes copied per NFLOG record (0: nflog default).
	CopyRange uint16
	// BlockPrefix is the built-in ruleset's log prefix ("" for the nft
	// default).
	BlockPrefix string
	// DNSMark is the firewall mark of the DNS forwarder's sockets (0:
	// nft.DefaultDNSMark).
	DNSMark uint32
	// TCPReset refuses blocked TCP connections with a reset (see
	// nft.Ruleset.TCPReset).
	TCPReset bool
	// Resolvers are the DNS servers the forwarder asks. Empty means the
	// nameservers of the container's resolv.conf as its runtime record
	// captured it at createRuntime; the policy's resolvers are added to
	// either.
	Resolvers []netip.Addr
	// OnceTTL is the lifetime of a "once" verdict without ttl (default 1h).
	OnceTTL time.Duration
	// KeepEstablished leaves established connections alone when a
	// verdict is revoked (verdict.keep_established). By default Revoke
	// deletes the conntrack entries of the revoked destination in the
	// container's namespace, so an allowed connection does not outlive
	// its verdict.
	KeepEstablished bool
	// Observe says whose containers may run in observe mode (their
	// record's mode "observe"); the zero value allows nobody.
	Observe ObservePolicy
	// AskPort is the port of the containers' ask endpoint (Ask); 0 turns
	// it off.
	AskPort uint16

	// MaxConnsPerOwner bounds the connections one user may hold open at
	// once, counting its subordinate uids (SubUIDFile) as the user
	// itself; root is not limited. Default [DefaultMaxConnsPerOwner].
	MaxConnsPerOwner int
	// SubUIDFile lists the users' subordinate uid ranges (default
	// [DefaultSubUIDFile]).
	SubUIDFile string
	// HostNetns identifies the network namespace the service must never
	// act on: the initial one, which is no container's. Nil means the
	// namespace the service itself was started in (a system service runs
	// in the initial one). Tests set a throwaway namespace.
	HostNetns *netns.ID

	// Backend opens firewalls. Nil means NFTBackend with the layouts of
	// Mode (nft.Builtin, or nft.ShieldTiered then nft.Shield).
	Backend Backend
	// Bind binds NFLOG (nil: [NFLOGBind]).
	Bind Binder
	// Shield runs terok-shield in ShieldApplyExec mode. Required there.
	Shield ShieldRunner
	// Level is changed by io.systemd.service.SetLogLevel (root only).
	Level *slog.LevelVar
	// Log receives audit records and errors; nil discards.
	Log *slog.Logger
	// Now returns the wall clock (nil: time.Now); expiry times use it.
	Now func() time.Time
}

// Service implements the verdict service's varlink interfaces. It keeps
// no state between calls and is safe for concurrent use.
type Service struct {
	cfg    Config
	log    *slog.Logger
	cache  fwCache       // open firewalls per namespace, kept between calls
	owners *subUIDs      // who a peer uid counts as, for connection limits
	guard  *rulesetGuard // bounds what a call reads (nil with a custom Backend)
	calls  callSlots     // calls in progress per owner
}

// New checks cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Mode == "" {
		cfg.Mode = ModeBuiltin
	}
	if cfg.ShieldApply == "" {
		cfg.ShieldApply = ShieldApplySets
	}
	if cfg.Mode != ModeBuiltin && cfg.Mode != ModeShield {
		return nil, fmt.Errorf("new verdict service: unknown ruleset mode %q", cfg.Mode)
	}
	if cfg.ShieldApply != ShieldApplySets && cfg.ShieldApply != ShieldApplyExec {
		return nil, fmt.Errorf("new verdict service: unknown shield apply mode %q", cfg.ShieldApply)
	}
	if cfg.execMode() && cfg.Shield == nil {
		return nil, errors.New("new verdict service: shield exec mode needs a ShieldRunner")
	}
	if cfg.PolicyDir == "" {
		cfg.PolicyDir = policy.DefaultDir
	}
	if cfg.PolicyPath == nil {
		cfg.PolicyPath = []string{policy.SharedDir}
	}
	if cfg.Group == 0 {
		cfg.Group = nft.DefaultGroup
	}
	if cfg.OnceTTL <= 0 {
		cfg.OnceTTL = time.Hour
	}
	var guard *rulesetGuard
	if cfg.Backend == nil {
		layouts := []nft.Layout{nft.Builtin}
		if cfg.Mode == ModeShield {
			layouts = []nft.Layout{nft.ShieldTiered, nft.Shield}
		}
		cfg.Backend = NFTBackend{Layouts: layouts}
		guard = &rulesetGuard{tables: map[string]string{}}
		for _, l := range layouts {
			guard.tables[l.Table] = l.NAT
		}
	}
	if cfg.Bind == nil {
		cfg.Bind = NFLOGBind
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxConnsPerOwner <= 0 {
		cfg.MaxConnsPerOwner = DefaultMaxConnsPerOwner
	}
	if cfg.SubUIDFile == "" {
		cfg.SubUIDFile = DefaultSubUIDFile
	}
	if cfg.HostNetns == nil {
		id, err := ownNetns()
		if err != nil {
			return nil, fmt.Errorf("new verdict service: %w", err)
		}
		cfg.HostNetns = &id
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, log: log, owners: &subUIDs{path: cfg.SubUIDFile, log: log}, guard: guard,
		calls: callSlots{max: MaxCallsPerOwner}}, nil
}

// ownNetns identifies the network namespace of the calling thread's
// process as it was started (a thread that is in no foreign namespace:
// [netns.Do] threads never return to the scheduler).
func ownNetns() (netns.ID, error) {
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return netns.ID{}, fmt.Errorf("open own network namespace: %w", err)
	}
	defer f.Close()
	return netns.Identify(f)
}

func (c *Config) execMode() bool { return c.Mode == ModeShield && c.ShieldApply == ShieldApplyExec }

func (c *Config) dnsMark() uint32 {
	if c.DNSMark == 0 {
		return nft.DefaultDNSMark
	}
	return c.DNSMark
}

// Varlink returns a varlink service with org.terok.ClearanceVerdict1,
// org.terok.ClearanceFirewall1 and io.systemd.service registered.
func (s *Service) Varlink() (*varlink.Service, error) {
	svc, err := varlink.NewService(Vendor, Product, Version, URL)
	if err != nil {
		return nil, err
	}
	if err := svc.RegisterInterface(orgterokclearanceverdict1.VarlinkNew(&compat{s: s})); err != nil {
		return nil, err
	}
	if err := svc.RegisterInterface(fw1.VarlinkNew(&firewall1{s: s})); err != nil {
		return nil, err
	}
	sd := &varlinkapi.SystemdService{Level: s.cfg.Level, Allowed: func(c *iosystemdservice.VarlinkCall) bool {
		uid, err := peerUID(&c.Call)
		return err == nil && uid == 0
	}}
	if err := svc.RegisterInterface(iosystemdservice.VarlinkNew(sd)); err != nil {
		return nil, err
	}
	return svc, nil
}

// Close closes the firewall connections kept between calls and waits
// for them. Call it when the service has stopped serving ([Run] does).
func (s *Service) Close() { s.cache.closeAll() }

// openFirewall returns t's firewall (cached between calls, see fwCache)
// and the func that releases it, for an operation that reads the
// ruleset: the guard counts it first.
func (s *Service) openFirewall(t *target) (Firewall, func(), error) {
	return s.openFirewallFor(t, true)
}

// openFirewallFor is [Service.openFirewall]; reads false is for an
// operation that reads nothing of the ruleset (Learn: it sends its
// elements and takes the kernel's acknowledgements, whatever else the
// owner put in the namespace). The guard is then skipped in the built-in
// mode, where opening a firewall reads nothing either: its dumps would
// cost more than the operation (a netns-switched thread, one dump per
// table, set and element list), and Learn is on the path of every DNS
// answer with a new address.
func (s *Service) openFirewallFor(t *target, reads bool) (Firewall, func(), error) {
	if s.guard != nil && (reads || s.cfg.Mode != ModeBuiltin) {
		// The owner may have filled its ruleset since the last call.
		if err := s.guard.check(int(t.ns.Fd())); err != nil {
			return nil, nil, &firewallError{op: "read ruleset", err: err}
		}
	}
	fw, release, err := s.cache.get(t.id, func() (Firewall, error) { return s.cfg.Backend.Open(int(t.ns.Fd())) })
	if err != nil {
		return nil, nil, &firewallError{op: "open", err: err}
	}
	return fw, release, nil
}

// failed drops t's cached firewall after an operation failed, in case the
// failure left its connection unusable, and returns err.
func (s *Service) failed(t *target, err error) error {
	s.cache.invalidate(t.id)
	return err
}

// firewallError is a failed firewall operation.
type firewallError struct {
	op  string
	err error
}

func (e *firewallError) Error() string { return e.op + ": " + e.err.Error() }
func (e *firewallError) Unwrap() error { return e.err }

// ruleset builds the built-in ruleset for t from the configuration and
// the container's policies.
func (s *Service) ruleset(t *target) (nft.Ruleset, error) {
	rs, _, err := s.policy(t)
	return rs, err
}

// policy builds the built-in ruleset for t from the configuration and the
// container's policies, and returns the policies' name rules (for the
// DNS forwarder) with it.
func (s *Service) policy(t *target) (nft.Ruleset, []fw1.NameRule, error) {
	rs := nft.Ruleset{
		Group: s.cfg.Group, BlockPrefix: s.cfg.BlockPrefix, TCPReset: s.cfg.TCPReset, DNSMark: s.cfg.dnsMark(),
		Resolvers: append([]netip.Addr(nil), s.cfg.Resolvers...),
	}
	if len(s.cfg.Resolvers) == 0 && t.rec != nil {
		rs.Resolvers = append(rs.Resolvers, t.rec.ResolverAddrs()...)
	}
	names := []fw1.NameRule{}
	if name := t.policyName(); name != "" {
		userDir := ""
		if t.owner != 0 {
			userDir = UserPolicyDir(s.cfg.PolicyDir, t.owner)
		}
		p, err := policy.LoadLayered(append([]string{s.cfg.PolicyDir}, s.cfg.PolicyPath...), userDir, name)
		if err != nil {
			return rs, nil, fmt.Errorf("load policy %q: %w", name, err)
		}
		for _, l := range []struct {
			action string
			list   policy.List
			dests  *[]nft.Dest
		}{{event.ActionAllow, p.Allow, &rs.Allow}, {event.ActionDeny, p.Deny, &rs.Deny}} {
			for _, e := range l.list {
				if e.IsName() {
					for _, proto := range entryProtos(e) {
						names = append(names, fw1.NameRule{Pattern: e.Name.String(), Action: l.action,
							Proto: proto, Port: int64(e.Port), Source: e.Source.String()})
					}
					continue
				}
				for _, d := range entryDests(e) {
					if !slices.Contains(*l.dests, d) {
						*l.dests = append(*l.dests, d)
					}
				}
			}
		}
		rs.Resolvers = append(rs.Resolvers, p.Resolvers...)
	}
	rs.Resolvers = dedupeAddrs(rs.Resolvers)
	return rs, names, nil
}

// entryProtos returns the protocol names an entry covers: "" for every
// port, else "tcp", "udp" or both.
func entryProtos(e policy.Entry) []string {
	switch {
	case e.Port == 0:
		return []string{""}
	case e.Proto == policy.ProtoAny:
		return []string{"tcp", "udp"}
	}
	return []string{e.Proto.String()}
}

// entryDests returns the ruleset elements of an address entry.
func entryDests(e policy.Entry) []nft.Dest {
	var out []nft.Dest
	for _, proto := range entryProtos(e) {
		d := nft.PrefixDest(e.Dest)
		if proto != "" {
			d.Proto, _ = nft.ParseProto(proto)
			d.Port = e.Port
		}
		out = append(out, d)
	}
	return out
}

func dedupeAddrs(as []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range as {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// engaged is the outcome of engage.
type engaged struct {
	table   string
	now     bool   // the table did not exist before
	observe bool   // the ruleset runs in observe mode
	note    string // why a requested observe mode was refused
}

// engage installs or verifies the ruleset.
func (s *Service) engage(t *target) (engaged, error) {
	fw, release, err := s.openFirewall(t)
	if err != nil {
		return engaged{}, err
	}
	defer release()
	was, err := fw.Engaged()
	if err != nil {
		return engaged{}, s.failed(t, &firewallError{op: "engage", err: err})
	}
	rs, err := s.ruleset(t)
	if err != nil {
		return engaged{}, &firewallError{op: "engage", err: err}
	}
	out := engaged{table: fw.Table(), now: !was}
	out.observe, out.note = s.observeMode(t)
	rs.Observe = out.observe
	integ, err := fw.Repair(rs)
	if err != nil {
		return engaged{}, s.failed(t, &firewallError{op: "engage", err: err})
	}
	if was && integ == nft.Altered {
		// Someone with CAP_NET_ADMIN in the namespace changed the table;
		// Engage has just rebuilt it (keeping the sets' elements).
		s.log.Error("ruleset "+fw.Table()+" of "+t.container+" was altered in its namespace; rebuilt",
			audit.FieldMessageID, audit.MsgTampered, audit.FieldContainer, t.container,
			audit.FieldContainerID, t.containerID(), audit.FieldPolicy, t.policyName(), audit.FieldSide, audit.SideKernel,
			audit.FieldOperatorUID, strconv.FormatUint(uint64(t.peer), 10), audit.FieldTable, fw.Table(),
			"netns", t.id.String())
	}
	if was {
		// Every hub start verifies the ruleset: one "engaged" record per
		// container, from the call that installed it.
		s.log.Debug("ruleset verified", "container", t.container, "table", fw.Table(), "netns", t.id.String())
	} else {
		s.log.Info("engaged "+fw.Table()+" for "+t.container, audit.FieldMessageID, audit.MsgEngaged,
			audit.FieldContainer, t.container, audit.FieldContainerID, t.containerID(), audit.FieldPolicy, t.policyName(),
			audit.FieldOperatorUID, strconv.FormatUint(uint64(t.peer), 10), audit.FieldTable, fw.Table(),
			"netns", t.id.String())
	}
	s.logMode(t, out)
	return out, nil
}

// verify checks t's ruleset without changing it (see nft.Firewall.Verify).
func (s *Service) verify(t *target) (nft.Integrity, error) {
	fw, release, err := s.openFirewall(t)
	if err != nil {
		return "", err
	}
	defer release()
	rs, err := s.ruleset(t)
	if err != nil {
		return "", &firewallError{op: "verify", err: err}
	}
	integ, err := fw.Verify(rs)
	if err != nil {
		return "", s.failed(t, &firewallError{op: "verify", err: err})
	}
	return integ, nil
}

// maxCounterLines bounds the counters a disengaged record carries.
const maxCounterLines = 4096

// disengage removes the built-in table, recording what each of its allow,
// deny and learned elements matched over the container's life.
func (s *Service) disengage(t *target) error {
	fw, release, err := s.openFirewall(t)
	if err != nil {
		return err
	}
	defer release()
	els, listErr := fw.List()
	if err := fw.Disengage(); err != nil {
		return s.failed(t, &firewallError{op: "disengage", err: err})
	}
	if errors.Is(listErr, nft.ErrNotEngaged) {
		s.log.Debug("disengage: no ruleset", "container", t.container, "netns", t.id.String())
		return nil
	}
	args := []any{audit.FieldMessageID, audit.MsgDisengaged,
		audit.FieldContainer, t.container, audit.FieldContainerID, t.containerID(), audit.FieldPolicy, t.policyName(),
		audit.FieldOperatorUID, strconv.FormatUint(uint64(t.peer), 10), audit.FieldTable, fw.Table(),
		audit.FieldCounters, counterLines(els), "netns", t.id.String()}
	if listErr != nil {
		args = append(args, audit.FieldReason, "counters not read: "+listErr.Error())
	}
	s.log.Info("disengaged "+fw.Table()+" for "+t.container, args...)
	return nil
}

// counterLines formats elements for FieldCounters: one line per element,
// "list dest proto port packets bytes name".
func counterLines(els []nft.Element) string {
	var b strings.Builder
	for i, e := range els {
		if i == maxCounterLines {
			fmt.Fprintf(&b, "# %d more elements not listed\n", len(els)-i)
			break
		}
		dest := e.Dest.Prefix.String()
		if e.Dest.Prefix.IsSingleIP() {
			dest = e.Dest.Prefix.Addr().String()
		}
		proto, port := "-", "-"
		if e.Dest.Port != 0 {
			proto, port = nft.ProtoName(e.Dest.Proto), strconv.Itoa(int(e.Dest.Port))
		}
		name := e.Comment
		if name == "" || strings.ContainsAny(name, " \n") {
			name = "-"
		}
		fmt.Fprintf(&b, "%s %s %s %s %d %d %s\n", e.List, dest, proto, port, e.Packets, e.Bytes, name)
	}
	return b.String()
}

// monitor opens a netlink socket in t's namespace subscribed to
// nftables' events. The caller owns the returned socket.
func (s *Service) monitor(t *target) (*os.File, error) {
	var f *os.File
	err := netns.Do(int(t.ns.Fd()), func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return err
		}
		sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (unix.NFNLGRP_NFTABLES - 1)}
		if err := unix.Bind(fd, sa); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), "nftables-monitor")
		return nil
	})
	if err != nil {
		return nil, &firewallError{op: "monitor", err: err}
	}
	return f, nil
}

// watch binds the NFLOG group inside t's namespace. The caller owns the
// returned socket.
func (s *Service) watch(t *target) (*os.File, error) {
	var f *os.File
	err := netns.Do(int(t.ns.Fd()), func() error {
		var err error
		f, err = s.cfg.Bind(s.cfg.Group, s.cfg.CopyRange)
		return err
	})
	if err != nil {
		return nil, &firewallError{op: "watch", err: err}
	}
	return f, nil
}

// applyRequest is a validated scoped verdict.
type applyRequest struct {
	dest         nft.Dest
	name         string // the name the verdict is about, if any (comment; "always" saves it)
	destText     string // as the caller wrote it (exec mode passes it on)
	action       string
	scope        string
	ttl          time.Duration
	policyTarget string
	verdictID    string // the hub's id of the verdict, joining its record and ours; may be ""
	channel      string // "" for ClearanceFirewall1, "compat" for the seed's Apply
}

// applied is the outcome of a verdict.
type applied struct {
	ok      bool
	stderr  string    // why not, or what went wrong besides
	expires time.Time // the element's expiry, zero for none
	outcome string    // audit.OutcomeApplied, OutcomeNotSaved or OutcomeRefused
}

// apply applies a verdict and writes the authoritative record of what the
// kernel got, after the commit, whether or not the caller is still there
// to read the reply.
func (s *Service) apply(ctx context.Context, t *target, r applyRequest) applied {
	a := s.applyKernel(ctx, t, r)
	s.auditApply(t, r, a)
	return a
}

func (s *Service) applyKernel(ctx context.Context, t *target, r applyRequest) applied {
	refused := func(why string) applied { return applied{stderr: why, outcome: audit.OutcomeRefused} }
	if s.cfg.execMode() {
		name, err := shieldContainer(t)
		if err != nil {
			return refused(err.Error())
		}
		ok, stderr := s.cfg.Shield.Apply(ctx, name, r.destText, r.action)
		if !ok {
			return refused(stderr)
		}
		return s.persistOutcome(t, r, applied{ok: true, stderr: stderr, outcome: audit.OutcomeApplied})
	}
	if !r.dest.Prefix.IsValid() && r.name != "" {
		// A verdict on a name alone: nothing for the kernel now (the
		// hub's forwarder learns the name's addresses with the verdict's
		// lifetime); "always" writes the name.
		var exp time.Time
		if r.ttl > 0 {
			exp = s.cfg.Now().Add(r.ttl)
		}
		if r.scope == ScopeAlways {
			if err := s.persist(t, r); err != nil {
				return refused(err.Error())
			}
		}
		return applied{ok: true, expires: exp, outcome: audit.OutcomeApplied}
	}
	fw, release, err := s.openFirewall(t)
	if err != nil {
		return refused(err.Error())
	}
	defer release()
	ttl := r.ttl
	err = fw.Apply(r.action, r.dest, ttl, r.name)
	if errors.Is(err, nft.ErrNoTimeout) && s.cfg.Mode == ModeShield {
		// terok-shield's sets have no timeout flag: the verdict lasts
		// until the container exits, as the seed's did.
		ttl = 0
		err = fw.Apply(r.action, r.dest, 0, r.name)
	}
	if err != nil {
		s.failed(t, err)
		return refused("apply " + r.action + " " + r.destText + ": " + err.Error())
	}
	a := applied{ok: true, outcome: audit.OutcomeApplied}
	if ttl > 0 {
		a.expires = s.cfg.Now().Add(ttl)
	}
	if r.action == event.ActionDeny {
		// A destination allowed before is denied now: its open
		// connections go too.
		if err := s.cutFlows(t, r.dest, "deny"); err != nil {
			a.stderr = "denied for new connections, but " + err.Error()
		}
	}
	return s.persistOutcome(t, r, a)
}

// persistOutcome saves an "always" verdict that is in the kernel to the
// policy. When that fails, the verdict still holds for the container's
// life: the outcome says so (OutcomeNotSaved), not that it failed.
func (s *Service) persistOutcome(t *target, r applyRequest, a applied) applied {
	if r.scope != ScopeAlways {
		return a
	}
	if err := s.persist(t, r); err != nil {
		a.expires = time.Time{}
		a.outcome = audit.OutcomeNotSaved
		a.stderr = strings.TrimPrefix(a.stderr+"; ", "; ") + "applied until the container exits, but " + err.Error()
	}
	return a
}

// auditApply writes the kernel side's record of a verdict.
func (s *Service) auditApply(t *target, r applyRequest, a applied) {
	id, lvl, msg := audit.MsgVerdict, slog.LevelInfo, "kernel: "+r.action+" "+r.dest.String()+" for "+t.container
	if !a.ok {
		id, lvl, msg = audit.MsgVerdictFailed, slog.LevelWarn, "kernel: "+r.action+" "+r.destText+" for "+t.container+" refused"
	}
	var exp, port, proto string
	if !a.expires.IsZero() {
		exp = strconv.FormatInt(a.expires.UnixMicro(), 10)
	}
	if r.dest.Port != 0 {
		port, proto = strconv.Itoa(int(r.dest.Port)), strings.ToUpper(nft.ProtoName(r.dest.Proto))
	}
	dest := r.destText
	if r.dest.Prefix.IsValid() {
		dest = r.dest.Prefix.Addr().String()
		if !r.dest.Prefix.IsSingleIP() {
			dest = r.dest.Prefix.String()
		}
	}
	channel := r.channel
	if channel == "" {
		channel = "varlink"
	}
	s.log.Log(context.Background(), lvl, msg, audit.FieldMessageID, id, audit.FieldSide, audit.SideKernel,
		audit.FieldOutcome, a.outcome, audit.FieldVerdictID, r.verdictID,
		audit.FieldContainer, t.container, audit.FieldContainerID, t.containerID(), audit.FieldPolicy, t.policyName(),
		audit.FieldDest, dest, audit.FieldDomain, r.name, audit.FieldPort, port, audit.FieldProto, proto,
		audit.FieldAction, r.action, audit.FieldScope, r.scope, audit.FieldExpires, exp,
		audit.FieldOperatorUID, strconv.FormatUint(uint64(t.peer), 10), audit.FieldChannel, channel,
		audit.FieldReason, a.stderr)
}

// cutFlows deletes the conntrack entries of t's connections to d, unless
// the configuration keeps established connections (verdict.keep_established),
// so that no connection outlives the verdict that let it through.
func (s *Service) cutFlows(t *target, d nft.Dest, why string) error {
	if s.cfg.KeepEstablished {
		return nil
	}
	n, err := flows.Cut(int(t.ns.Fd()), flows.Match{Dst: d.Prefix, Proto: d.Proto, Port: d.Port})
	if err != nil {
		return &firewallError{op: why, err: fmt.Errorf("established connections not cut: %w", err)}
	}
	if n > 0 {
		s.log.Info(fmt.Sprintf("cut %d established connection(s) to %s of %s", n, d, t.container), "MESSAGE_ID", audit.MsgFlowsCut,
			"CLEARANCE_CONTAINER", t.container, "CLEARANCE_DEST", d.Prefix.String(),
			"CLEARANCE_OPERATOR_UID", strconv.FormatUint(uint64(t.peer), 10), "reason", why, "count", n)
	}
	return nil
}

// shieldContainer returns the container terok-shield is to act on, from
// t's runtime record, never from what the caller said. terok-shield runs
// as root here and finds the container through root's podman: it acts on
// whichever of root's containers carries the name. So only root's
// containers qualify (a user's rootless container is not known to root's
// podman, and a name in a user's record could be root's container), and
// only one whose record, found under root's uid, matches the namespace
// the call was authorized for.
func shieldContainer(t *target) (string, error) {
	if t.peer != 0 {
		return "", errors.New("permission denied: terok-shield exec mode acts only for root (terok-shield runs as root " +
			"and finds containers through root's podman); a user's container takes verdicts through --shield-apply sets")
	}
	if t.rec == nil {
		return "", errors.New("permission denied: no runtime record names this container; terok-shield exec mode acts " +
			"only on a container whose record (written by the OCI hook) matches its network namespace")
	}
	return t.rec.ID, nil
}

// shieldDest validates the destination of an exec-mode verdict, which
// terok-shield gets on its command line: an IP address, a CIDR prefix or
// a DNS name (or "*.name"), returned in canonical form. Nothing else
// passes, so it can never be taken for an option.
func shieldDest(dest string) (string, bool) {
	if p, err := policy.ParseDest(dest); err == nil {
		if p.IsSingleIP() {
			return p.Addr().String(), true
		}
		return p.String(), true
	}
	pat, err := dnsname.ParsePattern(dest)
	if err != nil {
		return "", false
	}
	return pat.String(), true
}

// persist appends an "always" verdict to the container's policy, in the
// directory of the namespace owner (never a file other users' containers
// read).
func (s *Service) persist(t *target, r applyRequest) error {
	name := r.policyTarget
	if name == "" {
		name = t.policyName()
	}
	if name == "" {
		return errors.New("not saved to a policy: the container has no policy name")
	}
	dir := UserPolicyDir(s.cfg.PolicyDir, t.owner)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("not saved to policy %q: %w", name, err)
	}
	if t.owner != 0 {
		// A user's directory is the service's alone, whatever the umask
		// and whatever an older version left: 0700.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("not saved to policy %q: %w", name, err)
		}
	}
	list := policy.ListAllow
	if r.action == event.ActionDeny {
		list = policy.ListDeny
	}
	comment := "always, by uid " + strconv.FormatUint(uint64(t.peer), 10) + " for " + t.container + " at " +
		s.cfg.Now().UTC().Format(time.RFC3339)
	e := policy.Entry{Dest: r.dest.Prefix, Port: r.dest.Port, Comment: comment}
	if r.dest.Proto != 0 {
		e.Proto = policy.Proto(r.dest.Proto)
	}
	if r.name != "" {
		// A verdict on a name saves the name: its next addresses follow
		// DNS in the next container too.
		pat, err := dnsname.ParsePattern(r.name)
		if err != nil {
			return fmt.Errorf("not saved to policy %q: %w", name, err)
		}
		e.Dest, e.Name = netip.Prefix{}, pat
	}
	if err := policy.Append(dir, name, list, e); err != nil {
		return fmt.Errorf("not saved to policy %q: %w", name, err)
	}
	return nil
}
