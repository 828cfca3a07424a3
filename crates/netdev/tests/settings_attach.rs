//! Privileged: the `netdra.dev/v1alpha2` settings through a real attach and detach. A veth end
//! on the host is attached into a pod namespace with every new setting (table routes, rules,
//! neighbours, sysctls, ethtool features, BIG TCP sizes, queue length) and each is read back
//! inside the pod with `ip`, `/proc/sys` and ethtool netlink; after detach, or after an attach
//! the kernel refuses half-way, the host end is compared field by field with a snapshot taken
//! before. Carry-over takes the host's table routes, their rules and the permanent neighbours
//! into the pod and brings back what the move flushed.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;
mod inside;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::*;
use inside::in_netns;
use netdev::{
    AttachError, AttachRequest, DetachOutcome, Ethtool, FeatureState, InterfaceConfig, IpFamily, LinkTuning, Netns,
    RestoreRecord, Rollback, StepError, Sysctl, TuningError, ValidConfig, attach, attach_all, attach_recorded, detach,
    link_tuning, record_all,
};

/// The index of link `link`, in namespace `ns` or the host's.
fn index_of(ns: Option<&str>, link: &str) -> u32 {
    let links = match ns {
        Some(ns) => ip_json(&["-n", ns, "link", "show", "dev", link]),
        None => ip_json(&["link", "show", "dev", link]),
    };
    u32::try_from(links[0]["ifindex"].as_u64().unwrap()).unwrap()
}

/// `ip ARGS` inside namespace `ns` (through `ip netns exec`), its output lines with runs of
/// white space made one space.
fn lines_in(ns: &str, args: &[&str]) -> BTreeSet<String> {
    let output = testkit::command_output(Command::new("ip").args(["netns", "exec", ns, "ip"]).args(args));
    normalised(&output)
}

/// `ip ARGS` on the host, as [`lines_in`].
fn host_lines(args: &[&str]) -> BTreeSet<String> {
    normalised(&testkit::command_output(Command::new("ip").args(args)))
}

