//! Privileged: real veth pairs moved into real network namespaces and back. What `ip -j` shows
//! inside the namespace is exactly the configuration; after detach the host interface is as it
//! was, field by field; failures leave the host unchanged.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use netdev::{
    AttachError, AttachRequest, DetachOutcome, InterfaceConfig, Location, Netns, NetnsError, RestoreRecord,
    RouteConfig, ValidConfig, attach, attach_all, attach_recorded, detach, locate, record_all,
};

/// The configuration of acceptance point 2.
fn full_config() -> ValidConfig {
    InterfaceConfig {
        name: Some("net1".into()),
        mtu: Some(1400),
        hardware_address: Some("02:aa:bb:cc:dd:01".into()),
        addresses: vec!["10.10.0.2/24".into(), "fd00::2/64".into()],
        routes: vec![
            RouteConfig {
                destination: "10.20.0.0/16".into(),
                gateway: Some("10.10.0.1".into()),
                ..RouteConfig::default()
            },
            RouteConfig {
                destination: "default".into(),
                gateway: Some("fd00::1".into()),
                ..RouteConfig::default()
            },
        ],
        ..InterfaceConfig::default()
    }
    .validate()
    .unwrap()
}

#[test]
fn attach_configures_exactly_and_detach_restores_field_by_field() {
    if !privileged("the attach test") {
        return;
    }
    let p = prefix("at");
    let mut created = Created::default();
    for (tag, up) in [("u", true), ("d", false)] {
        let (host, peer, ns) = (format!("{p}{tag}"), format!("{p}{tag}p"), format!("{p}{tag}ns"));
        host_veth(&mut created, &host, &peer, if up { 241 } else { 242 }, up);
        created.netns(&ns);
        let before = host_view(&host);
        assert_eq!(before.up, up);

        let netns = Netns::open(netns_path(&ns)).unwrap();
        let record = attach(&netns, &host, &full_config()).unwrap();
        assert!(!link_exists(&host), "{host} left the host");

        let link = &ip_json(&["-n", &ns, "link", "show", "dev", "net1"])[0];
        assert_eq!(link["mtu"], 1400);
        assert_eq!(link["address"], "02:aa:bb:cc:dd:01");
        assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{link}");
        let addresses: BTreeSet<String> = ip_json(&["-n", &ns, "addr", "show", "dev", "net1"])[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["scope"] == "global")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect();
        assert_eq!(addresses, BTreeSet::from(["10.10.0.2/24".into(), "fd00::2/64".into()]));
        let v4: Vec<(String, String)> = ip_json(&["-n", &ns, "-4", "route", "show", "dev", "net1"])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["dst"].as_str().unwrap().to_owned(),
                    r["gateway"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            v4,
            [
                ("10.10.0.0/24".to_owned(), String::new()),
                ("10.20.0.0/16".to_owned(), "10.10.0.1".to_owned())
            ]
        );
        let v6_default = ip_json(&["-n", &ns, "-6", "route", "show", "default", "dev", "net1"]);
        assert_eq!(v6_default[0]["gateway"], "fd00::1", "{v6_default}");

        // The record persists as JSON and detach works from the parsed copy.
        let record: netdev::RestoreRecord = serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        let detached = detach(&record).unwrap();
        assert_eq!(detached.outcome, DetachOutcome::Returned);
        assert!(detached.incomplete.is_empty(), "{:?}", detached.incomplete);
        assert_eq!(
            host_view(&host),
            before,
            "{host} restored ({})",
            if up { "up" } else { "down" }
        );
        assert_eq!(
            ip_json(&["-n", &ns, "link", "show"]).as_array().unwrap().len(),
            1,
            "only lo left in {ns}"
        );

        // Idempotent: the interface is already home.
        let again = detach(&record).unwrap();
        assert_eq!(again.outcome, DetachOutcome::FoundOnHost { name: host.clone() });
        assert_eq!(host_view(&host), before);
    }
}

