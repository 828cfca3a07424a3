#!/usr/bin/env bash
# The public API of each library crate, listed one item per line under api/<crate>.txt (the
# rules: crates/api-listing/src/listing.rs). `--check` (CI) fails when a crate's API differs
# from its checked-in listing and prints the difference; without it, the listings are rewritten.
# rustdoc's JSON output is unstable: RUSTC_BOOTSTRAP lets the pinned stable toolchain write it,
# and the reducer refuses a format version it was not written against. Documentation warnings
# (a link to an item made private) fail the listing too.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-write}
case "$mode" in
    --check) mode=check ;;
    write) ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

# crate, then the features its listing is made with: nri's `runtime` end is public API too.
crates=(
    "k8snames:"
    "kubeletplugin:"
    "netdev:"
    "netdev-k8s:"
    "netdra:"
    "nri:runtime"
    "testkit:"
)

target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
cargo build -q -p api-listing
status=0
for entry in "${crates[@]}"; do
    crate=${entry%%:*}
    features=${entry#*:}
    RUSTC_BOOTSTRAP=1 cargo rustdoc -q -p "$crate" --lib ${features:+--features "$features"} \
        -- -Z unstable-options --output-format json -D warnings
    json="$target_dir/doc/${crate//-/_}.json"
    listing="api/$crate.txt"
    if [ "$mode" = check ]; then
        if ! diff -u "$listing" <("$target_dir/debug/api-listing" "$json"); then
            echo "error: the public API of $crate differs from $listing (above); if the change is" \
                "meant, run scripts/api-listings.sh and commit the listing" >&2
            status=1
        fi
    else
        "$target_dir/debug/api-listing" "$json" > "$listing"
        echo "$listing: $(wc -l < "$listing") items"
    fi
done
exit $status
