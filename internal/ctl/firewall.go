// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/terok-ai/clearance/internal/nft"
	"github.com/terok-ai/clearance/internal/policy"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/render"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	fw "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
	"github.com/terok-ai/clearance/internal/verdict/verdictclient"
)

// Firewall is the part of the privileged verdict service
// (org.terok.ClearanceFirewall1 on /run/clearance/verdict.sock) that
// clearancectl reads. Implementations need not be safe for concurrent use;
// the caller closes them.
type Firewall interface {
	// Explain says what the container's ruleset does with a new
	// connection to ip:port/proto.
	Explain(ctx context.Context, container, ip string, port int64, proto string) (Explanation, error)
	// List returns the elements of the container's allow and deny sets.
	List(ctx context.Context, container string) ([]fw.Element, error)
	// Close releases the connection.
	Close() error
}

// Explanation is the firewall's answer for one address.
type Explanation struct {
	// Verdict is "accept", "drop", "reject" or "redirect".
	Verdict string `json:"verdict"`
	// Reason names the deciding rule: "loopback", "dns", "denied",
	// "allowed", "learned", "blocked" or "not-engaged".
	Reason string `json:"reason"`
	// ExpiresUsec is when the deciding set element expires
	// (CLOCK_REALTIME microseconds), 0 for never or no element.
	ExpiresUsec int64 `json:"expires_usec"`
	// Set and Comment are the deciding element's set and comment (the
	// name it was added for), when an element decides.
	Set     string `json:"set,omitempty"`
	Comment string `json:"comment,omitempty"`
	// Packets and Bytes are what the deciding element matched so far.
	Packets int64 `json:"packets,omitempty"`
	Bytes   int64 `json:"bytes,omitempty"`
}

// errFirewallUnreachable wraps a failure to connect to the verdict service.
var errFirewallUnreachable = errors.New("verdict service not reachable")

// varlinkFirewall is [Firewall] over varlink.
type varlinkFirewall struct{ c *verdictclient.Client }

func dialFirewall(ctx context.Context, path string) (Firewall, error) {
	c, err := verdictclient.Dial(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", errFirewallUnreachable, path, err)
	}
	return &varlinkFirewall{c: c}, nil
}

// containerNetns opens the container's network namespace from its runtime
// record under our uid, to pass with the call; nil when there is none (the
// service then resolves the container itself).
func containerNetns(container string) *os.File {
	rec, err := record.ReadOwned(record.Locate(record.DefaultRuntimeRoot, os.Getuid(), container), uint32(os.Getuid()))
	if err != nil {
		return nil
	}
	ns, err := rec.OpenNetns()
	if err != nil {
		return nil
	}
	return ns
}

func (v *varlinkFirewall) Explain(ctx context.Context, container, ip string, port int64, proto string) (Explanation, error) {
	ns := containerNetns(container)
	if ns != nil {
		defer ns.Close()
	}
	x, err := v.c.Explain(ctx, container, ip, int(port), proto, ns)
	e := Explanation{Verdict: x.Verdict, Reason: x.Reason, Set: x.Set, Comment: x.Comment, Packets: x.Packets, Bytes: x.Bytes}
	if !x.Expires.IsZero() {
		e.ExpiresUsec = x.Expires.UnixMicro()
	}
	return e, err
}

func (v *varlinkFirewall) List(ctx context.Context, container string) ([]fw.Element, error) {
	ns := containerNetns(container)
	if ns != nil {
		defer ns.Close()
	}
	return v.c.List(ctx, container, ns)
}

func (v *varlinkFirewall) Close() error { return v.c.Close() }

func defaultLookupHost(ctx context.Context, host string) ([]string, error) {
	return net.DefaultResolver.LookupHost(ctx, host)
}

