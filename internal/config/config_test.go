// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// write puts content into dir/name and returns its path.
func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name  string
		files []string // contents, loaded in order; "<missing>" names a missing file
		want  func(c *Config)
	}{
		{
			name:  "no files gives defaults",
			files: nil,
			want:  func(c *Config) {},
		},
		{
			name:  "missing file is ignored",
			files: []string{"<missing>"},
			want:  func(c *Config) {},
		},
		{
			name:  "empty file gives defaults",
			files: []string{""},
			want:  func(c *Config) {},
		},
		{
			name:  "comments only gives defaults",
			files: []string{"# nothing here\n\n"},
			want:  func(c *Config) {},
		},
		{
			name:  "null section keeps defaults",
			files: []string{"hub:\n"},
			want:  func(c *Config) {},
		},
		{
			name:  "one key overrides one default",
			files: []string{"hub:\n  queue_depth: 7\n"},
			want:  func(c *Config) { c.Hub.QueueDepth = 7 },
		},
		{
			name: "later file wins key by key",
			files: []string{
				"hub:\n  queue_depth: 7\n  max_pending: 9\nverdict:\n  mode: exec\n",
				"hub:\n  queue_depth: 8\n",
			},
			want: func(c *Config) {
				c.Hub.QueueDepth = 8
				c.Hub.MaxPending = 9
				c.Verdict.Mode = VerdictModeExec
			},
		},
		{
			name: "later list replaces earlier list",
			files: []string{
				"ruleset:\n  resolvers: [10.0.0.1, 10.0.0.2]\n",
				"ruleset:\n  resolvers: [\"fd00::53\"]\n",
			},
			want: func(c *Config) { c.Ruleset.Resolvers = []string{"fd00::53"} },
		},
		{
			name: "missing file between two files",
			files: []string{
				"notifier:\n  allow_for: 15m\n",
				"<missing>",
				"notifier:\n  max_visible: 2\n  headless_exit_ok: true\n",
			},
			want: func(c *Config) {
				c.Notifier.AllowFor = 15 * time.Minute
				c.Notifier.MaxVisible = 2
				c.Notifier.HeadlessExitOK = true
			},
		},
		{
			name: "every section",
			files: []string{`
hub:
  queue_depth: 64
  pending_ttl: 30m
  max_pending: 100
  runtime_dir: /run/x
  max_message_bytes: 65536
  max_line_bytes: 4096
verdict:
  mode: exec
  socket: /run/v.sock
  shield_binary: /usr/bin/terok-shield
  timeout: 2.5s
  once_ttl: 10m
  keep_established: true
  idle_timeout: 2s
  max_connections_per_owner: 4
ruleset:
  mode: terok-shield
  nflog_group: 5
  dns_prefix: "D: "
  block_prefix: "B: "
  resolvers: [192.0.2.53]
  policy_dir: /srv/policy
  policy_path: [/srv/shipped, /opt/clearance/policy.d]
  dns_mark: 0x10
dns:
  hold_max: 500ms
  min_ttl: 1m
  denied: refused
  max_names: 10
  queries_per_second: 7
  cache_size: 0
notifier:
  hub_glob: ["/a/*.sock", "/b/*/hub.sock"]
  allow_for: 1h
  max_visible: 1
  rate_per_minute: 60
  headless_exit_ok: true
hook:
  allow_capabilities: [CAP_NET_RAW, net_admin]
  without_user_manager: run
`},
			want: func(c *Config) {
				c.Hub = Hub{QueueDepth: 64, PendingTTL: 30 * time.Minute, MaxPending: 100, RuntimeDir: "/run/x", MaxMessageBytes: 65536, MaxLineBytes: 4096}
				c.Verdict = Verdict{Mode: "exec", Socket: "/run/v.sock", ShieldBinary: "/usr/bin/terok-shield", Timeout: 2500 * time.Millisecond, OnceTTL: 10 * time.Minute,
					KeepEstablished: true, IdleTimeout: 2 * time.Second, MaxConnectionsPerOwner: 4}
				c.Hook = Hook{AllowCapabilities: []string{"CAP_NET_RAW", "net_admin"}, WithoutUserManager: "run"}
				c.Ruleset = Ruleset{Mode: "terok-shield", NflogGroup: 5, DNSPrefix: "D: ", BlockPrefix: "B: ", TCPReject: "reset", Resolvers: []string{"192.0.2.53"}, PolicyDir: "/srv/policy",
					PolicyPath: []string{"/srv/shipped", "/opt/clearance/policy.d"}, DNSMark: 0x10}
				c.DNS = DNS{HoldMax: 500 * time.Millisecond, Hold: true, MinTTL: time.Minute, Denied: "refused", MaxNames: 10, QueriesPerSecond: 7, CacheSize: 0}
				c.Notifier = Notifier{HubGlob: []string{"/a/*.sock", "/b/*/hub.sock"}, AllowFor: time.Hour, MaxVisible: 1, RatePerMinute: 60, HeadlessExitOK: true}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var paths []string
			for i, content := range tt.files {
				name := "c" + strconv.Itoa(i) + ".yaml"
				if content == "<missing>" {
					paths = append(paths, filepath.Join(dir, name))
					continue
				}
				paths = append(paths, write(t, dir, name, content))
			}
			got, err := Load(paths...)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Default()
			tt.want(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("unexpected config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		earlier string // loaded before content when non-empty
		content string
		want    []string // substrings of the error; "FILE" is replaced by the path
	}{
		{
			name:    "unknown key names file and line",
			content: "ruleset:\n  mode: builtin\n  nflog_grop: 5\n",
			want:    []string{"FILE:3: field nflog_grop not found"},
		},
		{
			name:    "unknown top-level section",
			content: "hubb:\n  queue_depth: 1\n",
			want:    []string{"FILE:1: field hubb not found"},
		},
		{
			name:    "bad duration",
			content: "hub:\n  pending_ttl: 10x\n",
			want:    []string{"FILE:2: ", "time.Duration"},
		},
		{
			name:    "bare number is not a duration",
			content: "verdict:\n  timeout: 30\n",
			want:    []string{"FILE:2: ", "time.Duration"},
		},
		{
			name:    "wrong type",
			content: "hub:\n  queue_depth: many\n",
			want:    []string{"FILE:2: ", "many"},
		},
		{
			name:    "syntax error",
			content: "hub:\n  queue_depth: 1\n bad\n",
			want:    []string{"FILE:"},
		},
		{
			name:    "invalid verdict mode",
			content: "verdict:\n  mode: servic\n",
			want:    []string{`FILE:2: verdict.mode: unknown mode "servic"`},
		},
		{
			name:    "invalid ruleset mode",
			content: "\nruleset:\n  mode: shield\n",
			want:    []string{`FILE:3: ruleset.mode: unknown mode "shield"`},
		},
		{
			name:    "invalid tcp_reject",
			content: "ruleset:\n  tcp_reject: rst\n",
			want:    []string{`FILE:2: ruleset.tcp_reject: unknown value "rst"`},
		},
		{
			name:    "invalid dns.denied",
			content: "dns:\n  hold_max: 1s\n  denied: sinkhole\n",
			want:    []string{`FILE:3: dns.denied: unknown value "sinkhole"`},
		},
		{
			name:    "zero dns hold",
			content: "dns:\n  hold_max: 0s\n",
			want:    []string{`FILE:2: dns.hold_max: must be a positive duration`},
		},
		{
			name:    "zero dns mark",
			content: "ruleset:\n  dns_mark: 0\n",
			want:    []string{`FILE:2: ruleset.dns_mark: must not be 0`},
		},
		{
			name:    "negative dns cache size",
			content: "dns:\n  cache_size: -1\n",
			want:    []string{"FILE:2: dns.cache_size: must be 0 (no cache) or more, got -1"},
		},
		{
			name:    "zero queue depth",
			content: "hub:\n  queue_depth: 0\n",
			want:    []string{"FILE:2: hub.queue_depth: must be positive, got 0"},
		},
		{
			name:    "negative duration",
			content: "hub:\n  pending_ttl: -1s\n",
			want:    []string{"FILE:2: hub.pending_ttl: must be a positive duration"},
		},
		{
			name:    "several problems reported together",
			content: "hub:\n  max_pending: -1\nnotifier:\n  max_visible: 0\n",
			want:    []string{"FILE:2: hub.max_pending", "FILE:4: notifier.max_visible"},
		},
		{
			name:    "nflog group out of range",
			content: "ruleset:\n  nflog_group: 70000\n",
			want:    []string{"FILE:2: ruleset.nflog_group: must be 0..65535"},
		},
		{
			name:    "resolver not an address",
			content: "ruleset:\n  resolvers: [dns.example]\n",
			want:    []string{`FILE:2: ruleset.resolvers: entry 0: "dns.example" is not an IP address`},
		},
		{
			name:    "equal prefixes",
			content: "ruleset:\n  dns_prefix: \"X: \"\n  block_prefix: \"X: \"\n",
			want:    []string{"FILE:3: ruleset.block_prefix: must differ"},
		},
		{
			name:    "empty hub glob",
			content: "notifier:\n  hub_glob: []\n",
			want:    []string{"FILE:2: notifier.hub_glob: must list at least one pattern"},
		},
		{
			name:    "relative socket path",
			content: "verdict:\n  socket: verdict.sock\n",
			want:    []string{`FILE:2: verdict.socket: must be an absolute path, got "verdict.sock"`},
		},
		{
			name:    "a capability the hook does not refuse",
			content: "hook:\n  allow_capabilities: [CAP_SYS_ADMIN]\n",
			want:    []string{`FILE:2: hook.allow_capabilities: entry 0: "CAP_SYS_ADMIN" is not CAP_NET_ADMIN or CAP_NET_RAW`},
		},
		{
			name:    "zero idle timeout",
			content: "verdict:\n  idle_timeout: 0s\n",
			want:    []string{"FILE:2: verdict.idle_timeout: must be a positive duration"},
		},
		{
			name:    "two documents",
			content: "hub:\n  queue_depth: 1\n---\nhub:\n  queue_depth: 2\n",
			want:    []string{"FILE:", "more than one YAML document"},
		},
		{
			name:    "relative policy path",
			content: "ruleset:\n  policy_path: [/usr/share/clearance/policy.d, policy.d]\n",
			want:    []string{`FILE:2: ruleset.policy_path: entry 1: must be an absolute path, got "policy.d"`},
		},
		{
			name:    "invalid value blamed on the file that set it",
			earlier: "verdict:\n  mode: bogus\n",
			content: "hub:\n  queue_depth: 3\n",
			want:    []string{"EARLIER:2: verdict.mode"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var paths []string
			earlier := filepath.Join(dir, "earlier.yaml")
			if tt.earlier != "" {
				paths = append(paths, write(t, dir, "earlier.yaml", tt.earlier))
			}
			p := write(t, dir, "clearance.yaml", tt.content)
			paths = append(paths, p)
			_, err := Load(paths...)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, w := range tt.want {
				w = strings.ReplaceAll(w, "EARLIER", earlier)
				w = strings.ReplaceAll(w, "FILE", p)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "in type") {
				t.Errorf("error %q leaks the Go type", err)
			}
		})
	}
}

func TestDefaultsAreValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate: %v", err)
	}
}

func TestDefaultPaths(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{
			name: "XDG_CONFIG_HOME set",
			env:  map[string]string{"XDG_CONFIG_HOME": "/cfg", "HOME": "/home/u", EnvConfig: ""},
			want: []string{SystemPath, "/cfg/clearance/clearance.yaml"},
		},
		{
			name: "XDG_CONFIG_HOME unset falls back to HOME/.config",
			env:  map[string]string{"XDG_CONFIG_HOME": "", "HOME": "/home/u", EnvConfig: ""},
			want: []string{SystemPath, "/home/u/.config/clearance/clearance.yaml"},
		},
		{
			name: "relative XDG_CONFIG_HOME is ignored",
			env:  map[string]string{"XDG_CONFIG_HOME": "rel", "HOME": "/home/u", EnvConfig: ""},
			want: []string{SystemPath, "/home/u/.config/clearance/clearance.yaml"},
		},
		{
			name: "CLEARANCE_CONFIG replaces both",
			env:  map[string]string{"XDG_CONFIG_HOME": "/cfg", EnvConfig: "/tmp/c.yaml"},
			want: []string{"/tmp/c.yaml"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			if diff := cmp.Diff(tt.want, DefaultPaths()); diff != "" {
				t.Fatalf("unexpected paths (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadDefaultPaths(t *testing.T) {
	dir := t.TempDir()
	t.Run("user file applies", func(t *testing.T) {
		t.Setenv(EnvConfig, "")
		t.Setenv("XDG_CONFIG_HOME", dir)
		write(t, dir, "clearance/clearance.yaml", "hub:\n  queue_depth: 3\n")
		c, err := Load()
		if err != nil {
			t.Fatal(err)
		}
		// The system file may exist on the test machine; only check ours.
		if c.Hub.QueueDepth != 3 {
			t.Fatalf("queue_depth = %d, want 3", c.Hub.QueueDepth)
		}
	})
	t.Run("CLEARANCE_CONFIG alone", func(t *testing.T) {
		p := write(t, dir, "only.yaml", "hub:\n  max_pending: 5\n")
		t.Setenv(EnvConfig, p)
		c, err := Load()
		if err != nil {
			t.Fatal(err)
		}
		want := Default()
		want.Hub.MaxPending = 5
		if diff := cmp.Diff(want, c); diff != "" {
			t.Fatalf("unexpected config (-want +got):\n%s", diff)
		}
	})
	t.Run("missing CLEARANCE_CONFIG is an error", func(t *testing.T) {
		t.Setenv(EnvConfig, filepath.Join(dir, "nope.yaml"))
		if _, err := Load(); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
			t.Fatalf("Load = %v, want an error naming nope.yaml", err)
		}
	})
}

func TestExpansion(t *testing.T) {
	tests := []struct {
		name    string
		runtime string
		hub     Hub
		globs   []string
		wantDir string
		want    []string
	}{
		{
			name:    "defaults under XDG_RUNTIME_DIR",
			runtime: "/run/user/1000",
			hub:     Default().Hub,
			globs:   Default().Notifier.HubGlob,
			wantDir: "/run/user/1000/clearance",
			want: []string{"/run/user/1000/clearance/*/hub.sock", "/run/clearance/*/hub.sock",
				"/run/user/1000/terok/clearance/*.sock", "/run/user/1000/terok/clearance/*/hub.sock"},
		},
		{
			name:    "empty XDG_RUNTIME_DIR falls back to /run/user/uid",
			runtime: "",
			hub:     Hub{RuntimeDir: "${XDG_RUNTIME_DIR}/cl"},
			globs:   []string{"${XDG_RUNTIME_DIR}/x/*.sock"},
			wantDir: "/run/user/" + strconv.Itoa(os.Getuid()) + "/cl",
			want:    []string{"/run/user/" + strconv.Itoa(os.Getuid()) + "/x/*.sock"},
		},
		{
			name:    "explicit directory",
			runtime: "/r",
			hub:     Hub{RuntimeDir: "/srv/hubs"},
			globs:   []string{"/srv/hubs/*/hub.sock"},
			wantDir: "/srv/hubs",
			want:    []string{"/srv/hubs/*/hub.sock"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("XDG_RUNTIME_DIR", tt.runtime)
			if got := tt.hub.Dir(); got != tt.wantDir {
				t.Errorf("Hub.Dir() = %q, want %q", got, tt.wantDir)
			}
			if diff := cmp.Diff(tt.want, Notifier{HubGlob: tt.globs}.Globs()); diff != "" {
				t.Errorf("unexpected globs (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDocumentedExample keeps docs/configuration.md honest: its full
// example must decode to exactly the defaults, and every other example
// must load.
func TestDocumentedExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	full, rest, ok := strings.Cut(doc[strings.Index(doc, "## Full example"):], "## Examples")
	if !ok {
		t.Fatal("docs/configuration.md lacks the Full example / Examples sections")
	}
	blocks := func(s string) []string {
		var out []string
		for _, part := range strings.Split(s, "```yaml\n")[1:] {
			out = append(out, part[:strings.Index(part, "```")])
		}
		return out
	}
	dir := t.TempDir()
	fb := blocks(full)
	if len(fb) != 1 {
		t.Fatalf("found %d yaml blocks in the full example, want 1", len(fb))
	}
	got, err := Load(write(t, dir, "full.yaml", fb[0]))
	if err != nil {
		t.Fatalf("full example: %v", err)
	}
	if diff := cmp.Diff(Default(), got); diff != "" {
		t.Fatalf("full example differs from the defaults (-want +got):\n%s", diff)
	}
	for i, ex := range blocks(rest) {
		if _, err := Load(write(t, dir, "ex"+strconv.Itoa(i)+".yaml", ex)); err != nil {
			t.Errorf("example %d: %v", i, err)
		}
	}
}