#[test]
fn a_name_taken_in_the_pod_changes_nothing() {
    if !privileged("the name conflict test") {
        return;
    }
    let p = prefix("nc");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}a"), format!("{p}b"), format!("{p}ns"));
    host_veth(&mut created, &host, &peer, 243, true);
    created.netns(&ns);
    ip(&[
        "-n", &ns, "link", "add", "net1", "type", "veth", "peer", "name", "net1p",
    ]);
    let before = host_view(&host);

    let netns = Netns::open(netns_path(&ns)).unwrap();
    let err = attach(&netns, &host, &full_config()).unwrap_err();
    assert!(matches!(err, AttachError::NameTaken { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("attach {host}: the name net1 is already taken in /var/run/netns/{ns}")
    );
    assert_eq!(host_view(&host), before);
}

#[test]
fn a_route_the_kernel_refuses_rolls_everything_back() {
    if !privileged("the rollback test") {
        return;
    }
    let p = prefix("rb");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}a"), format!("{p}b"), format!("{p}ns"));
    host_veth(&mut created, &host, &peer, 244, true);
    created.netns(&ns);
    // A route the pod already has (as a CNI would have set up): adding ours answers EEXIST.
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&["-n", &ns, "route", "add", "10.20.0.0/16", "dev", "lo"]);
    let before = host_view(&host);

    let netns = Netns::open(netns_path(&ns)).unwrap();
    let err = attach(&netns, &host, &full_config()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "attach {host}: add route 10.20.0.0/16 via 10.10.0.1 in /var/run/netns/{ns}: File exists"
        )),
        "{message}"
    );
    assert!(
        message.ends_with("rolled back: the host interfaces are as they were"),
        "{message}"
    );
    assert_eq!(host_view(&host), before);
    let in_pod = Command::new("ip")
        .args(["-n", &ns, "link", "show", "dev", "net1"])
        .output()
        .unwrap();
    assert!(!in_pod.status.success(), "net1 is gone from the pod");
}

#[test]
fn a_path_that_is_not_a_network_namespace_is_refused_before_any_change() {
    if !privileged("the namespace check test") {
        return;
    }
    let p = prefix("nn");
    let mut created = Created::default();
    let (host, peer) = (format!("{p}a"), format!("{p}b"));
    host_veth(&mut created, &host, &peer, 245, true);
    let before = host_view(&host);
    let file = tempfile::NamedTempFile::new().unwrap();
    for path in [file.path().to_str().unwrap(), "/proc/self/ns/mnt"] {
        let err = Netns::open(path).unwrap_err();
        assert!(matches!(err, NetnsError::NotANetworkNamespace { .. }), "{path}: {err}");
    }
    assert_eq!(host_view(&host), before);
}

#[test]
fn detach_finds_an_interface_the_kernel_returned_under_another_name() {
    if !privileged("the returned-interface test") {
        return;
    }
    let p = prefix("rt");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}a"), format!("{p}b"), format!("{p}ns"));
    let other_name = format!("{p}dev7");
    host_veth(&mut created, &host, &peer, 246, true);
    created.record_link(&other_name, None);
    created.netns(&ns);
    let before = host_view(&host);

    let netns = Netns::open(netns_path(&ns)).unwrap();
    let record = attach(&netns, &host, &full_config()).unwrap();
    drop(netns);
    return_as_physical_nic(&ns, "net1", &other_name);

    let detached = detach(&record).unwrap();
    assert_eq!(
        detached.outcome,
        DetachOutcome::FoundOnHost {
            name: other_name.clone()
        }
    );
    assert!(detached.incomplete.is_empty(), "{:?}", detached.incomplete);
    assert_eq!(host_view(&host), before);
    assert!(!link_exists(&other_name));
}

#[test]
fn a_veth_that_died_with_its_namespace_is_no_error() {
    if !privileged("the vanished-interface test") {
        return;
    }
    let p = prefix("vn");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}a"), format!("{p}b"), format!("{p}ns"));
    host_veth(&mut created, &host, &peer, 247, true);
    created.netns(&ns);
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let record = attach(&netns, &host, &full_config()).unwrap();
    drop(netns);
    ip(&["netns", "del", &ns]);
    // The kernel dismantles the namespace asynchronously.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while link_exists(&peer) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let detached = detach(&record).unwrap();
    assert_eq!(detached.outcome, DetachOutcome::Vanished);
}

