// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package nflog binds nfnetlink_log (NFLOG) groups and turns their records
// into parsed packets and DNS answers.
//
// The work is split along the privilege boundary of clearance:
//
//   - [Bind] runs in the privileged verdict service, on a goroutine that has
//     entered the container's network namespace. It creates and configures
//     the netlink socket and returns it as an [*os.File]. A netlink socket
//     stays attached to the namespace it was created in, so the file keeps
//     receiving that namespace's records wherever it is used afterwards: in
//     another thread, another namespace or, after SCM_RIGHTS, another process.
//   - [Reader] runs in the unprivileged hub. It reads and decodes the netlink
//     messages from such a file and hands out [Record] values.
//   - [ParsePacket], [ParseDNS] and [Names] turn record payloads into
//     destinations and destination names. They are pure functions over
//     untrusted bytes: they never panic, and are fuzzed.
//
// # Kernel configuration
//
// [Bind] binds the group with copy mode NFULNL_COPY_PACKET and a queue
// threshold of 1, so every record is flushed to user space at once (the
// kernel default holds records for up to one second). It does not send the
// legacy per-family PF_BIND/PF_UNBIND commands: nftables' "log group N"
// (and xt_NFLOG) select the nfnetlink_log back end explicitly, which is
// registered for every family when the module loads; PF_BIND only changes a
// namespace's default logger for callers without log parameters, and
// PF_UNBIND would take that default away from somebody else.
//
// # Why not go-nflog
//
// The design first named github.com/florianl/go-nflog/v2. Its v2.2.0 binds a group
// only inside RegisterWithErrorFunc, which also starts its own reading
// goroutine and unbinds the group when its context ends: it cannot hand a
// bound socket to another process, which is the whole point of the
// privilege split here. So [Bind] and [Reader] speak nfnetlink_log with
// github.com/mdlayher/netlink (go-nflog's own netlink layer) directly, about
// 300 lines. docs/architecture.md says the same.
//
// # DNS over TCP
//
// [ParseDNS] handles DNS replies carried in UDP only. Replies over TCP
// (large or truncated answers) are not parsed: a TCP segment need not start
// at a DNS message boundary, and reassembling streams from logged packets is
// out of scope. Destinations reached that way appear without a name.
package nflog
