//! Privileged: the change notifications on the real kernel. A veth pair created on the host,
//! and an address added to it, are each notified within 1 s.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use netdev::Changes;

/// Reads notifications until none comes for `quiet` (the host may have its own traffic).
async fn drain(changes: &mut Changes, quiet: Duration) {
    while tokio::time::timeout(quiet, changes.next()).await.is_ok() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_link_is_notified() {
    if !privileged("the change notification test") {
        return;
    }
    let p = prefix("nc");
    let mut created = Created::default();
    let mut changes = Changes::subscribe().unwrap();
    drain(&mut changes, Duration::from_millis(100)).await;

    created.veth(&format!("{p}a"), &format!("{p}b"), None);
    tokio::time::timeout(Duration::from_secs(1), changes.next())
        .await
        .expect("a notification within 1 s of creating a veth pair")
        .unwrap();

    // Address changes are notified too.
    drain(&mut changes, Duration::from_millis(100)).await;
    ip(&["address", "add", "192.0.2.77/32", "dev", &format!("{p}a")]);
    tokio::time::timeout(Duration::from_secs(1), changes.next())
        .await
        .expect("a notification within 1 s of adding an address")
        .unwrap();
}
