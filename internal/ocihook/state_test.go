// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ocihook

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const podmanState = `{"ociVersion":"1.0.2-dev","id":"e8aec775a12483c11de01996f5654378bce52a2c598606bd9bb22918e124ae49","status":"creating","pid":14753,"bundle":"/var/lib/containers/storage/overlay-containers/e8ae/userdata","annotations":{"dossier.project":"x","io.clearance.enable":"true","io.container.manager":"libpod","io.podman.annotations.autoremove":"FALSE","org.opencontainers.image.stopSignal":"15"}}`

func TestParseState(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    State
		wantErr bool
	}{
		{"podman createRuntime", podmanState, State{
			OCIVersion: "1.0.2-dev", ID: "e8aec775a12483c11de01996f5654378bce52a2c598606bd9bb22918e124ae49",
			Status: "creating", Pid: 14753, Bundle: "/var/lib/containers/storage/overlay-containers/e8ae/userdata",
			Annotations: map[string]string{"dossier.project": "x", "io.clearance.enable": "true",
				"io.container.manager": "libpod", "io.podman.annotations.autoremove": "FALSE",
				"org.opencontainers.image.stopSignal": "15"}}, false},
		{"poststop has no pid and no annotations", `{"ociVersion":"1.0.2","id":"abc","status":"stopped","bundle":"/b"}`,
			State{OCIVersion: "1.0.2", ID: "abc", Status: "stopped", Bundle: "/b", Annotations: map[string]string{}}, false},
		{"unknown fields are ignored", `{"id":"abc","pid":5,"created":"now","owner":""}`,
			State{ID: "abc", Pid: 5, Annotations: map[string]string{}}, false},
		{"trailing whitespace ok", `{"id":"abc"}` + "\n\n", State{ID: "abc", Annotations: map[string]string{}}, false},
		{"empty input", ``, State{}, true},
		{"not json", `hello`, State{}, true},
		{"trailing document", `{"id":"abc"}{"id":"def"}`, State{}, true},
		{"trailing garbage", `{"id":"abc"} x`, State{}, true},
		{"missing id", `{"pid":5}`, State{}, true},
		{"empty id", `{"id":""}`, State{}, true},
		{"id with slash", `{"id":"../../etc"}`, State{}, true},
		{"id is dot dot", `{"id":".."}`, State{}, true},
		{"id starting with a dash", `{"id":"-abc"}`, State{}, true},
		{"id naming another unit", `{"id":"x@y.service"}`, State{}, true},
		{"id with newline", `{"id":"abc\ndef"}`, State{}, true},
		{"id with nul", `{"id":"abc\u0000"}`, State{}, true},
		{"id too long", `{"id":"` + strings.Repeat("a", 65) + `"}`, State{}, true},
		{"pid is a string", `{"id":"abc","pid":"5"}`, State{}, true},
		{"negative pid", `{"id":"abc","pid":-5}`, State{}, true},
		{"pid overflows", `{"id":"abc","pid":99999999999999999999}`, State{}, true},
		{"annotations not strings", `{"id":"abc","annotations":{"a":1}}`, State{}, true},
		{"annotation key too long", `{"id":"abc","annotations":{"` + strings.Repeat("k", 300) + `":"v"}}`, State{}, true},
		{"annotation value too long", `{"id":"abc","annotations":{"k":"` + strings.Repeat("v", 17<<10) + `"}}`, State{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseState(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseState err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidState) {
				t.Errorf("error %v does not wrap ErrInvalidState", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseState (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseStateBounded(t *testing.T) {
	big := `{"id":"abc","bundle":"` + strings.Repeat("x", MaxStateSize) + `"}`
	if _, err := ParseState(strings.NewReader(big)); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("oversized state: err = %v, want ErrInvalidState", err)
	}
	var b strings.Builder
	b.WriteString(`{"id":"abc","annotations":{`)
	for i := 0; i <= MaxAnnotations; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + strings.Repeat("x", 0) + itoa(i) + `":"v"`)
	}
	b.WriteString(`}}`)
	if _, err := ParseState(strings.NewReader(b.String())); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("too many annotations: err = %v, want ErrInvalidState", err)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var d []byte
	for ; i > 0; i /= 10 {
		d = append([]byte{byte('0' + i%10)}, d...)
	}
	return string(d)
}

func TestID12(t *testing.T) {
	for _, tt := range []struct{ id, want string }{
		{"e8aec775a12483c11de01996f5654378bce52a2c598606bd9bb22918e124ae49", "e8aec775a124"},
		{"short", "short"},
		{"exactly12chr", "exactly12chr"},
	} {
		if got := (State{ID: tt.id}).ID12(); got != tt.want {
			t.Errorf("ID12(%q) = %q, want %q", tt.id, got, tt.want)
		}
	}
}

func TestOptedOut(t *testing.T) {
	for v, want := range map[string]bool{"false": true, "FALSE": true, " no ": true, "0": true, "off": true,
		"true": false, "": false, "maybe": false} {
		st := State{Annotations: map[string]string{AnnotationEnable: v}}
		if got := st.OptedOut(); got != want {
			t.Errorf("OptedOut(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestDossier(t *testing.T) {
	tests := []struct {
		name string
		ann  map[string]string
		want map[string]string
	}{
		{"none", map[string]string{"io.container.manager": "libpod"}, map[string]string{}},
		{"prefix stripped", map[string]string{"dossier.project": "x", "dossier.task": "t1"},
			map[string]string{"project": "x", "task": "t1"}},
		{"values sanitised", map[string]string{"dossier.name": "evil\x1b[31m\nname"},
			map[string]string{"name": "evil [31m name"}},
		{"long value capped", map[string]string{"dossier.note": strings.Repeat("a", 300)},
			map[string]string{"note": strings.Repeat("a", 253) + "..."}},
		{"bad keys dropped", map[string]string{"dossier.": "x", "dossier.a b": "x", "dossier.-x": "x",
			"dossier.ok": "y", "dossier." + strings.Repeat("k", 65): "x", "dossier.x\n": "x"},
			map[string]string{"ok": "y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Dossier(tt.ann)); diff != "" {
				t.Errorf("Dossier (-want +got):\n%s", diff)
			}
		})
	}
	many := map[string]string{}
	for i := 0; i < 100; i++ {
		many["dossier.k"+itoa(i)] = "v"
	}
	if n := len(Dossier(many)); n != maxDossierEntries {
		t.Errorf("Dossier kept %d entries, want %d", n, maxDossierEntries)
	}
}

func TestPolicyName(t *testing.T) {
	tests := []struct {
		name string
		ann  map[string]string
		want string
	}{
		{"annotation", map[string]string{"io.clearance.policy": "web", "dossier.project": "p"}, "web"},
		{"project fallback", map[string]string{"dossier.project": "proj-1"}, "proj-1"},
		{"none", map[string]string{}, ""},
		{"path in policy refused", map[string]string{"io.clearance.policy": "../../etc/shadow"}, ""},
		{"bad policy falls back to project", map[string]string{"io.clearance.policy": "a/b", "dossier.project": "p"}, "p"},
		{"hidden name refused", map[string]string{"io.clearance.policy": ".x"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PolicyName(tt.ann); got != tt.want {
				t.Errorf("PolicyName = %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte(podmanState))
	f.Add([]byte(`{"id":"abc","pid":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseState(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		id := st.ID12()
		if strings.ContainsAny(id, "/\x00@\\ \n") || id == "." || id == ".." || id == "" {
			t.Fatalf("accepted hostile id %q", st.ID)
		}
		if strings.ContainsAny(HubUnits(id).Socket[len("clearance-hub@"):], "/@") {
			t.Fatalf("unit name for %q escapes: %s", id, HubUnits(id).Socket)
		}
	})
}