// firewallFailure maps an error of the verdict service to a message and
// exit code.
func (r *runner) firewallFailure(err error, container string) int {
	if errors.Is(err, errFirewallUnreachable) {
		return r.fail(ExitFailure, "%s (is clearance-verdict.socket enabled?)", cleanLong(err.Error()))
	}
	var p struct {
		Reason string `json:"reason"`
		Op     string `json:"op"`
		Dest   string `json:"dest"`
	}
	errParams(err, &p)
	switch varlinkapi.ErrorName(err) {
	case errFwNoContainer:
		return r.fail(ExitNotFound, "no such container %s (no runtime record for it under your uid, or it has exited)", clean(container))
	case errFwPermission, errPermission:
		return r.fail(ExitFailure, "permission denied by the verdict service: %s", orDash(cleanLong(p.Reason)))
	case errFwStale:
		return r.fail(ExitFailure, "the runtime record of %s does not match the kernel: %s", clean(container), orDash(cleanLong(p.Reason)))
	case errFwInvalidDest:
		return r.fail(ExitUsage, "invalid destination %s", clean(p.Dest))
	case errFwFailed:
		return r.fail(ExitFailure, "the firewall failed (%s): %s", clean(p.Op), orDash(cleanLong(p.Reason)))
	case errIfaceNotFound, errMethodNotFound:
		return r.fail(ExitFailure, "the verdict service does not offer org.terok.ClearanceFirewall1 (a seed verdict server?)")
	}
	return r.fail(ExitFailure, "verdict service: %s", describeErr(err))
}

// splitDest parses DEST[:PORT]: "host", "host:443", "192.0.2.1:443",
// "2001:db8::1", "[2001:db8::1]:443".
func splitDest(s string) (host string, port int64, err error) {
	if s == "" {
		return "", 0, errors.New("empty destination")
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.String(), 0, nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		a, err := netip.ParseAddr(s[1 : len(s)-1])
		if err != nil {
			return "", 0, fmt.Errorf("invalid address %q", s)
		}
		return a.String(), 0, nil
	}
	if strings.Contains(s, ":") {
		h, ps, err := net.SplitHostPort(s)
		if err != nil {
			return "", 0, fmt.Errorf("invalid destination %q (want HOST, HOST:PORT or [IPv6]:PORT)", s)
		}
		n, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || n == 0 {
			return "", 0, fmt.Errorf("invalid port %q", ps)
		}
		if h == "" {
			return "", 0, errors.New("empty host")
		}
		return h, int64(n), nil
	}
	return s, 0, nil
}

// explainJSON is the output of "explain --json".
type explainJSON struct {
	Container string          `json:"container"`
	Dest      string          `json:"dest"`
	Port      int64           `json:"port"`
	Proto     string          `json:"proto"`
	Resolved  bool            `json:"resolved_on_host"`
	Addresses []explainResult `json:"addresses"`
}

type explainResult struct {
	IP string `json:"ip"`
	Explanation
}

