// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package ocihook is clearance-oci-hook, the OCI runtime hook that ties a
// container's life to clearance: at createRuntime it writes the
// container's runtime record, asks the privileged verdict service to
// engage the container's ruleset and starts the container's hub through
// the owner's systemd manager; at poststop it stops the hub and removes
// the record.
//
// # Stages
//
// The runtime (runc, crun) runs the hook with the OCI state JSON on stdin
// ([ParseState]). createRuntime runs in the runtime's namespaces after the
// container's namespaces exist and before its process starts, so the
// ruleset is in place before the first packet; poststop runs after the
// container is gone (no pid, and with podman an empty environment).
//
// # Whose container
//
// The hook works for the host uid that owns the container ([HostUID]):
// rootful podman runs it as root in the initial user namespace (host uid
// 0); rootless podman runs it as uid 0 of its rootless user namespace, and
// /proc/self/uid_map maps that back to the host user. Nothing from the
// environment is trusted for this (and at poststop there is none).
//
// # Failure policy
//
// Only createRuntime can abort a container, and it does so only when the
// container would otherwise run without its firewall, or with one it can
// take down itself: the runtime record cannot be written, the ruleset
// cannot be engaged (fail closed, like terok-shield's hook; see
// [EngageRequired]), the bundle grants CAP_NET_ADMIN or CAP_NET_RAW that
// the system configuration does not allow ([CheckCapabilities]), or the
// container shares the hook's (the host's) network namespace. A hub that
// cannot be started costs prompts, not containment, and is logged but
// tolerated. poststop takes the ruleset down from a joined namespace that
// outlives the container.
//
// # Children
//
// The hook starts no process of its own: the hub is started by the
// systemd manager over D-Bus, so nothing inherits the hook's stdout or
// stderr and the runtime never waits on a pipe a daemon still holds.
package ocihook
