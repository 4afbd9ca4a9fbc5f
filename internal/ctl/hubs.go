// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"

	"github.com/terok-ai/clearance/internal/record"

	"github.com/terok-ai/clearance/internal/hubclient"
	"github.com/terok-ai/clearance/internal/varlinkapi"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearance1"
	"github.com/terok-ai/clearance/internal/varlinkapi/orgterokclearancehub1"
)

// callTimeout bounds one call to a hub. A verdict may wait for the
// firewall (the hub's own bound is 15 s).
const callTimeout = 30 * time.Second

// hubRef is one hub socket found on disk.
type hubRef struct {
	// Path is the socket path.
	Path string
	// ID names the hub: the directory of a ".../<id>/hub.sock", else the
	// socket's base name without ".sock". It comes from the file system
	// and is printed only through clean.
	ID string
}

// hubID derives a hub's name from its socket path.
func hubID(path string) string {
	base := filepath.Base(path)
	if base == "hub.sock" {
		return filepath.Base(filepath.Dir(path))
	}
	return strings.TrimSuffix(base, ".sock")
}

// discover returns the sockets matching any of patterns, sorted by ID
// then path, without duplicates. Hidden entries (a name starting with
// "."), anything that is not a socket and sockets the caller may not
// connect to (a rootful container's hub, 0660 root:clearance, when the
// caller is not a member; see [deniedHubs]) are skipped.
func discover(patterns []string) ([]hubRef, error) {
	paths, err := hubclient.Discover(patterns)
	if err != nil {
		return nil, err
	}
	var out []hubRef
	for _, m := range paths {
		id := hubID(m)
		if lbl := remoteLabel(m); lbl != "" {
			id = lbl + "/" + id // a remote hub's local socket (remote.go)
		}
		out = append(out, hubRef{Path: m, ID: id})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ID != out[j].ID {
			return out[i].ID < out[j].ID
		}
		return out[i].Path < out[j].Path
	})
	return out, nil
}

// deniedHubs counts the hub directories under dir (the system hubs'
// /run/clearance) the caller cannot use, and names the group that can:
// the operator group of rootful containers.
func deniedHubs(dir string) (n int, group string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, ""
	}
	for _, e := range entries {
		if !e.IsDir() || !record.ValidID(e.Name()) || e.Name() == "containers" {
			continue
		}
		d := filepath.Join(dir, e.Name())
		sock := filepath.Join(d, "hub.sock")
		st, err := os.Stat(sock)
		switch {
		case err == nil && st.Mode().Type() == fs.ModeSocket && hubclient.Usable(sock):
			continue // reachable
		case err != nil && !errors.Is(err, fs.ErrPermission):
			continue // no hub there (down, or another kind of entry)
		}
		n++
		var dst unix.Stat_t
		if group == "" && unix.Stat(d, &dst) == nil {
			group = strconv.FormatUint(uint64(dst.Gid), 10)
			if g, err := user.LookupGroupId(group); err == nil {
				group = g.Name
			}
		}
	}
	return n, group
}

// matches reports whether a request or hub belongs to the container the
// operator asked for: the hub's ID or the event's container name, also
// given as the full container id (podman run -d prints 64 characters; the
// hub is named by the first 12) or as a prefix of the id.
func matches(filter, hubID, container string) bool {
	return filter == "" || filter == container || sameContainer(filter, hubID)
}

// sameContainer reports whether filter names the container id: the id
// itself, a longer id that starts with it, or a prefix of it.
func sameContainer(filter, id string) bool {
	if filter == "" || id == "" {
		return false
	}
	return strings.HasPrefix(filter, id) || strings.HasPrefix(id, filter)
}

// resolveContainer turns an operator's container argument into the id its
// hub and audit records carry: known ids (hubs and runtime records found)
// are matched by prefix either way, so a full id or a unique prefix works;
// a prefix matching several is an error. An argument matching nothing
// known is kept, cut to 12 characters when it is a longer hexadecimal id.
func resolveContainer(arg string, known []string) (string, error) {
	var hits []string
	for _, id := range known {
		if arg == id {
			return id, nil
		}
		if sameContainer(arg, id) && !slices.Contains(hits, id) {
			hits = append(hits, id)
		}
	}
	switch {
	case len(hits) == 1:
		return hits[0], nil
	case len(hits) > 1:
		return "", fmt.Errorf("container %s is ambiguous: %s", arg, strings.Join(hits, ", "))
	}
	if len(arg) > 12 && strings.Trim(arg, "0123456789abcdef") == "" {
		return arg[:12], nil
	}
	return arg, nil
}

// knownContainers returns the ids of the hubs and runtime records found.
func (r *runner) knownContainers() []string {
	var out []string
	if hubs, err := discover(r.globs(nil)); err == nil {
		for _, h := range hubs {
			out = append(out, h.ID)
		}
	}
	for _, row := range r.missingHubs(nil) {
		out = append(out, row.Hub)
	}
	return out
}

// Varlink error names clearancectl branches on.
const (
	errUnknownRequest = "org.terok.Clearance1.UnknownRequest"
	errShieldFailed   = "org.terok.Clearance1.ShieldCliFailed"
	errInvalidScope   = "org.terok.ClearanceHub1.InvalidScope"
	errAlreadyDecided = "org.terok.ClearanceHub1.AlreadyDecided"
	errIfaceNotFound  = "org.varlink.service.InterfaceNotFound"
	errMethodNotFound = "org.varlink.service.MethodNotFound"
	errMethodNotImpl  = "org.varlink.service.MethodNotImplemented"
	errPermission     = "org.varlink.service.PermissionDenied"
	errFwNoContainer  = "org.terok.ClearanceFirewall1.NoSuchContainer"
	errFwPermission   = "org.terok.ClearanceFirewall1.PermissionDenied"
	errFwStale        = "org.terok.ClearanceFirewall1.StaleRecord"
	errFwInvalidDest  = "org.terok.ClearanceFirewall1.InvalidDestination"
	errFwFailed       = "org.terok.ClearanceFirewall1.FirewallFailed"
)

