// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package attack

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terok-ai/clearance/internal/netns"
	"github.com/terok-ai/clearance/internal/record"
	"github.com/terok-ai/clearance/internal/testenv/lab"
	"github.com/terok-ai/clearance/internal/testenv/testutil"
	"github.com/terok-ai/clearance/internal/verdict"
)

// hookRun is the built OCI hook pointed at an in-process verdict
// service, with its records where the service looks.
type hookRun struct {
	bin, cfg string
	s        *service
}

func newHookRun(t *testing.T, s *service, config string) *hookRun {
	t.Helper()
	h := &hookRun{bin: filepath.Join(build(t, "clearance-oci-hook"), "clearance-oci-hook"), s: s,
		cfg: filepath.Join(s.dir, "clearance.yaml")}
	// No user manager runs here, and these attacks are about what the
	// hook checks before it would start a hub: let the container run
	// without one (issue 10 item 10 refuses it by default).
	const noManager = "  without_user_manager: run\n"
	if strings.Contains(config, "hook:\n") {
		config = strings.Replace(config, "hook:\n", "hook:\n"+noManager, 1)
	} else {
		config += "hook:\n" + noManager
	}
	if err := os.WriteFile(h.cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return h
}

// bundle writes an OCI bundle config.json with caps and a network
// namespace (joined at netnsPath, or new when "").
func bundle(t *testing.T, caps []string, netnsPath string) string {
	t.Helper()
	d := t.TempDir()
	ns := map[string]string{"type": "network"}
	if netnsPath != "" {
		ns["path"] = netnsPath
	}
	spec := map[string]any{
		"ociVersion": "1.0.2",
		"process":    map[string]any{"capabilities": map[string][]string{"bounding": caps, "effective": caps, "permitted": caps}},
		"linux":      map[string]any{"namespaces": []map[string]string{{"type": "pid"}, ns}},
	}
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(d, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// run runs the hook for stage with an OCI state, optionally inside the
// network namespace nsPath (via nsenter), and returns its exit status
// and stderr.
func (h *hookRun) run(t *testing.T, stage, id string, pid int, bundleDir, nsPath string) (int, string) {
	t.Helper()
	status := map[string]string{"createRuntime": "creating", "poststop": "stopped"}[stage]
	st := map[string]any{"ociVersion": "1.0.2", "id": id, "status": status, "bundle": bundleDir,
		"annotations": map[string]string{"io.clearance.enable": "true"}}
	if pid > 0 {
		st["pid"] = pid
	}
	in, _ := json.Marshal(st)
	args := []string{"-runtime-root", h.s.root, "-user-runtime-base", filepath.Join(h.s.dir, "user"),
		"-verdict-socket", h.s.sock, "-manager", "user", "-hub-wait", "1s", "-config", h.cfg, stage}
	cmd := exec.Command(h.bin, args...)
	if nsPath != "" {
		cmd = exec.Command("nsenter", append([]string{"--net=" + nsPath, h.bin}, args...)...)
	}
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run the hook: %v", err)
	}
	return code, stderr.String()
}

var podmanCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE",
	"CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT"}

// TestAttackHookCapabilities (item 4): a container holding CAP_NET_ADMIN
// or CAP_NET_RAW (or --privileged) can take its own firewall down; the
// hook started it anyway. Now createRuntime refuses it (exit 1, the
// runtime aborts the container) before the ruleset or the record exists,
// unless the system configuration allows the capability.
func TestAttackHookCapabilities(t *testing.T) {
	testutil.RequireTool(t, "ip", "nsenter", "unshare")
	s := startService(t, nil, verdict.RunOptions{})
	l := lab.New()
	t.Cleanup(l.Close)
	for _, tc := range []struct {
		name, config string
		caps         []string
		wantCode     int
	}{
		{"--cap-add NET_ADMIN", "", append(podmanCaps, "CAP_NET_ADMIN"), 1},
		{"--cap-add NET_RAW", "", append(podmanCaps, "CAP_NET_RAW"), 1},
		{"NET_RAW allowed by the administrator", "hook:\n  allow_capabilities: [CAP_NET_RAW]\n", append(podmanCaps, "CAP_NET_RAW"), 0},
		{"podman's defaults", "", podmanCaps, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctr, err := l.Namespace("cap")
			if err != nil {
				t.Fatal(err)
			}
			h := newHookRun(t, s, tc.config)
			id := "c4p" + strconv.FormatInt(time.Now().UnixNano(), 16)
			code, stderr := h.run(t, "createRuntime", id, ctr.Pid, bundle(t, tc.caps, ""), "")
			if code != tc.wantCode {
				t.Fatalf("hook exit %d, want %d\n%s", code, tc.wantCode, stderr)
			}
			if code == 1 && !strings.Contains(stderr, "defeats its firewall") {
				t.Errorf("no reason on stderr:\n%s", stderr)
			}
			if got := tableIn(t, ctr.File); got != (code == 0) {
				t.Errorf("ruleset engaged = %v after exit %d", got, code)
			}
			if code == 0 {
				h.run(t, "poststop", id, 0, bundle(t, tc.caps, ""), "")
			}
		})
	}
}

