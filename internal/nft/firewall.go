// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/netns"
)

// The lists an element belongs to, as verdicts and policies name them
// (the wire's actions; a test holds them equal to event's).
const (
	actionAllow = "allow"
	actionDeny  = "deny"
)

var (
	// ErrNotEngaged is returned when the table, or one of the sets the
	// layout names, does not exist in the namespace.
	ErrNotEngaged = errors.New("firewall not engaged")
	// ErrNoTimeout is returned for a ttl on a set without the timeout flag
	// (the built-in _net sets, terok-shield's plain interval sets).
	ErrNoTimeout = errors.New("set does not support timeouts")
	// ErrOverlap is returned when a prefix overlaps a different element of
	// an interval set (the kernel rejects nested intervals). Revoke the
	// existing element first.
	ErrOverlap = errors.New("prefix overlaps an existing element")
	// ErrAction is returned for an action other than "allow" or "deny".
	ErrAction = errors.New("unknown action")
)

// Dial opens a lasting nftables connection inside the network namespace
// nsFD. The caller owns the connection and must call CloseLasting on it.
//
// The socket is opened from a throwaway locked thread that has entered the
// namespace ([netns.Do]); it stays bound to that namespace. Do not use
// nftables.WithNetNSFd instead: it restores the thread's namespace after
// each operation, which fails with EPERM inside a rootless user namespace.
// AsLasting is required: without it every operation would dial a new
// socket from whatever thread runs it, in the caller's namespace.
func Dial(nsFD int) (*nftables.Conn, error) {
	var c *nftables.Conn
	err := netns.Do(nsFD, func() error {
		var err error
		c, err = nftables.New(nftables.AsLasting())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial nftables in netns: %w", err)
	}
	return c, nil
}

// Firewall manages clearance's verdict sets in one network namespace.
//
// A Firewall is safe for concurrent use: one mutex serialises every
// read-modify-flush sequence, because the nftables message queue is shared
// per connection. No other code may queue messages on conn concurrently.
// The caller owns conn and closes it after the Firewall is no longer used.
type Firewall struct {
	mu     sync.Mutex
	conn   *nftables.Conn
	layout Layout
}

// New returns a Firewall working on the table and sets of layout through
// conn (see [Dial]).
func New(conn *nftables.Conn, layout Layout) *Firewall {
	return &Firewall{conn: conn, layout: layout}
}

// Layout returns the layout the Firewall works on.
func (f *Firewall) Layout() Layout { return f.layout }

// Engage installs the built-in ruleset (Layout.Owned), or checks that the
// table and sets of a foreign layout exist (returning an error wrapping
// [ErrNotEngaged] if not).
//
// Engage is idempotent and repairs: the table is deleted and re-created in
// one atomic batch, so whatever was there is replaced by the ruleset rs.
// Elements present in the allow, deny and learned sets before are
// preserved (timed ones with their remaining time as the new timeout) and
// take precedence over rs's initial policy for the same destination; the
// forwarder's redirect port is kept unless rs names one; established
// connections are not interrupted. The resolver sets are replaced by
// rs.Resolvers.
func (f *Firewall) Engage(rs Ruleset) error {
	_, err := f.Repair(rs)
	return err
}

// Repair is [Firewall.Engage], and says what it found before ([Verify]'s
// answer; Intact for a layout the shield owns): a caller that must tell
// a repaired table from an intact one asks once, not twice.
func (f *Firewall) Repair(rs Ruleset) (Integrity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	snap, err := f.read()
	if err != nil {
		return "", err
	}
	if !f.layout.Owned {
		return Intact, snap.complete(f.layout)
	}
	rs, err = rs.withDefaults()
	if err != nil {
		return "", fmt.Errorf("engage: %w", err)
	}
	if rs.DNSPort == 0 {
		rs.DNSPort = snap.dnsPort
	}
	integ, err := f.verify(rs)
	if err != nil {
		return "", fmt.Errorf("engage: %w", err)
	}
	if integ == Intact && snap.complete(f.layout) == nil {
		// The table is the one this ruleset builds: update it in place,
		// so element counters and established state are kept.
		return integ, f.engageInPlace(rs, snap)
	}
	preserved := make(map[string][]entry)
	for _, ref := range f.layout.listSets() {
		ss, ok := snap.sets[ref.name]
		if !ok || ss.kind != ref.kind || !sameFamily(ss.set, ref) {
			continue
		}
		for _, e := range ss.elems {
			d, ok := e.dest()
			if !ok {
				continue
			}
			ttl := time.Duration(0)
			if e.timeout > 0 {
				if e.expires <= 0 {
					continue
				}
				ttl = e.expires
			}
			preserved[ref.name] = append(preserved[ref.name], entry{d: d, ttl: ttl, comment: e.comment})
		}
	}
	elems, err := plan(f.layout, rs, preserved)
	if err != nil {
		return integ, fmt.Errorf("engage: %w", err)
	}
	if err := build(f.conn, f.layout, rs, elems); err != nil {
		f.conn.Flush() // always clears the queue; ignore its error
		return integ, fmt.Errorf("engage: %w", err)
	}
	if err := f.conn.Flush(); err != nil {
		return integ, fmt.Errorf("engage table inet %s: %w", f.layout.Table, err)
	}
	return integ, nil
}

// engageInPlace brings an intact table up to date with rs: the resolver
// sets are replaced when they differ, entries of the initial policy that
// are missing are added (an element already there, or overlapping one,
// is left as it is), and the DNS redirect follows rs.DNSPort. Nothing is
// removed: an entry dropped from a policy file leaves the tables of
// running containers when they are rebuilt or end. Callers hold f.mu.
func (f *Firewall) engageInPlace(rs Ruleset, snap *snapshot) error {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: f.layout.Table}
	res4, res6 := resolverElements(rs.Resolvers)
	for _, r := range []struct {
		name string
		want []nftables.SetElement
	}{{f.layout.Resolver4, res4}, {f.layout.Resolver6, res6}} {
		ss, err := snap.get(r.name)
		if err != nil {
			return fmt.Errorf("engage: %w", err)
		}
		if sameKeys(ss.elems, r.want) {
			continue
		}
		f.conn.FlushSet(ss.set)
		if len(r.want) > 0 {
			if err := f.conn.SetAddElements(ss.set, r.want); err != nil {
				f.conn.Flush()
				return fmt.Errorf("engage: %w", err)
			}
		}
	}
	planned, err := plan(f.layout, rs, nil)
	if err != nil {
		return fmt.Errorf("engage: %w", err)
	}
	for name, es := range planned {
		ss, err := snap.get(name)
		if err != nil {
			f.conn.Flush()
			return fmt.Errorf("engage: %w", err)
		}
		for _, e := range es {
			r := rangeOf(e.d.Prefix)
			if slices.ContainsFunc(ss.elems, func(x stored) bool {
				return x.proto == e.d.Proto && x.port == e.d.Port && (x.ipRange == r || (ss.set.Interval && x.overlaps(r)))
			}) {
				continue
			}
			els, err := encode(ss.set, ss.kind, e.d, 0, e.comment)
			if err == nil {
				err = f.conn.SetAddElements(ss.set, els)
			}
			if err != nil {
				f.conn.Flush()
				return fmt.Errorf("engage: add %v to set %s: %w", e.d, name, err)
			}
		}
	}
	if rs.DNSPort != snap.dnsPort {
		f.conn.FlushChain(&nftables.Chain{Name: f.layout.NAT, Table: t})
		addNAT(f.conn, t, f.layout, rs.DNSMark, rs.DNSPort)
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("engage table inet %s in place: %w", f.layout.Table, err)
	}
	return nil
}

