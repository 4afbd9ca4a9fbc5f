// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package dnsname puts DNS names in one canonical form and matches them
// against the name patterns of clearance's policies.
//
// # Canonical form
//
// A canonical name is the name as it travels on the wire, written in ASCII:
// lower case, labels separated by dots, no trailing dot ("example.com", not
// "Example.COM."). Every label is 1..63 bytes of letters, digits, hyphens and
// underscores (service labels such as _acme-challenge), never starts or ends
// with a hyphen, and the whole name is at most 253 bytes. Its last label is
// not all digits (that would be an IPv4 address, not a name). Unicode names
// are converted to A-labels (IDNA, "bücher.example" becomes
// "xn--bcher-kva.example").
//
// [Normalize] takes a name a person wrote (in a policy file, on a command
// line) and returns its canonical form or an error saying what is wrong.
// [Canonical] takes a name that came off the wire and reports whether a
// pattern could ever match it; it never fails loudly, because a forwarder
// still forwards names it cannot match.
//
// # Patterns
//
// A [Pattern] is either a name ("example.com": that name and nothing else)
// or a wildcard ("*.example.com": one or more labels below example.com,
// never example.com itself). Matching respects label boundaries:
// "*.example.com" matches "a.example.com" and "a.b.example.com", but never
// "example.com" nor "evilexample.com".
package dnsname

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Limits of a canonical name (RFC 1035 §2.3.4, in presentation form
// without the trailing dot).
const (
	MaxNameLen  = 253
	MaxLabelLen = 63
)

// profile converts Unicode names to A-labels the way resolvers look names
// up (UTS #46 mapping, IDNA2008 validation), but leaves the ASCII rules to
// check: StrictDomainName would refuse underscores, CheckHyphens would
// refuse real names such as "r3---sn-abc.googlevideo.com".
var profile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.BidiRule(),
	idna.CheckJoiners(true),
	idna.StrictDomainName(false),
	idna.CheckHyphens(false),
	idna.VerifyDNSLength(false),
)

// Normalize returns the canonical form of the DNS name s: one trailing dot
// is accepted and removed, letters are lower-cased, Unicode labels become
// A-labels, and the result is validated (see the package documentation).
// The error quotes s and says what is wrong.
func Normalize(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty name")
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("invalid name %q: not UTF-8", s)
	}
	a, err := profile.ToASCII(s)
	if err != nil {
		return "", fmt.Errorf("invalid name %q: %w", s, err)
	}
	a = strings.TrimSuffix(a, ".")
	if err := check(a); err != nil {
		return "", fmt.Errorf("invalid name %q: %w", s, err)
	}
	return a, nil
}

// Canonical returns wire, a name as it came off the wire (for example
// dnsmessage.Name.String(), "Example.COM."), lower-cased and without its
// trailing dot. ok is false when the name holds anything a canonical name
// cannot (another byte, an escape such as "\032", an empty or overlong
// label, the root "."): no [Pattern] can match such a name.
//
// Canonical does not decode A-labels: "xn--" labels pass as they are.
// It allocates only when wire has upper-case letters.
func Canonical(wire string) (string, bool) {
	s := strings.TrimSuffix(wire, ".")
	upper, ok := scan(s)
	if !ok {
		return "", false
	}
	if upper {
		s = strings.ToLower(s)
	}
	return s, true
}

// scan reports whether s is a valid name (upper case allowed) and whether it
// has upper-case letters. It does not allocate.
func scan(s string) (upper, ok bool) {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false, false
	}
	start := 0 // first byte of the current label
	digits := true
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			n := i - start
			if n == 0 || n > MaxLabelLen || s[start] == '-' || s[i-1] == '-' {
				return false, false
			}
			if i == len(s) && digits {
				return false, false
			}
			start, digits = i+1, true
			continue
		}
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', c == '-', c == '_':
			digits = false
		case '0' <= c && c <= '9':
		case 'A' <= c && c <= 'Z':
			digits, upper = false, true
		default:
			return false, false
		}
	}
	return upper, true
}

// check explains why s (ASCII, lower case expected) is not a valid name.
func check(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%d bytes long, more than %d", len(s), MaxNameLen)
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		switch {
		case l == "":
			return errors.New("empty label")
		case len(l) > MaxLabelLen:
			return fmt.Errorf("label %q is %d bytes long, more than %d", l, len(l), MaxLabelLen)
		case l[0] == '-':
			return fmt.Errorf("label %q starts with a hyphen", l)
		case l[len(l)-1] == '-':
			return fmt.Errorf("label %q ends with a hyphen", l)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("label %q has %q (allowed: letters, digits, hyphen, underscore)", l, c)
			}
		}
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		return fmt.Errorf("last label %q is all digits (an address, not a name)", last)
	}
	return nil
}

// Pattern is a name or a wildcard of a policy: "example.com" matches that
// name only; "*.example.com" matches one or more labels below example.com,
// never example.com itself. The zero Pattern matches nothing.
//
// Patterns are comparable values: == and [Pattern.Equal] agree.
type Pattern struct {
	base string // canonical name, without "*."
	wild bool
}

// ParsePattern parses "example.com" or "*.example.com", normalising the
// name as [Normalize] does ("*.Bücher.example." becomes
// "*.xn--bcher-kva.example"). "*" is allowed only as the whole leftmost
// label, and a wildcard needs a base of at least two labels: "*" and
// "*.com" (a whole top-level domain) are refused.
func ParsePattern(s string) (Pattern, error) {
	rest, wild := strings.CutPrefix(s, "*.")
	if strings.Contains(rest, "*") || s == "*" {
		return Pattern{}, fmt.Errorf("invalid pattern %q: \"*\" is allowed only as the whole leftmost label, as in \"*.example.com\"", s)
	}
	if wild && rest == "" {
		return Pattern{}, fmt.Errorf("invalid pattern %q: no name after \"*.\"", s)
	}
	base, err := Normalize(rest)
	if err != nil {
		return Pattern{}, err
	}
	if wild && !strings.Contains(base, ".") {
		return Pattern{}, fmt.Errorf("invalid pattern %q: a wildcard below the single label %q would cover a whole top-level domain", s, base)
	}
	return Pattern{base: base, wild: wild}, nil
}

// Match reports whether name, in canonical form ([Canonical] or
// [Normalize]), is matched by p. It does not allocate.
//
// Match compares bytes, so pass canonical names: "Example.com" and
// "example.com." match neither "example.com" nor "*.example.com". Whatever
// the input, Match is true only for p's own name (an exact pattern) or for
// a name ending in "." plus p's name after at least one more byte (a
// wildcard): never for a name outside p's part of the DNS tree.
func (p Pattern) Match(name string) bool {
	if p.base == "" {
		return false
	}
	if !p.wild {
		return name == p.base
	}
	n := len(name) - len(p.base)
	return n >= 2 && name[n-1] == '.' && name[n:] == p.base
}

// String returns the pattern as written in a policy: "example.com" or
// "*.example.com"; "" for the zero Pattern.
func (p Pattern) String() string {
	if p.wild {
		return "*." + p.base
	}
	return p.base
}

// IsWildcard reports whether p is a wildcard ("*.example.com").
func (p Pattern) IsWildcard() bool { return p.wild }

// Base returns the name of p without "*.": "example.com" for both
// "example.com" and "*.example.com".
func (p Pattern) Base() string { return p.base }

// IsZero reports whether p is the zero Pattern.
func (p Pattern) IsZero() bool { return p.base == "" }

// Equal reports whether p and q are the same pattern (as p == q; the method
// lets go-cmp compare Patterns).
func (p Pattern) Equal(q Pattern) bool { return p == q }
