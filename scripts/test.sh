#!/usr/bin/env bash
# The project's test command (README, and .ci/run): installs what the tests need on a fresh
# Debian 12 machine, builds the image (the shipped binary), then every test and benchmark in one
# optimised build. The README's main command runs among the tests: crates/driver/tests/demo.rs
# runs scripts/demo.sh with the tests' build of `netdra`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export NETDRA_PYTHON="$PWD/.venv/bin/python"

# The image (no Docker): the tests check it against deploy/Dockerfile and run it on the real
# cluster through the Helm chart.
printf '\n==> the image: scripts/image.sh\n'
bash scripts/image.sh
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
export NETDRA_IMAGE_ARCHIVE="$TARGET_DIR/image/netdra.tar"

# One `ci` profile build (release speed, debug assertions on) serves tests and benchmarks.
printf '\n==> tests\n'
# The real-node test's burst figures, kept for the benchmarks' output.
export NETDRA_BURST_REPORT="$TARGET_DIR/cluster-burst.txt"
rm -f "$NETDRA_BURST_REPORT"
cargo test --workspace --profile ci

printf '\n==> benchmarks\n'
# Build first and flush the build's dirty pages, so the figures do not measure its writeback.
cargo bench --workspace --profile ci --no-run
sync
# The footprint benchmark measures the shipped binary: the image's.
NETDRA_BINARY="$TARGET_DIR/x86_64-unknown-linux-gnu/release/netdra" cargo bench --workspace --profile ci
printf '\n==> pods starting on the real node (crates/driver/tests/cluster.rs)\n'
cat "$NETDRA_BURST_REPORT"
