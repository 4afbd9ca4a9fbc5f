// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package policy reads and writes clearance's YAML policy files: the
// initial allow/deny lists and DNS resolvers of a project or image.
//
// # Files
//
// One file per name, <dir>/<name>.yaml. docs/policy.md is the reference;
// in short:
//
//	include: [dev-python, github]      # other policies, by name
//	allow:
//	  - github.com                     # that name only
//	  - "*.githubusercontent.com"      # one or more labels below it, never the apex
//	  - pypi.org:443/tcp               # a port and protocol
//	  - example.org:8443               # a port, tcp and udp
//	  - 192.0.2.10                     # a single address
//	  - 198.51.100.0/24:53/udp         # a CIDR prefix, one port
//	  - "[2001:db8::1]:443/tcp"        # IPv6 with a port: in brackets
//	  - dest: 2001:db8::/32            # the long form, with a comment
//	    comment: package mirror
//	deny:
//	  - 203.0.113.0/24
//	resolvers:
//	  - 192.0.2.53
//
// Every key is optional; unknown keys are errors, reported with the file and
// line ([Error]). A missing or empty file is an empty policy. YAML reads a
// plain value starting with "*" as an alias and one starting with "[" as a
// list, so wildcards and bracketed addresses are quoted.
//
// # Search path and layers
//
// Policies are found by name in an ordered list of directories, the first
// hit winning: [DefaultDir] (the administrator's, which also overrides a
// shipped profile of the same name) then [SharedDir] (profiles shipped with
// clearance). [LoadLayered] loads a policy with its includes expanded and
// puts a user's own file on top; [Append] adds an "always" verdict to a
// file, atomically.
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/terok-ai/clearance/internal/dnsname"
)

// DefaultDir is the administrator's policy directory, searched first; the
// verdict service appends "always" verdicts under it.
const DefaultDir = "/etc/clearance/policy.d"

// SharedDir holds the profiles shipped with clearance, searched after
// [DefaultDir].
const SharedDir = "/usr/share/clearance/policy.d"

// DefaultPath returns the default search path: [DefaultDir], then
// [SharedDir].
func DefaultPath() []string { return []string{DefaultDir, SharedDir} }

// List names accepted by [Append].
const (
	ListAllow = "allow"
	ListDeny  = "deny"
)

// Proto is the transport protocol of an entry with a port, as its IP
// protocol number.
type Proto uint8

// Protocols of an entry. An entry with a port and [ProtoAny] covers that
// port over TCP and UDP; an entry without a port covers every port and
// protocol and always has ProtoAny.
const (
	ProtoAny Proto = 0
	ProtoTCP Proto = 6
	ProtoUDP Proto = 17
)

