//! Privileged: macvlan subinterfaces of a host veth (the "parent NIC"), created directly in pod
//! namespaces. Two pods on one parent talk to each other; the parent is untouched; deletion
//! takes only the tagged link and is idempotent; a namespace takes its subinterface with it;
//! refusals name their cause and create nothing.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;
mod inside;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use common::*;
use inside::{round_trip, udp_in};
use netdev::{
    DeleteOutcome, Mac, MacvlanMode, Netns, SubinterfaceError, SubinterfaceRecord, SubinterfaceSpec,
    create_subinterface as create, delete_subinterface as delete, delete_subinterface_on_host as delete_on_host,
    subinterface_leftovers as leftovers, subinterface_temporary_name as temporary_name,
};

/// This process's tag prefix: tests running at once (or other processes) never see each
/// other's links.
fn tag_prefix() -> String {
    format!("netdra-test-{}:", std::process::id())
}

fn spec(parent: &str, name: &str, tag: &str) -> SubinterfaceSpec {
    SubinterfaceSpec {
        parent: parent.into(),
        name_in_pod: name.into(),
        mode: MacvlanMode::Bridge,
        mac: None,
        mtu: None,
        up: true,
        tag: format!("{}{tag}", tag_prefix()),
    }
}

/// The host's links but this process's tests' own parents, which tests running at once add and
/// remove.
fn host_links_but_tests() -> BTreeSet<String> {
    let own = format!("{:04}", std::process::id() % 10_000);
    host_links()
        .into_iter()
        .filter(|l| !(l.starts_with('s') && l.get(2..6) == Some(own.as_str())))
        .collect()
}

/// A veth `parent` (with its peer) on the host, both up: a parent NIC with carrier.
fn parent(created: &mut Created, parent: &str, peer: &str) {
    created.veth(parent, peer, None);
    ip(&["link", "set", peer, "up"]);
    ip(&["link", "set", parent, "up"]);
}

