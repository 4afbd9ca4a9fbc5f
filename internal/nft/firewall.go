package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/event"
	"github.com/terok-ai/clearance/internal/netns"
)

const (
	actionAllow = event.ActionAllow
	actionDeny  = event.ActionDeny
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
// Elements present in the allow/deny sets before are preserved (timed ones
// with their remaining time as the new timeout) and take precedence over rs's
// initial policy for the same prefix; established connections are not
// interrupted. The resolver sets are replaced by rs.Resolvers.
func (f *Firewall) Engage(rs Ruleset) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	snap, err := f.read()
	if err != nil {
		return err
	}
	if !f.layout.Owned {
		return snap.complete(f.layout)
	}
	rs, err = rs.withDefaults()
	if err != nil {
		return fmt.Errorf("engage: %w", err)
	}
	preserved := make(map[string][]entry)
	for _, ref := range f.layout.listSets() {
		ss, ok := snap.sets[ref.name]
		if !ok || !sameFamily(ss.set, ref.v4) {
			continue
		}
		for _, e := range ss.elems {
			p, ok := e.prefix()
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
			// Keep the element in the set kind it belongs to now.
			name := f.layout.list(ref.list, ref.v4).target(p.IsSingleIP())
			preserved[name] = append(preserved[name], entry{p: p, ttl: ttl})
		}
	}
	elems, err := plan(f.layout, rs, preserved)
	if err != nil {
		return fmt.Errorf("engage: %w", err)
	}
	if err := build(f.conn, f.layout, rs, elems); err != nil {
		f.conn.Flush() // always clears the queue; ignore its error
		return fmt.Errorf("engage: %w", err)
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("engage table inet %s: %w", f.layout.Table, err)
	}
	return nil
}