// String returns "tcp", "udp", "" for [ProtoAny], or "proto(N)".
func (p Proto) String() string {
	switch p {
	case ProtoAny:
		return ""
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
}

// Source is where an entry or include was read.
type Source struct {
	// File is the policy file's path as it was opened.
	File string
	// Line is the 1-based line, 0 when unknown.
	Line int
}

// String returns "file:line", "file" without a line, "" when unknown.
func (s Source) String() string {
	if s.Line > 0 {
		return s.File + ":" + strconv.Itoa(s.Line)
	}
	return s.File
}

// Entry is one destination of an allow or deny list: a name pattern or an
// address prefix, optionally narrowed to one port.
type Entry struct {
	// Dest is the destination of an address entry, a single address as a
	// /32 or /128 prefix, or a CIDR prefix; masked, IPv4 never mapped into
	// IPv6. It is the zero Prefix in a name entry.
	Dest netip.Prefix
	// Name is the destination of a name entry ("github.com",
	// "*.githubusercontent.com"); the zero Pattern in an address entry.
	Name dnsname.Pattern
	// Port narrows the entry to one port, 1..65535; 0 means every port
	// and protocol.
	Port uint16
	// Proto is the protocol with Port: ProtoTCP, ProtoUDP, or ProtoAny
	// for both. Always ProtoAny when Port is 0.
	Proto Proto
	// Comment is free text kept with the entry.
	Comment string
	// Source is where the entry was read ([Parse] sets it); it takes no
	// part in comparing entries.
	Source Source
}

// IsName reports whether e is a name entry.
func (e Entry) IsName() bool { return !e.Name.IsZero() }

// String formats the destination as written in files: the name or
// pattern, an address without /32 or /128, or the CIDR; then ":port" and
// "/proto" when set, with an IPv6 address or prefix in brackets
// ("[2001:db8::1]:443/tcp"). The comment is not included.
func (e Entry) String() string {
	var host string
	v6 := false
	switch {
	case e.IsName():
		host = e.Name.String()
	case !e.Dest.IsValid():
		return ""
	case e.Dest.IsSingleIP():
		host, v6 = e.Dest.Addr().String(), e.Dest.Addr().Is6()
	default:
		host, v6 = e.Dest.String(), e.Dest.Addr().Is6()
	}
	if e.Port == 0 {
		return host
	}
	if v6 {
		host = "[" + host + "]"
	}
	s := host + ":" + strconv.Itoa(int(e.Port))
	if e.Proto != ProtoAny {
		s += "/" + e.Proto.String()
	}
	return s
}

// key is what makes two entries the same destination.
type key struct {
	dest  netip.Prefix
	name  dnsname.Pattern
	port  uint16
	proto Proto
}

func (e Entry) key() key { return key{e.Dest, e.Name, e.Port, e.Proto} }

// Same reports whether e and o are the same destination, port and
// protocol (comments and sources aside).
func (e Entry) Same(o Entry) bool { return e.key() == o.key() }

// normalize checks an Entry built in code and puts it in the form Parse
// returns.
func (e Entry) normalize() (Entry, error) {
	if e.IsName() == e.Dest.IsValid() {
		return Entry{}, errors.New("an entry needs either a name or an address")
	}
	switch {
	case e.Port == 0 && e.Proto != ProtoAny:
		return Entry{}, fmt.Errorf("protocol %v without a port", e.Proto)
	case e.Proto != ProtoAny && e.Proto != ProtoTCP && e.Proto != ProtoUDP:
		return Entry{}, fmt.Errorf("unknown protocol %v (want tcp or udp)", e.Proto)
	}
	if e.Dest.IsValid() {
		d, err := ParseDest(e.Dest.Masked().String())
		if err != nil {
			return Entry{}, err
		}
		e.Dest = d
	}
	return e, nil
}

// List is an allow or deny list.
type List []Entry

// Prefixes returns the destinations of the address entries without a port
// (whole hosts and networks, every port and protocol), without duplicates.
func (l List) Prefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(l))
	seen := make(map[netip.Prefix]bool, len(l))
	for _, e := range l {
		if !e.IsName() && e.Port == 0 && !seen[e.Dest] {
			seen[e.Dest] = true
			out = append(out, e.Dest)
		}
	}
	return out
}

// Ported returns the address entries with a port.
func (l List) Ported() List {
	var out List
	for _, e := range l {
		if !e.IsName() && e.Port != 0 {
			out = append(out, e)
		}
	}
	return out
}

// Names returns the name entries, with or without a port.
func (l List) Names() List {
	var out List
	for _, e := range l {
		if e.IsName() {
			out = append(out, e)
		}
	}
	return out
}

// Include is one entry of a policy's include list.
type Include struct {
	// Name is the included policy's name (see [ValidName]).
	Name string
	// Source is where the include was read.
	Source Source
}

// Policy is the content of one policy file, or of several merged
// ([LoadLayered]). The zero value is the empty policy.
type Policy struct {
	// Include lists the policies this one pulls in, as written; it is
	// empty in a policy returned by LoadLayered, which expands it.
	Include []Include
	// Allow lists the destinations the container may reach without a
	// prompt.
	Allow List
	// Deny lists the destinations refused silently; deny wins over allow.
	Deny List
	// Resolvers are DNS servers the container may query, besides the
	// configured ones.
	Resolvers []netip.Addr
}

// AllowPrefixes returns the address entries of the allow list that have
// no port ([List.Prefixes]).
func (p *Policy) AllowPrefixes() []netip.Prefix { return p.Allow.Prefixes() }

