// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package config loads clearance's YAML configuration.
//
// Configuration is read from up to two files, each overriding the keys it
// sets in the ones before it (see [DefaultPaths]):
//
//	/etc/clearance/clearance.yaml                  system-wide, written by the packager or admin
//	$XDG_CONFIG_HOME/clearance/clearance.yaml      per user (default ~/.config)
//
// or from the single file named by $CLEARANCE_CONFIG. Missing files are
// ignored and an empty file means "all defaults", so clearance runs with no
// configuration at all. Decoding is strict: an unknown key, a value of the
// wrong type or a malformed duration is an error naming the file and the
// line, for example
//
//	/etc/clearance/clearance.yaml:3: field nflog_grop not found
//
// Durations are Go duration strings ("10s", "1h30m"); a bare number is an
// error. docs/configuration.md shows a complete commented example.
//
// A [Config] is a plain value: once loaded, it is safe to read from any
// number of goroutines, and nothing in this package mutates it afterwards.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultAskPort is the default port of the container's ask endpoint
// (ask.port): 0x636c, "cl", as in the DNS mark 0x636c7200; below the
// kernel's ephemeral port range.
const DefaultAskPort = 25452

// SystemPath is the system-wide configuration file, read first.
const SystemPath = "/etc/clearance/clearance.yaml"

// EnvConfig names the environment variable that, when set and non-empty,
// replaces [DefaultPaths] with the single file it names. That file must
// exist.
const EnvConfig = "CLEARANCE_CONFIG"

// maxFileBytes bounds how much of one configuration file is read.
const maxFileBytes = 1 << 20

// Verdict modes (verdict.mode).
const (
	// VerdictModeService sends verdicts to the privileged verdict service
	// on verdict.socket.
	VerdictModeService = "service"
	// VerdictModeExec runs terok-shield allow|deny CONTAINER DEST as the
	// seed did.
	VerdictModeExec = "exec"
)

// How blocked TCP connections are refused (ruleset.tcp_reject).
const (
	TCPRejectICMPX = "icmpx"
	TCPRejectReset = "reset"
)

// Ruleset modes (ruleset.mode).
const (
	// RulesetModeBuiltin installs clearance's own "table inet clearance".
	RulesetModeBuiltin = "builtin"
	// RulesetModeShield leaves the ruleset to terok-shield.
	RulesetModeShield = "terok-shield"
)

// Config is the whole configuration. [Default] returns it with every
// default filled in; [Load] starts from that and applies the files.
type Config struct {
	Hub      Hub      `yaml:"hub"`
	Verdict  Verdict  `yaml:"verdict"`
	Ruleset  Ruleset  `yaml:"ruleset"`
	DNS      DNS      `yaml:"dns"`
	Notifier Notifier `yaml:"notifier"`
	Hook     Hook     `yaml:"hook"`
	Ask      Ask      `yaml:"ask"`
	Observe  Observe  `yaml:"observe"`
	Remote   Remote   `yaml:"remote"`
	NATS     NATS     `yaml:"nats"`
	Relay    Relay    `yaml:"relay"`
}

// Ask configures the container's ask endpoint (docs/ask.md): a small
// HTTP service inside the container's network namespace, on loopback,
// where the workload states a destination, a port and its reason before
// it connects, and waits for the operator's verdict.
type Ask struct {
	// Port is the TCP port of the endpoint on 127.0.0.1 and [::1] in
	// every container's network namespace. Read by clearance-verdict,
	// which creates the sockets, from the system file only: containers
	// rely on one port per host. 0 turns the endpoint off. Default 25452.
	Port int `yaml:"port"`

	// RatePerMinute and Burst are each container's token bucket: every
	// request to the endpoint takes a token; without one it is answered
	// 429 with Retry-After. Default 60 and 20.
	RatePerMinute int `yaml:"rate_per_minute"`
	Burst         int `yaml:"burst"`

	// MaxWait bounds how long one call waits for the verdict (its wait
	// parameter; the default wait is the smaller of 2m and this). When it
	// passes, the call answers 202 "pending" and the request still waits.
	// Default 10m.
	MaxWait time.Duration `yaml:"max_wait"`

	// MaxConnections bounds the connections one container holds open to
	// its endpoint at once (waiting calls included); one more is answered
	// 429 and closed. Default 32.
	MaxConnections int `yaml:"max_connections"`
}

