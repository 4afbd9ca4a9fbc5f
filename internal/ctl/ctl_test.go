// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/varlink/go/varlink"

	"github.com/terok-ai/clearance/internal/audit"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	fw "github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancefirewall1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "1h", want: time.Hour},
		{in: "90s", want: 90 * time.Second},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "2d", want: 48 * time.Hour},
		{in: "1w", want: 7 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "1500ms", want: 2 * time.Second},
		{in: " 15m ", want: 15 * time.Minute},
		{in: "0s", wantErr: true},
		{in: "500ms", wantErr: true},
		{in: "-1h", wantErr: true},
		{in: "", wantErr: true},
		{in: "soon", wantErr: true},
		{in: "1y", wantErr: true},
		{in: "d", wantErr: true},
		{in: "11000d", wantErr: true},
		{in: "99999999999999d", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseDuration(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseDuration(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseDuration(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseVerdict(t *testing.T) {
	tests := []struct {
		name     string
		action   string
		args     []string
		want     verdictSpec
		wantCode int
	}{
		{name: "default once", action: "allow", args: []string{"id1"},
			want: verdictSpec{action: "allow", requestID: "id1", scope: scopeOnce}},
		{name: "for after the id", action: "allow", args: []string{"id1", "--for", "1h"},
			want: verdictSpec{action: "allow", requestID: "id1", scope: scopeOnce, ttl: time.Hour}},
		{name: "single-dash options", action: "deny", args: []string{"-for=30m", "id1"},
			want: verdictSpec{action: "deny", requestID: "id1", scope: scopeOnce, ttl: 30 * time.Minute}},
		{name: "until exit", action: "deny", args: []string{"--until-exit", "id1", "--container", "c1"},
			want: verdictSpec{action: "deny", requestID: "id1", scope: scopeContainer, hub: hubFlags{container: "c1"}}},
		{name: "always", action: "allow", args: []string{"id1", "--always"},
			want: verdictSpec{action: "allow", requestID: "id1", scope: scopeAlways}},
		{name: "dash-dash ends options", action: "allow", args: []string{"--", "--odd-id"},
			want: verdictSpec{action: "allow", requestID: "--odd-id", scope: scopeOnce}},
		{name: "two scopes", action: "allow", args: []string{"id1", "--always", "--until-exit"}, wantCode: ExitUsage},
		{name: "no id", action: "allow", args: nil, wantCode: ExitUsage},
		{name: "two ids", action: "allow", args: []string{"a", "b"}, wantCode: ExitUsage},
		{name: "unknown option", action: "allow", args: []string{"id1", "--forever"}, wantCode: ExitUsage},
		{name: "help", action: "allow", args: []string{"--help"}, wantCode: ExitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			r := newRunner(nil, &out, &errb, nil)
			got, code, ok := r.parseVerdict(tt.action, tt.args)
			if tt.wantCode != 0 || !ok {
				if ok || code != tt.wantCode {
					t.Fatalf("ok=%v code=%d, want failure with %d (stderr %q)", ok, code, tt.wantCode, errb.String())
				}
				return
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(verdictSpec{}, hubFlags{})); diff != "" {
				t.Errorf("parseVerdict (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHelpAndUsage(t *testing.T) {
	rt := testutil.ShortDir(t)
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			res := runCtl(t, rt, c.name, "--help")
			if res.code != ExitOK || !strings.Contains(res.stdout, "Usage: clearancectl "+c.name) || res.stderr != "" {
				t.Errorf("--help: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
			}
			res = runCtl(t, rt, c.name, "--no-such-option")
			if res.code != ExitUsage || !strings.Contains(res.stderr, "--help") {
				t.Errorf("bad option: exit %d, stderr %q", res.code, res.stderr)
			}
		})
	}
	res := runCtl(t, rt, "--help")
	if res.code != ExitOK || !strings.Contains(res.stdout, "Exit status") {
		t.Errorf("top-level --help: %d %q", res.code, res.stdout)
	}
	if res := runCtl(t, rt, "help", "pending"); res.code != ExitOK || !strings.Contains(res.stdout, "clearancectl pending") {
		t.Errorf("help pending: %d %q", res.code, res.stdout)
	}
	if res := runCtl(t, rt); res.code != ExitUsage {
		t.Errorf("no command: exit %d", res.code)
	}
}

func TestHubID(t *testing.T) {
	tests := []struct{ path, want string }{
		{"/run/user/1000/clearance/abc123/hub.sock", "abc123"},
		{"/run/user/1000/terok/clearance/task-7.sock", "task-7"},
		{"/run/user/1000/terok/clearance/task-7/hub.sock", "task-7"},
	}
	for _, tt := range tests {
		if got := hubID(tt.path); got != tt.want {
			t.Errorf("hubID(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestDiscoverSkipsHiddenAndNonSockets(t *testing.T) {
	rt := testutil.ShortDir(t)
	startHub(t, rt, "b")
	startHub(t, rt, "a")
	startHub(t, rt, ".hidden")
	os.MkdirAll(filepath.Join(rt, "clearance", "file"), 0o700)
	os.WriteFile(filepath.Join(rt, "clearance", "file", "hub.sock"), nil, 0o600)
	seed := filepath.Join(rt, "terok", "clearance")
	os.MkdirAll(seed, 0o700)
	seedHub := startHub(t, filepath.Join(rt, "seedrt"), "s")
	os.Rename(seedHub.Path, filepath.Join(seed, "s.sock"))

	pats := []string{filepath.Join(rt, "clearance", "*", "hub.sock"), filepath.Join(seed, "*.sock"),
		filepath.Join(rt, "clearance", "*", "hub.sock")}
	got, err := discover(pats)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, h := range got {
		ids = append(ids, h.ID)
	}
	if diff := cmp.Diff([]string{"a", "b", "s"}, ids); diff != "" {
		t.Errorf("discovered hubs (-want +got):\n%s", diff)
	}
	if _, err := discover([]string{"[bad"}); err == nil {
		t.Errorf("a malformed glob must be an error")
	}
}

func TestAsciiJSON(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"ascii", `{"a":"b"}`, `{"a":"b"}`},
		{"bidi override", "\"x\u202ey\"", `"x\u202ey"`},
		{"middle dot", "\"p/t · n\"", `"p/t \u00b7 n"`},
		{"astral", "\"\U0001F600\"", `"\ud83d\ude00"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(asciiJSON([]byte(tt.in)))
			if got != tt.want {
				t.Errorf("asciiJSON(%q) = %q, want %q", tt.in, got, tt.want)
			}
			var a, b any
			if json.Unmarshal([]byte(tt.in), &a) != nil || json.Unmarshal([]byte(got), &b) != nil {
				t.Fatal("not JSON")
			}
			if diff := cmp.Diff(a, b); diff != "" {
				t.Errorf("value changed (-in +out):\n%s", diff)
			}
		})
	}
}

func TestTableAlignsWithColour(t *testing.T) {
	var out bytes.Buffer
	r := newRunner(nil, &out, &out, nil)
	r.color = true
	tb := &table{head: []string{"A", "B", "C"}}
	tb.add(r.paint(colGreen, "ok"), "x", "1")
	tb.add("longer", "yy", "2")
	tb.write(&out, r)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	// Strip SGR and check the columns line up.
	var plain []string
	for _, l := range lines {
		var b strings.Builder
		for i := 0; i < len(l); i++ {
			if l[i] == 0x1b {
				for i < len(l) && l[i] != 'm' {
					i++
				}
				continue
			}
			b.WriteByte(l[i])
		}
		plain = append(plain, b.String())
	}
	want := []string{"A       B   C", "ok      x   1", "longer  yy  2"}
	if diff := cmp.Diff(want, plain); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
}

func TestColorEnabled(t *testing.T) {
	var buf bytes.Buffer
	if colorEnabled(&buf, envMap(nil)) {
		t.Errorf("colour on a buffer")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if colorEnabled(f, envMap(nil)) {
		t.Errorf("colour on a regular file")
	}
	// Terminals are covered by the pty tests (TestWatchColourOnlyOnTerminal
	// and the NO_COLOR runs).
}

func TestSplitDest(t *testing.T) {
	tests := []struct {
		in      string
		host    string
		port    int64
		wantErr bool
	}{
		{in: "api.example.com", host: "api.example.com"},
		{in: "api.example.com:443", host: "api.example.com", port: 443},
		{in: "192.0.2.1:53", host: "192.0.2.1", port: 53},
		{in: "2001:db8::1", host: "2001:db8::1"},
		{in: "[2001:db8::1]", host: "2001:db8::1"},
		{in: "[2001:db8::1]:443", host: "2001:db8::1", port: 443},
		{in: "host:0", wantErr: true},
		{in: "host:99999", wantErr: true},
		{in: ":443", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			host, port, err := splitDest(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error = %v, wantErr %v", err, tt.wantErr)
			}
			if host != tt.host || port != tt.port {
				t.Errorf("splitDest(%q) = %q, %d; want %q, %d", tt.in, host, port, tt.host, tt.port)
			}
		})
	}
}

func TestJournalArgs(t *testing.T) {
	tests := []struct {
		name string
		q    logQuery
		want []string // beyond the fixed prefix and the MESSAGE_ID matches
	}{
		{"everything", logQuery{}, nil},
		{"relative since", logQuery{since: "2h"}, []string{"--since=-2h"}},
		{"absolute since", logQuery{since: "2025-01-31 12:00"}, []string{"--since=2025-01-31 12:00"}},
		{"filters", logQuery{container: "c1", action: "deny", lines: 20},
			[]string{"-n", "20", "CLEARANCE_CONTAINER=c1", "CLEARANCE_ACTION=deny"}},
		{"collected files", logQuery{dir: "/srv/journal"}, []string{"--directory=/srv/journal"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := journalArgs(tt.q)
			if args[0] != "-o" || args[1] != "json" || !strings.HasPrefix(args[4], "--output-fields=") {
				t.Fatalf("prefix %q", args[:5])
			}
			var ids, rest []string
			for _, a := range args[5:] {
				if strings.HasPrefix(a, "MESSAGE_ID=") {
					ids = append(ids, a)
				} else {
					rest = append(rest, a)
				}
			}
			want := []string{"MESSAGE_ID=" + audit.MsgBlocked, "MESSAGE_ID=" + audit.MsgVerdict,
				"MESSAGE_ID=" + audit.MsgVerdictFailed, "MESSAGE_ID=" + audit.MsgExpired,
				"MESSAGE_ID=" + audit.MsgEngaged, "MESSAGE_ID=" + audit.MsgDisengaged,
				"MESSAGE_ID=" + audit.MsgDenied, "MESSAGE_ID=" + audit.MsgLearned,
				"MESSAGE_ID=" + audit.MsgFlowsCut, "MESSAGE_ID=" + audit.MsgRefused, "MESSAGE_ID=" + audit.MsgTampered,
				"MESSAGE_ID=" + audit.MsgAsked, "MESSAGE_ID=" + audit.MsgObserved, "MESSAGE_ID=" + audit.MsgObserveEngaged,
				"MESSAGE_ID=" + audit.MsgPolicyWritten,
				"MESSAGE_ID=" + audit.MsgMirrored, "MESSAGE_ID=" + audit.MsgAdopted}
			if diff := cmp.Diff(want, ids); diff != "" {
				t.Errorf("MESSAGE_ID matches (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, rest); diff != "" {
				t.Errorf("other args (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseJournal(t *testing.T) {
	data, err := os.ReadFile("testdata/journal.json")
	if err != nil {
		t.Fatal(err)
	}
	got, bad := parseJournal(data)
	if bad != 1 {
		t.Errorf("bad lines = %d, want 1", bad)
	}
	uid := int64(1000)
	want := []auditEntry{
		{TimeUsec: 1767261600000000, Time: "2026-01-01T10:00:00Z", Event: "blocked", MessageID: audit.MsgBlocked,
			Container: "c1", RequestID: "ab12-1", Dest: "198.51.100.7", Domain: "api.example.com", Port: 443,
			Proto: "TCP", Message: "blocked api.example.com:443"},
		{TimeUsec: 1767261605000000, Time: "2026-01-01T10:00:05Z", Event: "verdict", MessageID: audit.MsgVerdict,
			Container: "c1", RequestID: "ab12-1", Dest: "198.51.100.7", Domain: "api.example.com", Port: 443,
			Proto: "TCP", Action: "allow", Scope: "once", ExpiresUsec: 1767265205000000, OperatorUID: &uid,
			Channel: "varlink", Message: "verdict allow api.example.com (once)"},
		{TimeUsec: 1767261610000000, Time: "2026-01-01T10:00:10Z", Event: "failed", MessageID: audit.MsgVerdictFailed,
			Container: "c2", RequestID: "cd34-1", Dest: "203.0.113.5", Port: 22, Proto: "TCP", Action: "deny",
			Scope: "container", OperatorUID: &uid, Channel: "notifier", Reason: "nft: \x1b[31mtable missing\n",
			Message: "verdict deny 203.0.113.5 failed"},
		{TimeUsec: 1767265205000000, Time: "2026-01-01T11:00:05Z", Event: "expired", MessageID: audit.MsgExpired,
			Container: "c1", Dest: "198.51.100.7", ExpiresUsec: 1767265205000000, Message: "verdict expired for 198.51.100.7"},
		{TimeUsec: 1767265300000000, Time: "2026-01-01T11:01:40Z", Event: "engaged", MessageID: audit.MsgEngaged,
			Container: "c3"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseJournal (-want +got):\n%s", diff)
	}
}

func TestLogCommand(t *testing.T) {
	data, err := os.ReadFile("testdata/journal.json")
	if err != nil {
		t.Fatal(err)
	}
	var gotArgs []string
	fake := func(r *runner) {
		r.journal = func(ctx context.Context, args []string) ([]byte, error) {
			gotArgs = args
			return data, nil
		}
		r.now = func() time.Time { return time.UnixMicro(1767265400000000) }
	}
	res := runWith(t, fake, "", "log", "--container", "c1", "--since", "1d")
	if res.code != ExitOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	if !containsStr(gotArgs, "CLEARANCE_CONTAINER=c1") || !containsStr(gotArgs, "--since=-1d") {
		t.Errorf("journalctl args %q", gotArgs)
	}
	for _, s := range []string{"TIME", "blocked", "api.example.com:443/tcp (198.51.100.7)", "uid 1000 via varlink",
		"failed", "203.0.113.5:22/tcp", "nft:  [31mtable missing", "expired", "engaged"} {
		if !strings.Contains(res.stdout, s) {
			t.Errorf("log table lacks %q", s)
		}
	}
	assertInert(t, "log table", res.stdout)
	if !strings.Contains(res.stderr, "skipped 1 unreadable") {
		t.Errorf("stderr %q", res.stderr)
	}

	res = runWith(t, fake, "", "log", "--json")
	assertInert(t, "log --json", res.stdout)
	var entries []auditEntry
	if err := json.Unmarshal([]byte(res.stdout), &entries); err != nil || len(entries) != 5 {
		t.Fatalf("log --json: %v, %d entries", err, len(entries))
	}
	if entries[2].Reason != "nft: \x1b[31mtable missing\n" {
		t.Errorf("JSON must keep the reason exact, got %q", entries[2].Reason)
	}

	if res := runWith(t, fake, "", "log", "--action", "maybe"); res.code != ExitUsage {
		t.Errorf("--action maybe: exit %d", res.code)
	}

	missing := func(r *runner) {
		r.journal = func(context.Context, []string) ([]byte, error) { return nil, errNoJournalctl }
	}
	res = runWith(t, missing, "", "log")
	if res.code != ExitFailure || !strings.Contains(res.stderr, "journalctl not found") {
		t.Errorf("no journalctl: exit %d, stderr %q", res.code, res.stderr)
	}
	broken := func(r *runner) {
		r.journal = func(context.Context, []string) ([]byte, error) {
			return nil, errors.New("journalctl: exit status 1: Failed to open journal")
		}
	}
	if res := runWith(t, broken, "", "log"); res.code != ExitFailure || !strings.Contains(res.stderr, "Failed to open journal") {
		t.Errorf("broken journal: exit %d, stderr %q", res.code, res.stderr)
	}
}

func TestExecJournalMissingBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := execJournal(context.Background(), nil); !errors.Is(err, errNoJournalctl) {
		t.Errorf("err = %v, want errNoJournalctl", err)
	}
}

// fakeFirewall answers Explain and List from tables.
type fakeFirewall struct {
	explain map[string]Explanation
	elems   []fw.Element
	err     error
	calls   []string
}

func (f *fakeFirewall) Explain(ctx context.Context, container, ip string, port int64, proto string) (Explanation, error) {
	f.calls = append(f.calls, fmt.Sprintf("explain %s %s %d %s", container, ip, port, proto))
	if f.err != nil {
		return Explanation{}, f.err
	}
	return f.explain[ip], nil
}

func (f *fakeFirewall) List(ctx context.Context, container string) ([]fw.Element, error) {
	f.calls = append(f.calls, "list "+container)
	return f.elems, f.err
}

func (f *fakeFirewall) Close() error { return nil }

func TestExplainAndPolicy(t *testing.T) {
	exp := time.Now().Add(time.Hour).UnixMicro()
	ff := &fakeFirewall{
		explain: map[string]Explanation{
			"198.51.100.7": {Verdict: "accept", Reason: "allowed", ExpiresUsec: exp},
			"2001:db8::7":  {Verdict: "reject", Reason: "blocked"},
		},
		elems: []fw.Element{
			{List: "deny", Set: "deny4", Dest: "203.0.113.0/24", Comment: "bad\x1b[31m net"},
			{List: "allow", Set: "allow4", Dest: "198.51.100.7", Timeout_sec: 3600, Expires_usec: exp},
			{List: "allow", Set: "allow6", Dest: "2001:db8::/32", Comment: "mirror"},
		},
	}
	with := func(r *runner) {
		r.dialFirewall = func(ctx context.Context, path string) (Firewall, error) { return ff, nil }
		r.lookupHost = func(ctx context.Context, host string) ([]string, error) {
			if host == "api.example.com" {
				return []string{"2001:db8::7", "198.51.100.7"}, nil
			}
			return nil, errors.New("no such host")
		}
	}
	res := runWith(t, with, "", "explain", "c1", "api.example.com:443", "--proto", "tcp")
	if res.code != ExitOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	if diff := cmp.Diff([]string{"list c1", "explain c1 198.51.100.7 443 tcp", "explain c1 2001:db8::7 443 tcp"}, ff.calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	for _, s := range []string{"resolved on this host", "accept", "in an allow set", "reject", "logged (a prompt appears)"} {
		if !strings.Contains(res.stdout, s) {
			t.Errorf("explain output lacks %q:\n%s", s, res.stdout)
		}
	}
	// A name the container's forwarder learned: its addresses come from the
	// container's elements, not from this host's resolver.
	ff.calls = nil
	ff.elems = append(ff.elems,
		fw.Element{List: "learned", Set: "dns4_port", Dest: "198.51.100.9", Comment: "pypi.org", Timeout_sec: 300, Expires_usec: exp,
			Proto: ptr("tcp"), Port: ptr(int64(443))},
		fw.Element{List: "learned", Set: "dns4_port", Dest: "198.51.100.10", Comment: "pypi.org", Timeout_sec: 300, Expires_usec: exp,
			Proto: ptr("tcp"), Port: ptr(int64(443))})
	ff.explain["198.51.100.9"] = Explanation{Verdict: "accept", Reason: "learned", Set: "dns4_port", Comment: "pypi.org"}
	ff.explain["198.51.100.10"] = Explanation{Verdict: "accept", Reason: "learned", Set: "dns4_port", Comment: "pypi.org"}
	res = runWith(t, with, "", "explain", "c1", "PyPI.org:443")
	if diff := cmp.Diff([]string{"list c1", "explain c1 198.51.100.10 443 ", "explain c1 198.51.100.9 443 "}, ff.calls); diff != "" {
		t.Errorf("calls for a learned name (-want +got):\n%s", diff)
	}
	for _, s := range []string{"dns4_port (pypi.org)", "learned from a DNS answer"} {
		if !strings.Contains(res.stdout, s) || strings.Contains(res.stdout, "resolved on this host") {
			t.Errorf("explain of a learned name lacks %q:\n%s", s, res.stdout)
		}
	}
	res = runWith(t, with, "", "policy", "export", "c1", "--all")
	if !strings.Contains(res.stdout, "pypi.org:443/tcp") || strings.Contains(res.stdout, "198.51.100.9") || strings.Count(res.stdout, "pypi.org") != 1 {
		t.Errorf("export --all of learned elements, want their name once:\n%s", res.stdout)
	}
	ff.elems = ff.elems[:3]

	res = runWith(t, with, "", "explain", "c1", "198.51.100.7", "--json")
	var x explainJSON
	if err := json.Unmarshal([]byte(res.stdout), &x); err != nil || len(x.Addresses) != 1 || x.Addresses[0].Reason != "allowed" {
		t.Errorf("explain --json: %v %+v", err, x)
	}
	if res := runWith(t, with, "", "explain", "c1", "nowhere.invalid"); res.code != ExitNotFound {
		t.Errorf("unresolvable: exit %d", res.code)
	}
	if res := runWith(t, with, "", "explain", "c1"); res.code != ExitUsage {
		t.Errorf("missing dest: exit %d", res.code)
	}

	res = runWith(t, with, "", "policy", "show", "c1")
	if res.code != ExitOK || !strings.Contains(res.stdout, "203.0.113.0/24") || !strings.Contains(res.stdout, "never") {
		t.Errorf("policy show: %d\n%s", res.code, res.stdout)
	}
	assertInert(t, "policy show", res.stdout)

	res = runWith(t, with, "", "policy", "export", "c1")
	if res.code != ExitOK {
		t.Fatalf("export: %d %s", res.code, res.stderr)
	}
	wantYAML := "allow:\n  - dest: 2001:db8::/32\n    comment: \"mirror\"\ndeny:\n  - dest: 203.0.113.0/24\n    comment: \"bad [31m net\"\n"
	if diff := cmp.Diff(wantYAML, res.stdout); diff != "" {
		t.Errorf("export (-want +got):\n%s", diff)
	}
	if !strings.Contains(res.stderr, "left out 1 element") {
		t.Errorf("export stderr %q", res.stderr)
	}

	// Typed errors of the verdict service.
	tests := []struct {
		name string
		err  error
		code int
		msg  string
	}{
		{"no such container", &varlink.Error{Name: "org.terok.ClearanceFirewall1.NoSuchContainer"}, ExitNotFound, "no such container c1"},
		{"permission", &fw.PermissionDenied{Reason: "uid 1001 does not own the netns"}, ExitFailure, "uid 1001 does not own the netns"},
		{"stale", &fw.StaleRecord{Container: "c1", Reason: "pid moved"}, ExitFailure, "does not match the kernel: pid moved"},
		{"seed verdict server", &varlink.Error{Name: "org.varlink.service.InterfaceNotFound"}, ExitFailure, "does not offer org.terok.ClearanceFirewall1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ff.err = tt.err
			res := runWith(t, with, "", "policy", "show", "c1")
			if res.code != tt.code || !strings.Contains(res.stderr, tt.msg) {
				t.Errorf("exit %d, stderr %q; want %d, %q", res.code, res.stderr, tt.code, tt.msg)
			}
		})
	}
}

func TestFirewallUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "verdict.sock")
	res := runCtl(t, "", "explain", "c1", "192.0.2.1", "--socket", sock)
	if res.code != ExitFailure || !strings.Contains(res.stderr, "verdict service not reachable") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
	res = runCtl(t, "", "policy", "export", "c1", "--socket", sock)
	if res.code != ExitFailure || !strings.Contains(res.stderr, "verdict service not reachable") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
}

func ptr[T any](v T) *T { return &v }

func TestResolveContainer(t *testing.T) {
	known := []string{"0123456789ab", "0123ffff0000", "c1"}
	full := "0123456789ab" + strings.Repeat("cd", 26)
	tests := []struct {
		arg, want string
		wantErr   bool
	}{
		{arg: "0123456789ab", want: "0123456789ab"},
		{arg: full, want: "0123456789ab"},
		{arg: "01234", want: "0123456789ab"},
		{arg: "0123", wantErr: true}, // two containers start so
		{arg: "c1", want: "c1"},
		{arg: "feedfeedfeedfeedfeed", want: "feedfeedfeed"}, // gone: its hub was named by 12 characters
		{arg: "web-1", want: "web-1"},
	}
	for _, tt := range tests {
		got, err := resolveContainer(tt.arg, known)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("resolveContainer(%q) = %q, %v; want %q (error %v)", tt.arg, got, err, tt.want, tt.wantErr)
		}
	}
	if !matches(full, "0123456789ab", "x") || !matches("0123", "0123456789ab", "x") || matches("9", "0123456789ab", "x") {
		t.Error("matches does not take full ids and prefixes")
	}
}

func TestAlreadyDecidedMessage(t *testing.T) {
	at := time.Date(2026, 12, 3, 14, 2, 11, 0, time.Local)
	err := &orgterokclearancehub1.AlreadyDecided{Request_id: "c1:4", Action: "deny",
		By: "by alice (uid 1000) via \x1b[31mnotifier", At_usec: at.UnixMicro()}
	want := "already denied by alice (uid 1000) via  [31mnotifier at 14:02:11"
	if got := describeErr(err); got != want {
		t.Errorf("describeErr = %q, want %q", got, want)
	}
}

// TestAttackIPv6Endpoint (issue 9, item 11): an IPv6 destination printed
// as "2001:db8::1:443" hid where the address ends; it is bracketed.
func TestAttackIPv6Endpoint(t *testing.T) {
	for _, tc := range []struct {
		target      string
		port, proto int64
		want        string
	}{
		{"2001:db8::1", 443, 6, "[2001:db8::1]:443/tcp"},
		{"192.0.2.1", 53, 17, "192.0.2.1:53/udp"},
		{"2001:db8::1", 0, 0, "2001:db8::1"},
	} {
		if got := endpoint(tc.target, tc.port, tc.proto); got != tc.want {
			t.Errorf("endpoint(%q, %d, %d) = %q, want %q", tc.target, tc.port, tc.proto, got, tc.want)
		}
	}
}

// TestLogReconcilesTheTwoSides: the hub's and the verdict service's
// records of one verdict are joined by verdict id, and a disagreement is
// flagged (issue 10, item 3).
func TestLogReconcilesTheTwoSides(t *testing.T) {
	line := func(usec int64, id, side, outcome, vid, dest string) string {
		b, _ := json.Marshal(map[string]string{
			"__REALTIME_TIMESTAMP": strconv.FormatInt(usec, 10), "MESSAGE_ID": id, "CLEARANCE_CONTAINER": "c1",
			"CLEARANCE_DEST": dest, "CLEARANCE_ACTION": "allow", "CLEARANCE_SCOPE": "once",
			audit.FieldSide: side, audit.FieldOutcome: outcome, audit.FieldVerdictID: vid,
			"CLEARANCE_OPERATOR_UID": "1000", audit.FieldOperator: "alice", "CLEARANCE_CHANNEL": "notifier",
		})
		return string(b)
	}
	const t0 = 1767265400000000
	journal := strings.Join([]string{
		// agree: applied on both sides
		line(t0, audit.MsgVerdict, audit.SideKernel, audit.OutcomeApplied, "v1", "192.0.2.1"),
		line(t0+1, audit.MsgVerdict, audit.SideOperator, audit.OutcomeApplied, "v1", "192.0.2.1"),
		// the hub lost the service before its reply; the kernel has it
		line(t0+2, audit.MsgVerdict, audit.SideKernel, audit.OutcomeApplied, "v2", "192.0.2.2"),
		line(t0+3, audit.MsgVerdictFailed, audit.SideOperator, audit.OutcomeUnknown, "v2", "192.0.2.2"),
		// the hub says applied, no kernel record
		line(t0+4, audit.MsgVerdict, audit.SideOperator, audit.OutcomeApplied, "v3", "192.0.2.3"),
		// a kernel record alone
		line(t0+5, audit.MsgVerdict, audit.SideKernel, audit.OutcomeApplied, "v4", "192.0.2.4"),
	}, "\n")
	fake := func(r *runner) {
		r.journal = func(context.Context, []string) ([]byte, error) { return []byte(journal), nil }
		r.now = func() time.Time { return time.UnixMicro(t0 + 10) }
	}
	res := runWith(t, fake, "", "log", "--json")
	var got []auditEntry
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
		t.Fatalf("log --json: %v\n%s", err, res.stdout)
	}
	type row struct{ VerdictID, Side, Kernel, Mismatch string }
	var rows []row
	for _, e := range got {
		rows = append(rows, row{e.VerdictID, e.Side, e.Kernel, e.Mismatch})
	}
	want := []row{
		{"v1", audit.SideOperator, audit.OutcomeApplied, ""},
		{"v2", audit.SideOperator, audit.OutcomeApplied, "the kernel has it, the hub recorded unknown"},
		{"v3", audit.SideOperator, "", "no kernel record: the verdict service did not confirm it"},
		{"v4", audit.SideKernel, "", ""},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("reconciled records (-want +got):\n%s", diff)
	}
	res = runWith(t, fake, "", "log")
	for _, s := range []string{"MISMATCH: the kernel has it, the hub recorded unknown", "alice (uid 1000) via notifier", "kernel side only"} {
		if !strings.Contains(res.stdout, s) {
			t.Errorf("log table lacks %q:\n%s", s, res.stdout)
		}
	}
	// A reader who sees no kernel record at all is told nothing is amiss.
	if m := mismatch(audit.OutcomeApplied, "", false, false); m != "" {
		t.Errorf("without kernel records: mismatch %q", m)
	}
}

// TestLogShowsAskAndObserve: "log" asks journalctl for the records of the
// container's own requests and of observe mode, and names them.
func TestLogShowsAskAndObserve(t *testing.T) {
	const s = int64(1_767_265_000_000_000)
	lines := []string{
		journalLine(s+1, audit.MsgObserveEngaged, "c9", "", "", 0, "", ""),
		journalLine(s+2, audit.MsgObserved, "c9", "192.0.2.7", "", 8080, "TCP", ""),
		journalLine(s+3, audit.MsgAsked, "c9", "", "api.example.com", 443, "TCP", ""),
	}
	var gotArgs []string
	fake := func(r *runner) {
		r.journal = func(ctx context.Context, args []string) ([]byte, error) {
			gotArgs = args
			return []byte(strings.Join(lines, "\n")), nil
		}
		r.now = func() time.Time { return time.UnixMicro(s + 10_000_000) }
	}
	res := runWith(t, fake, "", "log")
	if res.code != ExitOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	for _, id := range []string{audit.MsgObserveEngaged, audit.MsgObserved, audit.MsgAsked} {
		if !containsStr(gotArgs, "MESSAGE_ID="+id) {
			t.Errorf("journalctl args %q lack %s", gotArgs, id)
		}
	}
	for _, want := range []string{"not-enforced", "observed", "192.0.2.7:8080/tcp", "asked", "api.example.com:443/tcp"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("log table lacks %q:\n%s", want, res.stdout)
		}
	}
}
