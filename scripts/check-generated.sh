#!/usr/bin/env bash
# SPDX-FileCopyrightText: 2026 The clearance authors
# SPDX-License-Identifier: Apache-2.0
# Fails when the committed generated varlink code is not what `go generate`
# produces from the committed .varlink files.
set -euo pipefail
cd "$(dirname "$0")/.."
go generate ./internal/varlinkapi/...
if ! git diff --quiet -- internal/varlinkapi; then
  echo "generated varlink code is stale; run 'make generate' and commit:" >&2
  git diff --stat -- internal/varlinkapi >&2
  exit 1
fi
echo "generated varlink code is up to date"
