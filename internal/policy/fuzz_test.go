package policy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParse checks that Parse never panics and that whatever it accepts
// survives a Marshal/Parse round trip unchanged.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"allow: [192.0.2.1, 198.51.100.0/24]\n",
		"deny:\n  - dest: 2001:db8::1\n    comment: x\n",
		"resolvers: [192.0.2.53]\n",
		"allow: [\n",
		"- a\n",
		"allow: {dest: 1}\n",
		"&a [*a]",
		"allow: !!binary AAAA\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		out, err := p.Marshal()
		if err != nil {
			t.Fatalf("Marshal of parsed policy: %v", err)
		}
		q, err := Parse("fuzz.yaml", out)
		if err != nil {
			t.Fatalf("re-Parse: %v\n%s", err, out)
		}
		if diff := cmp.Diff(p, q, cmpOpts); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
	})
}