// Observe says who may run containers in observe mode (annotation
// io.clearance.mode=observe): the ruleset logs every new destination and
// lets it through instead of blocking it. Read by clearance-verdict from
// the system file only. Default: nobody.
type Observe struct {
	// Users lists the users (names or numeric uids) whose containers may
	// run in observe mode: the container's owner as the kernel reports it.
	Users []string `yaml:"users"`

	// Projects lists projects (the container's dossier.project) whose
	// containers may run in observe mode. The project is what the
	// container's owner annotated, not verified: any user who can start
	// containers can claim a listed project.
	Projects []string `yaml:"projects"`
}

// NATS is the NATS server of a fleet, for clearance-relay and
// "clearancectl --nats" (docs/fleet.md).
type NATS struct {
	// URL is the server, e.g. "tls://nats.example.com:4222" (several
	// separated by commas). Default none: clearance-relay refuses to
	// start.
	URL string `yaml:"url"`

	// Credentials is a NATS credentials file (JWT and nkey seed), the
	// identity the server authenticates and authorises. Default none.
	Credentials string `yaml:"credentials"`

	// TLSCA, TLSCert and TLSKey: a CA bundle to verify the server with,
	// and a client certificate and key for mutual TLS. Default none.
	TLSCA   string `yaml:"tls_ca"`
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
}

// Relay configures clearance-relay, which connects this host's hubs to
// the NATS server of [NATS] (docs/fleet.md). It does nothing until
// nats.url is set and the user unit is enabled.
type Relay struct {
	// Host names this host on the subjects: 1 to 64 letters, digits, '-'
	// and '_'. Default: the first label of the host name.
	Host string `yaml:"host"`

	// SubjectPrefix is the first subject token(s). Default "clearance".
	SubjectPrefix string `yaml:"subject_prefix"`

	// Bucket is the JetStream key-value bucket of "always" verdicts.
	// Default "clearance-always".
	Bucket string `yaml:"bucket"`

	// Adopt applies other hosts' "always" verdicts to this host's
	// policies (through the verdict service). Default true.
	Adopt bool `yaml:"adopt"`
}

// Remote configures clearancectl's remote hosts (clearancectl --host):
// the hubs of each are reached over "ssh HOST clearancectl bridge".
type Remote struct {
	// Hosts are included in every clearancectl command that is given no
	// --host (and not --local), each "[user@]host[:port]". Default none.
	Hosts []string `yaml:"hosts"`

	// SSHCommand is the ssh to run, split at white space (no shell
	// quoting), e.g. "ssh -F /home/alice/.ssh/fleet_config". Default
	// "ssh"; $CLEARANCE_SSH_COMMAND and --ssh-command win over it.
	SSHCommand string `yaml:"ssh_command"`

	// Command is clearancectl on the far side, as its login shell finds
	// it. Default "clearancectl".
	Command string `yaml:"command"`
}

// Hook configures clearance-oci-hook. The hook reads only the system
// file (/etc/clearance/clearance.yaml): the user who starts a container
// cannot change what it refuses.
type Hook struct {
	// AllowCapabilities lists capabilities a container may hold although
	// a process holding them can change or bypass its firewall:
	// CAP_NET_ADMIN (rewrite or delete the ruleset) and CAP_NET_RAW
	// (packet sockets below it); a --privileged container holds both.
	// The hook refuses (fail closed) a container holding one that is not
	// listed. Names are case-insensitive, with or without "CAP_".
	// Default empty.
	AllowCapabilities []string `yaml:"allow_capabilities"`
	// WithoutUserManager says what the hook does with a rootless
	// container whose owner has no running systemd --user (su, sudo -u,
	// cron; no login, no linger): "refuse" (default; nothing could
	// prompt for it) or "run" (firewalled, without prompts).
	WithoutUserManager string `yaml:"without_user_manager"`
}

// What the hook does without the owner's user manager
// (hook.without_user_manager).
const (
	WithoutUserManagerRefuse = "refuse"
	WithoutUserManagerRun    = "run"
)

// What the DNS forwarder answers for a denied name (dns.denied).
const (
	DNSDeniedNXDomain    = "nxdomain"
	DNSDeniedRefused     = "refused"
	DNSDeniedPassAndDrop = "pass-and-drop"
)

