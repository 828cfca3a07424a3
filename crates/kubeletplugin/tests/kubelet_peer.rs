//! Acceptance: a kubelet-faithful peer (Python grpcio, sending the kubelet's `:authority`
//! forms) registers and calls both DRA service versions on the plugin.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use kubeletplugin::{ClaimCacheMode, RegistrationState};
use serde_json::{Value, json};
use testkit::FakeApiServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_peer_registers_and_calls_both_versions_with_every_authority_form() {
    let Some(python) = peer_python() else { return };
    let api = FakeApiServer::start().await.unwrap();
    seed_claim(&api, "default", "claim-a", "uid-a", DRIVER, &["eth1", "eth2"]);
    let Running {
        dir: _dir,
        driver,
        plugin,
        channel: _,
    } = start_plugin(&api, ClaimCacheMode::Watch).await;
    assert_eq!(plugin.registration(), RegistrationState::Pending);

    let lines = run_peer(
        &python,
        plugin.registration_socket(),
        &[
            "--prepare".into(),
            "default/claim-a/uid-a".into(),
            "--unprepare".into(),
            "default/claim-a/uid-a".into(),
        ],
    )
    .await;

    let calls = |name: &str| -> Vec<&Value> { lines.iter().filter(|l| l["call"] == name).collect() };
    // Registration: every authority form reaches the service.
    let infos = calls("GetInfo");
    assert_eq!(infos.len(), 3, "{lines:#?}");
    for info in &infos {
        assert_eq!(info["ok"], true, "GetInfo failed: {info}");
        assert_eq!(info["result"]["type"], "DRAPlugin");
        assert_eq!(info["result"]["name"], DRIVER);
        assert_eq!(info["result"]["endpoint"], plugin.dra_socket().display().to_string());
        assert_eq!(
            info["result"]["supported_versions"],
            json!(["v1.DRAPlugin", "v1beta1.DRAPlugin"])
        );
    }
    let forms: Vec<_> = infos.iter().map(|i| i["authority"].as_str().unwrap()).collect();
    assert_eq!(forms, ["path", "percent", "localhost"]);
    assert!(
        calls("NotifyRegistrationStatus").iter().all(|c| c["ok"] == true),
        "{lines:#?}"
    );
    assert_eq!(plugin.registration(), RegistrationState::Registered);

    // DRA: both versions, every authority form, prepare then unprepare.
    let prepares = calls("NodePrepareResources");
    assert_eq!(prepares.len(), 6, "{lines:#?}");
    for p in &prepares {
        assert_eq!(p["ok"], true, "prepare failed: {p}");
        let answer = &p["result"]["uid-a"];
        assert_eq!(answer["error"], "", "{p}");
        let devices: Vec<_> = answer["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["device"].clone())
            .collect();
        assert_eq!(devices, vec![json!("eth1"), json!("eth2")]);
        assert_eq!(answer["devices"][0]["request_names"], json!(["net"]));
        assert_eq!(answer["devices"][0]["pool"], "node1");
    }
    let unprepares = calls("NodeUnprepareResources");
    assert_eq!(unprepares.len(), 6);
    for u in &unprepares {
        assert_eq!(u["ok"], true, "unprepare failed: {u}");
        assert_eq!(u["result"], json!({"uid-a": {"error": ""}}));
    }
    let versions: Vec<_> = prepares.iter().map(|p| p["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["v1", "v1", "v1", "v1beta1", "v1beta1", "v1beta1"]);
    // Each prepare after an unprepare was real work; idempotence keeps the driver calls paired.
    assert_eq!(driver.prepares.load(std::sync::atomic::Ordering::SeqCst), 6);
    assert_eq!(driver.unprepares.load(std::sync::atomic::Ordering::SeqCst), 6);
    plugin.shutdown().await;
}
