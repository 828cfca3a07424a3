//! Privileged: finding a recorded interface after the fact. A pod namespace whose path was
//! deleted (or reused by another namespace) is still found while a bind mount or a process
//! holds it, and detach brings the interface back from there; an interface that never moved is
//! on the host; a veth whose namespace died is gone.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use netdev::{
    AttachRequest, DetachOutcome, InterfaceConfig, Location, Netns, ValidConfig, attach, detach, find_netns, locate,
    record_all,
};

/// A name, an MTU and an address: what detach must undo.
fn config(third_octet: u8) -> ValidConfig {
    InterfaceConfig {
        name: Some("net1".into()),
        mtu: Some(1400),
        addresses: vec![format!("10.12.{third_octet}.2/24")],
        ..InterfaceConfig::default()
    }
    .validate()
    .unwrap()
}

fn in_pod() -> Location {
    Location::InPod { name: "net1".into() }
}

#[test]
fn a_namespace_held_by_a_bind_mount_is_found_after_its_path_is_deleted_and_reused() {
    if !privileged("the held-namespace test") {
        return;
    }
    let p = prefix("hb");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}h"), format!("{p}p"), format!("{p}ns"));
    host_veth(&mut created, &host, &peer, 249, true);
    created.netns(&ns);
    let before = host_view(&host);

    let netns = Netns::open(netns_path(&ns)).unwrap();
    let record = attach(&netns, &host, &config(249)).unwrap();
    // Our own descriptor would hold the namespace too: only the bind mount may.
    drop(netns);
    let hold = created.hold(&ns);
    ip(&["netns", "del", &ns]);
    assert!(!Path::new(&netns_path(&ns)).exists(), "ip netns del removed the path");
    let inode = record.netns_inode.unwrap();
    assert_eq!(find_netns(inode), Some(hold.clone()));
    assert_eq!(locate(&record).unwrap(), in_pod());

    // The name reused for a new namespace: not taken for the recorded one.
    ip(&["netns", "add", &ns]);
    assert_ne!(std::fs::metadata(netns_path(&ns)).unwrap().ino(), inode);
    assert_eq!(locate(&record).unwrap(), in_pod());

    let detached = detach(&record).unwrap();
    assert_eq!(detached.outcome, DetachOutcome::Returned);
    assert!(detached.incomplete.is_empty(), "{:?}", detached.incomplete);
    assert_eq!(host_view(&host), before, "name, MTU and address back");
    assert_eq!(locate(&record).unwrap(), Location::OnHost { name: host.clone() });
    created.release(&hold);
    assert!(!hold.exists());
}

#[test]
fn a_namespace_held_by_a_process_is_found_through_proc() {
    if !privileged("the process-held namespace test") {
        return;
    }
    let p = prefix("hp");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}h"), format!("{p}p"), format!("{p}ns"));
    host_veth(&mut created, &host, &peer, 250, true);
    created.netns(&ns);
    let before = host_view(&host);

    let netns = Netns::open(netns_path(&ns)).unwrap();
    let record = attach(&netns, &host, &config(250)).unwrap();
    drop(netns);
    let pid = created.process_in(&ns);
    ip(&["netns", "del", &ns]);
    assert_eq!(
        find_netns(record.netns_inode.unwrap()),
        Some(PathBuf::from(format!("/proc/{pid}/ns/net")))
    );
    assert_eq!(locate(&record).unwrap(), in_pod());

    let detached = detach(&record).unwrap();
    assert_eq!(detached.outcome, DetachOutcome::Returned);
    assert!(detached.incomplete.is_empty(), "{:?}", detached.incomplete);
    assert_eq!(host_view(&host), before);
}

#[test]
fn an_interface_never_moved_is_on_the_host_and_a_veth_whose_namespace_died_is_gone() {
    if !privileged("the locate test") {
        return;
    }
    let p = prefix("lg");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}h"), format!("{p}p"), format!("{p}ns"));
    host_veth(&mut created, &host, &peer, 251, true);
    created.netns(&ns);

    let netns = Netns::open(netns_path(&ns)).unwrap();
    let config = config(251);
    let recorded = record_all(&netns, &[AttachRequest::new(&host, &config)])
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(locate(&recorded).unwrap(), Location::OnHost { name: host.clone() });

    let record = attach(&netns, &host, &config).unwrap();
    assert_eq!(locate(&record).unwrap(), in_pod());
    drop(netns);
    ip(&["netns", "del", &ns]);
    wait_gone(&peer);
    assert!(!link_exists(&peer), "the veth died with its namespace");
    assert_eq!(locate(&record).unwrap(), Location::Gone);
    assert_eq!(detach(&record).unwrap().outcome, DetachOutcome::Vanished);
}
