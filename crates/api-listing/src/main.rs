//! `api-listing <crate.json>`: prints the public items of the crate whose rustdoc JSON is given,
//! one per line (the rules are in `listing`). `scripts/api-listings.sh` builds the JSON of each
//! library crate and compares the result with the listing checked in under `api/`.

mod listing;
mod render;

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next().map(PathBuf::from), args.next()) else {
        anyhow::bail!("usage: api-listing <rustdoc JSON of one crate>");
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let lines = listing::list(&doc).with_context(|| format!("list {}", path.display()))?;
    let mut out = lines.join("\n");
    out.push('\n');
    print!("{out}");
    Ok(())
}
