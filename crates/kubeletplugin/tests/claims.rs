//! Acceptance: per-claim answers in a mixed batch, and API traffic with a warm and a cold cache.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use common::*;
use kubeletplugin::ClaimCacheMode;
use testkit::FakeApiServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_batch_gets_one_correct_answer_per_claim() {
    let api = FakeApiServer::start().await.unwrap();
    seed_claim(&api, "ns", "good", "uid-good", DRIVER, &["eth1"]);
    seed_claim(&api, "ns", "recreated", "uid-new", DRIVER, &["eth2"]);
    seed_claim(&api, "ns", "gpu-only", "uid-gpu", "gpu.example.com", &["gpu0"]);
    seed_claim(&api, "ns", "fail-me", "uid-fail", DRIVER, &["eth3"]);
    let Running {
        dir: _dir,
        driver,
        plugin,
        channel,
    } = start_plugin(&api, ClaimCacheMode::Watch).await;

    let response = prepare_v1(
        &channel,
        vec![
            claim("ns", "missing", "uid-missing"),
            claim("ns", "recreated", "uid-old"),
            claim("ns", "gpu-only", "uid-gpu"),
            claim("ns", "good", "uid-good"),
            claim("ns", "fail-me", "uid-fail"),
        ],
    )
    .await;
    let c = &response.claims;
    assert_eq!(c.len(), 5, "an entry for every claim: {c:?}");

    let missing = &c["uid-missing"];
    assert!(
        missing.error.contains("ns/missing") && missing.error.contains("not found"),
        "{missing:?}"
    );
    assert!(missing.devices.is_empty());

    let stale = &c["uid-old"];
    assert!(stale.error.contains("ns/recreated (uid uid-old)"), "{stale:?}");
    assert!(
        stale.error.contains("uid-new") && stale.error.contains("deleted and recreated"),
        "{stale:?}"
    );

    let other = &c["uid-gpu"];
    assert_eq!((other.error.as_str(), other.devices.len()), ("", 0), "{other:?}");

    let good = &c["uid-good"];
    assert_eq!(good.error, "");
    assert_eq!(good.devices.len(), 1);
    assert_eq!(good.devices[0].device_name, "eth1");
    assert_eq!(good.devices[0].pool_name, "node1");
    assert_eq!(good.devices[0].request_names, vec!["net".to_string()]);

    let failed = &c["uid-fail"];
    assert!(
        failed.error.contains("ns/fail-me") && failed.error.contains("eth3 is on fire"),
        "{failed:?}"
    );

    // Only the good and the failing claim reached the driver; only the good one is remembered.
    assert_eq!(driver.prepares.load(Ordering::SeqCst), 2);
    let prepared = plugin.prepared_claims().await;
    assert_eq!(prepared.len(), 1);
    assert_eq!(prepared[0].claim.uid, "uid-good");

    // Unprepare answers every claim, known or not.
    let response = unprepare_v1(
        &channel,
        vec![claim("ns", "good", "uid-good"), claim("ns", "x", "uid-x")],
    )
    .await;
    assert_eq!(response.claims.len(), 2);
    assert!(response.claims.values().all(|r| r.error.is_empty()));
    assert_eq!(
        driver.unprepares.load(Ordering::SeqCst),
        1,
        "unknown claims do not reach the driver"
    );
    plugin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_is_a_grpc_error() {
    let api = FakeApiServer::start().await.unwrap();
    let Running {
        dir: _dir,
        driver: _,
        plugin,
        channel,
    } = start_plugin(&api, ClaimCacheMode::GetOnly).await;
    let mut c = kubeletplugin::proto::dra::v1::dra_plugin_client::DraPluginClient::new(channel);
    let status = c
        .node_prepare_resources(kubeletplugin::proto::dra::v1::NodePrepareResourcesRequest {
            claims: vec![claim("ns", "", "uid")],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    plugin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_cache_makes_no_api_requests() {
    let api = FakeApiServer::start().await.unwrap();
    for i in 0..5 {
        seed_claim(&api, "ns", &format!("c{i}"), &format!("u{i}"), DRIVER, &["eth1"]);
    }
    let Running {
        dir: _dir,
        driver: _,
        plugin,
        channel,
    } = start_plugin(&api, ClaimCacheMode::Watch).await;
    api.clear_requests();
    let response = prepare_v1(
        &channel,
        (0..5)
            .map(|i| claim("ns", &format!("c{i}"), &format!("u{i}")))
            .collect(),
    )
    .await;
    assert!(
        response
            .claims
            .values()
            .all(|c| c.error.is_empty() && c.devices.len() == 1),
        "{response:?}"
    );
    // The claim watch's own re-list or re-watch may land here; it is not a lookup.
    let lookups: Vec<_> = api.requests().into_iter().filter(|r| !r.watch).collect();
    assert_eq!(lookups, vec![], "a warm cache answers without the API server");

    // A claim created after the cache synced arrives through the watch, still without a GET.
    seed_claim(&api, "ns", "late", "u-late", DRIVER, &["eth9"]);
    wait_for_cache(&plugin, 6).await;
    let response = prepare_v1(&channel, vec![claim("ns", "late", "u-late")]).await;
    assert_eq!(response.claims["u-late"].devices[0].device_name, "eth9");
    assert_eq!(api.requests(), vec![]);
    plugin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_cache_makes_exactly_one_get_per_claim() {
    let api = FakeApiServer::start().await.unwrap();
    for i in 0..3 {
        seed_claim(&api, "ns", &format!("c{i}"), &format!("u{i}"), DRIVER, &["eth1"]);
    }
    let Running {
        dir: _dir,
        driver: _,
        plugin,
        channel,
    } = start_plugin(&api, ClaimCacheMode::GetOnly).await;
    let response = prepare_v1(
        &channel,
        (0..3)
            .map(|i| claim("ns", &format!("c{i}"), &format!("u{i}")))
            .collect(),
    )
    .await;
    assert!(response.claims.values().all(|c| c.error.is_empty()), "{response:?}");
    let requests = api.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    for i in 0..3 {
        let path = format!("/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c{i}");
        assert_eq!(
            requests.iter().filter(|r| r.method == "GET" && r.path == path).count(),
            1,
            "{requests:?}"
        );
    }
    // Prepared claims are answered from the checkpoint on a kubelet retry: no further GET.
    prepare_v1(&channel, vec![claim("ns", "c0", "u0")]).await;
    assert_eq!(api.requests().len(), 3);
    plugin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_api_server_every_claim_gets_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = kubeletplugin::start(
        options(dir.path(), ClaimCacheMode::Watch),
        RecordingDriver::default(),
        unreachable_client(),
    )
    .await
    .unwrap();
    let channel = uds_channel(plugin.dra_socket()).await;
    let response = prepare_v1(&channel, vec![claim("ns", "a", "ua"), claim("ns", "b", "ub")]).await;
    assert_eq!(response.claims.len(), 2);
    for (uid, c) in &response.claims {
        assert!(c.error.contains("API request failed"), "{uid}: {c:?}");
        assert!(c.error.contains(&format!("(uid {uid})")), "{c:?}");
    }
    plugin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_prepares_of_one_claim_are_serialised_and_idempotent() {
    let api = FakeApiServer::start().await.unwrap();
    seed_claim(&api, "ns", "slow-a", "uid-a", DRIVER, &["eth1"]);
    seed_claim(&api, "ns", "slow-b", "uid-b", DRIVER, &["eth2"]);
    let Running {
        dir: _dir,
        driver,
        plugin,
        channel,
    } = start_plugin(&api, ClaimCacheMode::Watch).await;
    // The kubelet retrying while the first call still runs, plus another claim in parallel.
    let (first, second, other) = tokio::join!(
        prepare_v1(&channel, vec![claim("ns", "slow-a", "uid-a")]),
        prepare_v1(&channel, vec![claim("ns", "slow-a", "uid-a")]),
        prepare_v1(&channel, vec![claim("ns", "slow-b", "uid-b")]),
    );
    assert_eq!(first.claims["uid-a"], second.claims["uid-a"]);
    assert_eq!(first.claims["uid-a"].devices[0].device_name, "eth1");
    assert_eq!(other.claims["uid-b"].devices[0].device_name, "eth2");
    assert_eq!(driver.prepares.load(Ordering::SeqCst), 2, "one driver call per claim");
    // The two claims overlapped in the driver; the duplicate waited and was answered from state.
    assert_eq!(driver.max_in_flight.load(Ordering::SeqCst), 2);
    plugin.shutdown().await;
}
