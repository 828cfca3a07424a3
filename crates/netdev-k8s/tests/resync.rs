//! The watcher rescans on its resync period even when no netlink notification arrives (a
//! multicast socket that overflowed loses notifications; the resync catches what they said).
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use netdev::Sysfs;
use netdev_k8s::{DeviceFilter, Inventory, InventoryConfig, InventoryWatcher, WatchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resyncs_happen_without_notifications() {
    let inventory = Inventory::new(InventoryConfig::new(
        "netdra.test",
        Sysfs::default(),
        DeviceFilter::parse(None).unwrap(),
    ));
    let mut options = WatchOptions::default();
    options.resync = Duration::from_millis(200);
    let watcher = InventoryWatcher::start(inventory, options).await.unwrap();
    assert_eq!(watcher.scans(), 1, "the first scan happens at start");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let scans = watcher.scans();
    // Each resync costs settle + scan on top of the period: at least four fit in 1.1 s.
    assert!(scans >= 5, "{scans} scans in 1.1 s with a 200 ms resync");
}
