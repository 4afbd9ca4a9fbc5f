#!/usr/bin/env bash
# SPDX-FileCopyrightText: 2026 The clearance authors
# SPDX-License-Identifier: Apache-2.0
# make fuzz: a short coverage-guided run of every fuzz target.
#
# The inputs the fuzzer found interesting (its corpus in the Go build
# cache) are copied into each package's testdata/fuzz/<target>/, next to
# any failing input go test wrote there, so that committing them makes
# every later `go test` (and make test) replay them.
set -euo pipefail
cd "$(dirname "$0")/.."
t="${1:-10s}"
cache="$(go env GOCACHE)/fuzz"
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "== $pkg $f ($t)"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" "$pkg"
    if [ -d "$cache/$pkg/$f" ]; then
      mkdir -p "$dir/testdata/fuzz/$f"
      find "$cache/$pkg/$f" -maxdepth 1 -type f -exec cp -n -t "$dir/testdata/fuzz/$f/" {} +
    fi
  done
done