func (r *runner) cmdExplain(ctx context.Context, args []string) int {
	fs := r.newFlags("explain", "CONTAINER DEST[:PORT] [--proto tcp|udp] [--json]",
		`Asks the verdict service what CONTAINER's ruleset does with a new
connection to DEST: accepted, dropped or rejected, which rule or set
element decides (and the name it was added for), and when that element
expires. A DEST that is a name is looked up among the addresses the
container's DNS forwarder learned for it, the addresses the container
currently has for that name; only when there are none is it resolved on
this host (the container may resolve it differently).`)
	proto := fs.String("proto", "", "protocol (tcp or udp; default: either)")
	asJSON := fs.Bool("json", false, "print JSON")
	sock := fs.String("socket", DefaultVerdictSocket, "the verdict service's `PATH`")
	pos, err := r.parse(fs, args)
	if err != nil {
		return parseExit(err)
	}
	if len(pos) != 2 {
		return r.usageErr(fs, "explain needs CONTAINER and DEST[:PORT]")
	}
	switch *proto {
	case "", "tcp", "udp":
	default:
		return r.usageErr(fs, "--proto must be tcp or udp")
	}
	container := pos[0]
	host, port, err := splitDest(pos[1])
	if err != nil {
		return r.usageErr(fs, "%s", clean(err.Error()))
	}
	out := explainJSON{Container: container, Dest: host, Port: port, Proto: *proto}
	var ips []string
	f, err := r.dialFirewall(ctx, *sock)
	if err != nil {
		return r.firewallFailure(err, container)
	}
	defer f.Close()
	if a, err := netip.ParseAddr(host); err == nil {
		ips = []string{a.Unmap().String()}
	} else {
		elems, err := f.List(ctx, container)
		if err != nil {
			return r.firewallFailure(err, container)
		}
		ips = addressesOf(elems, host)
		if len(ips) == 0 {
			out.Resolved = true
			ips, err = r.lookupHost(ctx, host)
			if err != nil || len(ips) == 0 {
				return r.fail(ExitNotFound, "the container has no address for %s, and it does not resolve on this host: %s",
					clean(host), describeErr(err))
			}
		}
		sort.Strings(ips)
	}
	for _, ip := range ips {
		x, err := f.Explain(ctx, container, ip, port, *proto)
		if err != nil {
			return r.firewallFailure(err, container)
		}
		out.Addresses = append(out.Addresses, explainResult{IP: ip, Explanation: x})
	}
	if *asJSON {
		if err := writeJSON(r.stdout, out); err != nil {
			return r.fail(ExitFailure, "%v", err)
		}
		return ExitOK
	}
	head := clean(host)
	if port > 0 {
		head = render.HostPort(head, port)
	}
	if *proto != "" {
		head += "/" + *proto
	}
	fmt.Fprintf(r.stdout, "%s from container %s", head, clean(container))
	if out.Resolved {
		fmt.Fprint(r.stdout, " (resolved on this host)")
	}
	fmt.Fprintln(r.stdout, ":")
	t := &table{head: []string{"ADDRESS", "VERDICT", "REASON", "ELEMENT", "HITS", "EXPIRES", "MEANING"}}
	for _, a := range out.Addresses {
		exp := "-"
		if t := usecTime(a.ExpiresUsec); !t.IsZero() {
			exp = clock(t, r.now())
		}
		verdict := clean(a.Verdict)
		switch a.Verdict {
		case "accept":
			verdict = r.paint(colGreen, verdict)
		case "drop", "reject":
			verdict = r.paint(colRed, verdict)
		}
		el := "-"
		if a.Set != "" {
			el = clean(a.Set)
			if a.Comment != "" {
				el += " (" + clean(a.Comment) + ")"
			}
		}
		hits := "-"
		if a.Set != "" {
			hits = hitsText(a.Packets, a.Bytes)
		}
		t.add(clean(a.IP), verdict, clean(a.Reason), el, hits, exp, reasonMeaning(a.Reason))
	}
	t.write(r.stdout, r)
	return ExitOK
}

// reasonMeaning explains the verdict service's reasons in words.
func reasonMeaning(reason string) string {
	switch reason {
	case "loopback":
		return "loopback traffic always passes"
	case "dns":
		return "DNS goes to the container's forwarder, which follows the name rules"
	case "learned":
		return "learned from a DNS answer for an allowed name"
	case "denied":
		return "in a deny set: dropped silently"
	case "allowed":
		return "in an allow set"
	case "blocked":
		return "no rule matches: logged (a prompt appears) and rejected"
	case "not-engaged":
		return "no ruleset: nothing is filtered"
	}
	return "-"
}

func (r *runner) cmdPolicy(ctx context.Context, args []string) int {
	if len(args) > 0 && args[0] == "propose" {
		return r.cmdPolicyPropose(ctx, args[1:])
	}
	if len(args) > 0 && args[0] == "stale" {
		return r.cmdPolicyStale(ctx, args[1:])
	}
	fs := r.newFlags("policy", "show|export CONTAINER [--json] [--all] | propose … | stale NAME …",
		`show:    lists the elements of CONTAINER's allow and deny sets, with expiry.
export:  prints them as a clearance YAML policy (permanent elements only,
         unless --all), ready for /etc/clearance/policy.d/<name>.yaml.
propose: proposes a policy from the audit trail (see policy propose --help).
stale:   lists the entries of a policy nothing used, from the counters its
         ended containers left (see policy stale --help).`)
	asJSON := fs.Bool("json", false, "show: print JSON")
	all := fs.Bool("all", false, "export: include elements that expire")
	sock := fs.String("socket", DefaultVerdictSocket, "the verdict service's `PATH`")
	pos, err := r.parse(fs, args)
	if err != nil {
		return parseExit(err)
	}
	if len(pos) != 2 || (pos[0] != "show" && pos[0] != "export") {
		return r.usageErr(fs, "policy needs show or export and CONTAINER, or propose")
	}
	verb, container := pos[0], pos[1]
	f, err := r.dialFirewall(ctx, *sock)
	if err != nil {
		return r.firewallFailure(err, container)
	}
	defer f.Close()
	elems, err := f.List(ctx, container)
	if err != nil {
		return r.firewallFailure(err, container)
	}
	if verb == "export" {
		return r.exportPolicy(elems, *all)
	}
	if *asJSON {
		if elems == nil {
			elems = []fw.Element{}
		}
		if err := writeJSON(r.stdout, elems); err != nil {
			return r.fail(ExitFailure, "%v", err)
		}
		return ExitOK
	}
	if len(elems) == 0 {
		fmt.Fprintf(r.stdout, "no allow or deny elements for %s\n", clean(container))
		return ExitOK
	}
	t := &table{head: []string{"LIST", "SET", "DEST", "HITS", "EXPIRES", "COMMENT"}}
	for _, e := range elems {
		exp := "never"
		if t := usecTime(e.Expires_usec); !t.IsZero() {
			exp = clock(t, r.now())
		}
		list := clean(e.List)
		if e.List == policy.ListDeny {
			list = r.paint(colRed, list)
		} else {
			list = r.paint(colGreen, list)
		}
		var p, b int64
		if e.Packets != nil && e.Bytes != nil {
			p, b = *e.Packets, *e.Bytes
		}
		t.add(list, clean(e.Set), clean(elementDest(e)), hitsText(p, b), exp, orDash(clean(e.Comment)))
	}
	t.write(r.stdout, r)
	return ExitOK
}

