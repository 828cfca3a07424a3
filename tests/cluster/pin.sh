#!/usr/bin/env bash
# Pins one Kubernetes release for the cluster harness: writes tests/cluster/k8s/<version>/
# (go.mod, go.sum, tools.go), a module that requires k8s.io/kubernetes at that version and the
# etcd server at the version of the etcd client that release requires, with each of
# Kubernetes' staging modules (its go.mod replaces them with ./staging/…) replaced by the
# published module of the same release (v0.<minor>.<patch>). Then `go build` of the components
# needs no Kubernetes source. Uses the Go module proxy the machine's Go is configured with.
#
#   tests/cluster/pin.sh v1.37.2
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VERSION=${1:?usage: $0 vMAJOR.MINOR.PATCH}
[[ $VERSION =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { echo "not a Kubernetes version: $VERSION" >&2; exit 1; }
STAGING_VERSION=v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}
GO=$(command -v go || echo /usr/local/go/bin/go)
DIR=$HERE/k8s/$VERSION

upstream=$("$GO" mod download -json "k8s.io/kubernetes@$VERSION" | jq -r .GoMod)
go_line=$(awk '$1 == "go" { print $2; exit }' "$upstream")
etcd=$(awk '$1 == "go.etcd.io/etcd/client/v3" { print $2; exit }' "$upstream")
staging=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$upstream" | sort -u)
[ -n "$go_line" ] && [ -n "$etcd" ] && [ -n "$staging" ] || { echo "cannot read $upstream" >&2; exit 1; }

rm -rf "$DIR"
mkdir -p "$DIR"
{
    printf 'module netdra.dev/tests/cluster\n\ngo %s\n\nrequire (\n' "$go_line"
    printf '\tgo.etcd.io/etcd/server/v3 %s\n\tk8s.io/kubernetes %s\n)\n\nreplace (\n' "$etcd" "$VERSION"
    for module in $staging; do printf '\t%s => %s %s\n' "$module" "$module" "$STAGING_VERSION"; done
    printf ')\n'
} > "$DIR/go.mod"
cat > "$DIR/tools.go" <<'EOF'
//go:build tools

// Package cluster pins the Kubernetes components the cluster tests build (see ../../pin.sh).
package cluster

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
EOF
(cd "$DIR" && "$GO" mod tidy)
echo "pinned Kubernetes $VERSION (etcd $etcd, staging $STAGING_VERSION, go $go_line) in $DIR"