fn normalised(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

fn set(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().map(|l| (*l).to_owned()).collect()
}

/// A per-interface sysctl as `cat` shows it inside namespace `ns`.
fn sysctl_in(ns: &str, family: &str, link: &str, name: &str) -> String {
    let path = format!("/proc/sys/net/{family}/conf/{link}/{name}");
    testkit::command_output(Command::new("ip").args(["netns", "exec", ns, "cat", &path]))
        .trim()
        .to_owned()
}

/// Sets a per-interface sysctl of host link `link`.
fn set_host_sysctl(family: &str, link: &str, name: &str, value: i64) {
    std::fs::write(format!("/proc/sys/net/{family}/conf/{link}/{name}"), value.to_string()).unwrap();
}

/// The sysctls the tests configure, as the host has them for `link`.
const SYSCTLS: [(&str, &str); 4] = [
    ("ipv4", "arp_ignore"),
    ("ipv4", "arp_announce"),
    ("ipv6", "accept_ra"),
    ("ipv6", "addr_gen_mode"),
];

/// `gso_max_size`, `gro_max_size` and `txqlen` as `ip -d link show` reports them.
fn ip_tuning(ns: Option<&str>, link: &str) -> (u64, u64, u64) {
    let link = match ns {
        Some(ns) => ip_json(&["-n", ns, "-d", "link", "show", "dev", link]),
        None => ip_json(&["-d", "link", "show", "dev", link]),
    };
    let field = |name: &str| link[0][name].as_u64().unwrap_or_else(|| panic!("{name} in {link}"));
    (field("gso_max_size"), field("gro_max_size"), field("txqlen"))
}

/// Everything about a host link that an attach changes and a detach or rollback must restore.
#[derive(Debug, PartialEq, Eq)]
struct HostSnapshot {
    view: HostView,
    sysctls: BTreeMap<String, String>,
    features: BTreeMap<String, FeatureState>,
    /// `gso_max_size`, `gro_max_size`, `txqlen` from `ip -d link`.
    ip_tuning: (u64, u64, u64),
    /// All five sizes from netlink (the IPv4 ones are not in this `ip`'s output).
    tuning: LinkTuning,
    neighbours: BTreeSet<String>,
    /// Routes of every table through it, as `ip route show table all dev` prints them,
    /// without the kernel's own (local table, link-local, multicast).
    all_routes: BTreeSet<String>,
}

fn host_snapshot(link: &str) -> HostSnapshot {
    let index = index_of(None, link);
    HostSnapshot {
        view: host_view(link),
        sysctls: SYSCTLS
            .iter()
            .map(|(family, name)| {
                let path = format!("/proc/sys/net/{family}/conf/{link}/{name}");
                (
                    format!("{family}.{name}"),
                    std::fs::read_to_string(path).unwrap().trim().to_owned(),
                )
            })
            .collect(),
        features: Ethtool::new().unwrap().features(index).unwrap(),
        ip_tuning: ip_tuning(None, link),
        tuning: link_tuning(index).unwrap(),
        neighbours: host_lines(&["neigh", "show", "dev", link, "nud", "permanent"]),
        all_routes: host_lines(&["route", "show", "table", "all", "dev", link])
            .into_iter()
            .filter(|r| !r.starts_with("local ") && !r.starts_with("fe80") && !r.starts_with("multicast "))
            .collect(),
    }
}

fn config_from(json: serde_json::Value) -> ValidConfig {
    serde_json::from_value::<InterfaceConfig>(json)
        .unwrap()
        .validate()
        .unwrap()
}

/// Host policy rules added by a test, deleted by their exact spec when dropped.
#[derive(Default)]
struct HostRules(Vec<(String, Vec<String>)>);

impl HostRules {
    /// `ip FAMILY rule add SPEC...`, `family` being `-4` or `-6`.
    fn add(&mut self, spec: &[&str]) {
        let (family, spec) = spec.split_first().unwrap();
        let spec: Vec<String> = spec.iter().map(|s| (*s).to_owned()).collect();
        let mut args = vec![*family, "rule", "add"];
        args.extend(spec.iter().map(String::as_str));
        ip(&args);
        self.0.push(((*family).to_owned(), spec));
    }
}

impl Drop for HostRules {
    fn drop(&mut self) {
        for (family, spec) in &self.0 {
            let _ = Command::new("ip").args([family, "rule", "del"]).args(spec).output();
        }
    }
}

#[test]
fn every_v1alpha2_setting_is_visible_in_the_pod_and_the_host_gets_its_own_back() {
    if !privileged("the v1alpha2 settings attach test") {
        return;
    }
    let p = prefix("sv");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}h"), format!("{p}p"), format!("{p}ns"));
    host_veth(&mut created, &host, &peer, 221, true);
    created.netns(&ns);
    // Host values the attach must give back: non-default sysctls. (A permanent neighbour of the
    // host's is read, and so given back, only when the interface carries its host state: see
    // the carry-over test.)
    set_host_sysctl("ipv4", &host, "arp_ignore", 2);
    set_host_sysctl("ipv4", &host, "arp_announce", 1);
    set_host_sysctl("ipv6", &host, "accept_ra", 2);
    let before = host_snapshot(&host);
    // The features the configuration flips are changeable on veth, and flipped from the host's.
    for (feature, wanted) in [("tx-checksum-ip-generic", false), ("rx-gro-list", true)] {
        let state = before.features[feature];
        assert!(state.changeable, "{feature}: {state:?}");
        assert_eq!(state.active, !wanted, "{feature} starts the other way");
    }
    assert_eq!(before.ip_tuning, (65_536, 65_536, 1000));

    let config = config_from(serde_json::json!({
        "name": "net1",
        "addresses": ["10.10.0.2/24", "fd00:10::2/64"],
        "routes": [{"destination": "10.30.0.0/16", "gateway": "10.10.0.1", "table": 100}],
        "rules": [
            {"priority": 1000, "from": "10.10.0.0/24", "table": 100},
            {"priority": 1001, "to": "fd00:30::/64", "table": 100},
        ],
        "neighbours": [
            {"address": "10.10.0.9", "hardwareAddress": "02:00:00:00:10:09"},
            {"address": "fd00:10::9", "hardwareAddress": "02:00:00:00:10:0a"},
        ],
        "sysctls": {"ipv4.arp_ignore": 1, "ipv4.arp_announce": 2, "ipv6.accept_ra": 0},
        "ethtool": {"features": {"tx-checksum-ip-generic": false, "rx-gro-list": true}},
        "gsoMaxSize": 185_000,
        "groMaxSize": 185_000,
        "gsoIPv4MaxSize": 150_000,
        "groIPv4MaxSize": 150_000,
        "txQueueLen": 5000,
    }));

    let netns = Netns::open(netns_path(&ns)).unwrap();
    let record = attach(&netns, &host, &config).unwrap();
    assert!(!link_exists(&host), "{host} left the host");

    // What the record kept of the host: the values the configuration changes, and the
    // permanent neighbour.
    let settings = &record.host.settings;
    assert_eq!(
        settings.tuning,
        LinkTuning {
            gso_max_size: Some(65_536),
            gro_max_size: Some(65_536),
            gso_ipv4_max_size: Some(65_536),
            gro_ipv4_max_size: Some(65_536),
            txqueuelen: Some(1000),
        }
    );
    assert_eq!(
        settings.features,
        BTreeMap::from([("rx-gro-list".into(), false), ("tx-checksum-ip-generic".into(), true)])
    );
    let sysctl = |family, name: &str, value| Sysctl {
        family,
        name: name.into(),
        value,
    };
    assert_eq!(
        settings.sysctls,
        [
            sysctl(IpFamily::V4, "arp_announce", 1),
            sysctl(IpFamily::V4, "arp_ignore", 2),
            sysctl(IpFamily::V6, "accept_ra", 2),
        ]
    );
    assert!(settings.rules.is_empty(), "nothing carried: {:?}", settings.rules);
    assert!(
        settings.neighbours.is_empty(),
        "nothing carried: {:?}",
        settings.neighbours
    );
    // The record persists as JSON unchanged.
    let json = serde_json::to_string(&record).unwrap();
    let parsed: RestoreRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, record, "{json}");

    // Inside the pod, with the real tools.
    let rules_of =
        |lines: BTreeSet<String>| -> BTreeSet<String> { lines.into_iter().filter(|l| l.starts_with("100")).collect() };
    assert_eq!(
        rules_of(lines_in(&ns, &["rule", "show"])),
        set(&["1000: from 10.10.0.0/24 lookup 100"])
    );
    assert_eq!(
        rules_of(lines_in(&ns, &["-6", "rule", "show"])),
        set(&["1001: from all to fd00:30::/64 lookup 100"])
    );
    assert_eq!(
        lines_in(&ns, &["route", "show", "table", "100"]),
        set(&["10.30.0.0/16 via 10.10.0.1 dev net1 proto static"])
    );
    assert_eq!(
        lines_in(&ns, &["neigh", "show", "dev", "net1", "nud", "permanent"]),
        set(&[
            "10.10.0.9 lladdr 02:00:00:00:10:09 PERMANENT",
            "fd00:10::9 lladdr 02:00:00:00:10:0a PERMANENT",
        ])
    );
    for (family, name, value) in [
        ("ipv4", "arp_ignore", "1"),
        ("ipv4", "arp_announce", "2"),
        ("ipv6", "accept_ra", "0"),
    ] {
        assert_eq!(sysctl_in(&ns, family, "net1", name), value, "{family}.{name}");
    }
    assert_eq!(ip_tuning(Some(&ns), "net1"), (185_000, 185_000, 5000));
    let pod_index = index_of(Some(&ns), "net1");
    let (pod_tuning, pod_features) = in_netns(&ns, || {
        (
            link_tuning(pod_index).unwrap(),
            Ethtool::new().unwrap().features(pod_index).unwrap(),
        )
    });
    assert_eq!(
        (pod_tuning.gso_ipv4_max_size, pod_tuning.gro_ipv4_max_size),
        (Some(150_000), Some(150_000))
    );
    for (feature, wanted) in &config.features {
        let state = pod_features[feature];
        assert_eq!((state.active, state.wanted), (*wanted, *wanted), "{feature} in the pod");
    }

    let detached = detach(&parsed).unwrap();
    assert_eq!(detached.outcome, DetachOutcome::Returned);
    assert!(detached.incomplete.is_empty(), "{:?}", detached.incomplete);
    let after = host_snapshot(&host);
    assert_eq!(after.view, before.view);
    assert_eq!(after.sysctls, before.sysctls);
    assert_eq!(after.features, before.features);
    assert_eq!(after.ip_tuning, before.ip_tuning);
    assert_eq!(after.tuning, before.tuning);
    assert_eq!(after.neighbours, before.neighbours);
    assert_eq!(after.all_routes, before.all_routes);
}

