package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/terok-ai/clearance/internal/hub"
	"github.com/terok-ai/clearance/internal/ocihook"
	"github.com/terok-ai/clearance/internal/relay"
	"github.com/terok-ai/clearance/internal/testutil"
	"github.com/terok-ai/clearance/internal/verdict"
)

// auditFields are the journal fields clearance's audit records carry
// (DESIGN.md "Audit"); the catalog may substitute only these.
var auditFields = map[string]bool{
	"CLEARANCE_CONTAINER": true, "CLEARANCE_REQUEST_ID": true, "CLEARANCE_DEST": true,
	"CLEARANCE_DOMAIN": true, "CLEARANCE_PORT": true, "CLEARANCE_PROTO": true,
	"CLEARANCE_ACTION": true, "CLEARANCE_SCOPE": true, "CLEARANCE_EXPIRES_USEC": true,
	"CLEARANCE_OPERATOR_UID": true, "CLEARANCE_CHANNEL": true, "CLEARANCE_REASON": true,
}

type catalogEntry struct {
	headers map[string]string
	body    string
}

// parseCatalog splits a journal catalog file into its entries by
// MESSAGE_ID (the format of journalctl --update-catalog).
func parseCatalog(t *testing.T, text string) map[string]catalogEntry {
	t.Helper()
	out := map[string]catalogEntry{}
	var id string
	var e catalogEntry
	inBody := false
	flush := func() {
		if id != "" {
			out[id] = e
		}
	}
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "-- ") {
			flush()
			id, e, inBody = strings.TrimPrefix(l, "-- "), catalogEntry{headers: map[string]string{}}, false
			continue
		}
		if id == "" || (!inBody && strings.HasPrefix(l, "#")) {
			continue
		}
		if !inBody {
			if l == "" {
				inBody = true
				continue
			}
			k, v, ok := strings.Cut(l, ": ")
			if !ok {
				t.Fatalf("entry %s: malformed header %q", id, l)
			}
			e.headers[k] = v
			continue
		}
		e.body += l + "\n"
	}
	flush()
	return out
}

var substRe = regexp.MustCompile(`@([A-Z0-9_]+)@`)

// TestCatalog checks that packaging/clearance.catalog has one complete
// entry per audit MESSAGE_ID, and substitutes only fields the records
// carry.
func TestCatalog(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "packaging", "clearance.catalog"))
	if err != nil {
		t.Fatal(err)
	}
	entries := parseCatalog(t, string(b))
	ids := map[string]string{
		"blocked": hub.MsgBlocked, "verdict": hub.MsgVerdict, "verdict failed": hub.MsgVerdictFailed,
		"expired": hub.MsgExpired, "engaged": hub.MsgEngaged, "disengaged": hub.MsgDisengaged,
		"denied": hub.MsgDenied, "learned": hub.MsgLearned,
		"connections cut": verdict.MsgFlowsCut, "container refused": ocihook.MsgRefused,
		"fleet mirrored": relay.MsgMirrored, "fleet adopted": relay.MsgAdopted,
	}
	if hub.MsgEngaged != verdict.MsgEngaged || hub.MsgDisengaged != verdict.MsgDisengaged {
		t.Errorf("hub and verdict service disagree on the engage/disengage MESSAGE_IDs")
	}
	if len(entries) != len(ids) {
		t.Errorf("catalog has %d entries, want %d", len(entries), len(ids))
	}
	for name, id := range ids {
		t.Run(name, func(t *testing.T) {
			e, ok := entries[id]
			if !ok {
				t.Fatalf("no catalog entry for %s", id)
			}
			doc := "man:clearancectl(1)"
			fields := auditFields
			switch id {
			case ocihook.MsgRefused:
				doc = "man:clearance-oci-hook(1)"
			case relay.MsgMirrored, relay.MsgAdopted:
				// The relay's records also name the policy and the
				// host the verdict was given on.
				doc = "man:clearance-relay(1)"
				fields = map[string]bool{"CLEARANCE_POLICY": true, "CLEARANCE_HOST": true}
				for k := range auditFields {
					fields[k] = true
				}
			}
			for k, want := range map[string]string{
				"Defined-By":    "clearance",
				"Support":       "https://github.com/terok-ai/clearance/issues",
				"Documentation": doc,
			} {
				if e.headers[k] != want {
					t.Errorf("%s: %q, want %q", k, e.headers[k], want)
				}
			}
			if e.headers["Subject"] == "" || strings.TrimSpace(e.body) == "" {
				t.Errorf("empty Subject or text: %+v", e)
			}
			for _, m := range substRe.FindAllStringSubmatch(e.headers["Subject"]+e.body, -1) {
				if !fields[m[1]] {
					t.Errorf("substitutes @%s@, which no record carries", m[1])
				}
			}
		})
	}
}

// TestCatalogCompiles builds a catalog database from the file in a
// temporary root, as "journalctl --update-catalog" does on install, and
// lists it back.
func TestCatalogCompiles(t *testing.T) {
	testutil.RequireTool(t, "journalctl")
	root := t.TempDir()
	dir := filepath.Join(root, "usr", "lib", "systemd", "catalog")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(repoRoot, "packaging", "clearance.catalog"), filepath.Join(dir, "clearance.catalog"), 0o644)
	if out, err := exec.Command("journalctl", "--root="+root, "--update-catalog").CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("journalctl --update-catalog: %v\n%s", err, out)
	}
	out, err := exec.Command("journalctl", "--root="+root, "--list-catalog").CombinedOutput()
	if err != nil {
		t.Fatalf("journalctl --list-catalog: %v\n%s", err, out)
	}
	for _, id := range []string{hub.MsgBlocked, hub.MsgVerdict, hub.MsgVerdictFailed, hub.MsgExpired, hub.MsgEngaged, hub.MsgDisengaged,
		hub.MsgDenied, hub.MsgLearned, verdict.MsgFlowsCut, ocihook.MsgRefused} {
		if !strings.Contains(string(out), id+" clearance: ") {
			t.Errorf("compiled catalog lacks %s:\n%s", id, out)
		}
	}
}
