#!/usr/bin/env bash
# SPDX-FileCopyrightText: 2026 The clearance authors
# SPDX-License-Identifier: Apache-2.0
# make bench (second half): end-to-end measurements with the built binaries,
# printed as "name: value unit" lines. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./test/bench -bin bin "$@"
