#!/usr/bin/env bash
# SPDX-FileCopyrightText: 2026 The clearance authors
# SPDX-License-Identifier: Apache-2.0
# make demo: clearance's main job on built-in defaults (see test/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "make demo needs root: it creates network namespaces and nftables rulesets" >&2
  exit 1
fi
exec go run ./test/demo -bin bin
