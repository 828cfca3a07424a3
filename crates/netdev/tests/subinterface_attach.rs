//! Privileged: shared NICs through the attach path. A macvlan subinterface of a host veth (the
//! parent) is attached, located, checked for health and detached with the same records and
//! calls as a moved interface; the parent never moves or changes; a failed attach deletes what
//! it made; a subinterface gone with its namespace is reported gone, never confused with its
//! parent.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;
mod inside;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use common::*;
use inside::{round_trip, udp_in};
use netdev::{
    AttachError, AttachRequest, DetachOutcome, InterfaceConfig, Location, MacvlanMode, Netns, Placement, RestoreRecord,
    RouteConfig, Subinterface, ValidConfig, attach_all, attach_recorded, detach, locate, pod_link_state, record_all,
};

/// This process's tag prefix: tests running at once (or other processes) never see each
/// other's links.
fn tag(what: &str) -> String {
    format!("netdra-test-{}:{what}", std::process::id())
}

fn macvlan(what: &str) -> Placement {
    Placement::Macvlan {
        mode: MacvlanMode::Bridge,
        tag: tag(what),
    }
}

fn config(name: &str, address: Option<String>) -> ValidConfig {
    InterfaceConfig {
        name: Some(name.into()),
        addresses: address.into_iter().collect(),
        ..InterfaceConfig::default()
    }
    .validate()
    .unwrap()
}

/// The host's links but this binary's own test links (all named `q?NNNN…`), which tests
/// running at once add and remove.
fn host_links_but_tests() -> BTreeSet<String> {
    let own = format!("{:04}", std::process::id() % 10_000);
    host_links()
        .into_iter()
        .filter(|l| !(l.starts_with('q') && l.get(2..6) == Some(own.as_str())))
        .collect()
}