// sameKeys reports whether a set's elements are exactly the keys of want.
func sameKeys(have []stored, want []nftables.SetElement) bool {
	if len(have) != len(want) {
		return false
	}
	for _, w := range want {
		a, _ := netip.AddrFromSlice(w.Key)
		if !slices.ContainsFunc(have, func(h stored) bool { return h.first == a }) {
			return false
		}
	}
	return true
}

func sameFamily(s *nftables.Set, ref setRef) bool {
	return s.KeyType.Bytes == keyType(ref.kind, ref.v4).Bytes
}

// SetDNSPort points the redirect of DNS queries at the forwarder's port
// (built-in layout only): the nat chain's rules are replaced in one
// atomic batch. mark is the forwarder's upstream mark, exempt from the
// redirect (0: DefaultDNSMark); it must be the ruleset's.
func (f *Firewall) SetDNSPort(port uint16, mark uint32) error {
	if !f.layout.Owned || f.layout.NAT == "" {
		return errors.New("set dns port: the layout has no forwarder")
	}
	if port == 0 {
		return errors.New("set dns port: port 0")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := f.read()
	if err != nil {
		return err
	}
	if !s.engaged || !s.hasNAT {
		return fmt.Errorf("set dns port: table inet %s: %w", f.layout.Table, ErrNotEngaged)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: f.layout.Table}
	ch := &nftables.Chain{Name: f.layout.NAT, Table: t}
	f.conn.FlushChain(ch)
	if mark == 0 {
		mark = DefaultDNSMark
	}
	addNAT(f.conn, t, f.layout, mark, port)
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("set dns port %d: %w", port, err)
	}
	return nil
}