#[test]
fn carry_over_takes_host_rules_neighbours_and_table_routes_and_brings_them_back() {
    if !privileged("the carry-over test") {
        return;
    }
    let p = prefix("cr");
    let mut created = Created::default();
    let mut rules = HostRules::default();
    let (host, peer, ns) = (format!("{p}h"), format!("{p}p"), format!("{p}ns"));
    host_veth(&mut created, &host, &peer, 222, true);
    created.netns(&ns);
    ip(&["addr", "add", "fd00:222::5/64", "dev", &host, "nodad"]);
    // A table and priorities of this process's own: the host's rules are shared with every
    // other test running on it, and the carry takes every rule of the table.
    let unique = std::process::id() % 10_000;
    let table = (20_000 + unique).to_string();
    let priority = (20_000 + unique).to_string();
    let (v6_priority, fwmark_priority) = ((30_000 + unique).to_string(), (40_000 + unique).to_string());
    let fwmark = format!("{:#x}", 0x7700_0000 + unique);
    ip(&[
        "route",
        "add",
        "10.77.0.0/16",
        "via",
        "192.168.222.1",
        "dev",
        &host,
        "table",
        &table,
    ]);
    ip(&[
        "-6",
        "route",
        "add",
        "fd00:77::/64",
        "via",
        "fd00:222::1",
        "dev",
        &host,
        "table",
        &table,
    ]);
    rules.add(&[
        "-4",
        "from",
        "192.168.222.5/32",
        "lookup",
        &table,
        "priority",
        &priority,
    ]);
    rules.add(&[
        "-6",
        "from",
        "fd00:222::5/128",
        "lookup",
        &table,
        "priority",
        &v6_priority,
    ]);
    // Selects by more than its prefixes: it stays on the host.
    rules.add(&["-4", "fwmark", &fwmark, "lookup", &table, "priority", &fwmark_priority]);
    for (address, mac) in [
        ("192.168.222.9", "02:00:00:00:de:09"),
        ("fd00:222::9", "02:00:00:00:de:0a"),
    ] {
        ip(&["neigh", "add", address, "lladdr", mac, "dev", &host, "nud", "permanent"]);
    }
    let lookups = |lines: BTreeSet<String>| -> BTreeSet<String> {
        lines
            .into_iter()
            .filter(|r| r.ends_with(&format!("lookup {table}")))
            .collect()
    };
    let host_rules = || lookups(&host_lines(&["rule", "show"]) | &host_lines(&["-6", "rule", "show"]));
    let carried_rules = set(&[
        &format!("{priority}: from 192.168.222.5 lookup {table}"),
        &format!("{v6_priority}: from fd00:222::5 lookup {table}"),
    ]);
    let mut our_rules = carried_rules.clone();
    our_rules.insert(format!("{fwmark_priority}: from all fwmark {fwmark} lookup {table}"));
    assert_eq!(host_rules(), our_rules);
    let before = host_snapshot(&host);
    // Lines as the host shows them, with the interface's name made `IF`.
    let renamed = |lines: BTreeSet<String>, name: &str| -> BTreeSet<String> {
        lines.into_iter().map(|l| l.replace(name, "IF")).collect()
    };
    let host_addresses = renamed(
        host_lines(&["addr", "show", "dev", &host, "scope", "global"])
            .into_iter()
            .filter(|l| l.starts_with("inet"))
            .collect(),
        &host,
    );
    let host_table = renamed(
        &host_lines(&["route", "show", "table", &table]) | &host_lines(&["-6", "route", "show", "table", &table]),
        &host,
    );
    assert_eq!(host_addresses.len(), 2, "{host_addresses:?}");
    assert_eq!(host_table.len(), 2, "{host_table:?}");

    // Write-ahead, as a driver does it: record, persist, attach from the persisted records.
    let config = config_from(serde_json::json!({"name": "net1"}));
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let requests = [AttachRequest::new(&host, &config).carrying_host_addresses(true)];
    let records = record_all(&netns, &requests).unwrap();
    assert_eq!(host_snapshot(&host), before, "recording changed nothing");
    let json = serde_json::to_string(&records).unwrap();
    let records: Vec<RestoreRecord> = serde_json::from_str(&json).unwrap();
    let settings = &records[0].host.settings;
    assert_eq!(
        settings.rules.iter().map(ToString::to_string).collect::<BTreeSet<_>>(),
        set(&[
            &format!("{priority}: from 192.168.222.5/32 lookup {table}"),
            &format!("{v6_priority}: from fd00:222::5/128 lookup {table}"),
        ]),
        "{json}"
    );
    assert_eq!(settings.neighbours.len(), 2, "{json}");
    attach_recorded(&netns, &requests, &records).unwrap();

    // In the pod: the addresses as the host had them (broadcast and scope too), the table's
    // routes, the rules that can be held there, the neighbours.
    let pod_addresses = renamed(
        lines_in(&ns, &["addr", "show", "dev", "net1", "scope", "global"])
            .into_iter()
            .filter(|l| l.starts_with("inet"))
            .collect(),
        "net1",
    );
    assert_eq!(pod_addresses, host_addresses);
    assert_eq!(
        renamed(
            &lines_in(&ns, &["route", "show", "table", &table])
                | &lines_in(&ns, &["-6", "route", "show", "table", &table]),
            "net1"
        ),
        host_table
    );
    assert_eq!(
        lookups(&lines_in(&ns, &["rule", "show"]) | &lines_in(&ns, &["-6", "rule", "show"])),
        carried_rules
    );
    assert_eq!(
        lines_in(&ns, &["neigh", "show", "dev", "net1", "nud", "permanent"]),
        renamed(before.neighbours.clone(), &host)
    );
    // The host keeps its rules meanwhile: they were copied, not moved.
    assert_eq!(host_rules(), our_rules);

    let detached = detach(&records[0]).unwrap();
    assert_eq!(detached.outcome, DetachOutcome::Returned);
    assert!(detached.incomplete.is_empty(), "{:?}", detached.incomplete);
    let after = host_snapshot(&host);
    assert_eq!(after.view, before.view, "addresses and main-table route back");
    assert_eq!(after.all_routes, before.all_routes, "the table's routes back");
    assert_eq!(after.neighbours, before.neighbours, "the neighbours back");
    assert_eq!(after, before);
    assert_eq!(host_rules(), our_rules);
}

