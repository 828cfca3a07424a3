//! `api-listing [--allow-unnameable] <crate.json>`: prints the public items of the crate whose rustdoc JSON is given,
//! one per line (the rules are in `listing`). `scripts/api-listings.sh` builds the JSON of each
//! library crate and compares the result with the listing checked in under `api/`.

mod listing;
mod render;

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut args: Vec<_> = std::env::args_os().skip(1).collect();
    // For measuring a crate as it was (before its unnameable types were fixed), not for CI.
    let allow_unnameable = args.first().is_some_and(|a| a == "--allow-unnameable");
    if allow_unnameable {
        args.remove(0);
    }
    let [path] = <[_; 1]>::try_from(args)
        .map_err(|_| anyhow::anyhow!("usage: api-listing [--allow-unnameable] <rustdoc JSON of one crate>"))?;
    let path = PathBuf::from(path);
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let lines = listing::list(&doc, allow_unnameable).with_context(|| format!("list {}", path.display()))?;
    let mut out = lines.join("\n");
    out.push('\n');
    print!("{out}");
    Ok(())
}
