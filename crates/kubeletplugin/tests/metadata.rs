//! Acceptance: device metadata (KEP-5304) through the plugin's DRA socket. Prepare writes each
//! request's metadata file and the CDI spec that injects it, and answers with the CDI device
//! ID; Unprepare removes both; a restart removes what a crash or an unprepare while the plugin
//! was down left behind, and keeps the files of claims still prepared.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use common::*;
use kubeletplugin::{ClaimCacheMode, PluginOptions};
use serde_json::Value;
use testkit::FakeApiServer;

fn metadata_options(dir: &Path) -> PluginOptions {
    let mut options = options(dir, ClaimCacheMode::GetOnly);
    options.device_metadata = Some(dir.join("cdi"));
    options
}

/// The file names in `dir`, sorted; none when it does not exist.
fn names(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

fn metadata_root(dir: &Path) -> PathBuf {
    dir.join("plugins").join(DRIVER).join("dra-device-metadata")
}

/// The first document of a metadata file (the newest version; the others follow it).
fn first_document(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_writes_the_files_unprepare_and_restart_remove_them() {
    let api = FakeApiServer::start().await.unwrap();
    seed_claim(&api, "ns", "c", "uid-c", DRIVER, &["eth1", "eth2"]);
    seed_claim(&api, "ns", "kept", "uid-kept", DRIVER, &["eth3"]);
    let dir = tempfile::tempdir().unwrap();
    let cdi = dir.path().join("cdi");
    let plugin = kubeletplugin::start(metadata_options(dir.path()), RecordingDriver::default(), api.client())
        .await
        .unwrap();
    let channel = uds_channel(plugin.dra_socket()).await;

    let response = prepare_v1(&channel, vec![claim("ns", "c", "uid-c")]).await;
    let prepared = &response.claims["uid-c"];
    assert_eq!(prepared.error, "");
    // One ID per request, on its first device: the runtime mounts the file once.
    let ids: Vec<&[String]> = prepared.devices.iter().map(|d| d.cdi_device_ids.as_slice()).collect();
    assert_eq!(ids, [&[format!("{DRIVER}/metadata=uid-c_net")][..], &[]]);
    let file = metadata_root(dir.path()).join("ns_c/net/metadata.json");
    let document = first_document(&file);
    assert_eq!(document["apiVersion"], "metadata.resource.k8s.io/v1beta1");
    assert_eq!(document["metadata"]["uid"], "uid-c");
    let devices: Vec<&str> = document["requests"][0]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["eth1", "eth2"]);
    let spec_name = format!("{DRIVER}_metadata_uid-c_net.json");
    assert_eq!(names(&cdi), BTreeSet::from([spec_name.clone()]));
    let spec: Value = serde_json::from_slice(&std::fs::read(cdi.join(&spec_name)).unwrap()).unwrap();
    assert_eq!(spec["kind"], format!("{DRIVER}/metadata"));
    let mount = &spec["devices"][0]["containerEdits"]["mounts"][0];
    assert_eq!(mount["hostPath"], file.to_str().unwrap(), "{spec}");
    assert_eq!(
        mount["containerPath"],
        format!("/var/run/kubernetes.io/dra-device-attributes/resourceclaims/c/net/{DRIVER}-metadata.json")
    );

    let response = unprepare_v1(&channel, vec![claim("ns", "c", "uid-c")]).await;
    assert_eq!(response.claims["uid-c"].error, "");
    assert!(names(&cdi).is_empty(), "{:?}", names(&cdi));
    assert!(names(&metadata_root(dir.path())).is_empty());

    // A claim still prepared across the restart, and what a crash left of two others: a claim
    // unprepared while the plugin was down, and a spec's temporary file.
    let response = prepare_v1(&channel, vec![claim("ns", "kept", "uid-kept")]).await;
    assert_eq!(response.claims["uid-kept"].error, "");
    plugin.shutdown().await;
    drop(channel);
    let kept = names(&cdi);
    std::fs::create_dir_all(metadata_root(dir.path()).join("ns_gone/net")).unwrap();
    std::fs::write(metadata_root(dir.path()).join("ns_gone/net/metadata.json"), "{}").unwrap();
    let gone_spec = format!("{DRIVER}_metadata_uid-gone_net.json");
    let temporary = format!(".{DRIVER}_metadata_uid-gone_net.json.1.0.tmp");
    let other_driver = "other.example.com_metadata_uid-x_net.json".to_string();
    for name in [&gone_spec, &temporary, &other_driver] {
        std::fs::write(cdi.join(name), "{}").unwrap();
    }

    let plugin = kubeletplugin::start(metadata_options(dir.path()), RecordingDriver::default(), api.client())
        .await
        .unwrap();
    let mut expected = kept.clone();
    expected.insert(other_driver.clone());
    assert_eq!(
        names(&cdi),
        expected,
        "the sweep keeps the prepared claim's and other drivers' specs"
    );
    assert_eq!(
        names(&metadata_root(dir.path())),
        BTreeSet::from(["ns_kept".to_string()])
    );

    let channel = uds_channel(plugin.dra_socket()).await;
    let response = unprepare_v1(&channel, vec![claim("ns", "kept", "uid-kept")]).await;
    assert_eq!(response.claims["uid-kept"].error, "");
    assert_eq!(names(&cdi), BTreeSet::from([other_driver]));
    assert!(names(&metadata_root(dir.path())).is_empty());
    plugin.shutdown().await;
}

/// The metadata files cannot be written (the CDI directory is a file): the prepare fails with
/// the claim's error, the driver's prepare is undone, and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_whose_metadata_cannot_be_written_fails_and_leaves_nothing() {
    let api = FakeApiServer::start().await.unwrap();
    seed_claim(&api, "ns", "c", "uid-c", DRIVER, &["eth1"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cdi"), "not a directory").unwrap();
    let driver = RecordingDriver::default();
    let plugin = kubeletplugin::start(metadata_options(dir.path()), driver.clone(), api.client())
        .await
        .unwrap();
    let channel = uds_channel(plugin.dra_socket()).await;
    let response = prepare_v1(&channel, vec![claim("ns", "c", "uid-c")]).await;
    let error = &response.claims["uid-c"].error;
    assert!(error.contains("ns/c") && error.contains("metadata"), "{error}");
    assert!(response.claims["uid-c"].devices.is_empty());
    assert_eq!(
        driver.unprepared.lock().unwrap().len(),
        1,
        "the driver's prepare was undone"
    );
    assert!(names(&metadata_root(dir.path())).is_empty());
    assert!(plugin.prepared_claims().await.is_empty());
    plugin.shutdown().await;
}