#[test]
fn a_setting_the_kernel_refuses_rolls_the_whole_attach_back() {
    if !privileged("the settings rollback test") {
        return;
    }
    let p = prefix("sr");
    let mut created = Created::default();
    let (host, peer) = (format!("{p}h"), format!("{p}p"));
    host_veth(&mut created, &host, &peer, 223, true);
    set_host_sysctl("ipv4", &host, "arp_ignore", 2);
    set_host_sysctl("ipv6", &host, "addr_gen_mode", 1);
    let before = host_snapshot(&host);

    // A feature veth cannot change: refused while reading the host, before anything moves.
    let ns = format!("{p}ns0");
    created.netns(&ns);
    let fixed = before
        .features
        .iter()
        .find(|(name, s)| !s.changeable && name.as_str() == "loopback")
        .map(|(name, _)| name.clone())
        .unwrap();
    let config = config_from(serde_json::json!({
        "name": "net1",
        "ethtool": {"features": {fixed.clone(): true, "rx-gro-list": true}},
    }));
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let err = attach(&netns, &host, &config).unwrap_err();
    assert!(
        matches!(&err, AttachError::Read { step, source: StepError::Ethtool(_), .. } if step == "read the ethtool features"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("ethtool feature {fixed} cannot be changed")),
        "{err}"
    );
    assert_eq!(host_snapshot(&host), before);

    // Every setting, and a sysctl the pod's kernel refuses after all of them took: stable
    // privacy addresses (`addr_gen_mode` 2) need a `stable_secret`, which a new namespace has
    // not, so the kernel refuses the write. The sysctls are the last step: everything else was
    // applied by then. Validation refuses 2 for that reason, so the configuration is changed
    // after it: the one way to make the kernel refuse a setting after the move on a veth.
    let ns = format!("{p}ns1");
    created.netns(&ns);
    let json = serde_json::json!({
        "name": "net1",
        "mtu": 1400,
        "hardwareAddress": "02:aa:bb:cc:dd:23",
        "addresses": ["10.23.0.2/24"],
        "routes": [{"destination": "10.33.0.0/16", "gateway": "10.23.0.1", "table": 100}],
        "rules": [{"priority": 1000, "from": "10.23.0.0/24", "table": 100}],
        "neighbours": [{"address": "10.23.0.9", "hardwareAddress": "02:00:00:00:23:09"}],
        "sysctls": {"ipv4.arp_ignore": 1, "ipv6.addr_gen_mode": 0},
        "ethtool": {"features": {"tx-checksum-ip-generic": false, "rx-gro-list": true}},
        "gsoMaxSize": 185_000,
        "groMaxSize": 185_000,
        "txQueueLen": 5000,
    });
    let valid = config_from(json);
    let mut config = valid.clone();
    for sysctl in &mut config.sysctls {
        if sysctl.name == "addr_gen_mode" {
            sysctl.value = 2;
        }
    }
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let err = attach(&netns, &host, &config).unwrap_err();
    let AttachError::Failed {
        device,
        step,
        source,
        rollback,
    } = &err
    else {
        panic!("not a failed step: {err}");
    };
    assert_eq!(device, &host);
    assert_eq!(
        step,
        &format!("set sysctl ipv6.addr_gen_mode of net1 in {}", netns_path(&ns))
    );
    assert!(matches!(source, StepError::Sysctl(_)), "{source}");
    assert_eq!(rollback, &Rollback::Restored, "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "attach {host}: set sysctl ipv6.addr_gen_mode of net1 in {}: \
             sysctl /proc/sys/net/ipv6/conf/net1/addr_gen_mode: ",
            netns_path(&ns)
        )),
        "{message}"
    );
    assert!(
        message.ends_with("rolled back: the host interfaces are as they were"),
        "{message}"
    );
    assert_eq!(host_snapshot(&host), before);
    // Nothing of the interface is left in the pod.
    let in_pod = Command::new("ip")
        .args(["-n", &ns, "link", "show", "dev", "net1"])
        .output()
        .unwrap();
    assert!(!in_pod.status.success(), "net1 is gone from the pod");
    // Nor the rule it added (rules belong to the namespace, not the interface), so the same
    // attach, with a setting the kernel takes, succeeds.
    assert_eq!(pod_rules(&ns), BTreeSet::new());
    let record = attach(&netns, &host, &valid).unwrap();
    assert_eq!(pod_rules(&ns), set(&["1000: from 10.23.0.0/24 lookup 100"]));
    let detached = detach(&record).unwrap();
    assert_eq!(detached.outcome, DetachOutcome::Returned);
    assert!(detached.incomplete.is_empty(), "{:?}", detached.incomplete);
    assert_eq!(host_snapshot(&host), before);

    // A rule the pod already has: the kernel refuses the configuring datagram (EEXIST).
    let ns = format!("{p}ns2");
    created.netns(&ns);
    ip(&[
        "-n",
        &ns,
        "rule",
        "add",
        "from",
        "10.23.0.0/24",
        "lookup",
        "100",
        "priority",
        "1000",
    ]);
    let config = config_from(serde_json::json!({
        "name": "net1",
        "addresses": ["10.23.0.2/24"],
        "rules": [{"priority": 1000, "from": "10.23.0.0/24", "table": 100}],
        // The sysctls the host has set: only configured ones are recorded and written back
        // (the move makes the interface's `conf` directory anew from the defaults).
        "sysctls": {"ipv4.arp_ignore": 1, "ipv6.addr_gen_mode": 0},
        "gsoMaxSize": 185_000,
        "txQueueLen": 5000,
    }));
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let err = attach(&netns, &host, &config).unwrap_err();
    let AttachError::Failed {
        step, source, rollback, ..
    } = &err
    else {
        panic!("not a failed step: {err}");
    };
    assert_eq!(
        step,
        &format!("add rule 1000: from 10.23.0.0/24 lookup 100 in {}", netns_path(&ns))
    );
    assert_eq!(source.errno(), Some(nix::errno::Errno::EEXIST), "{source}");
    assert_eq!(rollback, &Rollback::Restored, "{err}");
    assert_eq!(host_snapshot(&host), before);
    // The pod's own rule, which the attach did not add, stays.
    assert_eq!(pod_rules(&ns), set(&["1000: from 10.23.0.0/24 lookup 100"]));

    // A GSO size above the device's `tso_max_size` (524280 on veth, which is also the most
    // validation lets through, so the configuration is changed after it): refused on the
    // host, naming the field and the limit, before anything moves.
    let ns = format!("{p}ns3");
    created.netns(&ns);
    let mut config = config_from(serde_json::json!({"name": "net1", "gsoMaxSize": 65_536}));
    config.tuning.gso_max_size = Some(600_000);
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let err = attach(&netns, &host, &config).unwrap_err();
    assert!(
        matches!(
            &err,
            AttachError::Read {
                step,
                source: StepError::Tuning(TuningError::AboveTsoMax {
                    field: "gsoMaxSize",
                    size: 600_000,
                    tso_max_size: 524_280,
                    ..
                }),
                ..
            } if step == "check the GSO sizes against the device's tso_max_size"
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("gsoMaxSize 600000 is above the device's tso_max_size 524280"),
        "{err}"
    );
    assert!(link_exists(&host), "{host} stayed on the host");
    assert_eq!(host_snapshot(&host), before);
}

