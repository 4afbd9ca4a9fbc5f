// Package policy reads and writes clearance's YAML policy files: the
// initial allow/deny lists and DNS resolvers of a project or image.
//
// # Files
//
// One file per name, <dir>/<name>.yaml (dir defaults to [DefaultDir]):
//
//	allow:
//	  - 192.0.2.10              # a single address
//	  - 198.51.100.0/24         # a CIDR prefix
//	  - dest: 2001:db8::1       # the long form, with a comment
//	    comment: package mirror
//	deny:
//	  - 203.0.113.0/24
//	resolvers:
//	  - 192.0.2.53
//
// Every key is optional; unknown keys are errors, reported with the file and
// line. A missing or empty file is an empty policy. [Append] rewrites a file
// atomically (temporary file, fsync, rename, fsync of the directory).
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// DefaultDir is where policy files live unless configured otherwise.
const DefaultDir = "/etc/clearance/policy.d"

// List names accepted by [Append].
const (
	ListAllow = "allow"
	ListDeny  = "deny"
)

// Entry is one destination of an allow or deny list.
type Entry struct {
	// Dest is the destination, a single address as a /32 or /128 prefix.
	Dest netip.Prefix
	// Comment is free text kept with the entry.
	Comment string
}

// String formats the destination as written in files: an address without
// /32 or /128, else the CIDR.
func (e Entry) String() string {
	if e.Dest.IsSingleIP() {
		return e.Dest.Addr().String()
	}
	return e.Dest.String()
}

// Policy is the content of one policy file. The zero value is the empty
// policy.
type Policy struct {
	Allow     []Entry
	Deny      []Entry
	Resolvers []netip.Addr
}

// AllowPrefixes returns the destinations of the allow list.
func (p *Policy) AllowPrefixes() []netip.Prefix { return prefixes(p.Allow) }

// DenyPrefixes returns the destinations of the deny list.
func (p *Policy) DenyPrefixes() []netip.Prefix { return prefixes(p.Deny) }

func prefixes(es []Entry) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(es))
	for _, e := range es {
		out = append(out, e.Dest)
	}
	return out
}

// Error is a problem in a policy file, with its position when known.
type Error struct {
	File string
	Line int // 0 when unknown
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
	}
	return e.File + ": " + e.Msg
}

// ParseDest parses "192.0.2.1", "2001:db8::/32" or "198.51.100.0/24" into a
// masked prefix. IPv4-mapped IPv6 addresses become IPv4, zones are refused.
// A CIDR with host bits set ("10.0.0.1/8") is refused as ambiguous.
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

// Parse decodes a policy document. file labels error messages.
func Parse(file string, data []byte) (*Policy, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &Policy{}, nil
		}
		return nil, yamlError(file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{File: file, Line: extra.Line, Msg: "more than one YAML document"}
	}
	return fromNode(file, &doc)
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlError turns a yaml.v3 error into an *Error with its line.
func yamlError(file string, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: n, Msg: m[2]}
	}
	return &Error{File: file, Msg: strings.TrimPrefix(msg, "yaml: ")}
}

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
		return nil, fail(doc, "policy must be a mapping with keys allow, deny, resolvers")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		if seen[k.Value] {
			return nil, fail(k, "key %q repeated", k.Value)
		}
		seen[k.Value] = true
		switch k.Value {
		case ListAllow, ListDeny, "resolvers":
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				continue // "allow:" with nothing after it
			}
			if v.Kind != yaml.SequenceNode {
				return nil, fail(v, "%s must be a list", k.Value)
			}
		}
		switch k.Value {
		case ListAllow, ListDeny:
			for _, item := range v.Content {
				e, err := entryFromNode(item, fail)
				if err != nil {
					return nil, err
				}
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
			return nil, fail(k, "unknown key %q (want allow, deny or resolvers)", k.Value)
		}
	}
	return p, nil
}

func entryFromNode(n *yaml.Node, fail func(*yaml.Node, string, ...any) error) (Entry, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		d, err := ParseDest(n.Value)
		if err != nil {
			return Entry{}, fail(n, "%v", err)
		}
		return Entry{Dest: d}, nil
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
				d, err := ParseDest(v.Value)
				if err != nil {
					return Entry{}, fail(v, "%v", err)
				}
				e.Dest, haveDest = d, true
			case "comment":
				e.Comment = v.Value
			default:
				return Entry{}, fail(k, "unknown key %q in entry (want dest, comment)", k.Value)
			}
		}
		if !haveDest {
			return Entry{}, fail(n, "entry without dest")
		}
		return e, nil
	}
	return Entry{}, fail(n, "entry must be an address, a CIDR or a mapping with dest and comment")
}

// Marshal encodes p in the file format. Parse(Marshal(p)) equals p.
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

func entryNode(e Entry) *yaml.Node {
	dest := &yaml.Node{Kind: yaml.ScalarNode, Value: e.String()}
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
