//! The `netdra` binary's command line: every flag has its environment variable, a bad value
//! stops start-up naming the flag, and `netdra inventory` prints valid ResourceSlices.
#![allow(missing_docs, clippy::unwrap_used)]

use std::process::{Command, Output};

use k8s_openapi::api::resource::v1::ResourceSlice;
use serde_json::Value;

const NETDRA: &str = env!("CARGO_BIN_EXE_netdra");

/// Every flag and the variable it reads.
const FLAGS: &[(&str, &str)] = &[
    ("--driver-name", "DRIVER_NAME"),
    ("--node-name", "NODE_NAME"),
    ("--kubeconfig", "KUBECONFIG"),
    ("--kubelet-registry-dir", "KUBELET_REGISTRY_DIR"),
    ("--kubelet-plugins-dir", "KUBELET_PLUGINS_DIR"),
    ("--nri-socket", "NRI_SOCKET"),
    ("--nri-plugin-index", "NRI_PLUGIN_INDEX"),
    ("--state-dir", "STATE_DIR"),
    ("--claim-cache", "CLAIM_CACHE"),
    ("--device-filter", "DEVICE_FILTER"),
    ("--metrics-address", "METRICS_ADDRESS"),
    ("--device-health", "DEVICE_HEALTH"),
    ("--device-health-interval-ms", "DEVICE_HEALTH_INTERVAL_MS"),
    ("--device-metadata", "DEVICE_METADATA"),
    ("--cdi-dir", "CDI_DIR"),
    ("--log-format", "LOG_FORMAT"),
    ("--log-level", "LOG_LEVEL"),
];

fn netdra(args: &[&str]) -> Output {
    Command::new(NETDRA)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

/// The demo's own flags, besides the global ones.
const DEMO_FLAGS: &[(&str, &str)] = &[
    ("--cri-socket", "CRI_SOCKET"),
    ("--step-delay-ms", "DEMO_STEP_DELAY_MS"),
];

#[test]
fn help_lists_every_flag_with_its_variable() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["inventory", "--help"],
        &["demo", "--help"],
    ] {
        let out = netdra(args);
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        let own = if args[0] == "demo" { DEMO_FLAGS } else { &[] };
        for (flag, var) in FLAGS.iter().chain(own) {
            let at = help
                .find(&format!("{flag} <"))
                .unwrap_or_else(|| panic!("{args:?}: {flag} missing:\n{help}"));
            let next = help[at + 2..].find("\n      --").map_or(help.len(), |n| at + 2 + n);
            assert!(
                help[at..next].contains(&format!("[env: {var}=")),
                "{args:?}: {flag} does not name {var}:\n{}",
                &help[at..next]
            );
        }
    }
}

#[test]
fn a_bad_value_stops_start_up_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "--node-name", "n", "--nri-plugin-index", "1x"],
            "--nri-plugin-index",
        ),
        (
            &["run", "--node-name", "n", "--driver-name", "Not_A_Name"],
            "--driver-name",
        ),
        (
            &["run", "--node-name", "n", "--device-filter", "foo("],
            "--device-filter",
        ),
        (
            &["run", "--node-name", "n", "--kubeconfig", "/nonexistent/kubeconfig"],
            "--kubeconfig",
        ),
        (&["run", "--log-level", "info,[["], "--log-level"),
        (&["run", "--log-format", "yaml"], "--log-format"),
        (&["run", "--metrics-address", "localhost"], "--metrics-address"),
        (&["run", "--claim-cache", "sometimes"], "--claim-cache"),
        (&["run", "--mode", "shared"], "--mode"),
        (&["run", "--shared-slots", "0"], "--shared-slots"),
        (&["run", "--shared-slots", "4097"], "--shared-slots"),
        (&["demo", "--step-delay-ms", "soon"], "--step-delay-ms"),
        (&["demo", "--driver-name", "Not_A_Name"], "--driver-name"),
        (&["demo", "--nri-plugin-index", "1x"], "--nri-plugin-index"),
    ];
    for (args, flag) in cases {
        let out = netdra(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // The environment is read too, and named by its flag.
    let out = Command::new(NETDRA)
        .args(["run", "--node-name", "n"])
        .env("NRI_PLUGIN_INDEX", "7")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nri-plugin-index"));
}

/// Deletes the veth by name when dropped.
struct Veth(&'static str);

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).output();
    }
}

#[test]
fn inventory_prints_resource_slices_that_parse_strictly() {
    if !testkit::available_or_skip(testkit::is_root(), "the inventory test needs root to create a veth") {
        return;
    }
    let veth = Veth("ndcli0");
    let _ = Command::new("ip").args(["link", "del", veth.0]).output();
    let ok = Command::new("ip")
        .args(["link", "add", veth.0, "type", "veth", "peer", "name", "ndclip0"])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let filter = format!("device.attributes[\"netdra.dev\"].ifName == \"{}\"", veth.0);
    let out = netdra(&["inventory", "--node-name", "node-a", "--device-filter", &filter]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<&str> = yaml.split("---\n").filter(|d| !d.trim().is_empty()).collect();
    assert_eq!(docs.len(), 1, "{yaml}");
    for doc in docs {
        let value: Value = serde_yaml_ng::from_str(doc).unwrap();
        let slice: ResourceSlice = serde_json::from_value(value.clone()).unwrap();
        // Unknown fields rejected: a field the typed object does not know is lost on the way back.
        assert_eq!(
            serde_json::to_value(&slice).unwrap(),
            value,
            "fields the API does not know"
        );
        assert_eq!(value["apiVersion"], "resource.k8s.io/v1");
        let spec = slice.spec;
        assert_eq!(spec.driver, "netdra.dev");
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        let devices = spec.devices.unwrap();
        assert_eq!(devices.len(), 1);
        let attributes = devices[0].attributes.as_ref().unwrap();
        assert_eq!(attributes["ifName"].string.as_deref(), Some(veth.0));
    }
}