/// The IPv4 and IPv6 rules of namespace `ns` but the kernel's own (priorities 0, 32766,
/// 32767), as `ip rule` prints them.
fn pod_rules(ns: &str) -> BTreeSet<String> {
    (&lines_in(ns, &["rule", "show"]) | &lines_in(ns, &["-6", "rule", "show"]))
        .into_iter()
        .filter(|l| !["0:", "32766:", "32767:"].iter().any(|p| l.starts_with(p)))
        .collect()
}

#[test]
fn two_interfaces_of_one_pod_with_the_same_rule_add_it_once_and_a_rollback_deletes_it() {
    if !privileged("the shared-rule attach test") {
        return;
    }
    let p = prefix("su");
    let mut created = Created::default();
    let (a, a_peer, b, b_peer) = (format!("{p}a"), format!("{p}ap"), format!("{p}b"), format!("{p}bp"));
    host_veth(&mut created, &a, &a_peer, 226, true);
    host_veth(&mut created, &b, &b_peer, 227, true);
    let (before_a, before_b) = (host_snapshot(&a), host_snapshot(&b));
    // What a DeviceClass configuration gives every request: the same rules, with and without
    // a priority.
    let shared = serde_json::json!([
        {"priority": 1000, "from": "10.24.0.0/16", "table": 100},
        {"to": "fd00:24::/64", "table": 100},
    ]);
    let config_a =
        config_from(serde_json::json!({"name": "net1", "addresses": ["10.24.1.2/24"], "rules": shared.clone()}));
    let config_b = config_from(serde_json::json!({
        "name": "net2",
        "addresses": ["10.24.2.2/24"],
        "rules": [shared[0].clone(), shared[1].clone(), {"priority": 1002, "from": "10.24.2.0/24", "table": 102}],
    }));
    let requests = [AttachRequest::new(&a, &config_a), AttachRequest::new(&b, &config_b)];

    // One call, every rule once.
    let ns = format!("{p}ns0");
    created.netns(&ns);
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let records = attach_all(&netns, &requests).unwrap();
    let shared_in_pod = |extra: &[&str]| {
        let mut rules = vec![
            "1000: from 10.24.0.0/16 lookup 100",
            "1002: from 10.24.2.0/24 lookup 102",
        ];
        rules.extend_from_slice(extra);
        let mut rules = set(&rules);
        // The priority the kernel chose for the rule without one: below the first of its
        // family's after 0 (IPv6 has only the kernel's 32766 then).
        rules.insert("32765: from all to fd00:24::/64 lookup 100".into());
        rules
    };
    assert_eq!(pod_rules(&ns), shared_in_pod(&[]));
    for record in &records {
        let detached = detach(record).unwrap();
        assert!(detached.incomplete.is_empty(), "{:?}", detached.incomplete);
    }
    assert_eq!((&host_snapshot(&a), &host_snapshot(&b)), (&before_a, &before_b));

    // A later step refused (the pod has b's own rule already): the shared rules the call
    // added are deleted in the rollback, the pod's own rule stays, and once it is gone the
    // same attach succeeds.
    let ns = format!("{p}ns1");
    created.netns(&ns);
    let own = [
        "rule",
        "add",
        "from",
        "10.24.2.0/24",
        "lookup",
        "102",
        "priority",
        "1002",
    ];
    ip(&[&["-n", ns.as_str()][..], &own[..]].concat());
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let err = attach_all(&netns, &requests).unwrap_err();
    let AttachError::Failed {
        device,
        step,
        source,
        rollback,
    } = &err
    else {
        panic!("not a failed step: {err}");
    };
    assert_eq!(device, &b);
    assert_eq!(
        step,
        &format!("add rule 1002: from 10.24.2.0/24 lookup 102 in {}", netns_path(&ns))
    );
    assert_eq!(source.errno(), Some(nix::errno::Errno::EEXIST), "{source}");
    assert_eq!(rollback, &Rollback::Restored, "{err}");
    assert_eq!(pod_rules(&ns), set(&["1002: from 10.24.2.0/24 lookup 102"]));
    assert_eq!((&host_snapshot(&a), &host_snapshot(&b)), (&before_a, &before_b));

    ip(&[
        "-n",
        &ns,
        "rule",
        "del",
        "from",
        "10.24.2.0/24",
        "lookup",
        "102",
        "priority",
        "1002",
    ]);
    let records = attach_all(&netns, &requests).unwrap();
    assert_eq!(pod_rules(&ns), shared_in_pod(&[]));
    for record in &records {
        let detached = detach(record).unwrap();
        assert!(detached.incomplete.is_empty(), "{:?}", detached.incomplete);
    }
    assert_eq!((&host_snapshot(&a), &host_snapshot(&b)), (&before_a, &before_b));
}

