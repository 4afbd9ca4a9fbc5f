// SPDX-FileCopyrightText: 2026 The clearance authors
// SPDX-License-Identifier: Apache-2.0

// Package ingest is the hub's producer intake: the ingest socket that
// external producers (terok-shield's NFLOG reader and CLI) write blocked
// connections and lifecycle events into, and the translation of those lines
// into wire events, exactly as the seed's hub/ingester.py and
// _translate_reader_event do, with the seed's known bugs fixed.
//
// # Wire format
//
// One compact JSON object per '\n'-terminated line; producers never read
// anything back. Surrounding ASCII whitespace is ignored, and so are empty
// lines. The producer "type" selects the translation:
//
//	producer type      wire type           members read
//	pending            connection_blocked  container, id (→ request_id), dest, port, proto (required); domain, dossier
//	container_started  container_started   container (required); dossier
//	container_exited   container_exited    container (required); reason, dossier
//	shield_up          shield_up           container (required); dossier
//	shield_down        shield_down         container (required); dossier
//	shield_disengaged  shield_disengaged   container (required); dossier
//	shield_down_all    shield_disengaged   container (required); dossier
//
// shield_down_all is what terok-shield 0.6.x sends for the event newer
// shields call shield_disengaged (the shield taken down with allow-all); the
// seed dropped it, which hid a disengaged shield from the operator and kept
// that container's pending verdicts alive. It is mapped to shield_disengaged
// so that seed clients, which know only the wire types, see it too.
//
// Every other type, including a producer-sent connection_blocked or
// verdict_applied (only the hub makes those), is dropped with
// [ErrUnknownType]; the seed logged these at debug level only.
//
// # Field rules
//
//   - Strings are kept; a number keeps its JSON text and a boolean becomes
//     "true" or "false" (the seed str()-ed any value). An object or array
//     where a string belongs makes the line malformed.
//   - JSON null is "" for an optional member (domain, reason). For a
//     required one (container, id, dest, port, proto) null is as bad as a
//     missing member: the line is malformed. The seed turned null into the
//     text "None" (docs/seed-compat.md §S11.9).
//   - port and proto accept a JSON integer, an integral JSON number (443.0,
//     4.43e2) or a string holding a decimal integer ("443"); port must be in
//     0..65535 and proto in 0..255. Booleans, fractions and other strings
//     are malformed. (The seed's int() truncated 443.7 to 443, read true as
//     1 and checked no range.)
//   - dossier: anything but an object is {}. Values become text: strings as
//     they are, numbers as their JSON text (8080 → "8080"), booleans
//     "true"/"false", null "", nested objects and arrays as compact JSON (the
//     seed wrote Python reprs: "True", "None", "{'a': 1}"). Keys are kept
//     unchanged, as the seed does: renderers must escape them.
//   - Every string, dossier values included, is then sanitised with
//     [sanitize.String] at [sanitize.DefaultMax] (printable ASCII, 256
//     characters, "..." when cut).
//
// # Transport
//
// [Server] accepts any number of connections, persistent (the NFLOG reader)
// or one-shot (the CLI). Each connection must come from the hub's own uid
// (SO_PEERCRED) or it is closed at once. A line longer than
// [DefaultMaxLine] bytes is discarded up to its newline and a line that is
// not valid UTF-8 is dropped; neither ends the connection (the seed's
// connection died on both, docs/seed-compat.md §S11.10).
package ingest
