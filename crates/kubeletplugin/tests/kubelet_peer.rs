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

/// Device health (KEP-4680): announced only with a feed; both versions stream the driver's
/// report to a kubelet-faithful peer under every `:authority` form; without a feed a kubelet
/// that opens the stream anyway (1.36 does) gets `UNIMPLEMENTED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_peer_watches_device_health_in_both_versions() {
    let Some(python) = peer_python() else { return };
    let api = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (reporter, feed) = kubeletplugin::health_channel(kubeletplugin::HealthOptions::default());
    let mut opts = options(dir.path(), ClaimCacheMode::GetOnly);
    opts.health = Some(feed);
    let plugin = kubeletplugin::start(opts, RecordingDriver::default(), api.client())
        .await
        .unwrap();
    reporter.publish(vec![
        kubeletplugin::DeviceHealth {
            pool: "node1".into(),
            device: "eth1".into(),
            status: kubeletplugin::HealthStatus::Healthy,
            message: "eth1: carrier up".into(),
        },
        kubeletplugin::DeviceHealth {
            pool: "node1".into(),
            device: "eth2".into(),
            status: kubeletplugin::HealthStatus::Unhealthy,
            message: "eth2 has no carrier".into(),
        },
    ]);
    let lines = run_peer(
        &python,
        plugin.registration_socket(),
        &["--health".into(), "v1".into(), "--health".into(), "v1alpha1".into()],
    )
    .await;
    let info = lines.iter().find(|l| l["call"] == "GetInfo").unwrap();
    assert_eq!(
        info["result"]["supported_versions"],
        json!([
            "v1.DRAPlugin",
            "v1beta1.DRAPlugin",
            "v1.DRAResourceHealth",
            "v1alpha1.DRAResourceHealth"
        ])
    );
    let streams: Vec<&Value> = lines.iter().filter(|l| l["call"] == "NodeWatchResources").collect();
    assert_eq!(streams.len(), 6, "two versions, three authority forms: {lines:#?}");
    for s in &streams {
        assert_eq!(s["ok"], true, "{s}");
        let devices = s["result"].as_array().unwrap();
        assert_eq!(devices.len(), 2, "{s}");
        assert_eq!(
            (&devices[0]["device"], &devices[0]["health"], &devices[0]["pool"]),
            (&json!("eth1"), &json!("HEALTHY"), &json!("node1"))
        );
        assert_eq!(
            (&devices[1]["health"], &devices[1]["message"]),
            (&json!("UNHEALTHY"), &json!("eth2 has no carrier"))
        );
        assert_eq!(devices[0]["health_check_timeout_seconds"], 30);
        assert!(devices[0]["last_updated_time"].as_i64().unwrap() > 1_700_000_000, "{s}");
    }
    plugin.shutdown().await;

    // No feed: not announced, and the alpha stream a 1.36 kubelet opens is refused.
    let dir = tempfile::tempdir().unwrap();
    let plugin = kubeletplugin::start(
        options(dir.path(), ClaimCacheMode::GetOnly),
        RecordingDriver::default(),
        api.client(),
    )
    .await
    .unwrap();
    let lines = run_peer(
        &python,
        plugin.registration_socket(),
        &[
            "--authority".into(),
            "localhost".into(),
            "--health".into(),
            "v1alpha1".into(),
        ],
    )
    .await;
    let info = lines.iter().find(|l| l["call"] == "GetInfo").unwrap();
    assert_eq!(
        info["result"]["supported_versions"],
        json!(["v1.DRAPlugin", "v1beta1.DRAPlugin"])
    );
    let stream = lines.iter().find(|l| l["call"] == "NodeWatchResources").unwrap();
    assert_eq!(
        (&stream["ok"], &stream["code"]),
        (&json!(false), &json!("UNIMPLEMENTED")),
        "{stream}"
    );
    plugin.shutdown().await;
}
