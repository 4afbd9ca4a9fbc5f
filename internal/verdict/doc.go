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
// descriptor the caller passes with the call (SCM_RIGHTS) or, without one,
// from the runtime record found under the caller's uid (package record),
// whose pid is opened and checked against the namespace inode and device
// recorded at hook time. The namespace's owner (NS_GET_USERNS +
// NS_GET_OWNER_UID) must be the caller's uid, or the caller must be root.
// Everything else (a missing field, pid ≤ 1, a symlinked or foreign-owned
// record, a pid now in another namespace) fails closed with a typed error.
//
// # Namespaces
//
// Every socket that must live in the container's namespace (nftables,
// NFLOG) is opened by [netns.Do] on a locked goroutine whose thread
// entered the namespace and is never returned to the scheduler.
//
// # Lifetime
//
// Under systemd the service runs per connection (Accept=yes): [Run] serves
// the one connected socket and returns when the caller hangs up, so a
// running container costs nothing privileged between calls.
package verdict