func sameFamily(s *nftables.Set, v4 bool) bool {
	return (s.KeyType.Bytes == 4) == v4
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

// Apply records a verdict for dest: action "allow" adds dest to the allow
// set of its family and removes the identical entry from the deny set;
// "deny" does the opposite. ttl > 0 gives the element a kernel timeout
// (error [ErrNoTimeout] if the set has no timeout flag); 0 makes it
// permanent. A single address (use [Host]) goes to the host set, a wider
// prefix to the _net set.
//
// The latest verdict wins: an identical element already in the set is
// replaced, so its timeout becomes ttl (a once-allow becomes permanent, or
// the other way round). A different, overlapping element in an interval set
// fails with [ErrOverlap]. A wider deny prefix still wins over an allowed
// address inside it; [Firewall.Explain] shows that.
func (f *Firewall) Apply(action string, dest netip.Prefix, ttl time.Duration) error {
	if action != actionAllow && action != actionDeny {
		return fmt.Errorf("apply %q to %v: %w", action, dest, ErrAction)
	}
	p, err := normalize(dest)
	if err != nil {
		return fmt.Errorf("apply %s: %w", action, err)
	}
	if ttl < 0 {
		return fmt.Errorf("apply %s %v: negative ttl %v", action, p, ttl)
	}
	other := actionDeny
	if action == actionDeny {
		other = actionAllow
	}
	err = f.update(func(s *snapshot) error {
		v4, single := p.Addr().Is4(), p.IsSingleIP()
		tgt, err := s.get(f.layout.list(action, v4).target(single))
		if err != nil {
			return err
		}
		r := rangeOf(p)
		for _, e := range tgt.elems {
			if e.ipRange == r {
				if err := f.conn.SetDeleteElements(tgt.set, encodeDelete(tgt.set, e)); err != nil {
					return err
				}
			} else if tgt.set.Interval && e.overlaps(r) {
				return fmt.Errorf("%v in set %s: %w", e.ipRange.String(), tgt.set.Name, ErrOverlap)
			}
		}
		els, err := encode(tgt.set, p, ttl)
		if err != nil {
			return err
		}
		if err := f.conn.SetAddElements(tgt.set, els); err != nil {
			return err
		}
		return f.queueRemove(s, other, p)
	})
	if err != nil {
		return fmt.Errorf("apply %s %v: %w", action, p, err)
	}
	return nil
}

// Revoke removes dest from the allow and deny sets of its family (exact
// matches only). It is not an error if dest is in neither.
func (f *Firewall) Revoke(dest netip.Prefix) error {
	p, err := normalize(dest)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	err = f.update(func(s *snapshot) error {
		if err := f.queueRemove(s, actionAllow, p); err != nil {
			return err
		}
		return f.queueRemove(s, actionDeny, p)
	})
	if err != nil {
		return fmt.Errorf("revoke %v: %w", p, err)
	}
	return nil
}

// queueRemove queues the deletion of p from list's set, if it is there.
func (f *Firewall) queueRemove(s *snapshot, list string, p netip.Prefix) error {
	ss, err := s.get(f.layout.list(list, p.Addr().Is4()).target(p.IsSingleIP()))
	if err != nil {
		return err
	}
	r := rangeOf(p)
	for _, e := range ss.elems {
		if e.ipRange == r {
			return f.conn.SetDeleteElements(ss.set, encodeDelete(ss.set, e))
		}
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

// List returns the elements of the allow and deny sets, deny sets first.
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

// Explain says what the ruleset does with a new connection to dst:port,
// judged from the live set contents. See [Explanation].
func (f *Firewall) Explain(dst netip.Addr, port uint16) (Explanation, error) {
	f.mu.Lock()
	s, err := f.read()
	f.mu.Unlock()
	if err != nil {
		return Explanation{}, err
	}
	return explain(f.layout, s, dst, port), nil
}

// read takes a snapshot of the layout's sets. Sets that do not exist are
// absent from the snapshot. Callers hold f.mu.
func (f *Firewall) read() (*snapshot, error) {
	s := &snapshot{sets: make(map[string]*setState)}
	tables, err := f.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var t *nftables.Table
	for _, tt := range tables {
		if tt.Name == f.layout.Table {
			t = tt
		}
	}
	if t == nil {
		return s, nil
	}
	s.engaged = true
	sets, err := f.conn.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets of inet %s: %w", t.Name, err)
	}
	want := map[string]bool{f.layout.Resolver4: true, f.layout.Resolver6: true}
	for _, ref := range f.layout.listSets() {
		want[ref.name] = true
	}
	for _, set := range sets {
		if !want[set.Name] || set.Name == "" {
			continue
		}
		raw, err := f.conn.GetSetElements(set)
		if err != nil {
			return nil, fmt.Errorf("list set %s: %w", set.Name, err)
		}
		s.sets[set.Name] = &setState{set: set, elems: decode(set, raw)}
	}
	return s, nil
}

// snapshot is the state of the layout's sets at one moment.
type snapshot struct {
	engaged bool
	sets    map[string]*setState
}

type setState struct {
	set   *nftables.Set
	elems []stored
}

func (s *snapshot) get(name string) (*setState, error) {
	ss, ok := s.sets[name]
	if !ok {
		return nil, fmt.Errorf("set %s missing: %w", name, ErrNotEngaged)
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

// Element is one entry of an allow or deny set.
type Element struct {
	// Set is the kernel set's name, List "allow" or "deny".
	Set, List string
	// Prefix is the entry as a CIDR prefix (/32 or /128 for a single
	// address). It is the zero Prefix for an interval that is not a CIDR
	// (only possible in sets written by other tools).
	Prefix netip.Prefix
	// First and Last are the first and last address covered (inclusive).
	First, Last netip.Addr
	// Timeout is the element's timeout, 0 for a permanent element.
	Timeout time.Duration
	// Expires is the time left before the kernel removes the element, as of
	// the read; 0 for a permanent element.
	Expires time.Duration
	// Comment is the element's comment, if any.
	Comment string
}

func (e stored) element(set, list string) Element {
	p, _ := e.prefix()
	return Element{
		Set: set, List: list, Prefix: p, First: e.first, Last: e.last,
		Timeout: e.timeout, Expires: e.expires, Comment: e.comment,
	}
}

func (r ipRange) String() string {
	if p, ok := r.prefix(); ok {
		return p.String()
	}
	return r.first.String() + "-" + r.last.String()
}
