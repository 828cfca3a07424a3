#!/usr/bin/env bash
# The README's main command: a pod's whole network lifecycle on this host's real kernel
# namespaces, with no cluster. Installs what it needs (scripts/setup.sh), builds the release
# binary, starts the project's private containerd 2 (NRI enabled) and runs `netdra demo` on it;
# containerd is stopped again on exit, also after Ctrl-C or a failure. Root is required.
#
# NETDRA_BINARY=<path> skips the set-up and the build and runs that binary (the tests do).
# Without the containerd environment, the demo runs on the NRI runtime harness instead
# (say so with NETDRA_DEMO_RUNTIME=harness; under CI=true a missing containerd is an error).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/demo.sh: root is needed (veth pairs, network namespaces, containerd)" >&2
    exit 1
fi

if [ -z "${NETDRA_BINARY:-}" ]; then
    bash scripts/setup.sh
    printf '\n==> cargo build --release (the shipped binary)\n'
    cargo build --release -p netdra-driver
    NETDRA_BINARY="${CARGO_TARGET_DIR:-target}/release/netdra"
fi

E2E=${NETDRA_E2E_DIR:-/tmp/netdra-e2e}
runtime=${NETDRA_DEMO_RUNTIME:-containerd}
if [ "$runtime" = containerd ] && [ ! -e "$E2E/ready" ]; then
    if [ "${CI:-}" = true ]; then
        echo "scripts/demo.sh: no containerd environment in $E2E (scripts/setup.sh installs it)" >&2
        exit 1
    fi
    echo "scripts/demo.sh: no containerd environment in $E2E; the demo runs on the NRI runtime harness" >&2
    runtime=harness
fi

if [ "$runtime" = harness ]; then
    exec "$NETDRA_BINARY" demo
fi

# Stopped on every exit; an interrupt ends the script (after the demo cleaned up its pods).
trap 'bash tests/e2e/containerd.sh teardown 2' EXIT
trap 'exit 130' INT TERM
env=$(bash tests/e2e/containerd.sh start 2)
CRI_SOCKET=$(sed -n 's/^CRI_SOCKET=//p' <<<"$env")
NRI_SOCKET=$(sed -n 's/^NRI_SOCKET=//p' <<<"$env")
"$NETDRA_BINARY" demo --cri-socket "$CRI_SOCKET" --nri-socket "$NRI_SOCKET"