// DNS configures the container's DNS forwarder (built-in ruleset mode),
// which runs inside its hub.
type DNS struct {
	// HoldMax bounds how long an answer carrying new addresses of an
	// allowed name is held while the firewall learns them. When it
	// passes, the container gets SERVFAIL (its resolver retries), never an
	// answer whose addresses are not allowed yet. Default 2s.
	HoldMax time.Duration `yaml:"hold_max"`

	// Hold, when false, releases answers at once while the firewall
	// learns their addresses: the container's first connect then races the
	// firewall and may be refused. It exists to measure that race; leave
	// it on. Default true.
	Hold bool `yaml:"hold"`

	// MinTTL is the shortest lifetime of a learned address: elements
	// expire at max(answer TTL, min_ttl), refreshed by every later answer.
	// Default 5m.
	MinTTL time.Duration `yaml:"min_ttl"`

	// Denied is what a query for a denied name gets: "nxdomain" (the name
	// does not exist), "refused", or "pass-and-drop" (the real answer;
	// the firewall drops the connection). Default "nxdomain".
	Denied string `yaml:"denied"`

	// MaxNames bounds the addresses the forwarder remembers names for
	// (to name blocked connections). Default 16384.
	MaxNames int `yaml:"max_names"`

	// QueriesPerSecond caps the queries forwarded upstream per second
	// (bursts of twice that pass); beyond it the container gets REFUSED.
	// Default 500.
	QueriesPerSecond int `yaml:"queries_per_second"`

	// CacheSize bounds the answers the forwarder caches (at most 1 MiB
	// of them whatever the count): a question asked again within its
	// TTL is answered without asking upstream, and still held until the
	// firewall has its addresses. 0 turns the cache off. Default 1024.
	CacheSize int `yaml:"cache_size"`
}

// Hub configures clearance-hub, the per-container hub.
//
// The systemd watchdog needs no key here: the hub pings it whenever the unit
// sets WatchdogSec= (WATCHDOG_USEC in its environment).
type Hub struct {
	// QueueDepth is the number of events buffered per subscriber. When a
	// subscriber falls further behind, its oldest queued event is dropped,
	// so a slow subscriber never slows the others. Default 1024 (128, the
	// seed's depth, loses events at 50 000/s on 2 vCPU: docs/benchmarks.md).
	QueueDepth int `yaml:"queue_depth"`

	// PendingTTL is how long a blocked request stays pending (and can still
	// receive a verdict) before it is purged. Default 1h.
	PendingTTL time.Duration `yaml:"pending_ttl"`

	// MaxPending caps the number of pending requests per container; beyond
	// it the oldest is purged. Default 4096.
	MaxPending int `yaml:"max_pending"`

	// RuntimeDir is the base directory of the per-container hub
	// directories (<runtime_dir>/<id>/hub.sock). Environment variables
	// are expanded. Default "" means $XDG_RUNTIME_DIR/clearance (see
	// [Hub.Dir]).
	RuntimeDir string `yaml:"runtime_dir"`

	// MaxMessageBytes is the largest varlink message the hub accepts; a
	// bigger one is discarded and answered with ProtocolViolation, and the
	// connection goes on. Default 1 MiB (1048576).
	MaxMessageBytes int `yaml:"max_message_bytes"`

	// MaxLineBytes is the longest line accepted on the ingest socket; a
	// longer line is dropped without losing the connection's later lines.
	// Default 65536.
	MaxLineBytes int `yaml:"max_line_bytes"`
}