// DenyPrefixes returns the address entries of the deny list that have no
// port ([List.Prefixes]).
func (p *Policy) DenyPrefixes() []netip.Prefix { return p.Deny.Prefixes() }

// merge appends q's lists and resolvers to p's.
func (p *Policy) merge(q *Policy) {
	p.Allow = append(p.Allow, q.Allow...)
	p.Deny = append(p.Deny, q.Deny...)
	for _, r := range q.Resolvers {
		if !slices.Contains(p.Resolvers, r) {
			p.Resolvers = append(p.Resolvers, r)
		}
	}
}

// Error is a problem in a policy file, with its position when known.
type Error struct {
	// File is the policy file's path.
	File string
	// Line is the 1-based line of the problem, 0 when unknown.
	Line int
	// Msg says what is wrong.
	Msg string
}

// Error returns "file:line: msg", or "file: msg" without a line.
func (e *Error) Error() string {
	if e.Line > 0 {
		return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
	}
	return e.File + ": " + e.Msg
}

// ParseDest parses "192.0.2.1", "2001:db8::/32" or "198.51.100.0/24" into a
// masked prefix. IPv4-mapped IPv6 addresses become IPv4, zones are refused.
// A CIDR with host bits set ("10.0.0.1/8") is refused as ambiguous. Names
// and ports are not accepted here (see [ParseEntry]).
func ParseDest(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("CIDR %q has host bits set (did you mean %v?)", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid address %q", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseEntry parses one destination as written in a list: a name
// ("github.com"), a wildcard ("*.githubusercontent.com"), an address or a
// CIDR, each optionally followed by ":port" or ":port/proto" (tcp or udp).
// An IPv6 address or prefix with a port is written in brackets
// ("[2001:db8::1]:443/tcp"). Names are normalised ([dnsname.ParsePattern]).
func ParseEntry(s string) (Entry, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Entry{}, errors.New("empty entry")
	}
	host, portSpec, hasPort := s, "", false
	bracketed := false
	switch {
	case s[0] == '[':
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return Entry{}, fmt.Errorf("%q: missing \"]\"", s)
		}
		host, bracketed = s[1:end], true
		switch rest := s[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			portSpec, hasPort = rest[1:], true
		default:
			return Entry{}, fmt.Errorf("%q: want \":port\" after \"]\"", s)
		}
	case strings.Count(s, ":") > 1:
		// An IPv6 address or prefix without a port.
	default:
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, portSpec, hasPort = s[:i], s[i+1:], true
		}
	}

	if host == "" {
		return Entry{}, fmt.Errorf("%q: missing name or address before \":\"", s)
	}
	var e Entry
	if hasPort {
		var err error
		if e.Port, e.Proto, err = parsePort(s, portSpec); err != nil {
			return Entry{}, err
		}
	}
	if bracketed && !strings.Contains(host, ":") {
		return Entry{}, fmt.Errorf("%q: brackets are for IPv6 addresses only", s)
	}
	if bracketed || strings.Contains(host, ":") || strings.Trim(host, "0123456789./") == "" || strings.Contains(host, "/") {
		d, err := ParseDest(host)
		if err != nil {
			if _, after, ok := strings.Cut(s, "/"); ok && !bracketed && strings.Count(s, ":") > 1 && strings.Trim(after, "0123456789") != "" {
				return Entry{}, fmt.Errorf("%w (an IPv6 address with a port goes in brackets, as in \"[2001:db8::1]:443/tcp\")", err)
			}
			return Entry{}, err
		}
		e.Dest = d
		return e, nil
	}
	p, err := dnsname.ParsePattern(host)
	if err != nil {
		return Entry{}, err
	}
	e.Name = p
	return e, nil
}

