//! Privileged: real veth pairs on this host, the inventory watcher, the slice publisher and the
//! fake API server together. An interface created on the host is published within 1 s, a
//! deleted one is gone within 1 s, and one moved into a namespace while held stays published.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../../netdev/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use kubeletplugin::{PoolSpec, SlicePublisher};
use netdev::Sysfs;
use netdev_k8s::{DeviceFilter, Inventory, InventoryConfig, InventoryWatcher, WatchOptions};
use testkit::{FakeApiServer, RESOURCE_SLICES};

const DRIVER: &str = "netdra.test";

/// The interface names in the published slices.
fn published(api: &FakeApiServer) -> Vec<String> {
    api.objects(&RESOURCE_SLICES)
        .iter()
        .flat_map(|s| s["spec"]["devices"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| d["attributes"]["ifName"]["string"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `f` holds; returns how long that took, or panics after `limit`.
async fn within(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_interfaces_are_published_and_unpublished_and_held_ones_stay() {
    if !privileged("the veth inventory test") {
        return;
    }
    let p = prefix("nv");
    let mut created = Created::default();

    let api = FakeApiServer::start().await.unwrap();
    // Only this test's interfaces: other tests and the host's own links stay out.
    let filter = DeviceFilter::parse(Some(&format!(
        r#"device.attributes["{DRIVER}"].ifName.startsWith("{p}")"#
    )))
    .unwrap();
    let inventory = Inventory::new(InventoryConfig::new(DRIVER, Sysfs::default(), filter));
    let watcher = InventoryWatcher::start(inventory, WatchOptions::default())
        .await
        .unwrap();
    let publisher = SlicePublisher::start(api.client(), PoolSpec::new(DRIVER, "veth-node")).await;
    let publishing = tokio::spawn(publisher.run(watcher.devices()));

    // Created on the host: published within 1 s.
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    created.veth(&a, &b, None);
    let appeared = within("created veth published", Duration::from_secs(1), || {
        let names = published(&api);
        names.contains(&a) && names.contains(&b)
    })
    .await;

    // Deleted: gone within 1 s.
    ip(&["link", "del", &a]);
    let disappeared = within("deleted veth unpublished", Duration::from_secs(1), || {
        let names = published(&api);
        !names.contains(&a) && !names.contains(&b)
    })
    .await;

    // Held (allocated) and moved into a pod's namespace: still published after the scans
    // that no longer see it.
    let (c, d, ns) = (format!("{p}c"), format!("{p}d"), format!("{p}ns"));
    created.netns(&ns);
    created.veth(&c, &d, None);
    within("second veth published", Duration::from_secs(1), || {
        published(&api).contains(&c)
    })
    .await;
    watcher.holds().hold(&c);
    let scans_before = watcher.scans();
    ip(&["link", "set", &c, "netns", &ns]);
    assert!(!link_exists(&c), "{c} left the host namespace");
    within("a scan after the move", Duration::from_secs(1), || {
        watcher.scans() > scans_before
    })
    .await;
    // Give the publisher time to act on that scan; it must keep the device.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names = published(&api);
    assert!(
        names.contains(&c),
        "held device {c} stays published while in a namespace: {names:?}"
    );
    assert!(names.contains(&d), "its peer on the host is still published: {names:?}");

    // Released (the pod is gone for good): the scan's view wins and it is unpublished.
    watcher.holds().release(&c);
    let released = within("released device unpublished", Duration::from_secs(1), || {
        !published(&api).contains(&c)
    })
    .await;
    // A burst (20 pairs in one batch) is coalesced: a few scans, not one per notification.
    let scans_before = watcher.scans();
    let mut batch = String::new();
    let burst: Vec<String> = (0..20).map(|i| format!("{p}e{i}")).collect();
    for (i, name) in burst.iter().enumerate() {
        batch.push_str(&format!("link add {name} type veth peer name {p}f{i}\n"));
        created.record_link(name, None);
    }
    ip_batch(&batch);
    let burst_published = within("a burst of 40 interfaces published", Duration::from_secs(1), || {
        let names = published(&api);
        burst.iter().all(|n| names.contains(n))
    })
    .await;
    let burst_scans = watcher.scans() - scans_before;
    assert!(
        (1..=4).contains(&burst_scans),
        "{burst_scans} scans for one burst of 40 links (each link sends several notifications)"
    );

    println!(
        "veth published after {appeared:?}, unpublished after {disappeared:?}, released device unpublished after {released:?}, burst of 40 published after {burst_published:?} in {burst_scans} scans"
    );
    publishing.abort();
    drop(created);
    assert!(!link_exists(&d), "cleanup removed {d}");
}
