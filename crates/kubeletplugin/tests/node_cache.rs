//! The node-scoped claim cache against the fake API server: only this node's pods are watched,
//! the claims they reference are fetched before Prepare asks, and the watch survives an expired
//! resourceVersion.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use kubeletplugin::ClaimCacheMode;
use testkit::{FakeApiServer, PODS};

const NODE: &str = "node1";

fn node_mode() -> ClaimCacheMode {
    ClaimCacheMode::Node { node_name: NODE.into() }
}

/// GETs of single claims (not lists, not watches) since the log was cleared.
fn claim_gets(api: &FakeApiServer) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/resourceclaims/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_finds_the_claims_of_this_nodes_pods_in_memory_and_nothing_else_is_read() {
    let api = FakeApiServer::start().await.unwrap();
    seed_reserved_claim(&api, "ns", "standalone", "u-standalone", "pod-a");
    seed_reserved_claim(&api, "ns", "web-net-x7k2p", "u-generated", "pod-web");
    seed_reserved_claim(&api, "ns", "elsewhere", "u-elsewhere", "pod-b");
    seed_reserved_claim(&api, "other", "standalone", "u-other-ns", "pod-other");
    api.seed(&PODS, "ns", pod("ns", "a", "pod-a", NODE, &["standalone"], &[]));
    api.seed(&PODS, "ns", pod("ns", "web", "pod-web", NODE, &[], &["web-net-x7k2p"]));
    api.seed(&PODS, "ns", pod("ns", "b", "pod-b", "node2", &["elsewhere"], &[]));
    let Running {
        dir: _dir,
        driver: _,
        plugin,
        channel,
    } = start_plugin(&api, node_mode()).await;
    assert_eq!(plugin.cached_claims(), 2, "the claims of this node's two pods, no more");
    for r in api.requests().iter().filter(|r| r.path.ends_with("/pods")) {
        assert!(
            r.query.contains("fieldSelector=spec.nodeName%3Dnode1"),
            "pods are listed and watched by node: {r:?}"
        );
    }
    assert_eq!(
        api.count("GET", "/resourceclaims"),
        2,
        "one GET per claim of this node's pods; no claim list or watch"
    );

    api.clear_requests();
    let response = prepare_v1(
        &channel,
        vec![
            claim("ns", "standalone", "u-standalone"),
            claim("ns", "web-net-x7k2p", "u-generated"),
        ],
    )
    .await;
    assert!(
        response
            .claims
            .values()
            .all(|r| r.error.is_empty() && r.devices.len() == 1)
    );
    assert_eq!(api.requests().len(), 0, "Prepare made no API request");

    // A claim no pod of this node references (the kubelet would not ask): one GET on the miss.
    let response = prepare_v1(&channel, vec![claim("other", "standalone", "u-other-ns")]).await;
    assert!(response.claims["u-other-ns"].error.is_empty());
    assert_eq!(claim_gets(&api), 1);
    plugin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_bound_after_start_has_its_claim_fetched_before_prepare_and_dropped_with_it() {
    let api = FakeApiServer::start().await.unwrap();
    let Running {
        dir: _dir,
        driver: _,
        plugin,
        channel,
    } = start_plugin(&api, node_mode()).await;
    assert_eq!(plugin.cached_claims(), 0);
    // The scheduler allocates, then binds the pod to this node.
    seed_reserved_claim(&api, "ns", "late", "u-late", "pod-late");
    api.seed(&PODS, "ns", pod("ns", "late", "pod-late", NODE, &["late"], &[]));
    wait_until("the new pod's claim is cached", Duration::from_secs(5), || {
        plugin.cached_claims() == 1
    })
    .await;
    api.clear_requests();
    let response = prepare_v1(&channel, vec![claim("ns", "late", "u-late")]).await;
    assert!(response.claims["u-late"].error.is_empty());
    assert_eq!(api.requests().len(), 0, "Prepare made no API request");

    api.remove(&PODS, "ns", "late");
    wait_until("the deleted pod's claim is dropped", Duration::from_secs(5), || {
        plugin.cached_claims() == 0
    })
    .await;
    plugin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_bound_before_its_claim_is_allocated_gets_it_once_allocated() {
    let api = FakeApiServer::start().await.unwrap();
    let Running {
        dir: _dir,
        driver: _,
        plugin,
        channel,
    } = start_plugin(&api, node_mode()).await;
    // The pod arrives first; its claim is created (unallocated) and allocated a moment later.
    api.seed(&PODS, "ns", pod("ns", "early", "pod-early", NODE, &["early"], &[]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut unallocated = allocated_claim("ns", "early", "u-early", DRIVER, &["eth1"]);
    let mut allocation = unallocated["status"].take();
    allocation["reservedFor"] = serde_json::json!([{"resource": "pods", "name": "early", "uid": "pod-early"}]);
    api.seed(&testkit::RESOURCE_CLAIMS, "ns", unallocated);
    tokio::time::sleep(Duration::from_millis(150)).await;
    api.set_status(&testkit::RESOURCE_CLAIMS, "ns", "early", allocation);
    wait_until("the claim is cached allocated", Duration::from_secs(10), || {
        plugin.claim_cache_ready() && plugin.cached_claims() == 1
    })
    .await;
    api.clear_requests();
    let response = prepare_v1(&channel, vec![claim("ns", "early", "u-early")]).await;
    assert!(response.claims["u-early"].error.is_empty(), "{response:?}");
    assert_eq!(
        api.requests().len(),
        0,
        "the retried fetch found it allocated before Prepare"
    );
    plugin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_watch_lists_again_after_its_resource_version_expired() {
    let api = FakeApiServer::start().await.unwrap();
    seed_reserved_claim(&api, "ns", "c1", "u1", "pod-1");
    api.seed(&PODS, "ns", pod("ns", "p1", "pod-1", NODE, &["c1"], &[]));
    let Running {
        dir: _dir,
        driver: _,
        plugin,
        channel,
    } = start_plugin(&api, node_mode()).await;
    assert_eq!(plugin.cached_claims(), 1);
    // A write the pod watch does not see moves the revision past the watch's; compaction
    // then forgets the history it would resume from, and the connection drops.
    seed_reserved_claim(&api, "ns", "c2", "u2", "pod-2");
    api.compact();
    api.clear_requests();
    api.end_watches();
    let pod_lists = || {
        api.requests()
            .iter()
            .filter(|r| r.path.ends_with("/pods") && !r.watch)
            .count()
    };
    wait_until("the pods are listed again", Duration::from_secs(10), || {
        pod_lists() >= 1
    })
    .await;
    // The watch works again: a new pod's claim is fetched, before Prepare.
    api.seed(&PODS, "ns", pod("ns", "p2", "pod-2", NODE, &["c2"], &[]));
    wait_until("the new pod's claim is cached", Duration::from_secs(10), || {
        plugin.cached_claims() == 2
    })
    .await;
    let resumed_with_410 = api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/pods") && r.watch)
        .count();
    assert!(
        resumed_with_410 >= 2,
        "a watch refused with 410, then one after the list"
    );
    api.clear_requests();
    let response = prepare_v1(&channel, vec![claim("ns", "c2", "u2")]).await;
    assert!(response.claims["u2"].error.is_empty());
    assert_eq!(api.requests().len(), 0);
    plugin.shutdown().await;
}
