#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 30). cargo-fuzz needs
# nightly features; on a stable toolchain they are unlocked with RUSTC_BOOTSTRAP=1.
# Skips cleanly (exit 0) when cargo-fuzz is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz not installed (cargo install cargo-fuzz): skipping fuzzing"
  exit 0
fi
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi
for target in $(cargo fuzz list --fuzz-dir fuzz); do
  echo "fuzzing $target for ${seconds}s"
  cargo fuzz run --fuzz-dir fuzz "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
