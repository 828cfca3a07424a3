//! ResourceSlice publishing against the fake API server: creates, zero writes when unchanged,
//! one write for one added device, splitting, republishing deleted slices, retrying conflicts.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::{api::resource::v1::Device, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kubeletplugin::{PoolSpec, SlicePublisher};
use testkit::{FakeApiServer, InjectedFailure, RESOURCE_SLICES};

fn pool(node: &str) -> PoolSpec {
    PoolSpec::new(DRIVER, node).with_owner(OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.into(),
        uid: format!("uid-{node}"),
        ..Default::default()
    })
}

fn devices(n: usize) -> Vec<Device> {
    (0..n)
        .map(|i| Device {
            name: format!("eth{i}"),
            ..Default::default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_once_and_then_only_what_changed() {
    let api = FakeApiServer::start().await.unwrap();
    let publisher = SlicePublisher::start(api.client(), pool("node1")).await;
    assert_eq!(publisher.publish(&devices(3)).await.unwrap().writes, 1);
    let slices = api.objects(&RESOURCE_SLICES);
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0]["spec"]["nodeName"], "node1");
    assert_eq!(slices[0]["metadata"]["ownerReferences"][0]["uid"], "uid-node1");
    assert_eq!(slices[0]["spec"]["devices"].as_array().unwrap().len(), 3);

    let writes = api.write_count();
    assert_eq!(publisher.publish(&devices(3)).await.unwrap().writes, 0);
    assert_eq!(api.write_count(), writes, "an unchanged rescan writes nothing");

    assert_eq!(publisher.publish(&devices(4)).await.unwrap().writes, 1);
    assert_eq!(api.write_count(), writes + 1, "one added device, one write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_devices_make_three_slices() {
    let api = FakeApiServer::start().await.unwrap();
    let publisher = SlicePublisher::start(api.client(), pool("big")).await;
    assert_eq!(publisher.publish(&devices(300)).await.unwrap().writes, 3);
    let slices = api.objects(&RESOURCE_SLICES);
    assert_eq!(slices.len(), 3);
    for s in &slices {
        assert_eq!(s["spec"]["pool"]["resourceSliceCount"], 3);
        assert!(s["spec"]["devices"].as_array().unwrap().len() <= 128);
    }
    assert_eq!(publisher.publish(&devices(300)).await.unwrap().writes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_deleted_behind_its_back_are_republished() {
    let api = FakeApiServer::start().await.unwrap();
    let publisher = SlicePublisher::start(api.client(), pool("node1")).await;
    let (tx, rx) = tokio::sync::watch::channel(devices(2));
    let task = tokio::spawn(publisher.run(rx));
    wait_until("first publication", Duration::from_secs(5), || {
        api.objects(&RESOURCE_SLICES).len() == 1
    })
    .await;
    // The kubelet wipes the driver's slices.
    let name = api.objects(&RESOURCE_SLICES)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    api.remove(&RESOURCE_SLICES, "", &name).unwrap();
    let started = std::time::Instant::now();
    wait_until("republication", Duration::from_secs(2), || {
        api.objects(&RESOURCE_SLICES).len() == 1
    })
    .await;
    println!("republished {:?} after the deletion", started.elapsed());
    tx.send(devices(5)).unwrap();
    wait_until("the new device set", Duration::from_secs(2), || {
        api.objects(&RESOURCE_SLICES)
            .first()
            .is_some_and(|s| s["spec"]["devices"].as_array().is_some_and(|d| d.len() == 5))
    })
    .await;
    drop(tx);
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_is_retried() {
    let api = FakeApiServer::start().await.unwrap();
    let publisher = SlicePublisher::start(api.client(), pool("node1")).await;
    publisher.publish(&devices(1)).await.unwrap();
    api.inject_failure(InjectedFailure {
        method: http::Method::PUT,
        path_contains: "/resourceslices/".into(),
        code: 409,
        times: 1,
    });
    let published = publisher.publish(&devices(2)).await.unwrap();
    assert_eq!(published.writes, 1, "the failed attempt wrote nothing");
    assert_eq!(api.count("PUT", "/resourceslices/"), 2, "one conflict, one success");
    let slices = api.objects(&RESOURCE_SLICES);
    assert_eq!(slices[0]["spec"]["devices"].as_array().unwrap().len(), 2);
}