// Verdict configures how verdicts are applied.
type Verdict struct {
	// Mode is "service" (ask the privileged clearance-verdict service on
	// Socket) or "exec" (run ShieldBinary allow|deny CONTAINER DEST
	// directly, as the seed did). Default "service".
	Mode string `yaml:"mode"`

	// Socket is the verdict service's varlink socket. Default
	// "/run/clearance/verdict.sock".
	Socket string `yaml:"socket"`

	// ShieldBinary is the terok-shield executable used in "exec" mode.
	// Default "" means terok-shield next to the running executable, then
	// on $PATH.
	ShieldBinary string `yaml:"shield_binary"`

	// Timeout bounds one verdict application (the whole terok-shield run
	// in "exec" mode, the service call otherwise). Default 10s.
	Timeout time.Duration `yaml:"timeout"`

	// OnceTTL is the lifetime of a verdict with scope "once". Default 1h.
	OnceTTL time.Duration `yaml:"once_ttl"`

	// KeepEstablished, read by clearance-verdict, leaves established
	// connections alone when a verdict is revoked (as the hub does when a
	// "once" verdict expires). By default their conntrack entries are
	// deleted in the container's namespace, so the next packet of such a
	// connection is judged like a new one: a connection does not outlive
	// its verdict. Default false.
	KeepEstablished bool `yaml:"keep_established"`

	// IdleTimeout, read by clearance-verdict, closes a connection on which
	// no complete request arrived for this long (counted from the
	// connection's start and from each reply; a call being handled does
	// not count), so idle connections cannot pile up. Clients reconnect.
	// Default 5s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`

	// MaxConnectionsPerOwner, read by clearance-verdict, bounds the
	// connections one user holds open at once, counting the user's
	// subordinate uids (/etc/subuid) as the user; root is not limited. A
	// connection beyond it is refused with PermissionDenied before it
	// is read. Default 16.
	MaxConnectionsPerOwner int `yaml:"max_connections_per_owner"`
}

// Ruleset configures the container's firewall ruleset.
type Ruleset struct {
	// Mode is "builtin" (clearance's own table inet clearance) or
	// "terok-shield" (the shield owns the ruleset). Default "builtin".
	Mode string `yaml:"mode"`

	// NflogGroup is the NFLOG group blocked packets and DNS replies are
	// logged to, 0..65535. Default 100.
	NflogGroup int `yaml:"nflog_group"`

	// DNSPrefix is the NFLOG prefix of logged DNS replies in
	// terok-shield mode (the built-in ruleset logs none: its DNS goes
	// through the forwarder). Default "CLEARANCE_DNS: ".
	DNSPrefix string `yaml:"dns_prefix"`

	// DNSMark is the firewall mark of the DNS forwarder's sockets: only
	// packets carrying it reach the resolvers, and they are not redirected
	// again. Pick another if something in the container's namespace uses
	// it. Default 0x636c7200 (1668051456).
	DNSMark uint32 `yaml:"dns_mark"`

	// BlockPrefix is the NFLOG prefix of blocked packets. Default
	// "CLEARANCE_BLOCKED: ".
	BlockPrefix string `yaml:"block_prefix"`

	// TCPReject is how a blocked TCP connection is refused: "icmpx"
	// (ICMP admin-prohibited, like every other protocol) or "reset" (a TCP
	// reset). With "icmpx", a program using a blocking connect() waits
	// about a second for its SYN to be retransmitted and refused again
	// (the kernel takes the first ICMP error as a soft one); with "reset"
	// it fails at once with "connection refused". Default "reset" (the
	// ICMP error is a soft one for a blocking connect(): measured, ~1 s and
	// two log records per blocked connect).
	TCPReject string `yaml:"tcp_reject"`

	// Resolvers are the DNS servers the container's forwarder asks (IP
	// addresses). Default empty: the nameservers of the container's
	// resolv.conf as the runtime wrote it (captured by the OCI hook at
	// createRuntime). A policy's resolvers are added to either.
	Resolvers []string `yaml:"resolvers"`

	// PolicyDir is the administrator's directory of YAML policies,
	// searched first for a policy name; "always" verdicts are appended to
	// files under it (uid-<uid>/ for a user's containers). Default
	// "/etc/clearance/policy.d".
	PolicyDir string `yaml:"policy_dir"`

	// PolicyPath lists further directories searched for a policy name
	// (and for includes) after PolicyDir, in order; the first that has
	// <name>.yaml wins, so a file in PolicyDir overrides a shipped profile
	// of the same name. Never written to. Default
	// ["/usr/share/clearance/policy.d"], the shipped profiles; with
	// "make install PREFIX=/usr/local" they are under /usr/local/share.
	PolicyPath []string `yaml:"policy_path"`
}