/// The names of namespace `ns`'s links.
fn pod_links(ns: &str) -> BTreeSet<String> {
    ip_json(&["-n", ns, "link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect()
}

fn only_lo() -> BTreeSet<String> {
    BTreeSet::from(["lo".to_owned()])
}

/// A parent NIC: a host veth with an address and a route (`192.168.<octet>.0/24`, one per
/// test: they run at once), up, its peer up (carrier).
fn parent(created: &mut Created, par: &str, peer: &str, octet: u8) {
    host_veth(created, par, peer, octet, true);
}

/// The parent as the kernel knows it, index included: it must never be renamed or moved.
fn parent_state(par: &str) -> (HostView, u64) {
    let index = ip_json(&["link", "show", "dev", par])[0]["ifindex"].as_u64().unwrap();
    (host_view(par), index)
}

#[test]
fn two_pods_share_a_parent_through_attach_and_detach() {
    if !privileged("the shared-NIC attach test") {
        return;
    }
    let p = prefix("qs");
    let (par, peer, ns_a, ns_b) = (format!("{p}par"), format!("{p}pp"), format!("{p}a"), format!("{p}b"));
    let mut created = Created::default();
    parent(&mut created, &par, &peer, 221);
    created.netns(&ns_a);
    created.netns(&ns_b);
    let parent_before = parent_state(&par);
    let host_before = host_links_but_tests();

    let third = (std::process::id() % 250) as u8;
    let (addr_a, addr_b) = (Ipv4Addr::new(10, 232, third, 1), Ipv4Addr::new(10, 232, third, 2));
    let mac_a = "02:aa:bb:cc:dd:11";
    let config_a = InterfaceConfig {
        hardware_address: Some(mac_a.into()),
        ..InterfaceConfig {
            name: Some("net1".into()),
            addresses: vec![format!("{addr_a}/24")],
            ..InterfaceConfig::default()
        }
    }
    .validate()
    .unwrap();
    let config_b = config("net1", Some(format!("{addr_b}/24")));
    let (placement_a, placement_b) = (macvlan("claim-a:net1"), macvlan("claim-b:net1"));
    let netns_a = Netns::open(netns_path(&ns_a)).unwrap();
    let netns_b = Netns::open(netns_path(&ns_b)).unwrap();
    let request = |config, placement| AttachRequest::new(&par, config).placed(placement);
    let record_a = attach_all(&netns_a, &[request(&config_a, &placement_a)])
        .unwrap()
        .pop()
        .unwrap();
    let record_b = attach_all(&netns_b, &[request(&config_b, &placement_b)])
        .unwrap()
        .pop()
        .unwrap();

    // The records: the parent's link state with nothing of it to restore, and the subinterface.
    for (record, placement) in [(&record_a, &placement_a), (&record_b, &placement_b)] {
        let Placement::Macvlan { mode, tag } = placement else {
            panic!("a macvlan placement");
        };
        assert_eq!(
            record.subinterface,
            Some(Subinterface {
                mode: *mode,
                tag: tag.clone()
            })
        );
        assert_eq!(record.host.name, par);
        assert_eq!(u64::from(record.host.index), parent_before.1);
        assert_eq!(u64::from(record.host.mtu), parent_before.0.mtu);
        assert!(record.host.addresses.is_empty() && record.host.routes.is_empty());
        assert!(record.host.settings.is_empty());
        assert_eq!(record.name_in_pod, "net1");
    }
    assert_eq!(record_a.mac_in_pod.map(|m| m.to_string()).as_deref(), Some(mac_a));
    // Without a configured MAC, one derived from the tag: known when recorded.
    let mac_b = record_b.mac_in_pod.expect("a MAC before the kernel acts");
    assert_eq!(mac_b.0[0] & 0x03, 0x02, "locally administered unicast");

    // Each pod has its macvlan, tagged, with its own MAC and address.
    let mut macs = BTreeSet::new();
    for (ns, record, address) in [(&ns_a, &record_a, addr_a), (&ns_b, &record_b, addr_b)] {
        let link = &ip_json(&["-d", "-n", ns, "link", "show", "dev", "net1"])[0];
        assert_eq!(link["linkinfo"]["info_kind"], "macvlan", "{link}");
        assert_eq!(link["linkinfo"]["info_data"]["mode"], "bridge", "{link}");
        assert_eq!(
            link["ifalias"],
            record.subinterface.as_ref().unwrap().tag.as_str(),
            "{link}"
        );
        assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{link}");
        macs.insert(link["address"].as_str().unwrap().to_owned());
        assert_eq!(
            link["address"],
            record.mac_in_pod.unwrap().to_string().as_str(),
            "{link}"
        );
        let addresses = &ip_json(&["-n", ns, "-4", "addr", "show", "dev", "net1"])[0]["addr_info"];
        assert_eq!(addresses[0]["local"], address.to_string().as_str(), "{addresses}");
        assert_eq!(pod_links(ns), BTreeSet::from(["lo".to_owned(), "net1".to_owned()]));
    }
    assert!(macs.contains(mac_a));
    assert_eq!(macs.len(), 2, "{macs:?}");
    assert!(!macs.contains(&parent_before.0.mac));

    // The two pods talk through the parent.
    let socket_a = udp_in(&ns_a, SocketAddrV4::new(addr_a, 0));
    let socket_b = udp_in(&ns_b, SocketAddrV4::new(addr_b, 5556));
    assert_eq!(round_trip(&socket_a, &socket_b).ip(), std::net::IpAddr::V4(addr_a));

    // The parent never moved or changed, and nothing appeared on the host.
    assert_eq!(parent_state(&par), parent_before);
    assert_eq!(host_links_but_tests(), host_before);

    // Located, and healthy, in its pod: found by its tag, never as the parent.
    for record in [&record_a, &record_b] {
        assert_eq!(locate(record).unwrap(), Location::InPod { name: "net1".into() });
        let state = pod_link_state(record).unwrap().expect("in the pod");
        assert_eq!(state.name, "net1");
        assert!(state.admin_up && state.carrier, "{state:?}");
    }

    // Detached: deleted, and only it; again: nothing left.
    drop((socket_a, socket_b));
    let detached = detach(&record_a).unwrap();
    assert_eq!(detached.outcome, DetachOutcome::Deleted);
    assert!(detached.incomplete.is_empty(), "{:?}", detached.incomplete);
    assert_eq!(pod_links(&ns_a), only_lo());
    assert_eq!(pod_links(&ns_b), BTreeSet::from(["lo".to_owned(), "net1".to_owned()]));
    assert_eq!(parent_state(&par), parent_before);
    assert_eq!(detach(&record_a).unwrap().outcome, DetachOutcome::Vanished);
    assert_eq!(locate(&record_a).unwrap(), Location::Gone);
    assert_eq!(pod_link_state(&record_a).unwrap(), None);
    assert_eq!(detach(&record_b).unwrap().outcome, DetachOutcome::Deleted);
    assert_eq!(pod_links(&ns_b), only_lo());
    assert_eq!(parent_state(&par), parent_before);
    assert_eq!(host_links_but_tests(), host_before);
}

#[test]
fn a_failing_attach_deletes_its_subinterfaces_and_returns_what_moved() {
    if !privileged("the shared-NIC rollback test") {
        return;
    }
    let p = prefix("qf");
    let (par, peer, moved, moved_peer, ns) = (
        format!("{p}par"),
        format!("{p}pp"),
        format!("{p}mv"),
        format!("{p}mp"),
        format!("{p}n"),
    );
    let mut created = Created::default();
    parent(&mut created, &par, &peer, 222);
    host_veth(&mut created, &moved, &moved_peer, 225, true);
    created.netns(&ns);
    let parent_before = parent_state(&par);
    let moved_before = host_view(&moved);
    let host_before = host_links_but_tests();
    let netns = Netns::open(netns_path(&ns)).unwrap();
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&["-n", &ns, "route", "add", "10.99.0.0/16", "dev", "lo"]);

    // A moved interface, a good subinterface, and one whose route the kernel refuses (the pod
    // has it already, as a CNI might have set it up): all or none.
    let third = (std::process::id() % 250) as u8;
    let moved_config = config("net0", None);
    let good = config("net1", Some(format!("10.233.{third}.2/24")));
    let bad = InterfaceConfig {
        name: Some("net2".into()),
        addresses: vec![format!("10.234.{third}.2/24")],
        routes: vec![RouteConfig {
            destination: "10.99.0.0/16".into(),
            gateway: Some(format!("10.234.{third}.1")),
            ..RouteConfig::default()
        }],
        ..InterfaceConfig::default()
    }
    .validate()
    .unwrap();
    let (placement_1, placement_2) = (macvlan("claim:net1"), macvlan("claim:net2"));
    let requests = [
        AttachRequest::new(&moved, &moved_config),
        AttachRequest::new(&par, &good).placed(&placement_1),
        AttachRequest::new(&par, &bad).placed(&placement_2),
    ];
    let err = attach_all(&netns, &requests).unwrap_err();
    let AttachError::Failed {
        device, step, rollback, ..
    } = &err
    else {
        panic!("a failed step: {err}");
    };
    assert_eq!(device, &par, "{err}");
    assert!(step.contains("add route"), "{err}");
    assert_eq!(rollback, &netdev::Rollback::Restored, "{err}");
    assert_eq!(pod_links(&ns), only_lo());
    assert_eq!(host_view(&moved), moved_before);
    assert_eq!(parent_state(&par), parent_before);
    assert_eq!(host_links_but_tests(), host_before);

    // The name taken in the pod: refused before anything is made, the other link intact.
    ip(&[
        "-n", &ns, "link", "add", "net1", "type", "veth", "peer", "name", "net1p",
    ]);
    let taken = [AttachRequest::new(&par, &good).placed(&placement_1)];
    let err = attach_all(&netns, &taken).unwrap_err();
    assert!(matches!(err, AttachError::NameTaken { .. }), "{err}");
    assert_eq!(
        pod_links(&ns),
        BTreeSet::from(["lo".to_owned(), "net1".to_owned(), "net1p".to_owned()])
    );
    assert_eq!(parent_state(&par), parent_before);

    // Carrying the parent's addresses, a missing parent, a tag without a prefix: refused
    // before anything is read or made.
    let carry = [AttachRequest::new(&par, &good)
        .carrying_host_addresses(true)
        .placed(&placement_1)];
    let err = attach_all(&netns, &carry).unwrap_err();
    assert!(matches!(err, AttachError::CarryWithSubinterface { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "attach {par}: a macvlan subinterface cannot carry the host addresses: they belong to {par}, \
             its parent, which stays on the host"
        )
    );
    let missing = format!("{p}none");
    let err = attach_all(&netns, &[AttachRequest::new(&missing, &bad).placed(&placement_2)]).unwrap_err();
    assert!(matches!(err, AttachError::NoSuchDevice { .. }), "{err}");
    let untagged = Placement::Macvlan {
        mode: MacvlanMode::Bridge,
        tag: "no-prefix".into(),
    };
    let err = attach_all(&netns, &[AttachRequest::new(&par, &bad).placed(&untagged)]).unwrap_err();
    assert!(matches!(err, AttachError::InvalidSubinterface { .. }), "{err}");
    // Passthru would change the parent: refused before anything is read or made.
    let passthru = Placement::Macvlan {
        mode: MacvlanMode::Passthru,
        tag: tag("claim:passthru"),
    };
    let err = attach_all(&netns, &[AttachRequest::new(&par, &bad).placed(&passthru)]).unwrap_err();
    assert!(matches!(err, AttachError::InvalidSubinterface { .. }), "{err}");
    assert!(err.to_string().contains("passthru is not supported"), "{err}");
    assert_eq!(
        pod_links(&ns),
        BTreeSet::from(["lo".to_owned(), "net1".to_owned(), "net1p".to_owned()])
    );
    assert_eq!(parent_state(&par), parent_before);
    assert_eq!(host_links_but_tests(), host_before);
}

#[test]
fn a_journaled_subinterface_gone_with_its_namespace_is_never_taken_for_its_parent() {
    if !privileged("the shared-NIC namespace test") {
        return;
    }
    let p = prefix("qg");
    let (par, peer, ns) = (format!("{p}par"), format!("{p}pp"), format!("{p}n"));
    let mut created = Created::default();
    parent(&mut created, &par, &peer, 223);
    created.netns(&ns);
    let parent_before = parent_state(&par);
    let host_before = host_links_but_tests();

    // Write-ahead: recorded (and journaled as JSON), then attached from the journal.
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let good = config("net1", None);
    let placement = macvlan("claim:net1");
    let requests = [AttachRequest::new(&par, &good).placed(&placement)];
    let records = record_all(&netns, &requests).unwrap();
    assert_eq!(pod_links(&ns), only_lo(), "recording changes nothing");
    let journaled: Vec<RestoreRecord> = serde_json::from_str(&serde_json::to_string(&records).unwrap()).unwrap();
    assert_eq!(journaled, records);

    // A record of another subinterface is not this request's.
    let mut other = journaled.clone();
    other[0].subinterface = Some(Subinterface {
        mode: MacvlanMode::Bridge,
        tag: tag("another:net1"),
    });
    let err = attach_recorded(&netns, &requests, &other).unwrap_err();
    assert!(matches!(err, AttachError::NotItsRecord { .. }), "{err}");

    attach_recorded(&netns, &requests, &journaled).unwrap();
    let record = &journaled[0];
    assert_eq!(locate(record).unwrap(), Location::InPod { name: "net1".into() });

    // The namespace dies, and its subinterface with it: gone, never the parent.
    drop(netns);
    ip(&["netns", "del", &ns]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(locate(record).unwrap(), Location::Gone);
    assert_eq!(pod_link_state(record).unwrap(), None);
    let detached = detach(record).unwrap();
    assert_eq!(detached.outcome, DetachOutcome::Vanished);
    assert!(detached.incomplete.is_empty(), "{:?}", detached.incomplete);
    assert_eq!(detach(record).unwrap().outcome, DetachOutcome::Vanished);
    assert_eq!(
        parent_state(&par),
        parent_before,
        "the parent is never renamed or moved"
    );
    assert_eq!(host_links_but_tests(), host_before);
}

#[test]
fn a_subinterface_moved_to_the_host_is_located_there_and_deleted_by_its_tag() {
    if !privileged("the shared-NIC leftover test") {
        return;
    }
    let p = prefix("ql");
    let (par, peer, ns, moved) = (format!("{p}par"), format!("{p}pp"), format!("{p}n"), format!("{p}m"));
    let mut created = Created::default();
    parent(&mut created, &par, &peer, 224);
    created.netns(&ns);
    let parent_before = parent_state(&par);
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let good = config(&moved, None);
    let placement = macvlan("claim:leftover");
    let record = attach_all(&netns, &[AttachRequest::new(&par, &good).placed(&placement)])
        .unwrap()
        .pop()
        .unwrap();

    // Someone moves it to the host (our own namespace, by this process's ID).
    created.record_link(&moved, None);
    ip(&[
        "-n",
        &ns,
        "link",
        "set",
        &moved,
        "netns",
        &std::process::id().to_string(),
    ]);
    assert_eq!(locate(&record).unwrap(), Location::OnHost { name: moved.clone() });
    assert_eq!(detach(&record).unwrap().outcome, DetachOutcome::Deleted);
    assert!(!link_exists(&moved));
    assert_eq!(locate(&record).unwrap(), Location::Gone);
    assert_eq!(detach(&record).unwrap().outcome, DetachOutcome::Vanished);
    assert_eq!(parent_state(&par), parent_before);
}

#[test]
fn a_subinterface_left_under_its_temporary_name_is_located_and_detached() {
    if !privileged("the shared-NIC temporary-name test") {
        return;
    }
    let p = prefix("qt");
    let (par, peer, ns) = (format!("{p}par"), format!("{p}pp"), format!("{p}n"));
    let mut created = Created::default();
    parent(&mut created, &par, &peer, 229);
    created.netns(&ns);
    let parent_before = parent_state(&par);
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let good = config("net1", None);
    let placement = macvlan("0d:net1");
    let requests = [AttachRequest::new(&par, &good).placed(&placement)];
    let record = record_all(&netns, &requests).unwrap().pop().unwrap();

    // A crash between the creation and the rename: an untagged macvlan, temporary name.
    let Placement::Macvlan { tag, .. } = &placement else {
        panic!("a macvlan placement");
    };
    let temporary = netdev::subinterface_temporary_name(tag);
    ip(&[
        "link", "add", "link", &par, "name", &temporary, "netns", &ns, "type", "macvlan",
    ]);
    assert_eq!(
        locate(&record).unwrap(),
        Location::InPod {
            name: temporary.clone()
        }
    );
    assert_eq!(detach(&record).unwrap().outcome, DetachOutcome::Deleted);
    assert_eq!(pod_links(&ns), only_lo());
    assert_eq!(locate(&record).unwrap(), Location::Gone);
    assert_eq!(parent_state(&par), parent_before);
}
