#!/usr/bin/env bash
# Rebuilds the committed contract artifacts (messages/contracts/out) with the pinned
# solcjs; `ops/contracts.sh --check` fails if they differ from a fresh build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules/solc ] || [ ! -d node_modules/@openzeppelin/contracts ]; then
  npm ci --no-audit --no-fund
fi
exec node ops/contracts.mjs "$@"