// exportPolicy writes elements as a YAML policy.
func (r *runner) exportPolicy(elems []fw.Element, all bool) int {
	var p policy.Policy
	skipped := 0
	seen := map[string]bool{}
	for _, e := range elems {
		if e.Timeout_sec > 0 && !all {
			skipped++
			continue
		}
		// Learned addresses follow DNS: export the name they were
		// learned for, which is what the next container needs.
		text := elementDest(e)
		if e.List == nft.ListLearned {
			if e.Comment == "" {
				continue
			}
			text = e.Comment
			if e.Port != nil && e.Proto != nil && *e.Port > 0 {
				text += ":" + strconv.FormatInt(*e.Port, 10) + "/" + *e.Proto
			}
		}
		entry, err := policy.ParseEntry(text)
		if err != nil {
			fmt.Fprintf(r.stderr, "clearancectl: skipping %s: %s\n", clean(text), clean(err.Error()))
			continue
		}
		if e.List != nft.ListLearned {
			entry.Comment = clean(e.Comment)
		}
		if seen[e.List+" "+entry.String()] {
			continue
		}
		seen[e.List+" "+entry.String()] = true
		switch e.List {
		case policy.ListAllow, nft.ListLearned:
			p.Allow = append(p.Allow, entry)
		case policy.ListDeny:
			p.Deny = append(p.Deny, entry)
		}
	}
	b, err := p.Marshal()
	if err != nil {
		return r.fail(ExitFailure, "%v", err)
	}
	if skipped > 0 {
		fmt.Fprintf(r.stderr, "clearancectl: left out %d element(s) that expire (use --all to include them)\n", skipped)
	}
	r.stdout.Write(b)
	return ExitOK
}

// elementDest formats an element's destination with its port:
// "192.0.2.1", "192.0.2.1:443/tcp", "[2001:db8::1]:53/udp".
func elementDest(e fw.Element) string {
	if e.Port == nil || e.Proto == nil || *e.Port == 0 {
		return e.Dest
	}
	d := e.Dest
	if strings.Contains(d, ":") {
		d = "[" + d + "]"
	}
	return d + ":" + strconv.FormatInt(*e.Port, 10) + "/" + *e.Proto
}

// addressesOf returns the addresses of the elements added for name (the
// learned ones and verdicts on the name): what the container currently
// has for it.
func addressesOf(elems []fw.Element, name string) []string {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	var out []string
	for _, e := range elems {
		if !strings.EqualFold(e.Comment, name) || strings.Contains(e.Dest, "/") || slices.Contains(out, e.Dest) {
			continue
		}
		out = append(out, e.Dest)
	}
	return out
}

// hitsText formats an element's counter: "12 pkts / 3.4 KiB", "unused".
func hitsText(packets, bytes int64) string {
	if packets == 0 {
		return "unused"
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v, u := float64(bytes), 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	size := strconv.FormatInt(bytes, 10) + " B"
	if u > 0 {
		size = strconv.FormatFloat(v, 'f', 1, 64) + " " + units[u]
	}
	return strconv.FormatInt(packets, 10) + " pkts / " + size
}