// Notifier configures clearance-notifier, the desktop bridge.
type Notifier struct {
	// HubGlob lists the glob patterns of hub sockets to subscribe to.
	// Environment variables are expanded (see [Notifier.Globs]). Default
	// [DefaultHubGlobs]: clearance's layouts (the user's own containers,
	// and the rootful containers whose hubs run under the system manager:
	// 0660 root:clearance, reachable by members of group clearance; for
	// anyone else they are skipped without a word) and the seed's two.
	HubGlob []string `yaml:"hub_glob"`

	// AllowFor, when positive, adds a third button "Allow for <AllowFor>"
	// (a verdict with that TTL). Default 0: no third button.
	AllowFor time.Duration `yaml:"allow_for"`

	// MaxVisible caps the prompts on screen at once; further ones wait
	// until one is answered. Default 5.
	MaxVisible int `yaml:"max_visible"`

	// RatePerMinute caps the new prompts shown per minute. Default 30.
	RatePerMinute int `yaml:"rate_per_minute"`

	// HeadlessExitOK makes the notifier exit at once with status 0 when
	// there is no session bus. By default it keeps running headless: it
	// follows the hubs, logs that prompts need clearancectl, and retries
	// the bus every 30 s. Default false.
	HeadlessExitOK bool `yaml:"headless_exit_ok"`
}

// Default returns a new Config holding every default.
func Default() *Config {
	return &Config{
		Hub: Hub{
			QueueDepth:      1024,
			PendingTTL:      time.Hour,
			MaxPending:      4096,
			RuntimeDir:      "",
			MaxMessageBytes: 1 << 20,
			MaxLineBytes:    65536,
		},
		Verdict: Verdict{
			Mode:         VerdictModeService,
			Socket:       "/run/clearance/verdict.sock",
			ShieldBinary: "",
			Timeout:      10 * time.Second,
			OnceTTL:      time.Hour,

			KeepEstablished:        false,
			IdleTimeout:            5 * time.Second,
			MaxConnectionsPerOwner: 16,
		},
		Ruleset: Ruleset{
			Mode:        RulesetModeBuiltin,
			NflogGroup:  100,
			DNSPrefix:   "CLEARANCE_DNS: ",
			DNSMark:     0x636c7200,
			BlockPrefix: "CLEARANCE_BLOCKED: ",
			TCPReject:   TCPRejectReset,
			Resolvers:   []string{},
			PolicyDir:   "/etc/clearance/policy.d",
			PolicyPath:  []string{"/usr/share/clearance/policy.d"},
		},
		DNS: DNS{
			HoldMax:          2 * time.Second,
			Hold:             true,
			MinTTL:           5 * time.Minute,
			Denied:           DNSDeniedNXDomain,
			MaxNames:         16384,
			QueriesPerSecond: 500,
			CacheSize:        1024,
		},
		Hook: Hook{
			AllowCapabilities:  []string{},
			WithoutUserManager: WithoutUserManagerRefuse,
		},
		Ask: Ask{
			Port:           DefaultAskPort,
			RatePerMinute:  60,
			Burst:          20,
			MaxWait:        10 * time.Minute,
			MaxConnections: 32,
		},
		Observe: Observe{
			Users:    []string{},
			Projects: []string{},
		},
		Relay: Relay{
			SubjectPrefix: "clearance",
			Bucket:        "clearance-always",
			Adopt:         true,
		},
		Remote: Remote{
			Hosts:      []string{},
			SSHCommand: "ssh",
			Command:    "clearancectl",
		},
		Notifier: Notifier{
			HubGlob:        DefaultHubGlobs(),
			AllowFor:       0,
			MaxVisible:     5,
			RatePerMinute:  30,
			HeadlessExitOK: false,
		},
	}
}

// DefaultPaths returns the files [Load] reads when called without paths:
// $CLEARANCE_CONFIG alone when it is set, otherwise [SystemPath] then
// $XDG_CONFIG_HOME/clearance/clearance.yaml ($XDG_CONFIG_HOME defaults to
// ~/.config; the user file is left out when neither it nor $HOME is known).
func DefaultPaths() []string {
	if p := os.Getenv(EnvConfig); p != "" {
		return []string{p}
	}
	paths := []string{SystemPath}
	base := os.Getenv("XDG_CONFIG_HOME")
	if base == "" || !filepath.IsAbs(base) {
		// The XDG spec says to ignore a relative value.
		base = ""
		if home, err := os.UserHomeDir(); err == nil && home != "" {
			base = filepath.Join(home, ".config")
		}
	}
	if base != "" {
		paths = append(paths, filepath.Join(base, "clearance", "clearance.yaml"))
	}
	return paths
}

