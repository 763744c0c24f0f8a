#!/usr/bin/env bash
# Quick start: installs anvil and nats-server if missing, builds ferry, and runs
# `ferry devnet` (two anvil chains, NATS, contracts) until Ctrl-C. Arguments are passed
# to `ferry devnet` (see `ferry devnet --help`); the default directory is ./devnet.
set -euo pipefail
cd "$(dirname "$0")/.."
ops/install-tools.sh
exec cargo run --locked --quiet --bin ferry -- devnet "$@"
