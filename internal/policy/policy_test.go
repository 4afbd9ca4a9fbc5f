// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/terok-ai/clearance/internal/dnsname"
)

func pfx(s string) netip.Prefix {
	p, err := ParseDest(s)
	if err != nil {
		panic(err)
	}
	return p
}

func pat(s string) dnsname.Pattern {
	p, err := dnsname.ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// cmpOpts compares policies by content: where an entry was read is
// checked by its own tests.
var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmpopts.IgnoreFields(Entry{}, "Source"),
	cmpopts.IgnoreFields(Include{}, "Source"),
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *Policy
	}{
		{name: "empty file", in: "", want: &Policy{}},
		{name: "only a comment", in: "# nothing\n", want: &Policy{}},
		{name: "null lists", in: "allow:\ndeny:\n", want: &Policy{}},
		{
			name: "short and long forms",
			in: `allow:
  - 192.0.2.10
  - 198.51.100.0/24
  - 2001:db8::1
  - {dest: 203.0.113.5, comment: "mirror"}
deny: [203.0.113.0/24, "::ffff:192.0.2.7"]
resolvers: [192.0.2.53, "2001:db8::53"]
`,
			want: &Policy{
				Allow: []Entry{
					{Dest: pfx("192.0.2.10")}, {Dest: pfx("198.51.100.0/24")},
					{Dest: pfx("2001:db8::1")}, {Dest: pfx("203.0.113.5"), Comment: "mirror"},
				},
				Deny:      []Entry{{Dest: pfx("203.0.113.0/24")}, {Dest: pfx("192.0.2.7")}},
				Resolvers: []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8::53")},
			},
		},
		{
			name: "names and wildcards",
			in: `allow:
  - github.com
  - "*.githubusercontent.com"
  - GitHub.COM.
  - Bücher.example
  - '*.Bücher.example'
  - _acme-challenge.example.com
  - localhost
`,
			want: &Policy{Allow: []Entry{
				{Name: pat("github.com")}, {Name: pat("*.githubusercontent.com")}, {Name: pat("github.com")},
				{Name: pat("xn--bcher-kva.example")}, {Name: pat("*.xn--bcher-kva.example")},
				{Name: pat("_acme-challenge.example.com")}, {Name: pat("localhost")},
			}},
		},
		{
			name: "ports and protocols",
			in: `allow:
  - github.com:443/tcp
  - "*.githubusercontent.com:443/tcp"
  - example.org:8443
  - 192.0.2.10:22/TCP
  - 198.51.100.0/24:53/udp
  - "[2001:db8::1]:443/tcp"
  - "[2001:db8::/32]:53"
  - "[2001:db8::2]"
  - 2001:db8::3
  - 1.2.3.example:1
  - host:65535/udp
`,
			want: &Policy{Allow: []Entry{
				{Name: pat("github.com"), Port: 443, Proto: ProtoTCP},
				{Name: pat("*.githubusercontent.com"), Port: 443, Proto: ProtoTCP},
				{Name: pat("example.org"), Port: 8443},
				{Dest: pfx("192.0.2.10"), Port: 22, Proto: ProtoTCP},
				{Dest: pfx("198.51.100.0/24"), Port: 53, Proto: ProtoUDP},
				{Dest: pfx("2001:db8::1"), Port: 443, Proto: ProtoTCP},
				{Dest: pfx("2001:db8::/32"), Port: 53},
				{Dest: pfx("2001:db8::2")},
				{Dest: pfx("2001:db8::3")},
				{Name: pat("1.2.3.example"), Port: 1},
				{Name: pat("host"), Port: 65535, Proto: ProtoUDP},
			}},
		},
		{
			name: "long form with ports and names",
			in: `deny:
  - dest: "*.example.com:443/tcp"
    comment: no
  - {comment: "comment first", dest: "[2001:db8::1]:53/udp"}
  - dest: example.net
`,
			want: &Policy{Deny: []Entry{
				{Name: pat("*.example.com"), Port: 443, Proto: ProtoTCP, Comment: "no"},
				{Dest: pfx("2001:db8::1"), Port: 53, Proto: ProtoUDP, Comment: "comment first"},
				{Name: pat("example.net")},
			}},
		},
		{
			name: "includes",
			in:   "include: [dev-python, github]\nallow: [pypi.org]\n",
			want: &Policy{
				Include: []Include{{Name: "dev-python"}, {Name: "github"}},
				Allow:   []Entry{{Name: pat("pypi.org")}},
			},
		},
		{name: "null include", in: "include:\n", want: &Policy{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("p.yaml", []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpOpts); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // expected error text
	}{
		{name: "unknown key", in: "allow: []\nalow: []\n", want: `p.yaml:2: unknown key "alow" (want include, allow, deny or resolvers)`},
		{name: "bad address", in: "allow:\n  - 192.0.2.300\n", want: `p.yaml:2: invalid address "192.0.2.300"`},
		{name: "host bits", in: "deny:\n  - 10.0.0.1/8\n", want: `p.yaml:2: CIDR "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)`},
		{name: "unknown entry key", in: "allow:\n  - dest: 192.0.2.1\n    via: x\n", want: `p.yaml:3: unknown key "via" in entry (want dest, comment)`},
		{name: "port key", in: "allow:\n  - dest: 192.0.2.1\n    port: 443\n", want: `p.yaml:3: unknown key "port" in entry (a port goes in dest, as in "dest: example.com:443/tcp")`},
		{name: "proto key", in: "allow:\n  - dest: 192.0.2.1\n    proto: tcp\n", want: `p.yaml:3: unknown key "proto" in entry (a port goes in dest, as in "dest: example.com:443/tcp")`},
		{name: "entry without dest", in: "allow:\n  - comment: x\n", want: `p.yaml:2: entry without dest`},
		{name: "list not a list", in: "allow: 192.0.2.1\n", want: `p.yaml:1: allow must be a list`},
		{name: "resolver cidr", in: "resolvers: [192.0.2.0/24]\n", want: `p.yaml:1: invalid resolver address "192.0.2.0/24"`},
		{name: "top level list", in: "- 192.0.2.1\n", want: `p.yaml:1: policy must be a mapping with keys include, allow, deny, resolvers`},
		{name: "syntax error", in: "allow: [\n", want: `p.yaml:1: did not find expected node content`},
		{name: "repeated key", in: "allow: []\nallow: []\n", want: `p.yaml:2: key "allow" repeated`},
		{name: "two documents", in: "allow: []\n---\ndeny: []\n", want: `p.yaml:2: more than one YAML document`},
		{name: "zone", in: "allow: [\"fe80::1%eth0\"]\n", want: `p.yaml:1: invalid address "fe80::1%eth0"`},

		// names
		{name: "empty label", in: "allow:\n  - a..example.com\n", want: `p.yaml:2: invalid name "a..example.com": empty label`},
		{name: "overlong label", in: "allow:\n  - " + strings.Repeat("a", 64) + ".com\n", want: `p.yaml:2: invalid name "` + strings.Repeat("a", 64) + `.com": label "` + strings.Repeat("a", 64) + `" is 64 bytes long, more than 63`},
		{name: "bad character", in: "allow:\n  - exa$mple.com\n", want: `p.yaml:2: invalid name "exa$mple.com": label "exa$mple" has '$' (allowed: letters, digits, hyphen, underscore)`},
		{name: "leading hyphen", in: "allow:\n  - -x.example.com\n", want: `p.yaml:2: invalid name "-x.example.com": label "-x" starts with a hyphen`},
		{name: "wildcard of a TLD", in: "allow:\n  - \"*.com\"\n", want: `p.yaml:2: invalid pattern "*.com": a wildcard below the single label "com" would cover a whole top-level domain`},
		{name: "lone star", in: "allow:\n  - \"*\"\n", want: `p.yaml:2: invalid pattern "*": "*" is allowed only as the whole leftmost label, as in "*.example.com"`},
		{name: "double star", in: "allow:\n  - \"**.example.com\"\n", want: `p.yaml:2: invalid pattern "**.example.com": "*" is allowed only as the whole leftmost label, as in "*.example.com"`},
		{name: "inner star", in: "allow:\n  - a.*.example.com\n", want: `p.yaml:2: invalid pattern "a.*.example.com": "*" is allowed only as the whole leftmost label, as in "*.example.com"`},
		{name: "unquoted wildcard", in: "allow:\n  - github.com\n  - *.githubusercontent.com\n", want: `p.yaml:3: quote wildcards: YAML reads a plain "*" as an alias (write "*.example.com")`},
		{name: "unquoted wildcard in a flow list", in: "allow: [github.com, *.githubusercontent.com]\n", want: `p.yaml:1: quote wildcards: YAML reads a plain "*" as an alias (write "*.example.com")`},
		{name: "unquoted wildcard in dest", in: "allow:\n  - dest: *.example.com\n    comment: x\n", want: `p.yaml:2: quote wildcards: YAML reads a plain "*" as an alias (write "*.example.com")`},
		{name: "unquoted bracketed address with port", in: "allow:\n  - 192.0.2.1\n  - [2001:db8::1]:443/tcp\n", want: `p.yaml:3: quote bracketed addresses: YAML reads a plain "[" as a list (write "[2001:db8::1]:443/tcp")`},
		{name: "unquoted bracketed address", in: "allow:\n  - [2001:db8::1]\n", want: `p.yaml:2: an entry cannot be a list (quote bracketed addresses: "[2001:db8::1]:443/tcp")`},
		{name: "numeric name", in: "allow:\n  - 443\n", want: `p.yaml:2: invalid address "443"`},

		// ports and protocols
		{name: "port zero", in: "allow:\n  - github.com:0/tcp\n", want: `p.yaml:2: "github.com:0/tcp": port 0 out of range 1..65535`},
		{name: "port too big", in: "allow:\n  - github.com:65536\n", want: `p.yaml:2: "github.com:65536": port 65536 out of range 1..65535`},
		{name: "port huge", in: "allow:\n  - github.com:99999999999999999999\n", want: `p.yaml:2: "github.com:99999999999999999999": port 99999999999999999999 out of range 1..65535`},
		{name: "port not a number", in: "allow:\n  - github.com:https\n", want: `p.yaml:2: "github.com:https": invalid port "https"`},
		{name: "negative port", in: "allow:\n  - github.com:-1\n", want: `p.yaml:2: "github.com:-1": invalid port "-1"`},
		{name: "missing port", in: "allow:\n  - \"github.com:\"\n", want: `p.yaml:2: "github.com:": missing port after ":"`},
		{name: "missing port before proto", in: "allow:\n  - github.com:/tcp\n", want: `p.yaml:2: "github.com:/tcp": missing port after ":"`},
		{name: "missing proto", in: "allow:\n  - github.com:443/\n", want: `p.yaml:2: "github.com:443/": missing protocol after "/" (want tcp or udp)`},
		{name: "unknown proto", in: "allow:\n  - github.com:443/sctp\n", want: `p.yaml:2: "github.com:443/sctp": unknown protocol "sctp" (want tcp or udp)`},
		{name: "missing host", in: "allow:\n  - \":443\"\n", want: `p.yaml:2: ":443": missing name or address before ":"`},
		{name: "IPv6 with a port, no brackets", in: "allow:\n  - 2001:db8::1:443/tcp\n", want: `p.yaml:2: invalid CIDR "2001:db8::1:443/tcp" (an IPv6 address with a port goes in brackets, as in "[2001:db8::1]:443/tcp")`},
		{name: "IPv4 in brackets", in: "allow:\n  - \"[192.0.2.1]:443\"\n", want: `p.yaml:2: "[192.0.2.1]:443": brackets are for IPv6 addresses only`},
		{name: "name in brackets", in: "allow:\n  - \"[github.com]:443\"\n", want: `p.yaml:2: "[github.com]:443": brackets are for IPv6 addresses only`},
		{name: "unclosed bracket", in: "allow:\n  - \"[2001:db8::1:443\"\n", want: `p.yaml:2: "[2001:db8::1:443": missing "]"`},
		{name: "junk after bracket", in: "allow:\n  - \"[2001:db8::1]443\"\n", want: `p.yaml:2: "[2001:db8::1]443": want ":port" after "]"`},
		{name: "CIDR host bits with port", in: "allow:\n  - 10.0.0.1/8:53\n", want: `p.yaml:2: CIDR "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)`},
		{name: "bad port in dest", in: "deny:\n  - dest: example.com:0\n    comment: x\n", want: `p.yaml:2: "example.com:0": port 0 out of range 1..65535`},
		{name: "empty entry", in: "allow:\n  -\n", want: `p.yaml:2: empty entry`},

		// includes
		{name: "include not a list", in: "include: github\n", want: `p.yaml:1: include must be a list`},
		{name: "include bad name", in: "include:\n  - ../etc/passwd\n", want: `p.yaml:2: invalid policy name "../etc/passwd" in include (letters, digits, "_", "." and "-", not starting with a dot)`},
		{name: "include twice", in: "include: [github, base, github]\n", want: `p.yaml:1: policy "github" included twice`},
		{name: "include a mapping", in: "include:\n  - {name: github}\n", want: `p.yaml:2: include must list policy names`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(tt.in))
			if err == nil {
				t.Fatal("Parse = nil error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"myproject", true},
		{"img_1.2-x", true},
		{"9", true},
		{"", false},
		{".hidden", false},
		{"..", false},
		{"a/b", false},
		{"../etc", false},
		{"-x", false},
		{"a b", false},
		{"a\x00", false},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
	}
	for _, tt := range tests {
		if got := ValidName(tt.name); got != tt.ok {
			t.Errorf("ValidName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
	}
	if _, err := Load(t.TempDir(), "../x"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Load(../x) = %v, want ErrInvalidName", err)
	}
	if err := Append(t.TempDir(), "../x", ListAllow, Entry{Dest: pfx("192.0.2.1")}); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Append(../x) = %v, want ErrInvalidName", err)
	}
}

func TestLoadMissing(t *testing.T) {
	p, err := Load(filepath.Join(t.TempDir(), "absent"), "proj")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&Policy{}, p, cmpOpts); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestLoadReportsFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "proj.yaml"), []byte("allow:\n  - no!pe\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir, "proj")
	var pe *Error
	if !errors.As(err, &pe) || pe.File != filepath.Join(dir, "proj.yaml") || pe.Line != 2 {
		t.Fatalf("Load = %v, want *Error at proj.yaml:2", err)
	}
}

func TestAppend(t *testing.T) {
	const original = `# project policy, maintained by hand
allow:
  - 192.0.2.10 # the build cache
  - dest: 198.51.100.0/24
    comment: "mirror"
deny:
  - 203.0.113.9
resolvers: [192.0.2.53]
`
	tests := []struct {
		name      string
		initial   *string // nil: no file
		list      string
		entry     Entry
		want      *Policy
		unchanged bool     // file bytes stay identical
		contains  []string // substrings the new file keeps
	}{
		{
			name:  "new file",
			list:  ListAllow,
			entry: Entry{Dest: pfx("192.0.2.1"), Comment: "from a prompt"},
			want:  &Policy{Allow: []Entry{{Dest: pfx("192.0.2.1"), Comment: "from a prompt"}}},
		},
		{
			name:      "already present is a no-op",
			initial:   ptr(original),
			list:      ListAllow,
			entry:     Entry{Dest: pfx("198.51.100.0/24")},
			unchanged: true,
		},
		{
			name:    "append keeps comments and entries",
			initial: ptr(original),
			list:    ListAllow,
			entry:   Entry{Dest: pfx("2001:db8::7")},
			want: &Policy{
				Allow: []Entry{
					{Dest: pfx("192.0.2.10")}, {Dest: pfx("198.51.100.0/24"), Comment: "mirror"}, {Dest: pfx("2001:db8::7")},
				},
				Deny:      []Entry{{Dest: pfx("203.0.113.9")}},
				Resolvers: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
			},
			contains: []string{"# project policy, maintained by hand", "# the build cache"},
		},
		{
			name:    "allow moves an entry out of deny",
			initial: ptr(original),
			list:    ListAllow,
			entry:   Entry{Dest: pfx("203.0.113.9")},
			want: &Policy{
				Allow: []Entry{
					{Dest: pfx("192.0.2.10")}, {Dest: pfx("198.51.100.0/24"), Comment: "mirror"}, {Dest: pfx("203.0.113.9")},
				},
				Resolvers: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
			},
		},
		{
			name:    "deny into a null list",
			initial: ptr("allow:\ndeny:\n"),
			list:    ListDeny,
			entry:   Entry{Dest: pfx("10.0.0.0/8")},
			want:    &Policy{Deny: []Entry{{Dest: pfx("10.0.0.0/8")}}},
		},
		{
			name:    "a name with port and protocol",
			initial: ptr(original),
			list:    ListAllow,
			entry:   Entry{Name: pat("github.com"), Port: 443, Proto: ProtoTCP},
			want: &Policy{
				Allow: []Entry{
					{Dest: pfx("192.0.2.10")}, {Dest: pfx("198.51.100.0/24"), Comment: "mirror"},
					{Name: pat("github.com"), Port: 443, Proto: ProtoTCP},
				},
				Deny:      []Entry{{Dest: pfx("203.0.113.9")}},
				Resolvers: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
			},
			contains: []string{"  - github.com:443/tcp\n", "# the build cache"},
		},
		{
			name:     "a wildcard with a comment is quoted",
			list:     ListDeny,
			entry:    Entry{Name: pat("*.example.com"), Port: 8443, Comment: "always, by uid 1000"},
			want:     &Policy{Deny: []Entry{{Name: pat("*.example.com"), Port: 8443, Comment: "always, by uid 1000"}}},
			contains: []string{`dest: '*.example.com:8443'`},
		},
		{
			name:      "the same name and port already present is a no-op",
			initial:   ptr("allow:\n  - GitHub.com:443/TCP # by hand\n"),
			list:      ListAllow,
			entry:     Entry{Name: pat("github.com"), Port: 443, Proto: ProtoTCP, Comment: "another comment"},
			unchanged: true,
		},
		{
			name:    "allow moves a name out of deny, other ports stay",
			initial: ptr("deny:\n  - example.com:443/tcp\n  - example.com:80/tcp\n  - example.com\n  - dest: '*.example.com:443/tcp'\n"),
			list:    ListAllow,
			entry:   Entry{Name: pat("example.com"), Port: 443, Proto: ProtoTCP},
			want: &Policy{
				Allow: []Entry{{Name: pat("example.com"), Port: 443, Proto: ProtoTCP}},
				Deny:  []Entry{{Name: pat("example.com"), Port: 80, Proto: ProtoTCP}, {Name: pat("example.com")}, {Name: pat("*.example.com"), Port: 443, Proto: ProtoTCP}},
			},
		},
		{
			name:     "an IPv6 address with a port",
			initial:  ptr("allow: ['[2001:db8::1]:443/tcp']\n"),
			list:     ListDeny,
			entry:    Entry{Dest: netip.MustParsePrefix("2001:db8::1/128"), Port: 443, Proto: ProtoTCP},
			want:     &Policy{Deny: []Entry{{Dest: pfx("2001:db8::1"), Port: 443, Proto: ProtoTCP}}},
			contains: []string{"'[2001:db8::1]:443/tcp'"},
		},
		{
			name:    "flow-style list becomes block style",
			initial: ptr("deny: [192.0.2.1]\n"),
			list:    ListDeny,
			entry:   Entry{Dest: netip.MustParsePrefix("::ffff:192.0.2.2/128")},
			want:    &Policy{Deny: []Entry{{Dest: pfx("192.0.2.1")}, {Dest: pfx("192.0.2.2")}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "proj.yaml")
			if tt.initial != nil {
				if err := os.WriteFile(path, []byte(*tt.initial), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			if err := Append(dir, "proj", tt.list, tt.entry); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if tt.unchanged {
				if diff := cmp.Diff(*tt.initial, string(data)); diff != "" {
					t.Errorf("file changed (-want +got):\n%s", diff)
				}
				return
			}
			got, err := Load(dir, "proj")
			if err != nil {
				t.Fatalf("%v\n%s", err, data)
			}
			if diff := cmp.Diff(tt.want, got, cmpOpts); diff != "" {
				t.Errorf("policy after append (-want +got):\n%s\nfile:\n%s", diff, data)
			}
			for _, s := range tt.contains {
				if !strings.Contains(string(data), s) {
					t.Errorf("file lost %q:\n%s", s, data)
				}
			}
			// Idempotent: a second append changes nothing.
			if err := Append(dir, "proj", tt.list, tt.entry); err != nil {
				t.Fatal(err)
			}
			again, _ := os.ReadFile(path)
			if diff := cmp.Diff(string(data), string(again)); diff != "" {
				t.Errorf("second append changed the file (-want +got):\n%s", diff)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if wantMode := FileMode; st.Mode().Perm() != wantMode {
				t.Errorf("mode = %v, want %v", st.Mode().Perm(), wantMode)
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Errorf("directory holds %d entries, want only the policy (temp file left?)", len(ents))
			}
		})
	}
}

// TestAttackAppendPrivateModes: whatever the umask (the verdict service also
// runs without its unit's UMask=0077), a policy Append writes is 0600 and
// a directory it creates is 0700 (issue 9, item 8: one user's "always"
// verdicts were readable by every other user).
func TestAttackAppendPrivateModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "uid-1234")
	existing := filepath.Join(t.TempDir(), "old")
	if err := os.Mkdir(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(existing, "proj.yaml"), []byte("allow: [192.0.2.1]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, existing} {
		if err := Append(d, "proj", ListAllow, Entry{Dest: netip.MustParsePrefix("192.0.2.9/32")}); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join(d, "proj.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s/proj.yaml mode %v, want 0600", d, st.Mode().Perm())
		}
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode %v (%v), want 0700", st.Mode().Perm(), err)
	}
}

func TestAppendRefusesBrokenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "proj.yaml")
	const broken = "allow: [no!pe]\n"
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Append(dir, "proj", ListAllow, Entry{Dest: pfx("192.0.2.1")}); err == nil {
		t.Fatal("Append on a broken file = nil error")
	}
	if data, _ := os.ReadFile(path); string(data) != broken {
		t.Errorf("broken file rewritten: %q", data)
	}
	if err := Append(dir, "proj", "maybe", Entry{Dest: pfx("192.0.2.1")}); err == nil {
		t.Error("Append to list \"maybe\" = nil error")
	}
}

func TestAppendRefusesBadEntries(t *testing.T) {
	tests := []struct {
		name  string
		entry Entry
		want  string
	}{
		{name: "empty", entry: Entry{}, want: "append to policy proj: an entry needs either a name or an address"},
		{name: "name and address", entry: Entry{Name: pat("a.example"), Dest: pfx("192.0.2.1")}, want: "append to policy proj: an entry needs either a name or an address"},
		{name: "protocol without port", entry: Entry{Name: pat("a.example"), Proto: ProtoTCP}, want: "append to policy proj: protocol tcp without a port"},
		{name: "unknown protocol", entry: Entry{Name: pat("a.example"), Port: 1, Proto: 132}, want: "append to policy proj: unknown protocol proto(132) (want tcp or udp)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			err := Append(dir, "proj", ListAllow, tt.entry)
			if err == nil {
				t.Fatal("Append = nil error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if _, err := os.Stat(filepath.Join(dir, "proj.yaml")); err == nil {
				t.Error("file written")
			}
		})
	}
}

func TestAppendConcurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := Append(dir, "proj", ListAllow, Entry{Dest: pfx(fmt.Sprintf("192.0.2.%d", i+1))}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	p, err := Load(dir, "proj")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Allow) != n {
		t.Errorf("%d entries after %d concurrent appends", len(p.Allow), n)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	p := &Policy{
		Include: []Include{{Name: "dev-python"}, {Name: "null"}, {Name: "1.5"}},
		Allow: []Entry{
			{Dest: pfx("192.0.2.1")}, {Dest: pfx("2001:db8::/32"), Comment: "a: b # c\n\"q\""},
			{Name: pat("github.com"), Port: 443, Proto: ProtoTCP},
			{Name: pat("*.githubusercontent.com")},
			{Name: pat("*.example.org"), Port: 8443, Comment: "both protocols"},
			{Name: pat("null")}, {Name: pat("true")}, {Name: pat("y")},
			{Dest: pfx("2001:db8::1"), Port: 53, Proto: ProtoUDP},
			{Dest: pfx("2001:db8::/48"), Port: 443},
			{Dest: pfx("198.51.100.0/24"), Port: 53, Proto: ProtoUDP},
		},
		Deny:      []Entry{{Dest: pfx("0.0.0.0/0")}, {Name: pat("evil.example"), Port: 25, Proto: ProtoTCP}},
		Resolvers: []netip.Addr{netip.MustParseAddr("::1")},
	}
	data, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("x", data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if diff := cmp.Diff(p, got, cmpOpts); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func ptr[T any](v T) *T { return &v }