// Load returns the defaults overridden by each file in paths, in order;
// later files win key by key (a list replaces the whole list). Missing
// files are ignored. Without paths it reads [DefaultPaths], and then a file
// named by $CLEARANCE_CONFIG must exist.
//
// Errors name the file and line: a syntax error, an unknown key, a value of
// the wrong type, or a value that fails validation (a non-positive depth, an
// unknown mode, …). Several problems are joined into one error.
func Load(paths ...string) (*Config, error) {
	required := false
	if len(paths) == 0 {
		paths = DefaultPaths()
		required = os.Getenv(EnvConfig) != ""
	}
	cfg := Default()
	pos := positions{}
	for _, p := range paths {
		b, err := readFile(p)
		if errors.Is(err, fs.ErrNotExist) && !required {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if err := decode(p, b, cfg, pos); err != nil {
			return nil, err
		}
	}
	if err := cfg.validate(pos); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Validate checks c as [Load] does, for a Config built in code.
func (c *Config) Validate() error {
	return c.validate(nil)
}

// Dir returns the base directory of the per-container hub directories:
// RuntimeDir with environment variables expanded, or
// $XDG_RUNTIME_DIR/clearance (/run/user/<uid>/clearance when
// $XDG_RUNTIME_DIR is unset or empty) when RuntimeDir is empty.
func (h Hub) Dir() string {
	if h.RuntimeDir == "" {
		return filepath.Join(xdgRuntimeDir(), "clearance")
	}
	return expand(h.RuntimeDir)
}

// DefaultHubGlobs returns the hub sockets the notifier and clearancectl
// look for unless told otherwise, environment variables unexpanded:
// clearance's own layout, $XDG_RUNTIME_DIR/clearance/<id>/hub.sock, and
// the two layouts of the Python seed's hubs, so a terok user's existing
// hubs prompt without configuration:
// $XDG_RUNTIME_DIR/terok/clearance/<id>.sock (terok-clearance's own) and
// $XDG_RUNTIME_DIR/terok/clearance/<id>/hub.sock (terok-sandbox's). The
// system instances of rootful containers' hubs, /run/clearance/<id>/
// hub.sock, come second: only root and members of group clearance can
// reach them, and the others skip them without a word.
func DefaultHubGlobs() []string {
	return []string{
		"$XDG_RUNTIME_DIR/clearance/*/hub.sock",
		"/run/clearance/*/hub.sock",
		"$XDG_RUNTIME_DIR/terok/clearance/*.sock",
		"$XDG_RUNTIME_DIR/terok/clearance/*/hub.sock",
	}
}

// Globs returns HubGlob with environment variables expanded;
// $XDG_RUNTIME_DIR falls back to /run/user/<uid> when unset or empty.
func (n Notifier) Globs() []string {
	out := make([]string, len(n.HubGlob))
	for i, g := range n.HubGlob {
		out[i] = expand(g)
	}
	return out
}

func xdgRuntimeDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return d
	}
	return "/run/user/" + strconv.Itoa(os.Getuid())
}

// expand expands $VAR and ${VAR}, giving XDG_RUNTIME_DIR its fallback.
func expand(s string) string {
	return os.Expand(s, func(k string) string {
		if k == "XDG_RUNTIME_DIR" {
			return xdgRuntimeDir()
		}
		return os.Getenv(k)
	})
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("%s: file larger than %d bytes", path, maxFileBytes)
	}
	return b, nil
}

// FileError is one problem in a configuration file at a line (0 when the
// line is unknown).
type FileError struct {
	Path string
	Line int
	Msg  string
}

func (e *FileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.Path, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Msg)
}

var (
	lineRE   = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	inTypeRE = regexp.MustCompile(` in type [\w.]+$`)
)

// decode strictly decodes b (read from path) over cfg and records where
// each key was set.
func decode(path string, b []byte, cfg *Config, pos positions) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	err := dec.Decode(cfg)
	if errors.Is(err, io.EOF) {
		return nil // empty file (or comments only): defaults
	}
	if err != nil {
		return fileErrors(path, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return fileErrors(path, err)
		}
		return &FileError{Path: path, Line: extra.Line, Msg: "more than one YAML document"}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err == nil {
		pos.record(path, &root, "")
	}
	return nil
}

