#!/usr/bin/env bash
# The project's test command (README, and .ci/run): installs what the tests need on a fresh
# Debian 12 machine, then runs every test and benchmark in one optimised build.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# The kubelet-faithful peer is Python grpcio (an independent gRPC implementation).
if ! .venv/bin/python -c 'import grpc, grpc_tools' 2>/dev/null; then
    say "python venv with grpcio for the kubelet peer"
    python3 -m venv .venv
    .venv/bin/pip install --quiet -r tests/kubelet-peer/requirements.txt
fi
export NETDRA_PYTHON="$PWD/.venv/bin/python"

# One `ci` profile build (release speed, debug assertions on) serves tests and benchmarks.
say "tests"
cargo test --workspace --profile ci

say "benchmarks"
cargo bench --workspace --profile ci
