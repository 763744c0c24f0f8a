#!/usr/bin/env bash
# The test command: installs what is missing, then runs every test of the workspace
# (unit, property, and integration tests against real anvil and nats-server).
set -euo pipefail
cd "$(dirname "$0")/.."
ops/install-tools.sh
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
exec cargo nextest run --workspace --locked "$@"
