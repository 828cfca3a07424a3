//! The image `scripts/image.sh` writes without Docker is the image `deploy/Dockerfile` defines:
//! the same entrypoint, command, user and files (one: the static `/netdra`), its binary built
//! with the same cargo command, statically linked, and without the `demo` feature (no fake API
//! server, no runtime harness in what ships). Reads the OCI archive scripts/test.sh built
//! (`NETDRA_IMAGE_ARCHIVE`, or the script's default path).
#![allow(missing_docs, clippy::unwrap_used)]

mod real_node;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use real_node::{image_archive, workspace};
use serde_json::{Value, json};

/// The archive, or `None` (with the reason printed; a failure in CI) when it was not built.
fn archive() -> Option<PathBuf> {
    let path = image_archive();
    testkit::available_or_skip(
        path.exists(),
        &format!("no image archive at {} (scripts/image.sh builds it)", path.display()),
    )
    .then_some(path)
}

/// One member of a tar archive, through the system's tar.
fn member(archive: &Path, name: &str) -> Vec<u8> {
    let out = Command::new("tar").arg("-xOf").arg(archive).arg(name).output().unwrap();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn blob(archive: &Path, digest: &str) -> Vec<u8> {
    member(
        archive,
        &format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap()),
    )
}

/// The Dockerfile's final stage: its instructions after the last `FROM`, continuation lines
/// joined.
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let joined = dockerfile.replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (keyword, rest) = l.split_once(' ').unwrap();
            (keyword.to_uppercase(), rest.trim().to_owned())
        })
        .collect();
    let last_from = instructions.iter().rposition(|(k, _)| k == "FROM").unwrap();
    instructions[last_from..].to_vec()
}

/// The words of the `cargo build` command in `text`, with `"$TARGET"` replaced by its value.
fn cargo_build(text: &str, target: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.contains("RUSTFLAGS") && l.contains("cargo build"))
        .unwrap();
    let start = line.find("RUSTFLAGS").unwrap();
    line[start..]
        .replace("\"$TARGET\"", target)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_image_is_what_the_dockerfile_defines() {
    let Some(archive) = archive() else { return };
    let dockerfile = std::fs::read_to_string(workspace().join("deploy/Dockerfile")).unwrap();
    let stage = final_stage(&dockerfile);
    let get = |keyword: &str| -> Vec<&str> {
        stage
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("FROM"), ["scratch"], "the image has nothing but the binary");
    let copies = get("COPY");
    let destinations: Vec<&str> = copies.iter().map(|c| c.rsplit(' ').next().unwrap()).collect();

    let index: Value = serde_json::from_slice(&member(&archive, "index.json")).unwrap();
    let manifest: Value =
        serde_json::from_slice(&blob(&archive, index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let config: Value =
        serde_json::from_slice(&blob(&archive, manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let dockerfile_json = |keyword: &str| serde_json::from_str::<Value>(get(keyword)[0]).unwrap();
    assert_eq!(config["config"]["Entrypoint"], dockerfile_json("ENTRYPOINT"));
    assert_eq!(config["config"]["Cmd"], dockerfile_json("CMD"));
    assert_eq!(config["config"]["User"], json!(get("USER")[0]));
    assert_eq!(config["architecture"], "amd64");

    // The one layer's files are the Dockerfile's COPY destinations.
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let layer_path = dir.path().join("layer.tar");
    std::fs::write(&layer_path, blob(&archive, layers[0]["digest"].as_str().unwrap())).unwrap();
    let listing = testkit::command_output(Command::new("tar").arg("-tf").arg(&layer_path));
    let files: Vec<String> = listing.lines().map(|l| format!("/{l}")).collect();
    assert_eq!(files, destinations, "the layer's files");

    // The binary: static, and without the demo.
    testkit::command_output(
        Command::new("tar")
            .arg("-xf")
            .arg(&layer_path)
            .arg("-C")
            .arg(dir.path()),
    );
    let binary = dir.path().join("netdra");
    let program_headers = testkit::command_output(Command::new("readelf").arg("-l").arg(&binary));
    assert!(
        !program_headers.contains("Requesting program interpreter"),
        "the image's binary is dynamically linked:\n{program_headers}"
    );
    let help = Command::new(&binary).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("inventory"), "{help}");
    assert!(!help.contains("demo"), "the image's binary has the demo:\n{help}");
    let demo = Command::new(&binary).arg("demo").output().unwrap();
    assert!(!demo.status.success(), "`netdra demo` ran in the image's binary");

    // Both build it with the same cargo command.
    let script = std::fs::read_to_string(workspace().join("scripts/image.sh")).unwrap();
    let target = script.lines().find_map(|l| l.strip_prefix("TARGET=")).unwrap();
    assert_eq!(cargo_build(&dockerfile, target), cargo_build(&script, target));
    let size = std::fs::metadata(&binary).unwrap().len();
    println!(
        "image {}: {} bytes as an archive, the binary {size} bytes ({:.1} MiB)",
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        std::fs::metadata(&archive).unwrap().len(),
        size as f64 / (1024.0 * 1024.0)
    );
}