// parsePort parses "443" or "443/tcp" of entry s.
func parsePort(s, spec string) (uint16, Proto, error) {
	num, proto, hasProto := strings.Cut(spec, "/")
	if num == "" {
		return 0, 0, fmt.Errorf("%q: missing port after \":\"", s)
	}
	if strings.Trim(num, "0123456789") != "" {
		return 0, 0, fmt.Errorf("%q: invalid port %q", s, num)
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil || n == 0 || n > 65535 {
		return 0, 0, fmt.Errorf("%q: port %s out of range 1..65535", s, num)
	}
	var pr Proto
	switch {
	case !hasProto:
	case strings.EqualFold(proto, "tcp"):
		pr = ProtoTCP
	case strings.EqualFold(proto, "udp"):
		pr = ProtoUDP
	case proto == "":
		return 0, 0, fmt.Errorf("%q: missing protocol after \"/\" (want tcp or udp)", s)
	default:
		return 0, 0, fmt.Errorf("%q: unknown protocol %q (want tcp or udp)", s, proto)
	}
	return uint16(n), pr, nil
}

// Parse decodes a policy document. file labels error messages and the
// entries' Source. Includes are listed, not expanded.
func Parse(file string, data []byte) (*Policy, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &Policy{}, nil
		}
		return nil, yamlError(file, data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{File: file, Line: extra.Line, Msg: "more than one YAML document"}
	}
	return fromNode(file, &doc)
}

var (
	yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	// unquoted finds a plain value that YAML cannot read as meant: a
	// wildcard (an alias to YAML) or a bracketed address (a list).
	unquoted = regexp.MustCompile(`(?:^\s*(?:-\s+)?(?:dest:\s+)?|[\[,]\s*)(\*|\[[0-9A-Fa-f:.]*:)`)
)

// yamlError turns a yaml.v3 error into an *Error with its line. A syntax
// error in a document with an unquoted wildcard or bracketed address
// points at that line instead: YAML's own message would not help.
func yamlError(file string, data []byte, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	} else {
		for i, l := range strings.Split(string(data), "\n") {
			m := unquoted.FindStringSubmatch(l)
			switch {
			case m == nil:
			case m[1] == "*":
				return &Error{File: file, Line: i + 1, Msg: `quote wildcards: YAML reads a plain "*" as an alias (write "*.example.com")`}
			default:
				return &Error{File: file, Line: i + 1, Msg: `quote bracketed addresses: YAML reads a plain "[" as a list (write "[2001:db8::1]:443/tcp")`}
			}
		}
	}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: n, Msg: m[2]}
	}
	return &Error{File: file, Msg: strings.TrimPrefix(msg, "yaml: ")}
}

// failFunc builds an *Error at a node.
type failFunc func(n *yaml.Node, format string, args ...any) error

// fromNode validates the document tree by hand, so every error carries a
// line and unknown keys are refused.
func fromNode(file string, doc *yaml.Node) (*Policy, error) {
	fail := func(n *yaml.Node, format string, args ...any) error {
		return &Error{File: file, Line: n.Line, Msg: fmt.Sprintf(format, args...)}
	}
	p := &Policy{}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return p, nil
		}
		doc = doc.Content[0]
	}
	if doc.Kind == yaml.ScalarNode && doc.Tag == "!!null" {
		return p, nil
	}
	if doc.Kind != yaml.MappingNode {
		return nil, fail(doc, "policy must be a mapping with keys include, allow, deny, resolvers")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		if seen[k.Value] {
			return nil, fail(k, "key %q repeated", k.Value)
		}
		seen[k.Value] = true
		switch k.Value {
		case "include", ListAllow, ListDeny, "resolvers":
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				continue // "allow:" with nothing after it
			}
			if v.Kind != yaml.SequenceNode {
				return nil, fail(v, "%s must be a list", k.Value)
			}
		}
		switch k.Value {
		case "include":
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					return nil, fail(item, "include must list policy names")
				}
				if !ValidName(item.Value) {
					return nil, fail(item, "invalid policy name %q in include (letters, digits, \"_\", \".\" and \"-\", not starting with a dot)", item.Value)
				}
				if slices.ContainsFunc(p.Include, func(x Include) bool { return x.Name == item.Value }) {
					return nil, fail(item, "policy %q included twice", item.Value)
				}
				p.Include = append(p.Include, Include{Name: item.Value, Source: Source{File: file, Line: item.Line}})
			}
		case ListAllow, ListDeny:
			for _, item := range v.Content {
				e, err := entryFromNode(item, fail)
				if err != nil {
					return nil, err
				}
				e.Source = Source{File: file, Line: item.Line}
				if k.Value == ListAllow {
					p.Allow = append(p.Allow, e)
				} else {
					p.Deny = append(p.Deny, e)
				}
			}
		case "resolvers":
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					return nil, fail(item, "resolver must be an IP address")
				}
				d, err := ParseDest(item.Value)
				if err != nil || !d.IsSingleIP() || strings.Contains(item.Value, "/") {
					return nil, fail(item, "invalid resolver address %q", item.Value)
				}
				p.Resolvers = append(p.Resolvers, d.Addr())
			}
		default:
			return nil, fail(k, "unknown key %q (want include, allow, deny or resolvers)", k.Value)
		}
	}
	return p, nil
}

