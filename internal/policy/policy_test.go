package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func pfx(s string) netip.Prefix {
	p, err := ParseDest(s)
	if err != nil {
		panic(err)
	}
	return p
}

var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
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
		{name: "unknown key", in: "allow: []\nalow: []\n", want: `p.yaml:2: unknown key "alow" (want allow, deny or resolvers)`},
		{name: "bad address", in: "allow:\n  - 192.0.2.300\n", want: `p.yaml:2: invalid address "192.0.2.300"`},
		{name: "host bits", in: "deny:\n  - 10.0.0.1/8\n", want: `p.yaml:2: CIDR "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)`},
		{name: "unknown entry key", in: "allow:\n  - dest: 192.0.2.1\n    port: 443\n", want: `p.yaml:3: unknown key "port" in entry (want dest, comment)`},
		{name: "entry without dest", in: "allow:\n  - comment: x\n", want: `p.yaml:2: entry without dest`},
		{name: "list not a list", in: "allow: 192.0.2.1\n", want: `p.yaml:1: allow must be a list`},
		{name: "resolver cidr", in: "resolvers: [192.0.2.0/24]\n", want: `p.yaml:1: invalid resolver address "192.0.2.0/24"`},
		{name: "top level list", in: "- 192.0.2.1\n", want: `p.yaml:1: policy must be a mapping with keys allow, deny, resolvers`},
		{name: "syntax error", in: "allow: [\n", want: `p.yaml:1: did not find expected node content`},
		{name: "repeated key", in: "allow: []\nallow: []\n", want: `p.yaml:2: key "allow" repeated`},
		{name: "two documents", in: "allow: []\n---\ndeny: []\n", want: `p.yaml:2: more than one YAML document`},
		{name: "zone", in: "allow: [\"fe80::1%eth0\"]\n", want: `p.yaml:1: invalid address "fe80::1%eth0"`},
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
	if err := os.WriteFile(filepath.Join(dir, "proj.yaml"), []byte("allow:\n  - nope\n"), 0o644); err != nil {
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
			wantMode := os.FileMode(0o644)
			if tt.initial != nil {
				wantMode = 0o640
			}
			if st.Mode().Perm() != wantMode {
				t.Errorf("mode = %v, want %v", st.Mode().Perm(), wantMode)
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Errorf("directory holds %d entries, want only the policy (temp file left?)", len(ents))
			}
		})
	}
}

func TestAppendRefusesBrokenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "proj.yaml")
	const broken = "allow: [nope]\n"
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
		Allow:     []Entry{{Dest: pfx("192.0.2.1")}, {Dest: pfx("2001:db8::/32"), Comment: "a: b # c\n\"q\""}},
		Deny:      []Entry{{Dest: pfx("0.0.0.0/0")}},
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