// fileErrors turns a yaml.v3 error into FileErrors naming path and line.
func fileErrors(path string, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	errs := make([]error, 0, len(msgs))
	for _, m := range msgs {
		fe := &FileError{Path: path, Msg: strings.TrimPrefix(m, "yaml: ")}
		if sm := lineRE.FindStringSubmatch(m); sm != nil {
			fe.Line, _ = strconv.Atoi(sm[1])
			fe.Msg = sm[2]
		}
		fe.Msg = inTypeRE.ReplaceAllString(fe.Msg, "")
		errs = append(errs, fe)
	}
	return errors.Join(errs...)
}

// positions maps a dotted key ("hub.queue_depth") to where it was last set.
type positions map[string]FileError

func (p positions) record(path string, n *yaml.Node, prefix string) {
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			p.record(path, c, prefix)
		}
		return
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		if prefix != "" {
			key = prefix + "." + key
		}
		p[key] = FileError{Path: path, Line: k.Line}
		p.record(path, v, key)
	}
}

// invalid builds a validation error for key, placed at the file and line
// that last set it.
func (p positions) invalid(key, format string, args ...any) error {
	msg := key + ": " + fmt.Sprintf(format, args...)
	if at, ok := p[key]; ok {
		return &FileError{Path: at.Path, Line: at.Line, Msg: msg}
	}
	return errors.New("invalid configuration: " + msg)
}

