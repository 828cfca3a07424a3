//! The `inventory` example as a user runs it: an invalid CEL filter fails start-up with the
//! parser's message; on a fixture-free host it prints ResourceSlice YAML and says what it left
//! out and why.
#![allow(missing_docs, clippy::unwrap_used)]

use std::{path::PathBuf, process::Command};

fn example_binary() -> PathBuf {
    testkit::example_binary("inventory")
}

#[test]
fn an_invalid_filter_fails_start_up_with_the_parse_error() {
    let out = Command::new(example_binary())
        .args(["--filter", r#"device.attributes["netdra.dev"].kind =="#])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!out.status.success(), "an invalid filter must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid device filter"), "{stderr}");
    assert!(
        stderr.contains("Syntax error"),
        "the parser's message is shown: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing is published: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_host_inventory_prints_slices_and_the_reasons_for_what_it_left_out() {
    let out = Command::new(example_binary())
        .args([
            "--driver-name",
            "netdra.example.com",
            "--node-name",
            "node-x",
            "--filter",
            "true",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("kind: ResourceSlice"), "{stdout}");
    assert!(stdout.contains("driver: netdra.example.com"), "{stdout}");
    assert!(stdout.contains("nodeName: node-x"), "{stdout}");
    // `true` selects everything, loopback included.
    assert!(stdout.contains("string: lo\n"), "{stdout}");

    // The default rule leaves loopback out and says why.
    let out = Command::new(example_binary())
        .args(["--node-name", "node-x"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("left out lo: loopback"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("string: lo\n"));
}