// DNSPort returns the port DNS is redirected to, 0 for none.
func (f *Firewall) DNSPort() (uint16, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := f.read()
	if err != nil {
		return 0, err
	}
	if !s.engaged {
		return 0, fmt.Errorf("dns port: table inet %s: %w", f.layout.Table, ErrNotEngaged)
	}
	return s.dnsPort, nil
}

// Disengage deletes the built-in table; it is not an error if the table is
// absent. For a foreign layout (Owned false) it does nothing.
func (f *Firewall) Disengage() error {
	if !f.layout.Owned {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: f.layout.Table}
	f.conn.AddTable(t) // make the delete succeed when absent
	f.conn.DelTable(t)
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("delete table inet %s: %w", f.layout.Table, err)
	}
	return nil
}

// Apply records a verdict for d: action "allow" adds d to the allow set
// of its family and shape and removes the identical entry from the deny
// set; "deny" does the opposite. ttl > 0 gives the element a kernel
// timeout (error [ErrNoTimeout] if the set has no timeout flag); 0 makes
// it permanent. A single address goes to the host set (host-port set for
// one protocol and port), a wider prefix to the _net (_netport) set. In a
// layout without port sets, d is widened to the whole host. The comment
// (at most 127 bytes kept) is stored with the element.
//
// The latest verdict wins: an identical element already in the set is
// replaced, so its timeout becomes ttl (a once-allow becomes permanent, or
// the other way round). A different, overlapping element in an interval set
// fails with [ErrOverlap]. A wider deny prefix still wins over an allowed
// address inside it; [Firewall.Explain] shows that.
func (f *Firewall) Apply(action string, d Dest, ttl time.Duration, comment string) error {
	if action != actionAllow && action != actionDeny {
		return fmt.Errorf("apply %q to %v: %w", action, d, ErrAction)
	}
	d, err := normalizeDest(d)
	if err != nil {
		return fmt.Errorf("apply %s: %w", action, err)
	}
	if ttl < 0 {
		return fmt.Errorf("apply %s %v: negative ttl %v", action, d, ttl)
	}
	other := actionDeny
	if action == actionDeny {
		other = actionAllow
	}
	err = f.update(func(s *snapshot) error {
		names := f.layout.list(action, d.Prefix.Addr().Is4())
		name, d := names.target(d)
		tgt, err := s.get(name)
		if err != nil {
			return err
		}
		r := rangeOf(d.Prefix)
		for _, e := range tgt.elems {
			if e.proto != d.Proto || e.port != d.Port {
				continue
			}
			if e.ipRange == r {
				if err := f.conn.SetDeleteElements(tgt.set, encodeDelete(tgt.set, tgt.kind, e)); err != nil {
					return err
				}
			} else if tgt.set.Interval && e.overlaps(r) {
				return fmt.Errorf("%v in set %s: %w", e.ipRange.String(), tgt.set.Name, ErrOverlap)
			}
		}
		els, err := encode(tgt.set, tgt.kind, d, ttl, comment)
		if err != nil {
			return err
		}
		if err := f.conn.SetAddElements(tgt.set, els); err != nil {
			return err
		}
		return f.queueRemove(s, other, d)
	})
	if err != nil {
		return fmt.Errorf("apply %s %v: %w", action, d, err)
	}
	return nil
}

// Revoke removes d from the allow and deny sets of its family (exact
// matches only). It is not an error if d is in neither.
func (f *Firewall) Revoke(d Dest) error {
	d, err := normalizeDest(d)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	err = f.update(func(s *snapshot) error {
		if err := f.queueRemove(s, actionAllow, d); err != nil {
			return err
		}
		return f.queueRemove(s, actionDeny, d)
	})
	if err != nil {
		return fmt.Errorf("revoke %v: %w", d, err)
	}
	return nil
}

// queueRemove queues the deletion of d from list's set, if it is there.
func (f *Firewall) queueRemove(s *snapshot, list string, d Dest) error {
	name, d := f.layout.list(list, d.Prefix.Addr().Is4()).target(d)
	ss, err := s.get(name)
	if err != nil {
		return err
	}
	r := rangeOf(d.Prefix)
	for _, e := range ss.elems {
		if e.ipRange == r && e.proto == d.Proto && e.port == d.Port {
			return f.conn.SetDeleteElements(ss.set, encodeDelete(ss.set, ss.kind, e))
		}
	}
	return nil
}