func (c *Config) validate(p positions) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, p.invalid(key, format, args...))
	}
	positive := func(key string, v int) {
		if v <= 0 {
			bad(key, "must be positive, got %d", v)
		}
	}
	positiveDur := func(key string, v time.Duration) {
		if v <= 0 {
			bad(key, "must be a positive duration, got %s", v)
		}
	}
	absPath := func(key, v string, emptyOK bool) {
		if v == "" && emptyOK {
			return
		}
		if !filepath.IsAbs(expand(v)) {
			bad(key, "must be an absolute path, got %q", v)
		}
	}

	nt := c.NATS
	absPath("nats.credentials", nt.Credentials, true)
	absPath("nats.tls_ca", nt.TLSCA, true)
	absPath("nats.tls_cert", nt.TLSCert, true)
	absPath("nats.tls_key", nt.TLSKey, true)
	if (nt.TLSCert == "") != (nt.TLSKey == "") {
		bad("nats.tls_cert", "tls_cert and tls_key go together")
	}

	h := c.Hub
	positive("hub.queue_depth", h.QueueDepth)
	positiveDur("hub.pending_ttl", h.PendingTTL)
	positive("hub.max_pending", h.MaxPending)
	absPath("hub.runtime_dir", h.RuntimeDir, true)
	if h.MaxMessageBytes < 4096 {
		bad("hub.max_message_bytes", "must be at least 4096, got %d", h.MaxMessageBytes)
	}
	if h.MaxLineBytes < 1024 {
		bad("hub.max_line_bytes", "must be at least 1024, got %d", h.MaxLineBytes)
	}

	v := c.Verdict
	switch v.Mode {
	case VerdictModeService, VerdictModeExec:
	default:
		bad("verdict.mode", "unknown mode %q (want %q or %q)", v.Mode, VerdictModeExec, VerdictModeService)
	}
	absPath("verdict.socket", v.Socket, false)
	positiveDur("verdict.timeout", v.Timeout)
	positiveDur("verdict.once_ttl", v.OnceTTL)
	positiveDur("verdict.idle_timeout", v.IdleTimeout)
	positive("verdict.max_connections_per_owner", v.MaxConnectionsPerOwner)

	r := c.Ruleset
	switch r.Mode {
	case RulesetModeBuiltin, RulesetModeShield:
	default:
		bad("ruleset.mode", "unknown mode %q (want %q or %q)", r.Mode, RulesetModeBuiltin, RulesetModeShield)
	}
	switch r.TCPReject {
	case TCPRejectICMPX, TCPRejectReset:
	default:
		bad("ruleset.tcp_reject", "unknown value %q (want %q or %q)", r.TCPReject, TCPRejectICMPX, TCPRejectReset)
	}
	if r.NflogGroup < 0 || r.NflogGroup > 65535 {
		bad("ruleset.nflog_group", "must be 0..65535, got %d", r.NflogGroup)
	}
	for _, pf := range []struct{ key, v string }{{"ruleset.dns_prefix", r.DNSPrefix}, {"ruleset.block_prefix", r.BlockPrefix}} {
		if err := checkPrefix(pf.v); err != nil {
			bad(pf.key, "%v", err)
		}
	}
	if r.DNSPrefix == r.BlockPrefix {
		bad("ruleset.block_prefix", "must differ from ruleset.dns_prefix (both %q)", r.BlockPrefix)
	}
	for i, a := range r.Resolvers {
		if _, err := netip.ParseAddr(a); err != nil {
			bad("ruleset.resolvers", "entry %d: %q is not an IP address", i, a)
		}
	}
	absPath("ruleset.policy_dir", r.PolicyDir, false)
	if r.DNSMark == 0 {
		bad("ruleset.dns_mark", "must not be 0")
	}

	d := c.DNS
	positiveDur("dns.hold_max", d.HoldMax)
	positiveDur("dns.min_ttl", d.MinTTL)
	switch d.Denied {
	case DNSDeniedNXDomain, DNSDeniedRefused, DNSDeniedPassAndDrop:
	default:
		bad("dns.denied", "unknown value %q (want %q, %q or %q)", d.Denied, DNSDeniedNXDomain, DNSDeniedRefused, DNSDeniedPassAndDrop)
	}
	positive("dns.max_names", d.MaxNames)
	positive("dns.queries_per_second", d.QueriesPerSecond)
	if d.CacheSize < 0 {
		bad("dns.cache_size", "must be 0 (no cache) or more, got %d", d.CacheSize)
	}
	for i, d := range r.PolicyPath {
		if !filepath.IsAbs(d) {
			bad("ruleset.policy_path", "entry %d: must be an absolute path, got %q", i, d)
		}
	}

	for i, name := range c.Hook.AllowCapabilities {
		switch strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(name)), "CAP_") {
		case "NET_ADMIN", "NET_RAW":
		default:
			bad("hook.allow_capabilities", "entry %d: %q is not CAP_NET_ADMIN or CAP_NET_RAW, the capabilities the hook refuses", i, name)
		}
	}

	switch c.Hook.WithoutUserManager {
	case WithoutUserManagerRefuse, WithoutUserManagerRun:
	default:
		bad("hook.without_user_manager", "must be %q or %q, got %q", WithoutUserManagerRefuse, WithoutUserManagerRun, c.Hook.WithoutUserManager)
	}

	a := c.Ask
	if a.Port < 0 || a.Port > 65535 {
		bad("ask.port", "must be 0..65535 (0: no ask endpoint), got %d", a.Port)
	}
	positive("ask.rate_per_minute", a.RatePerMinute)
	positive("ask.burst", a.Burst)
	positiveDur("ask.max_wait", a.MaxWait)
	positive("ask.max_connections", a.MaxConnections)
	for i, u := range c.Observe.Users {
		if strings.TrimSpace(u) == "" || strings.ContainsAny(u, ": \t\n") {
			bad("observe.users", "entry %d: %q is not a user name or uid", i, u)
		}
	}
	for i, p := range c.Observe.Projects {
		if strings.TrimSpace(p) == "" {
			bad("observe.projects", "entry %d: empty project", i)
		}
	}

	n := c.Notifier
	if len(n.HubGlob) == 0 {
		bad("notifier.hub_glob", "must list at least one pattern")
	}
	for i, g := range n.HubGlob {
		if _, err := filepath.Match(g, ""); err != nil || g == "" {
			bad("notifier.hub_glob", "entry %d: bad pattern %q", i, g)
		}
	}
	if n.AllowFor < 0 {
		bad("notifier.allow_for", "must not be negative, got %s", n.AllowFor)
	}
	positive("notifier.max_visible", n.MaxVisible)
	positive("notifier.rate_per_minute", n.RatePerMinute)

	return errors.Join(errs...)
}

// checkPrefix accepts an NFLOG prefix nftables can carry: 1..127 printable
// ASCII characters without a double quote.
func checkPrefix(s string) error {
	if s == "" || len(s) > 127 {
		return fmt.Errorf("must be 1..127 characters, got %d", len(s))
	}
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e || c == '"' {
			return fmt.Errorf("must be printable ASCII without '\"', got %q", s)
		}
	}
	return nil
}
