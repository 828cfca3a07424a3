//! The fake API server as `kube::Client` sees it: real HTTP, real semantics.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
};
use serde_json::json;
use testkit::{FakeApiServer, InjectedFailure, RESOURCE_CLAIMS};

fn slice(name: &str, node: &str) -> ResourceSlice {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"driver": "net.example.com", "nodeName": node,
                 "pool": {"name": node, "generation": 1, "resourceSliceCount": 1}, "devices": []},
    }))
    .unwrap()
}

fn api_error(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_conflicts_and_field_selectors() {
    let fake = FakeApiServer::start().await.unwrap();
    let slices: Api<ResourceSlice> = Api::all(fake.client());
    let created = slices.create(&PostParams::default(), &slice("s1", "n1")).await.unwrap();
    let rv1 = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some());
    slices.create(&PostParams::default(), &slice("s2", "n2")).await.unwrap();
    let (code, reason) = api_error(
        slices
            .create(&PostParams::default(), &slice("s1", "n1"))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    let listed = slices
        .list(&ListParams::default().fields("spec.nodeName=n2,spec.driver=net.example.com"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.name.as_deref(), Some("s2"));

    let mut update = created.clone();
    update.spec.pool.generation = 2;
    let updated = slices.replace("s1", &PostParams::default(), &update).await.unwrap();
    assert_ne!(updated.metadata.resource_version.as_deref(), Some(rv1.as_str()));
    // The same stale object again: resourceVersion precondition fails.
    let (code, reason) = api_error(slices.replace("s1", &PostParams::default(), &update).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    let (code, _) = api_error(slices.get("nope").await.unwrap_err());
    assert_eq!(code, 404);
    slices.delete("s1", &DeleteParams::default()).await.unwrap();
    let (code, _) = api_error(slices.delete("s1", &DeleteParams::default()).await.unwrap_err());
    assert_eq!(code, 404);
    // 3 creates, 2 replaces, 2 deletes: failed writes are logged too, and kube does not retry them.
    assert_eq!(fake.write_count(), 7);
    assert_eq!(fake.count("GET", "/resourceslices"), 2);
}

#[tokio::test]
async fn server_side_apply_and_status_subresource() {
    let fake = FakeApiServer::start().await.unwrap();
    let slices: Api<ResourceSlice> = Api::all(fake.client());
    let pp = PatchParams::apply("netdra").force();
    let applied = slices.patch("s1", &pp, &Patch::Apply(slice("s1", "n1"))).await.unwrap();
    assert_eq!(applied.spec.node_name.as_deref(), Some("n1"));
    let again = slices
        .patch(
            "s1",
            &pp,
            &Patch::Apply(json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": "s1"}, "spec": {"pool": {"generation": 5}}})),
        )
        .await
        .unwrap();
    assert_eq!(again.spec.pool.generation, 5);
    assert_eq!(again.spec.driver, "net.example.com", "apply merges");

    fake.seed(
        &RESOURCE_CLAIMS,
        "ns",
        json!({"metadata": {"name": "c", "uid": "u1"}, "spec": {}, "status": {"allocation": {"devices": {
            "results": [{"request": "nic", "driver": "net.example.com", "pool": "n1", "device": "eth1"}]}}}}),
    );
    let claims: Api<ResourceClaim> = Api::namespaced(fake.client(), "ns");
    let status = json!({"status": {"devices": [{"driver": "net.example.com", "pool": "n1", "device": "eth1",
        "networkData": {"interfaceName": "net1", "ips": ["192.0.2.5/24"]}}]}});
    let patched = claims
        .patch_status("c", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let devices = patched.status.unwrap().devices.unwrap();
    assert_eq!(
        devices[0].network_data.as_ref().unwrap().interface_name.as_deref(),
        Some("net1")
    );
    // A main-resource update cannot touch status.
    let mut c = claims.get("c").await.unwrap();
    c.status = None;
    let replaced = claims.replace("c", &PostParams::default(), &c).await.unwrap();
    assert!(replaced.status.is_some());
    assert_eq!(replaced.metadata.uid.as_deref(), Some("u1"));
}

#[tokio::test]
async fn watch_streams_events_from_a_resource_version() {
    let fake = FakeApiServer::start().await.unwrap();
    let slices: Api<ResourceSlice> = Api::all(fake.client());
    let first = slices.create(&PostParams::default(), &slice("s1", "n1")).await.unwrap();
    let rv = first.metadata.resource_version.unwrap();
    let mut events = slices
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    slices.create(&PostParams::default(), &slice("s2", "n1")).await.unwrap();
    slices.delete("s1", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchEvent::Added(s)) => seen.push(format!("added {}", s.metadata.name.unwrap())),
            Some(WatchEvent::Deleted(s)) => seen.push(format!("deleted {}", s.metadata.name.unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["added s2", "deleted s1"]);
    assert!(fake.requests().iter().any(|r| r.watch));
}

#[tokio::test]
async fn injected_failures_are_answered_then_used_up() {
    let fake = FakeApiServer::start().await.unwrap();
    fake.inject_failure(InjectedFailure {
        method: http::Method::POST,
        path_contains: "/resourceslices".into(),
        code: 409,
        times: 1,
    });
    let slices: Api<ResourceSlice> = Api::all(fake.client());
    let (code, _) = api_error(
        slices
            .create(&PostParams::default(), &slice("s1", "n1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);
    slices.create(&PostParams::default(), &slice("s1", "n1")).await.unwrap();
    assert!(fake.object(&testkit::RESOURCE_SLICES, "", "s1").is_some());
}