// Learned is an address the DNS forwarder learned for an allowed name.
type Learned struct {
	// Dest is a single address, whole or for one protocol and port.
	Dest Dest
	// Timeout is when the kernel removes the element; it must be > 0.
	Timeout time.Duration
	// Comment is stored with the element (at most 127 bytes kept),
	// typically the name the address was an answer for.
	Comment string
}

// maxLearnTimeout bounds learned elements: they follow DNS, which never
// lasts a week.
const maxLearnTimeout = 7 * 24 * time.Hour

// Learn adds (or refreshes) addresses in the learned sets, in one batch,
// and returns once the kernel has acknowledged it. An element already
// present takes the new timeout (the kernel replaces it). The learned sets
// are written only by the forwarder, so Learn reads nothing first; it
// fails with [ErrNotEngaged] when the table is not there.
func (f *Firewall) Learn(ls []Learned) error {
	if len(f.layout.Learn4.names()) == 0 {
		return errors.New("learn: the layout has no learned sets")
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: f.layout.Table}
	batch := make(map[string][]nftables.SetElement)
	sets := make(map[string]*nftables.Set)
	for _, l := range ls {
		d, err := normalizeDest(l.Dest)
		if err != nil {
			return fmt.Errorf("learn: %w", err)
		}
		if !d.Single() {
			return fmt.Errorf("learn %v: not a single address", d)
		}
		if l.Timeout <= 0 || l.Timeout > maxLearnTimeout {
			return fmt.Errorf("learn %v: timeout %v out of range", d, l.Timeout)
		}
		v4 := d.Prefix.Addr().Is4()
		names := f.layout.list(ListLearned, v4)
		name, _ := names.target(d)
		k := names.kind(name)
		s, ok := sets[name]
		if !ok {
			s = &nftables.Set{Table: t, Name: name, KeyType: keyType(k, v4), Concatenation: k.concat(), HasTimeout: true}
			sets[name] = s
		}
		els, err := encode(s, k, d, l.Timeout, l.Comment)
		if err != nil {
			return fmt.Errorf("learn: %w", err)
		}
		batch[name] = append(batch[name], els...)
	}
	if len(batch) == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, els := range batch {
		if err := f.conn.SetAddElements(sets[name], els); err != nil {
			f.conn.Flush()
			return fmt.Errorf("learn: %w", err)
		}
	}
	if err := f.conn.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			err = fmt.Errorf("%w (%w)", ErrNotEngaged, err)
		}
		return fmt.Errorf("learn %d element(s): %w", len(ls), err)
	}
	return nil
}

// Unlearn removes learned elements; those already gone are skipped.
func (f *Firewall) Unlearn(ds []Dest) error {
	err := f.update(func(s *snapshot) error {
		for _, d := range ds {
			if err := f.queueRemove(s, ListLearned, d); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("unlearn: %w", err)
	}
	return nil
}

// update reads the sets, lets queue add messages and flushes them, under
// the mutex. An element expiring between the read and the flush makes its
// delete fail with ENOENT; the whole sequence is then retried once.
func (f *Firewall) update(queue func(*snapshot) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var err error
	for range 2 {
		var s *snapshot
		s, err = f.read()
		if err != nil {
			return err
		}
		if !s.engaged {
			return fmt.Errorf("table inet %s: %w", f.layout.Table, ErrNotEngaged)
		}
		if err = queue(s); err != nil {
			f.conn.Flush() // clears the queue
			return err
		}
		err = f.conn.Flush()
		if !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return err
}

// List returns the elements of the deny, allow and learned sets, in that
// order.
func (f *Firewall) List() ([]Element, error) {
	f.mu.Lock()
	s, err := f.read()
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if !s.engaged {
		return nil, fmt.Errorf("list table inet %s: %w", f.layout.Table, ErrNotEngaged)
	}
	return s.elements(f.layout), nil
}

// Explain says what the ruleset does with a new connection to dst, for
// protocol proto (0: unknown) and port, judged from the live set contents.
// See [Explanation].
func (f *Firewall) Explain(dst netip.Addr, proto uint8, port uint16) (Explanation, error) {
	f.mu.Lock()
	s, err := f.read()
	f.mu.Unlock()
	if err != nil {
		return Explanation{}, err
	}
	return explain(f.layout, s, dst, proto, port), nil
}

// read takes a snapshot of the layout's sets. Sets that do not exist are
// absent from the snapshot. Callers hold f.mu.
// table returns the layout's table, nil when there is none.
func (f *Firewall) table() (*nftables.Table, error) {
	tables, err := f.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == f.layout.Table {
			return t, nil
		}
	}
	return nil, nil
}

func (f *Firewall) read() (*snapshot, error) {
	s := &snapshot{sets: make(map[string]*setState)}
	t, err := f.table()
	if err != nil {
		return nil, err
	}
	if t == nil {
		return s, nil
	}
	s.engaged = true
	sets, err := f.conn.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets of inet %s: %w", t.Name, err)
	}
	want := map[string]setKind{f.layout.Resolver4: kindHost, f.layout.Resolver6: kindHost}
	for _, ref := range f.layout.listSets() {
		want[ref.name] = ref.kind
	}
	for _, set := range sets {
		k, ok := want[set.Name]
		if !ok || set.Name == "" {
			continue
		}
		raw, err := f.conn.GetSetElements(set)
		if err != nil {
			return nil, fmt.Errorf("list set %s: %w", set.Name, err)
		}
		s.sets[set.Name] = &setState{set: set, kind: k, elems: decode(set, k, raw)}
	}
	if f.layout.Owned {
		rules, err := f.conn.GetRules(t, &nftables.Chain{Name: "output", Table: t})
		if err == nil && len(rules) > 0 {
			s.fingerprint = ruleComment(rules[0])
		} else if err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("list chain output: %w", err)
		}
	}
	if f.layout.NAT != "" {
		rules, err := f.conn.GetRules(t, &nftables.Chain{Name: f.layout.NAT, Table: t})
		if err == nil {
			s.hasNAT = true
			s.dnsPort = natPort(rules)
		} else if !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("list chain %s: %w", f.layout.NAT, err)
		}
	}
	return s, nil
}

