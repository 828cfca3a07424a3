//! Generates the NRI API and ttrpc envelope types from `proto/` with protox (no system `protoc`)
//! and prost. The descriptor set is also written for the wire-table test.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.join("nri").display());
    println!("cargo:rerun-if-changed={}", root.join("ttrpc").display());
    let fds = protox::compile(["api.proto", "request.proto"], [root.join("nri"), root.join("ttrpc")])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("nri_descriptors.bin"), fds.encode_to_vec())?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