// unsupported reports whether err says the peer lacks the interface or
// method (a seed hub has no org.terok.ClearanceHub1).
func unsupported(err error) bool {
	switch varlinkapi.ErrorName(err) {
	case errIfaceNotFound, errMethodNotFound, errMethodNotImpl:
		return true
	}
	return false
}

// errParams decodes the parameters of a varlink error reply into v. It
// understands both a raw *varlink.Error and the typed errors of the
// generated packages.
func errParams(err error, v any) bool {
	var ve *varlink.Error
	if errors.As(err, &ve) {
		raw, ok := ve.Parameters.(*json.RawMessage)
		if !ok || raw == nil {
			return false
		}
		return json.Unmarshal(*raw, v) == nil
	}
	// Typed errors: re-encode through JSON (their tags match the wire).
	b, jerr := json.Marshal(err)
	if jerr != nil {
		return false
	}
	return json.Unmarshal(b, v) == nil
}

// shieldStderr extracts the firewall's diagnostic from a ShieldCliFailed.
func shieldStderr(err error) string {
	var t *orgterokclearance1.ShieldCliFailed
	if errors.As(err, &t) {
		return t.Stderr
	}
	var p struct {
		Stderr string `json:"stderr"`
	}
	errParams(err, &p)
	return p.Stderr
}

// describeErr renders a hub or transport error for an operator, inert.
func describeErr(err error) string {
	if err == nil {
		return "no answer"
	}
	name := varlinkapi.ErrorName(err)
	switch name {
	case "":
		return cleanLong(err.Error())
	case errUnknownRequest:
		return "no longer pending (already decided, expired or purged)"
	case errAlreadyDecided:
		return alreadyDecided(err)
	case errShieldFailed:
		if s := shieldStderr(err); s != "" {
			return "the firewall refused: " + cleanLong(s)
		}
		return "the firewall refused"
	case errInvalidScope:
		return "the hub refused the scope"
	case errIfaceNotFound, errMethodNotFound:
		return "the hub does not support this (a seed hub without org.terok.ClearanceHub1?)"
	case errPermission, errFwPermission:
		return "permission denied"
	}
	return clean(name)
}

// alreadyDecided renders an AlreadyDecided error: "already allowed by
// alice (uid 1000) via notifier at 14:02:11".
func alreadyDecided(err error) string {
	var p struct {
		Action string `json:"action"`
		By     string `json:"by"`
		AtUsec int64  `json:"at_usec"`
	}
	errParams(err, &p)
	msg := "already " + pastTense(clean(p.Action))
	if p.By != "" {
		msg += " " + clean(p.By)
	}
	if p.AtUsec > 0 {
		msg += " at " + time.UnixMicro(p.AtUsec).Local().Format(time.TimeOnly)
	}
	return msg
}

// pendingOf asks one hub for its pending requests.
func pendingOf(ctx context.Context, path string) ([]orgterokclearancehub1.PendingRequest, error) {
	c := hubclient.Caller{Path: path, Timeout: callTimeout}
	defer c.Close()
	var out []orgterokclearancehub1.PendingRequest
	err := c.Call(ctx, func(ctx context.Context, conn *varlink.Connection) error {
		var err error
		out, err = orgterokclearancehub1.Pending().Call(ctx, conn)
		return err
	})
	return out, err
}

// statsOf asks one hub for its counters.
func statsOf(ctx context.Context, path string) (orgterokclearancehub1.HubStats, error) {
	c := hubclient.Caller{Path: path, Timeout: callTimeout}
	defer c.Close()
	var out orgterokclearancehub1.HubStats
	err := c.Call(ctx, func(ctx context.Context, conn *varlink.Connection) error {
		var err error
		out, err = orgterokclearancehub1.Stats().Call(ctx, conn)
		return err
	})
	return out, err
}

// hubPending is one hub's answer to Pending.
type hubPending struct {
	hub  hubRef
	reqs []orgterokclearancehub1.PendingRequest
	err  error
}

// collectPending asks every hub concurrently, keeping the order of hubs.
func collectPending(ctx context.Context, hubs []hubRef) []hubPending {
	out := make([]hubPending, len(hubs))
	var wg sync.WaitGroup
	for i, h := range hubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reqs, err := pendingOf(ctx, h.Path)
			out[i] = hubPending{hub: h, reqs: reqs, err: err}
		}()
	}
	wg.Wait()
	return out
}

// listing parses the options every hub listing shares (--container, the
// hub globs, --json; no arguments) and finds the hubs. When ok is false
// the command ends with exit status code (usage error, or no hubs could be
// looked for).
func (r *runner) listing(fs *flag.FlagSet, args []string) (hubs []hubRef, hf hubFlags, asJSON bool, code int, ok bool) {
	hf.register(fs, true)
	jsonFlag := fs.Bool("json", false, "print JSON (values exact, non-ASCII escaped)")
	pos, err := r.parse(fs, args)
	if err != nil {
		return nil, hf, false, parseExit(err), false
	}
	if len(pos) > 0 {
		return nil, hf, false, r.usageErr(fs, strings.TrimPrefix(fs.Name(), "clearancectl ")+" takes no arguments"), false
	}
	hubs, err = discover(r.globs(&hf))
	if err != nil {
		return nil, hf, false, r.fail(ExitFailure, "%v", err), false
	}
	return hubs, hf, *jsonFlag, ExitOK, true
}