// snapshot is the state of the layout's sets at one moment.
type snapshot struct {
	engaged bool
	sets    map[string]*setState
	hasNAT  bool   // the nat chain exists
	dnsPort uint16 // its redirect port, 0 for none
	// fingerprint is the comment of the output chain's first rule: what
	// ruleset built the table (see fingerprint).
	fingerprint string
}

// observing reports whether the table was built in observe mode.
func (s *snapshot) observing() bool {
	return strings.Contains(s.fingerprint, fingerprintObserve)
}

type setState struct {
	set   *nftables.Set
	kind  setKind
	elems []stored
}

func (s *snapshot) get(name string) (*setState, error) {
	ss, ok := s.sets[name]
	if !ok || name == "" {
		return nil, fmt.Errorf("set %q missing: %w", name, ErrNotEngaged)
	}
	return ss, nil
}

// complete reports an error unless the table and every list set exist.
func (s *snapshot) complete(l Layout) error {
	if !s.engaged {
		return fmt.Errorf("table inet %s: %w", l.Table, ErrNotEngaged)
	}
	for _, ref := range l.listSets() {
		if _, err := s.get(ref.name); err != nil {
			return fmt.Errorf("table inet %s: %w", l.Table, err)
		}
	}
	return nil
}

func (s *snapshot) elements(l Layout) []Element {
	var out []Element
	for _, ref := range l.listSets() {
		ss, ok := s.sets[ref.name]
		if !ok {
			continue
		}
		for _, e := range ss.elems {
			out = append(out, e.element(ref.name, ref.list))
		}
	}
	return out
}

// Element is one entry of an allow, deny or learned set.
type Element struct {
	// Set is the kernel set's name; List is "allow", "deny" or
	// [ListLearned].
	Set, List string
	// Dest is what the element covers. Its Prefix is the zero Prefix for
	// an interval that is not a CIDR (only possible in sets written by
	// other tools).
	Dest Dest
	// First and Last are the first and last address covered (inclusive).
	First, Last netip.Addr
	// Timeout is the element's timeout, 0 for a permanent element.
	Timeout time.Duration
	// Expires is the time left before the kernel removes the element, as of
	// the read; 0 for a permanent element.
	Expires time.Duration
	// Comment is the element's comment, if any.
	Comment string
	// Packets and Bytes are what the element matched since it was added
	// (or since the table was last rebuilt); the sets of the built-in
	// ruleset count, terok-shield's do not (0).
	Packets, Bytes uint64
}

// Allows reports whether the element lets traffic pass (allow and
// learned sets).
func (e Element) Allows() bool { return e.List != actionDeny }

func (e stored) element(set, list string) Element {
	d, _ := e.dest()
	return Element{
		Set: set, List: list, Dest: d, First: e.first, Last: e.last,
		Timeout: e.timeout, Expires: e.expires, Comment: e.comment,
		Packets: e.packets, Bytes: e.bytes,
	}
}

func (r ipRange) String() string {
	if p, ok := r.prefix(); ok {
		return p.String()
	}
	return r.first.String() + "-" + r.last.String()
}