// TestAttackHookHostNetns (item 5): a container sharing the runtime's
// network namespace (--network host) got "policy drop" in the host's
// namespace, for good. Now the hook never engages its own namespace: run
// inside a throwaway namespace standing in for the host, with a
// "container" process in the same one, it refuses.
func TestAttackHookHostNetns(t *testing.T) {
	testutil.RequireTool(t, "ip", "nsenter", "unshare")
	l := lab.New()
	t.Cleanup(l.Close)
	host, err := l.Namespace("host")
	if err != nil {
		t.Fatal(err)
	}
	s := startService(t, nil, verdict.RunOptions{})
	h := newHookRun(t, s, "")
	code, stderr := h.run(t, "createRuntime", "hostnet0001", host.Pid, bundle(t, podmanCaps, ""), "/proc/"+strconv.Itoa(host.Pid)+"/ns/net")
	if code != 1 || !strings.Contains(stderr, "network namespace of its runtime") {
		t.Errorf("hook in the container's own namespace: exit %d, want 1 with the reason\n%s", code, stderr)
	}
	if tableIn(t, host.File) {
		t.Error(`the "host" got the ruleset`)
	}
}

// TestAttackPoststopJoinedNetns (item 5): a container that joined an
// existing network namespace (a pod's infra container's) left its ruleset
// there after it ended. Now poststop takes it down.
func TestAttackPoststopJoinedNetns(t *testing.T) {
	testutil.RequireTool(t, "ip", "nsenter", "unshare", "sleep")
	l := lab.New()
	t.Cleanup(l.Close)
	pod, err := l.Namespace("pod")
	if err != nil {
		t.Fatal(err)
	}
	podPath := "/proc/" + strconv.Itoa(pod.Pid) + "/ns/net"
	// The container's process, in the pod's namespace.
	ctr := exec.Command("nsenter", "--net="+podPath, "sleep", "infinity")
	ctr.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := ctr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctr.Process.Kill(); ctr.Wait() })
	want, _ := netns.Identify(pod.File)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if f, err := os.Open("/proc/" + strconv.Itoa(ctr.Process.Pid) + "/ns/net"); err == nil {
			id, _ := netns.Identify(f)
			f.Close()
			if id == want {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the container process never joined the pod's namespace")
		}
		time.Sleep(5 * time.Millisecond)
	}

	s := startService(t, nil, verdict.RunOptions{})
	h := newHookRun(t, s, "")
	b := bundle(t, podmanCaps, podPath)
	const id = "podmember001"
	if code, stderr := h.run(t, "createRuntime", id, ctr.Process.Pid, b, ""); code != 0 {
		t.Fatalf("createRuntime: exit %d\n%s", code, stderr)
	}
	if !tableIn(t, pod.File) {
		t.Fatal("createRuntime did not engage the pod's namespace")
	}
	rec, err := record.Read(record.Locate(s.root, 0, id))
	if err != nil || !rec.Engaged || rec.NetnsPath != podPath {
		t.Fatalf("record = %+v, %v; want it engaged, naming %s", rec, err, podPath)
	}
	// The container ends; the pod's namespace lives on.
	ctr.Process.Kill()
	ctr.Wait()
	if code, stderr := h.run(t, "poststop", id, 0, b, ""); code != 0 {
		t.Fatalf("poststop: exit %d\n%s", code, stderr)
	}
	if tableIn(t, pod.File) {
		t.Error("the ruleset stayed in the pod's namespace after its container ended")
	}
}
