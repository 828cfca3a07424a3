#!/usr/bin/env bash
# The project's `helm`: built once from its Go module at the version pinned below, cached outside
# the clone like the Kubernetes binaries (~/.cache/netdra/helm-<version>, or
# $NETDRA_HELM_CACHE), then run with the arguments given.
#
#   scripts/helm.sh ARGS...      helm ARGS... (building it first when not cached)
#   scripts/helm.sh --path       print the binary's path (building it first)
#
# The Go module proxy is the one the machine's Go is configured with.
set -euo pipefail

HELM_VERSION=v4.3.1
CACHE=${NETDRA_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netdra/helm-$HELM_VERSION}
BIN=$CACHE/bin/helm

go_tool() {
    if command -v go >/dev/null; then command -v go; return; fi
    # Where the machines install Go; the path is not always on PATH.
    if [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go; return; fi
    echo "scripts/helm.sh: no Go toolchain (go on PATH or /usr/local/go/bin/go): helm is built from its Go module" >&2
    exit 1
}

build() {
    local go tmp
    go=$(go_tool)
    echo "[helm] building helm $HELM_VERSION from its Go module into $CACHE/bin ($("$go" version | awk '{print $3}'))" >&2
    mkdir -p "$CACHE"
    tmp=$(mktemp -d "$CACHE/build.XXXXXX")
    # The version `helm version` reports, as a release build stamps it in. Built aside, then
    # moved in whole: an interrupted build leaves no half-written helm in the cache.
    if ! GOBIN="$tmp" CGO_ENABLED=0 "$go" install -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
        "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2; then
        rm -rf "$tmp"
        echo "scripts/helm.sh: building helm $HELM_VERSION failed (above)" >&2
        exit 1
    fi
    rm -rf "$CACHE/bin"
    chmod 755 "$tmp"
    mv "$tmp" "$CACHE/bin"
    touch "$CACHE/bin/.complete"
}

if [ ! -f "$CACHE/bin/.complete" ]; then
    mkdir -p "$CACHE"
    # Tests may call this at the same time: one builds, the others wait for it.
    exec 9>"$CACHE/.lock"
    flock 9
    [ -f "$CACHE/bin/.complete" ] || build
    exec 9>&-
fi

if [ "${1:-}" = --path ]; then
    echo "$BIN"
    exit 0
fi
# No state of a user's own helm (repositories, plugins, cache) is read or written.
export HELM_CACHE_HOME=$CACHE/home/cache HELM_CONFIG_HOME=$CACHE/home/config HELM_DATA_HOME=$CACHE/home/data
exec "$BIN" "$@"
