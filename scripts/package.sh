#!/usr/bin/env bash
# SPDX-FileCopyrightText: 2026 The clearance authors
# SPDX-License-Identifier: Apache-2.0
# Builds clearance's .deb and .rpm into dist/ (or $1) with nfpm.
#
#   scripts/package.sh [OUTDIR] [deb|rpm ...]     (make package)
#
# Stages the tree with "make install DESTDIR=<stage> PREFIX=/usr", adds what
# a distro package carries beyond it (gzip-compressed man pages, changelog,
# copyright), then packages packaging/nfpm.yaml once per format. nfpm is a
# tool dependency pinned in go.mod ("go tool nfpm"): nothing but Go is
# needed, and with the module cache warm (scripts/deps.sh) no network.
# The version comes from git: the last v* tag ("v1.2.3" -> 1.2.3), or
# 0.1.0~git<commit date>.<hash> without one; $CLEARANCE_VERSION overrides.
set -euo pipefail

cd "$(dirname "$0")/.."
out=${1:-dist}
shift || true
formats=("$@")
[ ${#formats[@]} -gt 0 ] || formats=(deb rpm)
export PATH=/usr/local/go/bin:$PATH

version=${CLEARANCE_VERSION:-}
if [ -z "$version" ]; then
  if tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null); then
    version=${tag#v}
    n=$(git rev-list --count "$tag"..HEAD)
    [ "$n" -eq 0 ] || version="$version+git$n.$(git rev-parse --short=8 HEAD)"
  elif git rev-parse --verify -q HEAD >/dev/null 2>&1; then
    version="0.1.0~git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short=8 HEAD)"
  else
    version=0.1.0
  fi
fi
arch=${CLEARANCE_ARCH:-$(go env GOARCH)}

stage=$(mktemp -d "${TMPDIR:-/tmp}/clearance-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
make --no-print-directory install DESTDIR="$stage" PREFIX=/usr VERSION="$version" >/dev/null

doc="$stage/usr/share/doc/clearance"
install -d -m 0755 "$doc"
# Man pages compressed as distros ship them (-n: no timestamp, reproducible).
find "$stage/usr/share/man" -type f -name '*.[0-9]' -exec gzip -9nf {} +
date=$(git log -1 --format=%cD 2>/dev/null || date -R)
changes() {
  printf 'clearance (%s-1) unstable; urgency=medium\n\n  * Package built from git %s.\n\n -- clearance maintainers <clearance@terok.ai>  %s\n' \
    "$version" "$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" "$date"
}
# The .deb's changelog (a non-native package needs changelog.Debian.gz);
# packaging/nfpm.yaml adds it to the .deb only (an .rpm carries its
# history in its header).
install -d -m 0755 "$stage/deb"
changes | gzip -9n >"$stage/deb/changelog.Debian.gz"
# The licence as Debian states it: the identifier, the notice, and the
# full text by reference to base-files' copy (an .rpm names it in its
# header: packaging/nfpm.yaml's license).
cat >"$doc/copyright" <<'COPYRIGHT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: clearance
Upstream-Contact: clearance maintainers <clearance@terok.ai>
Source: https://github.com/terok-ai/clearance

Files: *
Copyright: 2026 The clearance authors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License");
 you may not use this file except in compliance with the License.
 You may obtain a copy of the License at
 .
 http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS,
 WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 See the License for the specific language governing permissions and
 limitations under the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0,
 can be found in "/usr/share/common-licenses/Apache-2.0".
COPYRIGHT
chmod 0644 "$doc"/* "$stage/deb"/*

# nfpm expands environment variables in a few fields only (not in
# contents), so the recipe's ${CLEARANCE_*} are filled in here.
sed -e "s|\${CLEARANCE_STAGE}|$stage|g" -e "s|\${CLEARANCE_VERSION}|$version|g" \
  -e "s|\${CLEARANCE_ARCH}|$arch|g" packaging/nfpm.yaml >"$stage/nfpm.yaml"
mkdir -p "$out"
for f in "${formats[@]}"; do
  go tool nfpm pkg --packager "$f" --config "$stage/nfpm.yaml" --target "$out/"
done