/// Opens a pod namespace and records what `create` is about to do, as a caller would.
fn open(ns: &str, spec: &SubinterfaceSpec) -> (Netns, SubinterfaceRecord) {
    let netns = Netns::open(netns_path(ns)).unwrap();
    let record = SubinterfaceRecord::new(spec, Path::new(&netns_path(ns)), netns.inode().unwrap());
    (netns, record)
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

#[test]
fn two_pods_share_one_parent_and_talk_through_it() {
    if !privileged("the subinterface test") {
        return;
    }
    let p = prefix("sv");
    let (par, peer, ns_a, ns_b) = (format!("{p}par"), format!("{p}pp"), format!("{p}a"), format!("{p}b"));
    let mut created = Created::default();
    parent(&mut created, &par, &peer);
    created.netns(&ns_a);
    created.netns(&ns_b);
    let parent_before = host_view(&par);
    let host_before = host_links_but_tests();

    let spec_a = SubinterfaceSpec {
        mac: Some("02:aa:bb:cc:dd:01".parse().unwrap()),
        mtu: Some(1400),
        ..spec(&par, "net1", "claim-a:req")
    };
    let spec_b = spec(&par, "net1", "claim-b:req");
    let (netns_a, record_a) = open(&ns_a, &spec_a);
    let (netns_b, record_b) = open(&ns_b, &spec_b);
    let a = create(&netns_a, &spec_a, &tag_prefix()).unwrap();
    let b = create(&netns_b, &spec_b, &tag_prefix()).unwrap();

    // Each is what its spec says, with its own MAC, in its own namespace.
    for (ns, made, spec) in [(&ns_a, a, &spec_a), (&ns_b, b, &spec_b)] {
        let link = &ip_json(&["-d", "-n", ns, "link", "show", "dev", "net1"])[0];
        assert_eq!(link["ifindex"], made.index, "{link}");
        assert_eq!(link["ifalias"], spec.tag.as_str(), "{link}");
        assert_eq!(link["linkinfo"]["info_kind"], "macvlan", "{link}");
        assert_eq!(link["linkinfo"]["info_data"]["mode"], "bridge", "{link}");
        assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{link}");
        assert_eq!(link["address"], made.mac.unwrap().to_string().as_str(), "{link}");
        assert_eq!(link["mtu"], spec.mtu.unwrap_or(1500), "{link}");
    }
    assert_eq!(a.mac, spec_a.mac);
    assert_ne!(a.mac, b.mac);
    assert_ne!(b.mac.map(|m| m.to_string()), Some(parent_before.mac.clone()));

    // Siblings in bridge mode reach each other through the parent.
    let third = (std::process::id() % 250) as u8;
    let (addr_a, addr_b) = (Ipv4Addr::new(10, 231, third, 1), Ipv4Addr::new(10, 231, third, 2));
    ip(&["-n", &ns_a, "addr", "add", &format!("{addr_a}/24"), "dev", "net1"]);
    ip(&["-n", &ns_b, "addr", "add", &format!("{addr_b}/24"), "dev", "net1"]);
    let socket_a = udp_in(&ns_a, SocketAddrV4::new(addr_a, 0));
    let socket_b = udp_in(&ns_b, SocketAddrV4::new(addr_b, 5555));
    let from = round_trip(&socket_a, &socket_b);
    assert_eq!(from.ip(), std::net::IpAddr::V4(addr_a));

    // The parent never moved or changed, and nothing appeared on the host.
    assert_eq!(host_view(&par), parent_before);
    assert_eq!(host_links_but_tests(), host_before);
    assert!(leftovers(&tag_prefix()).unwrap().is_empty());

    // Deleted, gone, and deleting again finds nothing.
    assert_eq!(delete(&record_a).unwrap(), DeleteOutcome::Deleted);
    assert_eq!(delete(&record_b).unwrap(), DeleteOutcome::Deleted);
    for ns in [&ns_a, &ns_b] {
        assert_eq!(pod_links(ns), BTreeSet::from(["lo".to_owned()]));
    }
    assert_eq!(delete(&record_a).unwrap(), DeleteOutcome::AlreadyGone);
    assert_eq!(delete(&record_b).unwrap(), DeleteOutcome::AlreadyGone);
    assert_eq!(host_view(&par), parent_before);
}

#[test]
fn only_the_tagged_link_is_deleted_even_renamed() {
    if !privileged("the subinterface tag test") {
        return;
    }
    let p = prefix("st");
    let (par, peer, ns) = (format!("{p}par"), format!("{p}pp"), format!("{p}n"));
    let mut created = Created::default();
    parent(&mut created, &par, &peer);
    created.netns(&ns);
    let spec = spec(&par, "net1", "claim:req");
    let (netns, record) = open(&ns, &spec);
    create(&netns, &spec, &tag_prefix()).unwrap();

    // The name is another link's (ours renamed away): that one stays, ours goes by its tag.
    ip(&["-n", &ns, "link", "set", "net1", "down"]);
    ip(&["-n", &ns, "link", "set", "net1", "name", "other1"]);
    ip(&[
        "-n", &ns, "link", "add", "net1", "type", "veth", "peer", "name", "net1p",
    ]);
    assert_eq!(delete(&record).unwrap(), DeleteOutcome::Deleted);
    assert_eq!(
        pod_links(&ns),
        BTreeSet::from(["lo".to_owned(), "net1".to_owned(), "net1p".to_owned()])
    );
    assert_eq!(delete(&record).unwrap(), DeleteOutcome::AlreadyGone);
    assert!(link_exists_in(&ns, "net1"));
}

fn link_exists_in(ns: &str, name: &str) -> bool {
    pod_links(ns).contains(name)
}

#[test]
fn a_namespace_takes_its_subinterface_with_it_wherever_it_is_held() {
    if !privileged("the subinterface namespace test") {
        return;
    }
    let p = prefix("sn");
    let (par, peer, gone, held) = (format!("{p}par"), format!("{p}pp"), format!("{p}g"), format!("{p}h"));
    let mut created = Created::default();
    parent(&mut created, &par, &peer);
    created.netns(&gone);
    created.netns(&held);
    let parent_before = host_view(&par);
    let host_before = host_links_but_tests();

    let spec_gone = spec(&par, "net1", "gone:req");
    let (netns, record_gone) = open(&gone, &spec_gone);
    create(&netns, &spec_gone, &tag_prefix()).unwrap();
    drop(netns);
    ip(&["netns", "del", &gone]);
    // The kernel dismantles the namespace asynchronously; the macvlan never lands on the host.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(delete(&record_gone).unwrap(), DeleteOutcome::AlreadyGone);
    assert_eq!(host_links_but_tests(), host_before);
    assert!(leftovers(&tag_prefix()).unwrap().is_empty());

    // A namespace whose path is gone but which a bind mount holds is found by its inode.
    let spec_held = spec(&par, "net1", "held:req");
    let (netns, record_held) = open(&held, &spec_held);
    create(&netns, &spec_held, &tag_prefix()).unwrap();
    drop(netns);
    let hold = created.hold(&held);
    ip(&["netns", "del", &held]);
    assert_eq!(delete(&record_held).unwrap(), DeleteOutcome::Deleted);
    assert_eq!(delete(&record_held).unwrap(), DeleteOutcome::AlreadyGone);
    created.release(&hold);
    assert_eq!(host_view(&par), parent_before);
}

#[test]
fn a_tagged_link_moved_to_the_host_is_a_leftover_swept_by_its_tag() {
    if !privileged("the subinterface leftover test") {
        return;
    }
    let p = prefix("sl");
    let (par, peer, ns, moved) = (format!("{p}par"), format!("{p}pp"), format!("{p}n"), format!("{p}m"));
    let mut created = Created::default();
    parent(&mut created, &par, &peer);
    created.netns(&ns);
    // A prefix of this test's own: the others, running at once, expect no leftovers of theirs.
    let moved_prefix = format!("netdra-moved-{}:", std::process::id());
    let spec = SubinterfaceSpec {
        tag: format!("{moved_prefix}0abc-1:req"),
        ..spec(&par, &moved, "")
    };
    let (netns, record) = open(&ns, &spec);
    create(&netns, &spec, &moved_prefix).unwrap();
    assert!(!link_exists(&moved), "created in the pod, never on the host");

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
    assert_eq!(delete(&record).unwrap(), DeleteOutcome::AlreadyGone);
    let found = leftovers(&moved_prefix).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].name.as_str(), found[0].tag.as_str()),
        (moved.as_str(), spec.tag.as_str())
    );

    // Another tag at that index is not ours; the right one is.
    let other = format!("{}other", tag_prefix());
    assert_eq!(
        delete_on_host(found[0].index, &other).unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert!(link_exists(&moved));
    assert_eq!(
        delete_on_host(found[0].index, &spec.tag).unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(!link_exists(&moved));
    assert_eq!(
        delete_on_host(found[0].index, &spec.tag).unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert!(link_exists(&par));
}

#[test]
fn refusals_name_their_cause_and_create_nothing() {
    if !privileged("the subinterface refusal test") {
        return;
    }
    let p = prefix("sr");
    let (par, peer, ns, stacked) = (format!("{p}par"), format!("{p}pp"), format!("{p}n"), format!("{p}mv"));
    let mut created = Created::default();
    parent(&mut created, &par, &peer);
    created.netns(&ns);
    created.record_link(&stacked, None);
    ip(&["link", "add", "link", &par, "name", &stacked, "type", "macvlan"]);
    let netns = Netns::open(netns_path(&ns)).unwrap();
    let host_before = host_links_but_tests();
    let only_lo = BTreeSet::from(["lo".to_owned()]);

    let missing = format!("{p}none");
    let err = create(&netns, &spec(&missing, "net1", "x"), &tag_prefix()).unwrap_err();
    assert!(matches!(err, SubinterfaceError::ParentMissing { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("subinterface net1: the parent {missing} does not exist on the host")
    );

    let err = create(&netns, &spec(&stacked, "net1", "x"), &tag_prefix()).unwrap_err();
    assert!(matches!(err, SubinterfaceError::ParentUnusable { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("subinterface net1: the parent {stacked} cannot carry one: it is itself a macvlan")
    );

    let err = create(&netns, &spec("lo", "net1", "x"), &tag_prefix()).unwrap_err();
    assert!(matches!(err, SubinterfaceError::ParentUnusable { .. }), "{err}");

    let err = create(&netns, &spec(&par, "net1", "x"), "another-prefix:").unwrap_err();
    assert!(
        matches!(err, SubinterfaceError::InvalidSpec { field: "tag", .. }),
        "{err}"
    );

    // Larger than the parent's MTU: the kernel's own refusal, named.
    let too_big = SubinterfaceSpec {
        mtu: Some(9000),
        ..spec(&par, "net1", "x")
    };
    let err = create(&netns, &too_big, &tag_prefix()).unwrap_err();
    let SubinterfaceError::Kernel { step, source, .. } = &err else {
        panic!("a kernel refusal: {err}");
    };
    assert_eq!(step, &format!("create it on {par} in {}", netns_path(&ns)));
    let netdev::RtnlError::Kernel(kernel) = source else {
        panic!("a kernel refusal: {err}");
    };
    assert_eq!(kernel.errno, nix::errno::Errno::EINVAL, "{err}");
    eprintln!("MTU refusal: {err}");
    assert_eq!(pod_links(&ns), only_lo);

    // The name is taken in the pod (by a veth there): nothing new, the other link intact.
    ip(&[
        "-n", &ns, "link", "add", "net1", "type", "veth", "peer", "name", "net1p",
    ]);
    let err = create(&netns, &spec(&par, "net1", "x"), &tag_prefix()).unwrap_err();
    assert!(matches!(err, SubinterfaceError::NameTaken { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "subinterface net1 on {par}: the name is already taken in {}",
            netns_path(&ns)
        )
    );
    assert_eq!(
        pod_links(&ns),
        BTreeSet::from(["lo".to_owned(), "net1".to_owned(), "net1p".to_owned()])
    );

    // A name taken on the host only is free in the pod.
    let on_host = SubinterfaceSpec {
        mac: Some(Mac([0x02, 0, 0, 0, 0, 0x42])),
        ..spec(&par, &peer, "y")
    };
    let made = create(&netns, &on_host, &tag_prefix()).unwrap();
    assert_eq!(made.mac, on_host.mac);
    assert!(link_exists_in(&ns, &peer));

    assert_eq!(host_links_but_tests(), host_before);
    assert!(leftovers(&tag_prefix()).unwrap().is_empty());
}

/// The MAC `ip` shows for `name` in namespace `ns`.
fn pod_mac(ns: &str, name: &str) -> String {
    ip_json(&["-n", ns, "link", "show", "dev", name])[0]["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_pod_name_that_is_a_host_links_name_is_free_in_the_pod() {
    if !privileged("the subinterface host-name test") {
        return;
    }
    // Before Linux 6.15 the kernel checked a new link's name in the socket's namespace: these
    // two failed with EEXIST had the link been created under its final name.
    let p = prefix("sh");
    let (par, peer, ns) = (format!("{p}par"), format!("{p}pp"), format!("{p}n"));
    let mut created = Created::default();
    parent(&mut created, &par, &peer);
    created.netns(&ns);
    let host_before = host_links_but_tests();
    eprintln!(
        "kernel {}",
        String::from_utf8_lossy(&std::process::Command::new("uname").arg("-r").output().unwrap().stdout).trim()
    );

    let as_parent = spec(&par, &par, "0a:own");
    let as_peer = spec(&par, &peer, "0b:other");
    let (netns, record_parent) = open(&ns, &as_parent);
    let (_, record_peer) = open(&ns, &as_peer);
    let made = create(&netns, &as_parent, &tag_prefix()).unwrap();
    create(&netns, &as_peer, &tag_prefix()).unwrap();
    assert_eq!(
        pod_links(&ns),
        BTreeSet::from(["lo".to_owned(), par.clone(), peer.clone()])
    );
    for (name, spec, record) in [(&par, &as_parent, &record_parent), (&peer, &as_peer, &record_peer)] {
        let link = &ip_json(&["-d", "-n", &ns, "link", "show", "dev", name])[0];
        assert_eq!(link["ifalias"], spec.tag.as_str(), "{link}");
        assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{link}");
        // The MAC was known before the kernel acted: the record's is what the pod shows.
        assert_eq!(record.mac_in_pod.unwrap().to_string(), pod_mac(&ns, name));
        assert!(!link_exists_in(&ns, &temporary_name(&spec.tag)));
    }
    assert_eq!(made.mac, record_parent.mac_in_pod);
    let mac = record_parent.mac_in_pod.unwrap().0;
    assert_eq!(mac[0] & 0x03, 0x02, "locally administered unicast");
    assert_eq!(host_links_but_tests(), host_before);

    assert_eq!(delete(&record_parent).unwrap(), DeleteOutcome::Deleted);
    assert_eq!(delete(&record_peer).unwrap(), DeleteOutcome::Deleted);
    assert_eq!(pod_links(&ns), BTreeSet::from(["lo".to_owned()]));
    assert!(link_exists(&par) && link_exists(&peer));
}

#[test]
fn a_crash_before_the_rename_leaves_a_link_that_delete_finds_by_its_temporary_name() {
    if !privileged("the subinterface temporary-name test") {
        return;
    }
    let p = prefix("sc");
    let (par, peer, ns) = (format!("{p}par"), format!("{p}pp"), format!("{p}n"));
    let mut created = Created::default();
    parent(&mut created, &par, &peer);
    created.netns(&ns);
    let spec = spec(&par, "net1", "0c:req");
    let (_netns, record) = open(&ns, &spec);
    let temporary = temporary_name(&spec.tag);

    // What a crash between the creation and the rename leaves: a macvlan, untagged, down,
    // under the temporary name.
    ip(&[
        "link", "add", "link", &par, "name", &temporary, "netns", &ns, "type", "macvlan", "mode", "bridge",
    ]);
    assert!(link_exists_in(&ns, &temporary));
    assert_eq!(delete(&record).unwrap(), DeleteOutcome::Deleted);
    assert_eq!(pod_links(&ns), BTreeSet::from(["lo".to_owned()]));
    assert_eq!(delete(&record).unwrap(), DeleteOutcome::AlreadyGone);

    // A link of another kind under that name is not ours; nor a macvlan tagged otherwise.
    ip(&[
        "-n", &ns, "link", "add", &temporary, "type", "veth", "peer", "name", "net1p",
    ]);
    assert_eq!(delete(&record).unwrap(), DeleteOutcome::AlreadyGone);
    assert!(link_exists_in(&ns, &temporary));
    ip(&["-n", &ns, "link", "del", &temporary]);
    ip(&[
        "link", "add", "link", &par, "name", &temporary, "netns", &ns, "type", "macvlan",
    ]);
    ip(&["-n", &ns, "link", "set", &temporary, "alias", "someone-else"]);
    assert_eq!(delete(&record).unwrap(), DeleteOutcome::AlreadyGone);
    assert!(link_exists_in(&ns, &temporary));
}

#[test]
fn the_sweep_takes_only_macvlans_with_the_exact_tag_shape() {
    if !privileged("the subinterface sweep test") {
        return;
    }
    let p = prefix("sw");
    let (par, peer) = (format!("{p}par"), format!("{p}pp"));
    let (veth_a, veth_b) = (format!("{p}va"), format!("{p}vb"));
    let (veth_c, veth_d) = (format!("{p}vc"), format!("{p}vd"));
    let (bad, good) = (format!("{p}mb"), format!("{p}mg"));
    let mut created = Created::default();
    parent(&mut created, &par, &peer);
    created.veth(&veth_a, &veth_b, None);
    created.veth(&veth_c, &veth_d, None);
    created.record_link(&bad, None);
    created.record_link(&good, None);
    ip(&["link", "add", "link", &par, "name", &bad, "type", "macvlan"]);
    ip(&["link", "add", "link", &par, "name", &good, "type", "macvlan"]);
    // A prefix of this test's own: the others, running at once, expect no leftovers of theirs.
    let sweep_prefix = format!("netdra-sweep-{}:", std::process::id());
    let well_formed = format!("{sweep_prefix}0f4c7e12-3a4b:net1");
    let operators = format!("{sweep_prefix}fast");
    let malformed = format!("{sweep_prefix}claim:Net_1");
    ip(&["link", "set", &veth_a, "alias", &operators]);
    ip(&["link", "set", &veth_c, "alias", &well_formed]);
    ip(&["link", "set", &bad, "alias", &malformed]);
    ip(&["link", "set", &good, "alias", &well_formed]);
    let index = |name: &str| ip_json(&["link", "show", "dev", name])[0]["ifindex"].as_u64().unwrap() as u32;

    let found = leftovers(&sweep_prefix).unwrap();
    assert_eq!(
        found
            .iter()
            .map(|l| (l.name.as_str(), l.tag.as_str()))
            .collect::<Vec<_>>(),
        vec![(good.as_str(), well_formed.as_str())]
    );
    // Not macvlans: never deleted, whatever the alias.
    assert_eq!(
        delete_on_host(index(&veth_a), &operators).unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert_eq!(
        delete_on_host(index(&veth_c), &well_formed).unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert!(link_exists(&veth_a) && link_exists(&veth_c) && link_exists(&bad));
    assert_eq!(
        delete_on_host(found[0].index, &found[0].tag).unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(!link_exists(&good));
    assert!(link_exists(&par) && link_exists(&bad));
}
