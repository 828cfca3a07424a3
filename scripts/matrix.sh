#!/usr/bin/env bash
# The compatibility matrix, outside .ci/run (which runs containerd 1.7, 2.1 and 2.4 and
# Kubernetes at tests/cluster/cluster.sh's default version):
#   - containerd: the NRI SDK's real-runtime test and the framework's end-to-end and fault tests
#     on every flavor of tests/e2e/containerd.sh (2.2, 2.3 and 2.4 built from their Go module
#     once, cached by version);
#   - Kubernetes: the real-cluster tests (the agent as a host process, and installed by the Helm
#     chart from the image scripts/image.sh builds) on every version pinned in tests/cluster/k8s/
#     (each built once, cached by version), on containerd 2.4.
# Prints one table per part (versions reported by the components, pass or fail, duration) and
# the whole run's duration; logs stay in $NETDRA_MATRIX_LOGS (default /tmp/netdra-matrix).
#
#   scripts/matrix.sh [containerd | kubernetes | all]     default: all
#
# Root is required (the tests create namespaces and run containerd and a kubelet).
set -euo pipefail
cd "$(dirname "$0")/.."

part=${1:-all}
case "$part" in containerd | kubernetes | all) ;; *) echo "usage: $0 [containerd | kubernetes | all]" >&2; exit 2 ;; esac
LOGS=${NETDRA_MATRIX_LOGS:-/tmp/netdra-matrix}
mkdir -p "$LOGS"
started=$SECONDS
failed=0

bash scripts/setup.sh
# One build of the test binaries and the examples they run, for every row.
cargo test --profile ci -p nri -p netdra -p netdra-driver --no-run
cargo build --profile ci -p nri -p netdra --examples

passed_of() { # LOG: "N passed, M failed" over every test binary in it
    grep -o 'test result: [a-zA-Z]*\. [0-9]* passed; [0-9]* failed' "$1" |
        awk '{p += $4; f += $6} END {printf "%d passed, %d failed", p, f}'
}

if [ "$part" != kubernetes ]; then
    rows=()
    for flavor in 1.7 2 2.2 2.3 2.4; do
        case "$flavor" in 2.2 | 2.3 | 2.4) bash tests/e2e/containerd.sh build "$flavor" ;; esac
        log=$LOGS/containerd-$flavor.log
        t=$SECONDS
        if [ "$flavor" = 1.7 ]; then
            # The tests written for 1.7; the others run on each 2.x flavor.
            vars=()
            filter=(1_7)
        else
            vars=("NETDRA_E2E_FLAVORS=$flavor")
            filter=(--skip 1_7)
        fi
        status=pass
        if ! env "${vars[@]}" cargo test --profile ci -p nri -p netdra --test containerd -- \
            "${filter[@]}" --test-threads 1 --nocapture > "$log" 2>&1; then
            status=FAIL
            failed=1
        fi
        reported=$(grep -m1 -o "containerd $flavor: Configure said runtime .*" "$log" | sed 's/.*runtime //' || true)
        rows+=("| $flavor | ${reported:-?} | $status | $(passed_of "$log") | $((SECONDS - t)) s |")
    done
    printf '\ncontainerd, %s, kernel %s:\n\n' "$(date -u +%Y-%m-%d)" "$(uname -r)"
    printf '| flavor | runtime and NRI version it sent in Configure | result | tests | took |\n|---|---|---|---|---|\n'
    printf '%s\n' "${rows[@]}" | tee "$LOGS/containerd.md"
fi

if [ "$part" != containerd ]; then
    # The Helm test installs the agent's image on each version.
    bash scripts/image.sh > "$LOGS/image.log" 2>&1 || { tail -20 "$LOGS/image.log"; exit 1; }
    NETDRA_IMAGE_ARCHIVE="$(realpath -m "${CARGO_TARGET_DIR:-target}")/image/netdra.tar"
    export NETDRA_IMAGE_ARCHIVE
    rows=()
    for dir in tests/cluster/k8s/v*/; do
        version=$(basename "$dir")
        log=$LOGS/kubernetes-$version.log
        t=$SECONDS
        status=pass
        if ! { NETDRA_K8S_VERSION=$version bash tests/cluster/cluster.sh setup &&
            NETDRA_K8S_VERSION=$version cargo test --profile ci -p netdra-driver --test cluster --test helm -- --nocapture; } > "$log" 2>&1; then
            status=FAIL
            failed=1
        fi
        up=$(grep -m1 -o 'cluster up in .*' "$log" || true)
        rows+=("| $version | ${up:-?} | $status | $(passed_of "$log") | $((SECONDS - t)) s |")
    done
    printf '\nKubernetes (real-cluster test), %s:\n\n' "$(date -u +%Y-%m-%d)"
    printf '| version | what ran | result | tests | took (build included) |\n|---|---|---|---|---|\n'
    printf '%s\n' "${rows[@]}" | tee "$LOGS/kubernetes.md"
fi

printf '\nmatrix took %s s; logs in %s\n' "$((SECONDS - started))" "$LOGS"
exit "$failed"