#[test]
fn settings_come_back_when_the_interface_is_found_on_the_host_under_another_name() {
    if !privileged("the returned-interface settings test") {
        return;
    }
    let p = prefix("sf");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}h"), format!("{p}p"), format!("{p}ns"));
    let other_name = format!("{p}dev7");
    host_veth(&mut created, &host, &peer, 224, true);
    created.record_link(&other_name, None);
    created.netns(&ns);
    set_host_sysctl("ipv4", &host, "arp_ignore", 2);
    let before = host_snapshot(&host);

    let config = config_from(serde_json::json!({
        "name": "net1",
        "addresses": ["10.24.0.2/24"],
        "sysctls": {"ipv4.arp_ignore": 1},
        "ethtool": {"features": {"tx-checksum-ip-generic": false}},
        "gsoMaxSize": 185_000,
        "txQueueLen": 5000,
    }));
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let record = attach(&netns, &host, &config).unwrap();
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
    assert_eq!(host_snapshot(&host), before);
    assert!(!link_exists(&other_name));
}

#[test]
fn an_interface_that_took_the_name_meanwhile_keeps_its_own_settings() {
    if !privileged("the taken-name restore test") {
        return;
    }
    let p = prefix("tn");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}h"), format!("{p}p"), format!("{p}ns"));
    // Unique, since it comes back to the host under it.
    let pod_name = format!("{p}pod");
    host_veth(&mut created, &host, &peer, 220, true);
    created.record_link(&pod_name, None);
    created.netns(&ns);
    set_host_sysctl("ipv4", &host, "arp_ignore", 2);
    let before = host_snapshot(&host);

    let config = config_from(serde_json::json!({
        "name": pod_name,
        "sysctls": {"ipv4.arp_ignore": 1},
        "ethtool": {"features": {"tx-checksum-ip-generic": false}},
        "gsoMaxSize": 185_000,
        "txQueueLen": 5000,
    }));
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let record = attach(&netns, &host, &config).unwrap();
    // Another interface takes the name on the host, with settings of its own.
    let squatter_peer = format!("{p}q");
    created.veth(&host, &squatter_peer, None);
    ip(&["link", "set", &host, "mtu", "1300"]);
    set_host_sysctl("ipv4", &host, "arp_ignore", 3);
    let squatter = host_snapshot(&host);

    let detached = detach(&record).unwrap();
    // Out of the pod, but under its pod name: the rename was refused after the move.
    assert_eq!(detached.outcome, DetachOutcome::Returned);
    assert!(link_exists(&pod_name));
    assert_eq!(
        host_snapshot(&host),
        squatter,
        "the interface holding the name is untouched"
    );
    // The returned interface has its own back, under the name it has now.
    let returned = host_snapshot(&pod_name);
    assert_eq!(returned.sysctls["ipv4.arp_ignore"], before.sysctls["ipv4.arp_ignore"]);
    assert_eq!(returned.features, before.features);
    assert_eq!(returned.tuning, before.tuning);
    assert_eq!(returned.view.addresses, before.view.addresses);
    let renamed = |lines: &BTreeSet<String>, name: &str| -> BTreeSet<String> {
        lines.iter().map(|l| l.replace(name, "IF")).collect()
    };
    assert_eq!(
        renamed(&returned.neighbours, &pod_name),
        renamed(&before.neighbours, &host)
    );
    // The refused rename ended the message before the up flag, so the route through the down
    // link cannot be added; that is reported, not hidden.
    assert!(
        detached.incomplete.iter().all(|p| p.starts_with("restore route to ")),
        "{:?}",
        detached.incomplete
    );
}
