#!/usr/bin/env bash
# SPDX-FileCopyrightText: 2026 The clearance authors
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian packages clearance's build, tests and demo need.
# Run as root on Debian 12 or newer. Idempotent: installs only what is missing.
set -euo pipefail

PACKAGES=(
  ca-certificates git make gcc        # build
  dbus-daemon dbus-bin                # private session buses in tests
  systemd                             # systemd-socket-activate, systemd-analyze, journald, systemd --user
  util-linux iproute2 nftables        # unshare/nsenter, veth, nft read-back in tests
  tmux                                # driving clearancectl watch in tests
  curl                                # the ask endpoint's documented curl example, run in tests
  xvfb dunst libnotify-bin x11-apps imagemagick fonts-dejavu-core  # the real notification daemon end to end
  procps psmisc                       # ps for RSS measurements
  podman runc conmon netavark containernetworking-plugins golang-github-containers-common \
    busybox-static uidmap             # real containers in test/podman (runc: crun fails on hybrid cgroups)
  rpm lintian                         # make package checks: rpm -qpl, lintian on the .deb
  reuse                               # make lint: licence and copyright of every file
  openssh-server openssh-client nats-server systemd-journal-remote  # test/fleet: sshd, NATS, journal upload (started by the tests on loopback only)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages (run as root to install): ${missing[*]}" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another dpkg run (an unattended upgrade) instead of failing.
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  echo "deps: Go is at /usr/local/go/bin; add it to PATH" >&2
  export PATH=/usr/local/go/bin:$PATH
fi

# Every Go module go.mod names, the tools too (staticcheck, run by make
# lint as "go tool staticcheck", and nfpm, run by scripts/package.sh as
# "go tool nfpm"), into the module cache: after this nothing in the build
# or the tests needs the network. A no-op when the
# cache is warm.
cd "$(dirname "$0")/.."
go mod download
