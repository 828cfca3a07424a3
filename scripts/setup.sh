#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine (root); every step is skipped when
# already done. Called by scripts/test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# protoc: for the CRI client (k8s-cri's build script) that the demo and the tests use; netdra's
# own protos are compiled with protox.
if ! command -v protoc >/dev/null; then
    say "apt: protobuf-compiler (for the k8s-cri CRI client)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
fi

# iproute2: the privileged network tests and the inventory benchmark create veth pairs and
# network namespaces with `ip`.
if ! command -v ip >/dev/null; then
    say "apt: iproute2 (veth pairs and network namespaces for the privileged tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi

# The kubelet-faithful peer is Python grpcio (an independent gRPC implementation).
if ! .venv/bin/python -c 'import grpc, grpc_tools' 2>/dev/null; then
    say "python venv with grpcio for the kubelet peer"
    python3 -m venv .venv
    .venv/bin/pip install --quiet -r tests/kubelet-peer/requirements.txt
fi

# A private containerd 1.7 and 2.x with NRI, CRI, runc and CNI for the NRI end-to-end tests.
say "containerd e2e environment"
bash tests/e2e/containerd.sh setup

# A real single-node Kubernetes (API server, controller-manager, scheduler, kubelet, etcd) built
# from the Go modules pinned in tests/cluster/k8s/<version>/ (the default version of
# tests/cluster/cluster.sh); cached outside the clone by version.
say "Kubernetes from Go modules (tests/cluster)"
if ! bash tests/cluster/cluster.sh setup; then
    if [ "${CI:-}" = true ]; then
        echo "setup: Kubernetes could not be built (above); the cluster test cannot run" >&2
        exit 1
    fi
    echo "setup: Kubernetes could not be built (above); the cluster test will be skipped" >&2
fi

# helm, for the chart's tests and its install on the real cluster: built from its Go module once
# per version into the cache (scripts/helm.sh).
say "helm from its Go module (scripts/helm.sh)"
bash scripts/helm.sh version --short