#[test]
fn eight_attaches_into_eight_namespaces_in_parallel() {
    if !privileged("the parallel attach test") {
        return;
    }
    let p = prefix("pa");
    let mut created = Created::default();
    let pairs: Vec<(String, String)> = (0..8).map(|i| (format!("{p}h{i}"), format!("{p}n{i}"))).collect();
    for (i, (host, ns)) in pairs.iter().enumerate() {
        host_veth(&mut created, host, &format!("{p}p{i}"), 230 + i as u8, true);
        created.netns(ns);
    }
    let befores: Vec<_> = pairs.iter().map(|(host, _)| host_view(host)).collect();

    let records: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = pairs
            .iter()
            .enumerate()
            .map(|(i, (host, ns))| {
                scope.spawn(move || {
                    let config = InterfaceConfig {
                        name: Some("net1".into()),
                        mtu: Some(1400),
                        addresses: vec![format!("10.10.{i}.2/24")],
                        routes: vec![RouteConfig {
                            destination: "10.20.0.0/16".into(),
                            gateway: Some(format!("10.10.{i}.1")),
                            ..RouteConfig::default()
                        }],
                        ..InterfaceConfig::default()
                    }
                    .validate()
                    .unwrap();
                    let netns = Netns::open(netns_path(ns)).unwrap();
                    attach(&netns, host, &config).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (_, ns)) in pairs.iter().enumerate() {
        let addr = &ip_json(&["-n", ns, "-4", "addr", "show", "dev", "net1"])[0];
        assert_eq!(addr["mtu"], 1400);
        assert_eq!(addr["addr_info"][0]["local"], format!("10.10.{i}.2"));
        let route = &ip_json(&["-n", ns, "route", "show", "10.20.0.0/16"])[0];
        assert_eq!(route["gateway"], format!("10.10.{i}.1"));
    }
    std::thread::scope(|scope| {
        for record in &records {
            scope.spawn(move || assert_eq!(detach(record).unwrap().outcome, DetachOutcome::Returned));
        }
    });
    for ((host, _), before) in pairs.iter().zip(&befores) {
        assert_eq!(&host_view(host), before);
    }
}

#[test]
fn four_interfaces_into_one_pod_are_all_or_none() {
    if !privileged("the all-or-none test") {
        return;
    }
    let p = prefix("an");
    let mut created = Created::default();
    let ns = format!("{p}ns");
    created.netns(&ns);
    let hosts: Vec<String> = (0..4).map(|i| format!("{p}h{i}")).collect();
    for (i, host) in hosts.iter().enumerate() {
        host_veth(&mut created, host, &format!("{p}p{i}"), 225 + i as u8, true);
    }
    let befores: Vec<_> = hosts.iter().map(|h| host_view(h)).collect();
    let configs: Vec<ValidConfig> = (0..4)
        .map(|i| {
            InterfaceConfig {
                name: Some(format!("net{i}")),
                addresses: vec![format!("10.11.{i}.2/24")],
                // The last one's route already exists in the pod: the whole call fails.
                routes: vec![RouteConfig {
                    destination: if i == 3 {
                        "10.99.0.0/16".into()
                    } else {
                        format!("10.2{i}.0.0/16")
                    },
                    gateway: Some(format!("10.11.{i}.1")),
                    ..RouteConfig::default()
                }],
                ..InterfaceConfig::default()
            }
            .validate()
            .unwrap()
        })
        .collect();
    let requests: Vec<AttachRequest<'_>> = hosts
        .iter()
        .zip(&configs)
        .map(|(device, config)| AttachRequest::new(device, config))
        .collect();
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&["-n", &ns, "route", "add", "10.99.0.0/16", "dev", "lo"]);

    let netns = Netns::open(netns_path(&ns)).unwrap();
    let err = attach_all(&netns, &requests).unwrap_err();
    assert!(
        err.to_string().contains("add route 10.99.0.0/16 via 10.11.3.1"),
        "{err}"
    );
    for (host, before) in hosts.iter().zip(&befores) {
        assert_eq!(&host_view(host), before, "{host} rolled back");
    }

    // Without the conflict, all four arrive.
    ip(&["-n", &ns, "route", "del", "10.99.0.0/16", "dev", "lo"]);
    let records = attach_all(&netns, &requests).unwrap();
    assert_eq!(records.len(), 4);
    for i in 0..4 {
        let addr = &ip_json(&["-n", &ns, "-4", "addr", "show", "dev", &format!("net{i}")])[0];
        assert_eq!(addr["addr_info"][0]["local"], format!("10.11.{i}.2"));
    }
    for record in &records {
        assert_eq!(detach(record).unwrap().outcome, DetachOutcome::Returned);
    }
    for (host, before) in hosts.iter().zip(&befores) {
        assert_eq!(&host_view(host), before);
    }
}

#[test]
fn host_addresses_and_routes_are_carried_into_the_pod_and_back() {
    if !privileged("the carry test") {
        return;
    }
    let p = prefix("ca");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}h"), format!("{p}p"), format!("{p}ns"));
    host_veth(&mut created, &host, &peer, 243, true);
    created.netns(&ns);
    let before = host_view(&host);

    // Only a name: the interface keeps its own address and the route through it.
    let config = InterfaceConfig {
        name: Some("net1".into()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let request = AttachRequest::new(&host, &config)
        .carrying_host_addresses(true)
        .placed(&netdev::Placement::Move);
    let record = attach_all(&netns, &[request]).unwrap().pop().unwrap();
    let inside: Vec<String> = ip_json(&["-n", &ns, "addr", "show", "dev", "net1"])[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert_eq!(inside, ["192.168.243.5/24"]);
    let routes: Vec<String> = ip_json(&["-n", &ns, "-4", "route", "show", "dev", "net1"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["dst"].as_str().unwrap(),
                r["gateway"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert!(
        routes.contains(&"198.51.243.0/24 192.168.243.1".to_owned()),
        "the route through the host interface came along: {routes:?}"
    );

    let detached = detach(&record).unwrap();
    assert_eq!(detached.outcome, DetachOutcome::Returned);
    assert!(detached.incomplete.is_empty(), "{:?}", detached.incomplete);
    assert_eq!(host_view(&host), before, "address and route back on the host");
}

#[test]
fn record_all_changes_nothing_and_attach_recorded_moves_what_it_recorded() {
    if !privileged("the write-ahead attach test") {
        return;
    }
    let p = prefix("wa");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}h"), format!("{p}p"), format!("{p}ns"));
    host_veth(&mut created, &host, &peer, 248, true);
    created.netns(&ns);
    let before = host_view(&host);

    let netns = Netns::open(netns_path(&ns)).unwrap();
    let config = full_config();
    let requests = [AttachRequest::new(&host, &config)];
    let records = record_all(&netns, &requests).unwrap();
    assert_eq!(host_view(&host), before, "record_all changed nothing");
    let inode: u64 = testkit::command_output(Command::new("stat").args(["-L", "-c", "%i", &netns_path(&ns)]))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].netns_inode, Some(inode));
    assert_eq!(records[0].netns.to_str(), Some(netns_path(&ns).as_str()));
    assert_eq!(records[0].host.addresses.len(), 1, "{:?}", records[0].host);
    assert_eq!(locate(&records[0]).unwrap(), Location::OnHost { name: host.clone() });

    // What a journal would hand back.
    let records: Vec<RestoreRecord> = serde_json::from_str(&serde_json::to_string(&records).unwrap()).unwrap();
    attach_recorded(&netns, &requests, &records).unwrap();
    assert!(!link_exists(&host), "{host} left the host");
    let link = &ip_json(&["-n", &ns, "link", "show", "dev", "net1"])[0];
    assert_eq!(link["mtu"], 1400);
    assert_eq!(link["address"], "02:aa:bb:cc:dd:01");
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{link}");
    let addresses: BTreeSet<String> = ip_json(&["-n", &ns, "addr", "show", "dev", "net1"])[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert_eq!(addresses, BTreeSet::from(["10.10.0.2/24".into(), "fd00::2/64".into()]));
    let route = &ip_json(&["-n", &ns, "route", "show", "10.20.0.0/16"])[0];
    assert_eq!(route["gateway"], "10.10.0.1");
    assert_eq!(locate(&records[0]).unwrap(), Location::InPod { name: "net1".into() });

    // Records that no longer match the host are refused before any change.
    let err = attach_recorded(&netns, &requests, &records).unwrap_err();
    assert!(matches!(err, AttachError::NoSuchDevice { .. }), "{err}");

    let detached = detach(&records[0]).unwrap();
    assert_eq!(detached.outcome, DetachOutcome::Returned);
    assert!(detached.incomplete.is_empty(), "{:?}", detached.incomplete);
    assert_eq!(host_view(&host), before);
}
