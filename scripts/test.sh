#!/usr/bin/env bash
# The project's test command (README, and .ci/run): installs what the tests need on a fresh
# Debian 12 machine, runs the README's main command (the demo, which builds the release
# binary), then every test and benchmark in one optimised build.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export NETDRA_PYTHON="$PWD/.venv/bin/python"

printf '\n==> the demo: scripts/demo.sh, as the README gives it\n'
bash scripts/demo.sh

# One `ci` profile build (release speed, debug assertions on) serves tests and benchmarks.
printf '\n==> tests\n'
cargo test --workspace --profile ci

printf '\n==> benchmarks\n'
# Build first and flush the build's dirty pages, so the figures do not measure its writeback.
cargo bench --workspace --profile ci --no-run
sync
# The footprint benchmark measures the shipped binary: the release build the demo made.
NETDRA_BINARY="$(realpath "${CARGO_TARGET_DIR:-target}")/release/netdra" cargo bench --workspace --profile ci
