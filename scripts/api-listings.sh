#!/usr/bin/env bash
# The public API of each library crate, listed one item per line under api/<crate>.txt (the
# rules: crates/api-listing/src/listing.rs). `--check` (CI) fails when a crate's API differs
# from its checked-in listing and prints the difference; without it, the listings are rewritten.
# Every library crate of the workspace is listed: one without a listing fails the check.
#
# rustdoc's JSON output is unstable: RUSTC_BOOTSTRAP lets the pinned stable toolchain write it,
# and the reducer refuses a format version it was not written against. The variable changes
# what build scripts see, so all of this builds in a target directory of its own rather than
# invalidate the main one. Documentation warnings (a link to an item made private) fail the
# listing too, as does a public item using a type users cannot name.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-write}
case "$mode" in
    --check) mode=check ;;
    write) ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

export RUSTC_BOOTSTRAP=1
CARGO_TARGET_DIR="$(realpath -m "${CARGO_TARGET_DIR:-target}")/api-listings"
export CARGO_TARGET_DIR

# The workspace's library crates, each with every feature: nri's `runtime` end is public API
# too; netdev's `bench-floor` is benchmark scaffolding, hidden from the documentation.
crates=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if any("lib" in t["kind"] for t in p["targets"]):
        print(p["name"])
')

cargo build -q -p api-listing
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for crate in $crates; do
    cargo rustdoc -q -p "$crate" --lib --all-features -- -Z unstable-options --output-format json -D warnings
    listing="api/$crate.txt"
    "$CARGO_TARGET_DIR/debug/api-listing" "$CARGO_TARGET_DIR/doc/${crate//-/_}.json" > "$work/$crate.txt"
    if [ "$mode" = check ]; then
        if [ ! -f "$listing" ]; then
            echo "error: the library crate $crate has no $listing: run scripts/api-listings.sh and commit it" >&2
            status=1
        elif ! diff -u "$listing" "$work/$crate.txt"; then
            echo "error: the public API of $crate differs from $listing (above); if the change is" \
                "meant, run scripts/api-listings.sh and commit the listing" >&2
            status=1
        fi
    else
        cp "$work/$crate.txt" "$listing"
        echo "$listing: $(wc -l < "$listing") lines"
    fi
done
exit $status
