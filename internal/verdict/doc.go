// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package verdict is clearance-verdict, the only privileged part of
// clearance: a varlink service that checks that its caller owns a
// container's network namespace, installs and inspects the container's
// ruleset, adds and removes set elements, and binds the container's NFLOG
// group and hands the socket to the caller.
//
// # Interfaces
//
//   - org.terok.ClearanceVerdict1: the seed's Apply(container, dest,
//     action) -> (ok, stderr), wire-compatible, scope "once".
//   - org.terok.ClearanceFirewall1: Engage, Watch, Apply with scope and
//     TTL, Revoke, List, Explain, Disengage (see the .varlink file in
//     internal/varlinkapi/orgterokclearancefirewall1 for the contract).
//   - org.varlink.service and io.systemd.service.
//
// # Authorization
//
// Nothing the caller says about itself is trusted. The caller's uid comes
// from SO_PEERCRED. The container's network namespace comes from a file
// descriptor the caller passes with the call (SCM_RIGHTS); a runtime
// record of the caller's for the container (package record), if any, must
// name the same namespace. Only root may call without a descriptor: its
// record's pid is then opened and checked against the namespace inode and
// device recorded at hook time (which takes CAP_SYS_PTRACE). The
// namespace's owner (NS_GET_USERNS + NS_GET_OWNER_UID) must be the
// caller's uid, or the caller must be root, and the service's own (the
// host's) namespace is refused. Everything else (a missing field, pid ≤ 1,
// a symlinked or foreign-owned record, a pid now in another namespace)
// fails closed with a typed error that names nothing the caller does not
// own.
//
// # Connections and cost
//
// [Run] admits a connection from its peer uid before reading it: one user,
// its subordinate uids counted as the user, holds at most
// [Config.MaxConnsPerOwner] connections, a connection without a complete
// request for [RunOptions.IdleTimeout] is closed, and one user's calls run
// [MaxCallsPerOwner] at a time. A caller-filled ruleset larger than
// [GuardMaxTables], [GuardMaxSets], [GuardMaxElements] or [GuardMaxRules]
// is refused before a call reads it (Learn, which reads nothing of it,
// is not counted), and List answers at most [MaxListElements].
//
// # Namespaces
//
// Every socket that must live in the container's namespace (nftables,
// NFLOG, conntrack) is opened by [netns.Do] on a locked goroutine whose
// thread entered the namespace and is never returned to the scheduler.
//
// # Lifetime
//
// Under systemd the service is socket-activated with Accept=no: [Run]
// serves the listening socket and returns when no connection has been open
// for [RunOptions.Idle], so nothing privileged runs while no container
// needs it. It also serves one connected socket (Accept=yes) or a socket
// of its own.
package verdict
