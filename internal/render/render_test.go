// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package render

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/terok-ai/clearance/internal/event"
)

var firstSeen = time.Date(2026, 8, 4, 14, 3, 9, 0, time.Local)

func blocked(domain, dest string, dossier map[string]string) event.Event {
	return event.Event{
		Type: event.ConnectionBlocked, Container: "c0ffee", RequestID: "c0ffee:1",
		Dest: dest, Port: 443, Proto: event.ProtoTCP, Domain: domain, Dossier: dossier,
	}
}

// Cases marked §S10.N port the seed's acceptance item N, restated in
// docs/seed-compat.md.
func TestBlocked(t *testing.T) {
	tests := []struct {
		name  string
		ev    event.Event
		count int
		want  Popup
	}{
		{
			// §S10.63
			name: "first block names domain and port, critical resident, never expires",
			ev:   blocked("registry.example.net", "198.51.100.1", nil),
			want: Popup{
				Summary: "Blocked: registry.example.net:443",
				Body:    "Container: c0ffee\nAddress: 198.51.100.1:443\nProtocol: TCP",
				Hints:   Hints{Urgency: UrgencyCritical, Resident: true},
				Timeout: 0,
			},
			count: 1,
		},
		{
			name:  "no domain: target is the IP and no address line",
			ev:    blocked("", "198.51.100.1", map[string]string{}),
			count: 1,
			want: Popup{
				Summary: "Blocked: 198.51.100.1:443",
				Body:    "Container: c0ffee\nProtocol: TCP",
				Hints:   HintBlockPending,
			},
		},
		{
			// §S10.65
			name:  "repeat adds the count line with the first-seen clock",
			ev:    blocked("", "198.51.100.1", nil),
			count: 2,
			want: Popup{
				Summary: "Blocked: 198.51.100.1:443",
				Body:    "Container: c0ffee\nProtocol: TCP\nBlocked 2 times since 14:03:09",
				Hints:   HintBlockPending,
			},
		},
		{
			// §S10.76
			name: "dossier with project, task and name gives the task line",
			ev: blocked("", "198.51.100.1", map[string]string{
				"project": "warp-core", "task": "t42", "name": "build",
			}),
			count: 1,
			want: Popup{
				Summary: "Blocked: 198.51.100.1:443",
				Body:    "Task: warp-core/t42 · build\nProtocol: TCP",
				Hints:   HintBlockPending,
			},
		},
		{
			name:  "project and task without name",
			ev:    blocked("", "198.51.100.1", map[string]string{"project": "p", "task": "t"}),
			count: 1,
			want: Popup{
				Summary: "Blocked: 198.51.100.1:443",
				Body:    "Task: p/t\nProtocol: TCP",
				Hints:   HintBlockPending,
			},
		},
		{
			// §S10.77
			name:  "name only gives the container line",
			ev:    blocked("", "198.51.100.1", map[string]string{"name": "alpine-7"}),
			count: 1,
			want: Popup{
				Summary: "Blocked: 198.51.100.1:443",
				Body:    "Container: alpine-7\nProtocol: TCP",
				Hints:   HintBlockPending,
			},
		},
		{
			name: "UDP and unknown protocols",
			ev: event.Event{Type: event.ConnectionBlocked, Container: "c", Dest: "2001:db8::1",
				Port: 53, Proto: event.ProtoUDP},
			count: 1,
			want: Popup{
				Summary: "Blocked: [2001:db8::1]:53",
				Body:    "Container: c\nProtocol: UDP",
				Hints:   HintBlockPending,
			},
		},
		{
			name:  "other protocol numbers are printed",
			ev:    event.Event{Type: event.ConnectionBlocked, Container: "c", Dest: "10.0.0.1", Proto: 132},
			count: 1,
			want: Popup{
				Summary: "Blocked: 10.0.0.1:0",
				Body:    "Container: c\nProtocol: 132",
				Hints:   HintBlockPending,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Blocked(tt.ev, tt.count, firstSeen)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Blocked (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	original := map[string]string{"project": "p", "task": "original"}
	tests := []struct {
		name   string
		action string
		ok     bool
		by     string
		want   Popup
	}{
		{"allow ok (§S10.67)", "allow", true, "", Popup{Summary: "Allowed: registry.example.net",
			Body: "Task: p/original", Hints: HintConfirmation, Timeout: -1}},
		{"deny ok", "deny", true, "", Popup{Summary: "Denied: registry.example.net",
			Body: "Task: p/original", Hints: HintConfirmation, Timeout: -1}},
		{"allow failed (§S10.68)", "allow", false, "", Popup{Summary: "Allow failed: registry.example.net",
			Body: "Task: p/original", Hints: HintSecurityAlert, Timeout: -1}},
		{"deny failed", "deny", false, "", Popup{Summary: "Deny failed: registry.example.net",
			Body: "Task: p/original", Hints: HintSecurityAlert, Timeout: -1}},
		{"unknown action ok is title-cased", "quarantine", true, "", Popup{Summary: "Quarantine: registry.example.net",
			Body: "Task: p/original", Hints: HintConfirmation, Timeout: -1}},
		{"unknown action failed", "quarantine", false, "", Popup{Summary: "Quarantine failed: registry.example.net",
			Body: "Task: p/original", Hints: HintSecurityAlert, Timeout: -1}},
		// Who decided, when the hub says (the seed's hub sends "").
		{"allowed by another channel", "allow", true, "by alice (uid 1000) via clearancectl", Popup{Summary: "Allowed: registry.example.net",
			Body: "Task: p/original\nBy alice (uid 1000) via clearancectl", Hints: HintConfirmation, Timeout: -1}},
		{"hostile who", "deny", true, "by \u202eevil\x1b[2J", Popup{Summary: "Denied: registry.example.net",
			Body: "Task: p/original\nBy  evil [2J", Hints: HintConfirmation, Timeout: -1}},
		// The hub's connection broke after the click reached it.
		{"no answer", "allow", false, NoAnswer + ": EOF", Popup{Summary: "Allow unconfirmed: registry.example.net",
			Body: "Task: p/original\nNo answer from the hub; the prompt comes back if the verdict did not land " +
				"(clearancectl log shows what the kernel got)", Hints: HintConfirmation, Timeout: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Verdict(tt.action, tt.ok, "registry.example.net", original, "c", tt.by)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Verdict (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	d := map[string]string{"name": "alpine-7"}
	tests := []struct {
		name string
		ev   event.Event
		want Popup
		ok   bool
	}{
		{"shield down (§S10.70)", event.Event{Type: event.ShieldDown, Container: "c", Dossier: d},
			Popup{Summary: "Shield down: alpine-7", Body: "Outbound firewall bypassed — allowlist is not enforced.",
				Hints: HintSecurityAlert, Timeout: -1}, true},
		{"shield disengaged", event.Event{Type: event.ShieldDisengaged, Container: "c", Dossier: d},
			Popup{Summary: "Shield disengaged: alpine-7", Body: "Outbound firewall disengaged — every destination is reachable.",
				Hints: HintSecurityAlert, Timeout: -1}, true},
		{"shield up (§S10.71)", event.Event{Type: event.ShieldUp, Container: "c"},
			Popup{Summary: "Shield up: c", Body: "Outbound firewall restored.", Hints: HintConfirmation, Timeout: -1}, true},
		{"container started (§S10.73)", event.Event{Type: event.ContainerStarted, Container: "c",
			Dossier: map[string]string{"project": "p", "task": "t", "name": "n"}},
			Popup{Summary: "Container started: p/t · n", Hints: HintLifecycle, Timeout: -1}, true},
		{"container stopped with reason (§S10.74)", event.Event{Type: event.ContainerExited, Container: "c", Reason: "poststop"},
			Popup{Summary: "Container stopped: c", Body: "Reason: poststop", Hints: HintLifecycle, Timeout: -1}, true},
		{"container stopped without reason", event.Event{Type: event.ContainerExited, Container: "c"},
			Popup{Summary: "Container stopped: c", Hints: HintLifecycle, Timeout: -1}, true},
		{"blocked is not lifecycle", event.Event{Type: event.ConnectionBlocked}, Popup{}, false},
		{"unknown type", event.Event{Type: "whatever"}, Popup{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Lifecycle(tt.ev)
			if ok != tt.ok {
				t.Fatalf("Lifecycle ok = %v, want %v", ok, tt.ok)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Lifecycle (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHintSets(t *testing.T) {
	got := []Hints{HintBlockPending, HintSecurityAlert, HintConfirmation, HintLifecycle}
	want := []Hints{
		{Urgency: 2, Resident: true},
		{Urgency: 2},
		{Urgency: 1, Transient: true},
		{Urgency: 0, Transient: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("hint sets (-want +got):\n%s", diff)
	}
}

func TestSummaries(t *testing.T) {
	w := Waiting(3, []string{"a.example:443 · c"})
	if w.Summary != "3 more waiting — clearancectl pending" || w.Body != "a.example:443 · c" {
		t.Errorf("Waiting = %+v", w)
	}
	n := NoActions(1, "a.example:443 · c", "c:7")
	if n.Summary != "1 blocked connection waiting for a verdict" {
		t.Errorf("NoActions summary = %q", n.Summary)
	}
	for _, s := range []string{"clearancectl watch", "clearancectl allow ID", "Latest: a.example:443 · c (ID c:7)"} {
		if !strings.Contains(n.Body, s) {
			t.Errorf("NoActions body %q lacks %q", n.Body, s)
		}
	}
	if got := NoActions(2, "", "").Summary; got != "2 blocked connections waiting for a verdict" {
		t.Errorf("NoActions(2) summary = %q", got)
	}
}

func TestPangoEscape(t *testing.T) {
	tests := []struct{ name, in, want string }{
		// §S10.109
		{"tags", "Blocked: <b>evil</b>", "Blocked: &lt;b&gt;evil&lt;/b&gt;"},
		{"ampersand first, newline kept", "host: a&b\nProtocol: <i>TCP</i>", "host: a&amp;b\nProtocol: &lt;i&gt;TCP&lt;/i&gt;"},
		{"existing entity is escaped again", "&lt;", "&amp;lt;"},
		{"quotes untouched", `"'`, `"'`},
		{"plain", "registry.example.net", "registry.example.net"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PangoEscape(tt.in); got != tt.want {
				t.Errorf("PangoEscape(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestInert(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"printable ASCII unchanged", "api.example.com", 256, "api.example.com"},
		{"ANSI colour loses ESC", "evil\x1b[31mfake", 256, "evil [31mfake"},
		{"OSC title sequence", "\x1b]0;pwned\x07x", 256, " ]0;pwned x"},
		{"8-bit CSI", "a\u009b31mb", 256, "a 31mb"},
		{"NUL, DEL, newline, tab, CR", "a\x00b\x7fc\nd\te\rf", 256, "a b c d e f"},
		{"RLO override", "exe.\u202egnp", 256, "exe. gnp"},
		{"isolates and marks", "\u2066a\u2069\u200eb\u200f\u061c", 256, " a  b  "},
		{"line separators", "a\u2028b\u2029c", 256, "a b c"},
		// Issue 9, item 11: invisible characters made two names look alike.
		{"zero-width space and joiners", "git\u200bhub\u200c.\u200dcom", 256, "git hub . com"},
		{"word joiner and BOM", "a\u2060b\ufeffc\u2064d", 256, "a b c d"},
		{"soft hyphen", "ex\u00adample", 256, "ex ample"},
		{"Mongolian vowel separator", "a\u180eb", 256, "a b"},
		{"tag characters", "a\U000e0041\U000e007fb", 256, "a  b"},
		{"variation selector", "a\ufe0fb", 256, "a b"},
		{"Hangul filler", "a\u3164b", 256, "a b"},
		{"combining grapheme joiner", "a\u034fb", 256, "a b"},
		{"printable non-ASCII kept", "café · ü", 256, "café · ü"},
		{"invalid UTF-8", "a\xffb", 256, "a b"},
		{"cap keeps max-3 and dots", "abcdefghij", 8, "abcde..."},
		{"cap counts runes", "ééééé", 4, "é..."},
		{"exact length kept", "abcd", 4, "abcd"},
		{"tiny caps", "abcdef", 2, ".."},
		{"zero cap", "abcdef", 0, ""},
		{"no cap", strings.Repeat("a", 300), -1, strings.Repeat("a", 300)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Inert(tt.in, tt.max); got != tt.want {
				t.Errorf("Inert(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
			}
		})
	}
}

// hostile are strings a container could put into a domain or a dossier.
var hostile = map[string]string{
	"markup":    "<b>bold</b>&amp;<span foreground='red'>x</span>",
	"ansi":      "\x1b[2J\x1b[31mred\x1b]8;;http://evil/\x07link",
	"rtl":       "moc.elpmaxe\u202e.exe\u2066x\u2069",
	"invisible": "git\u200bhub.com\ufeff\u2060\u00ad\U000e0041",
	"10KiB":     strings.Repeat("a", 10<<10),
	"10KiB-mix": strings.Repeat("é\x1b<", 3<<10),
}

// TestHostileInert checks every popup text and terminal text is inert:
// no control or bidi runes, capped, and markup escaped once PangoEscape ran.
func TestHostileInert(t *testing.T) {
	for name, s := range hostile {
		t.Run(name, func(t *testing.T) {
			ev := event.Event{
				Type: event.ConnectionBlocked, Container: s, RequestID: s, Dest: s,
				Port: 443, Proto: 6, Domain: s, Reason: s,
				Dossier: map[string]string{"project": s, "task": s, "name": s},
			}
			var texts []string
			p := Blocked(ev, 3, firstSeen)
			texts = append(texts, p.Summary, p.Body)
			p = Verdict(s, false, s, ev.Dossier, s, s)
			texts = append(texts, p.Summary, p.Body)
			for _, typ := range []string{event.ShieldDown, event.ShieldDisengaged, event.ShieldUp,
				event.ContainerStarted, event.ContainerExited} {
				ev.Type = typ
				p, _ = Lifecycle(ev)
				texts = append(texts, p.Summary, p.Body)
			}
			texts = append(texts, BlockedLine(ev), Terminal(s))
			for _, txt := range texts {
				for _, line := range strings.Split(txt, "\n") { // template newlines are ours
					for _, r := range line {
						if dangerous(r) {
							t.Fatalf("dangerous rune %U survived in %q", r, line)
						}
					}
					// A line holds at most a few capped fields plus template text.
					if n := utf8.RuneCountInString(line); n > 3*MaxField+64 {
						t.Fatalf("line not capped: %d runes", n)
					}
				}
				esc := PangoEscape(txt)
				if strings.ContainsAny(strings.NewReplacer("&amp;", "", "&lt;", "", "&gt;", "").Replace(esc), "<>&") {
					t.Fatalf("markup survived escaping: %q", esc)
				}
			}
			if got := Terminal(s); utf8.RuneCountInString(got) > MaxTerminal {
				t.Errorf("Terminal not capped: %d runes", utf8.RuneCountInString(got))
			}
		})
	}
}

func BenchmarkBlocked(b *testing.B) {
	ev := blocked("registry.example.net", "198.51.100.1", map[string]string{"project": "p", "task": "t", "name": "n"})
	for b.Loop() {
		p := Blocked(ev, 2, firstSeen)
		_ = PangoEscape(p.Body)
	}
}

func FuzzInert(f *testing.F) {
	for _, s := range hostile {
		f.Add(s, 16)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max > 1<<12 {
			max = 1 << 12
		}
		got := Inert(s, max)
		if !utf8.ValidString(got) {
			t.Fatalf("invalid UTF-8 out of %q", s)
		}
		for _, r := range got {
			if dangerous(r) {
				t.Fatalf("dangerous rune %U in %q", r, got)
			}
		}
		if max >= 0 && utf8.RuneCountInString(got) > max {
			t.Fatalf("len %d > max %d", utf8.RuneCountInString(got), max)
		}
	})
}

// TestAttackInvisibleAndIPv6 (issue 9, item 11): zero-width and other
// invisible characters made two different names look alike, and an IPv6
// target printed without brackets ("2001:db8::1:443") hid where the port
// starts.
func TestAttackInvisibleAndIPv6(t *testing.T) {
	if got := Field("git\u200bhub.com"); got == "github.com" || got != "git hub.com" {
		t.Errorf("Field(zero-width space) = %q, want the difference visible", got)
	}
	for _, tc := range []struct {
		host string
		port int64
		want string
	}{
		{"2001:db8::1", 443, "[2001:db8::1]:443"},
		{"::ffff:192.0.2.1", 80, "[::ffff:192.0.2.1]:80"},
		{"192.0.2.7", 443, "192.0.2.7:443"},
		{"api.example.com", 8443, "api.example.com:8443"},
	} {
		if got := HostPort(tc.host, tc.port); got != tc.want {
			t.Errorf("HostPort(%q, %d) = %q, want %q", tc.host, tc.port, got, tc.want)
		}
	}
	ev := event.Event{Type: event.ConnectionBlocked, Container: "c", Dest: "2001:db8::1", Domain: "v6.example", Port: 443, Proto: 6}
	if p := Blocked(ev, 1, firstSeen); !strings.Contains(p.Body, "Address: [2001:db8::1]:443") {
		t.Errorf("body %q lacks the bracketed address", p.Body)
	}
	ev.Domain = ""
	if got := BlockedLine(ev); !strings.HasPrefix(got, "[2001:db8::1]:443 · ") {
		t.Errorf("BlockedLine = %q", got)
	}
}

// TestBlockedWithTheContainersReason: a request the container asked for
// shows its reason as its unverified claim, quoted and inert (a terminal
// escape becomes a space; Pango markup is escaped later, at the sink),
// and capped.
func TestBlockedWithTheContainersReason(t *testing.T) {
	ev := blocked("api.example.com", "", nil)
	ev.Reason = "fetching deps \x1b[31m<b>now</b>"
	p := Blocked(ev, 1, time.Time{})
	want := "Container: c0ffee\nProtocol: TCP\nThe container says (unverified): \"fetching deps  [31m<b>now</b>\""
	if p.Body != want {
		t.Errorf("body %q, want %q", p.Body, want)
	}
	ev.Reason = strings.Repeat("x", 400)
	if line := ReasonLine(ev.Reason); !strings.HasSuffix(line, "...\"") || len(line) > 300 {
		t.Errorf("long reason not capped: %d %q", len(line), line)
	}
	if ReasonLine("  ") != "" {
		t.Error("a blank reason shows a line")
	}
}

func TestHubNoticeAndHubDown(t *testing.T) {
	tests := []struct {
		name string
		got  Popup
		want Popup
	}{
		{"hub on defaults", HubNotice(event.Event{Type: event.HubNotice, Container: "0123456789ab",
			Reason: "clearance-hub runs on its default configuration: /home/a/.config/clearance/clearance.yaml:3: bad key"}),
			Popup{Summary: "clearance hub: 0123456789ab",
				Body:  "clearance-hub runs on its default configuration: /home/a/.config/clearance/clearance.yaml:3: bad key",
				Hints: Hints{Urgency: UrgencyCritical}, Timeout: TimeoutNever}},
		{"a notice's text is made inert", HubNotice(event.Event{Type: event.HubNotice, Container: "c\x1b[2J",
			Reason: "line\n\x1b]8;;http://x\x07click\u202e" + strings.Repeat("y", 300)}),
			Popup{Summary: "clearance hub: c [2J",
				Body:  Inert("line  ]8;;http://x click "+strings.Repeat("y", 300), MaxField),
				Hints: Hints{Urgency: UrgencyCritical}, Timeout: TimeoutNever}},
		{"hub down", HubDown("0123456789ab", "web"),
			Popup{Summary: "No prompts for web (0123456789ab): its clearance hub is down",
				Body:  "Blocked connections stay blocked, and nobody is asked.\nSee: systemctl --user status clearance-hub@0123456789ab.service",
				Hints: Hints{Urgency: UrgencyCritical}, Timeout: TimeoutNever}},
		{"hub down, no name", HubDown("0123456789ab", ""),
			Popup{Summary: "No prompts for 0123456789ab: its clearance hub is down",
				Body:  "Blocked connections stay blocked, and nobody is asked.\nSee: systemctl --user status clearance-hub@0123456789ab.service",
				Hints: Hints{Urgency: UrgencyCritical}, Timeout: TimeoutNever}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
