#!/usr/bin/env bash
# The netdra image, built without a Docker daemon: the agent compiled as deploy/Dockerfile
# compiles it (statically linked with glibc's crt-static, without the `demo` feature, so no test
# code ships), then written by scripts/mkimage.py as an OCI archive with the Dockerfile's
# entrypoint, command and user (crates/driver/tests/image.rs compares the two).
#
#   scripts/image.sh [OUT.tar]     default: <cargo target dir>/image/netdra.tar
#
# NETDRA_IMAGE names the image (default docker.io/library/netdra:dev, which is what `netdra:dev`
# in a pod spec means). Prints the archive, the image's digest and sizes. Load it with
# `ctr -n k8s.io images import OUT.tar` (the cluster test does) or `docker load -i OUT.tar`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The one target the installed toolchain has; crt-static makes its binary need no libc in the
# image. Set for the target only (--target), so build scripts and proc macros stay dynamic.
TARGET=x86_64-unknown-linux-gnu
REF=${NETDRA_IMAGE:-docker.io/library/netdra:dev}
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
OUT=$(realpath -m "${1:-$TARGET_DIR/image/netdra.tar}")

printf '\n==> the image binary: cargo build --release --no-default-features --target %s (crt-static)\n' "$TARGET"
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -p netdra-driver --no-default-features --target "$TARGET"
BINARY=$TARGET_DIR/$TARGET/release/netdra

# A dynamically linked result would fail in the image with a bare "no such file or directory".
if readelf -l "$BINARY" | grep -q 'Requesting program interpreter'; then
    echo "scripts/image.sh: $BINARY is dynamically linked; the image has no libc" >&2
    exit 1
fi

mkdir -p "$(dirname "$OUT")"
python3 scripts/mkimage.py "$OUT" "$REF" /netdra "$BINARY:/netdra" --cmd run --user 0
printf 'image %s: binary %s bytes, archive %s bytes\n' "$REF" "$(stat -c %s "$BINARY")" "$(stat -c %s "$OUT")"
