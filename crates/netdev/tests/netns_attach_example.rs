//! The `netns_attach` example as a person or a script runs it: a configuration error exits
//! non-zero with the field's message and changes nothing; `attach` prints the restore record
//! as JSON and `detach --state FILE` brings the interface back from it.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use common::*;

fn netns_attach(args: &[&str]) -> Output {
    Command::new(testkit::example_binary("netns_attach"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

/// `ip -o link show dev NAME` and `ip -o addr show dev NAME`, for before/after comparisons.
fn shown(name: &str) -> String {
    ["link", "addr"]
        .iter()
        .map(|what| {
            let out = Command::new("ip")
                .args(["-o", what, "show", "dev", name])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect()
}

#[test]
fn a_configuration_error_names_the_field_and_changes_nothing() {
    if !privileged("the netns_attach example test") {
        return;
    }
    let p = prefix("xe");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}a"), format!("{p}b"), format!("{p}ns"));
    created.veth(&host, &peer, None);
    created.netns(&ns);
    let before = shown(&host);
    let netns = format!("/var/run/netns/{ns}");
    let cases: &[(&[&str], &str)] = &[
        (&["--mtu", "20"], "mtu: 20 is outside 68..=65535"),
        (
            &["--name", "much-too-long-name"],
            "name: \"much-too-long-name\" is 18 bytes long",
        ),
        (
            &["--address", "10.10.0.2/24", "--route", "10.20.0.0/16,via=10.30.0.1"],
            "routes[0].gateway: 10.30.0.1 is not inside any address's subnet",
        ),
        (&["--route", "10.20.0.0/16,dev=eth0"], "unknown key \"dev\""),
    ];
    for (extra, message) in cases {
        let mut args = vec!["attach", "--netns", &netns, "--device", &host];
        args.extend_from_slice(extra);
        let out = netns_attach(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} must fail");
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{extra:?}: nothing printed on stdout");
        assert!(link_exists(&host), "{extra:?}: {host} stays on the host");
        assert_eq!(shown(&host), before, "{extra:?}: {host} unchanged");
    }
}

#[test]
fn attach_prints_the_record_and_detach_restores_from_it() {
    if !privileged("the netns_attach example test") {
        return;
    }
    let p = prefix("xa");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}a"), format!("{p}b"), format!("{p}ns"));
    created.veth(&host, &peer, None);
    created.netns(&ns);
    ip(&["addr", "add", "192.168.248.5/24", "dev", &host]);
    // With its peer up the moved end has a carrier, so its routes are not `linkdown`.
    ip(&["link", "set", &peer, "up"]);
    let before = shown(&host);
    let netns = format!("/var/run/netns/{ns}");

    let out = netns_attach(&[
        "attach",
        "--netns",
        &netns,
        "--device",
        &host,
        "--name",
        "net1",
        "--address",
        "10.10.0.2/24",
        "--route",
        "default,via=10.10.0.1,metric=10",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["nameInPod"], "net1");
    assert_eq!(record["host"]["name"], host.as_str());
    assert_eq!(record["host"]["addresses"][0]["address"], "192.168.248.5/24");
    let route = Command::new("ip")
        .args(["-n", &ns, "route", "show", "default"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&route.stdout).trim(),
        "default via 10.10.0.1 dev net1 proto static metric 10"
    );

    let state = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(state.path(), &out.stdout).unwrap();
    let out = netns_attach(&["detach", "--state", state.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is back on the host"));
    assert_eq!(shown(&host), before);
}