// entryFromNode parses one list item: a scalar in the syntax of
// [ParseEntry], or a mapping with dest (the same syntax) and comment.
func entryFromNode(n *yaml.Node, fail failFunc) (Entry, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		e, err := ParseEntry(n.Value)
		if err != nil {
			return Entry{}, fail(n, "%v", err)
		}
		return e, nil
	case yaml.MappingNode:
		var e Entry
		var haveDest bool
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind != yaml.ScalarNode {
				return Entry{}, fail(v, "%s must be a string", k.Value)
			}
			switch k.Value {
			case "dest":
				if haveDest {
					return Entry{}, fail(k, "key \"dest\" repeated")
				}
				d, err := ParseEntry(v.Value)
				if err != nil {
					return Entry{}, fail(v, "%v", err)
				}
				d.Comment = e.Comment
				e, haveDest = d, true
			case "comment":
				e.Comment = v.Value
			case "port", "proto":
				return Entry{}, fail(k, "unknown key %q in entry (a port goes in dest, as in \"dest: example.com:443/tcp\")", k.Value)
			default:
				return Entry{}, fail(k, "unknown key %q in entry (want dest, comment)", k.Value)
			}
		}
		if !haveDest {
			return Entry{}, fail(n, "entry without dest")
		}
		return e, nil
	case yaml.SequenceNode:
		return Entry{}, fail(n, "an entry cannot be a list (quote bracketed addresses: \"[2001:db8::1]:443/tcp\")")
	}
	return Entry{}, fail(n, "entry must be a name, an address, a CIDR or a mapping with dest and comment")
}

// Marshal encodes p in the file format. Parse(Marshal(p)) equals p, but
// for the entries' Source.
func (p *Policy) Marshal() ([]byte, error) {
	root := &yaml.Node{Kind: yaml.MappingNode}
	add := func(key string, items []*yaml.Node) {
		if len(items) == 0 {
			return
		}
		root.Content = append(root.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Value: key},
			&yaml.Node{Kind: yaml.SequenceNode, Content: items})
	}
	var inc []*yaml.Node
	for _, i := range p.Include {
		inc = append(inc, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: i.Name})
	}
	add("include", inc)
	add(ListAllow, entryNodes(p.Allow))
	add(ListDeny, entryNodes(p.Deny))
	var rs []*yaml.Node
	for _, r := range p.Resolvers {
		rs = append(rs, &yaml.Node{Kind: yaml.ScalarNode, Value: r.String()})
	}
	add("resolvers", rs)
	if len(root.Content) == 0 {
		return []byte{}, nil
	}
	return encodeNode(root)
}

func entryNodes(es []Entry) []*yaml.Node {
	var out []*yaml.Node
	for _, e := range es {
		out = append(out, entryNode(e))
	}
	return out
}

// entryNode is e in the file format. The scalar is tagged !!str so that
// YAML quotes what it would read as something else ("null", "*.x").
func entryNode(e Entry) *yaml.Node {
	dest := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: e.String()}
	if e.Comment == "" {
		return dest
	}
	return &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Value: "dest"}, dest,
		{Kind: yaml.ScalarNode, Value: "comment"}, {Kind: yaml.ScalarNode, Value: e.Comment, Style: yaml.DoubleQuotedStyle},
	}}
}

func encodeNode(n *yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("encode policy: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode policy: %w", err)
	}
	return buf.Bytes(), nil
}
