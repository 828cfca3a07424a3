//! Acceptance: checkpoint across restarts, damaged checkpoints, and the socket lifecycle
//! (SIGTERM removes both sockets, a stale socket does not block start, a deleted registration
//! socket comes back), and registration as the tests' kubelet performs it.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::{path::PathBuf, sync::atomic::Ordering, time::Duration};

use common::*;
use kubeletplugin::{
    CheckpointError, ClaimCacheMode, PluginError, RegistrationState,
    proto::pluginregistration::{InfoRequest, registration_client::RegistrationClient},
};
use testkit::{FakeApiServer, RESOURCE_CLAIMS, RegistrationError, register_plugin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_state_survives_a_restart() {
    let api = FakeApiServer::start().await.unwrap();
    seed_claim(&api, "ns", "c", "uid-c", DRIVER, &["eth1", "eth2"]);
    let dir = tempfile::tempdir().unwrap();
    let first = RecordingDriver::default();
    let plugin = kubeletplugin::start(
        options(dir.path(), ClaimCacheMode::GetOnly),
        first.clone(),
        api.client(),
    )
    .await
    .unwrap();
    let channel = uds_channel(plugin.dra_socket()).await;
    let response = prepare_v1(&channel, vec![claim("ns", "c", "uid-c")]).await;
    assert_eq!(response.claims["uid-c"].devices.len(), 2);
    plugin.shutdown().await;
    drop(channel);

    // The claim is gone from the API: whatever the new instance knows comes from the checkpoint.
    api.remove(&RESOURCE_CLAIMS, "ns", "c").unwrap();
    let second = RecordingDriver::default();
    let plugin = kubeletplugin::start(
        options(dir.path(), ClaimCacheMode::GetOnly),
        second.clone(),
        api.client(),
    )
    .await
    .unwrap();
    let known = plugin.prepared_claims().await;
    assert_eq!(known.len(), 1);
    assert_eq!(known[0].claim.name, "c");

    let channel = uds_channel(plugin.dra_socket()).await;
    // A kubelet retry of the prepare is answered from the checkpoint, without the API.
    let response = prepare_v1(&channel, vec![claim("ns", "c", "uid-c")]).await;
    assert_eq!(response.claims["uid-c"].error, "");
    assert_eq!(response.claims["uid-c"].devices.len(), 2);
    assert_eq!(second.prepares.load(Ordering::SeqCst), 0);

    let response = unprepare_v1(&channel, vec![claim("ns", "c", "uid-c")]).await;
    assert_eq!(response.claims["uid-c"].error, "");
    let unprepared = second.unprepared.lock().unwrap().clone();
    assert_eq!(unprepared.len(), 1, "the new instance's driver released the claim");
    assert_eq!(
        unprepared[0].preparation.data,
        serde_json::json!({"interfaces": ["eth1", "eth2"]})
    );
    assert!(plugin.prepared_claims().await.is_empty());
    plugin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_prepared_before_a_reboot_are_prepared_again() {
    let api = FakeApiServer::start().await.unwrap();
    seed_claim(&api, "ns", "c", "uid-c", DRIVER, &["eth1"]);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), ClaimCacheMode::GetOnly);
    opts.boot_id = Some("boot-1".into());
    let before = RecordingDriver::default();
    let plugin = kubeletplugin::start(opts.clone(), before.clone(), api.client())
        .await
        .unwrap();
    prepare_v1(&uds_channel(plugin.dra_socket()).await, vec![claim("ns", "c", "uid-c")]).await;
    plugin.shutdown().await;

    // Same boot: answered from the checkpoint. Another boot: the driver prepares it again.
    // Reboot detection off (no boot ID): the checkpoint is trusted, the claim's boot kept.
    for (boot, prepares, kept) in [
        (Some("boot-1"), 0, "boot-1"),
        (Some("boot-2"), 1, "boot-2"),
        (None, 0, "boot-2"),
    ] {
        opts.boot_id = boot.map(str::to_owned);
        let driver = RecordingDriver::default();
        let plugin = kubeletplugin::start(opts.clone(), driver.clone(), api.client())
            .await
            .unwrap();
        let response = prepare_v1(&uds_channel(plugin.dra_socket()).await, vec![claim("ns", "c", "uid-c")]).await;
        assert_eq!(response.claims["uid-c"].devices.len(), 1);
        assert_eq!(driver.prepares.load(Ordering::SeqCst), prepares, "boot {boot:?}");
        assert_eq!(plugin.prepared_claims().await[0].boot_id.as_deref(), Some(kept));
        plugin.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_checkpoint_is_a_clear_start_error_and_is_kept() {
    let api = FakeApiServer::start().await.unwrap();
    seed_claim(&api, "ns", "c", "uid-c", DRIVER, &["eth1"]);
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), ClaimCacheMode::GetOnly);
    let plugin = kubeletplugin::start(opts.clone(), RecordingDriver::default(), api.client())
        .await
        .unwrap();
    prepare_v1(&uds_channel(plugin.dra_socket()).await, vec![claim("ns", "c", "uid-c")]).await;
    plugin.shutdown().await;

    let path = opts.checkpoint_file();
    let bytes = std::fs::read(&path).unwrap();
    let truncated = &bytes[..bytes.len() / 2];
    std::fs::write(&path, truncated).unwrap();
    let Err(error) = kubeletplugin::start(opts.clone(), RecordingDriver::default(), api.client()).await else {
        panic!("a truncated checkpoint must stop start-up");
    };
    assert!(
        matches!(error, PluginError::Checkpoint(CheckpointError::Corrupt { .. })),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("corrupt"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), truncated, "the file is left as it was");
    assert!(!opts.registration_socket().exists(), "no registration without state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_does_not_block_start_and_deleted_socket_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), ClaimCacheMode::GetOnly);
    // A crash leaves socket files behind.
    for path in [opts.registration_socket(), opts.dra_socket()] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
    }
    let plugin = kubeletplugin::start(opts.clone(), RecordingDriver::default(), unreachable_client())
        .await
        .unwrap();
    let get_info = || async {
        let channel = uds_channel(&opts.registration_socket()).await;
        RegistrationClient::new(channel)
            .get_info(InfoRequest {})
            .await
            .unwrap()
            .into_inner()
    };
    assert_eq!(get_info().await.name, DRIVER);

    std::fs::remove_file(opts.registration_socket()).unwrap();
    let socket = opts.registration_socket();
    wait_until("the registration socket is re-created", Duration::from_secs(3), || {
        socket.exists()
    })
    .await;
    assert_eq!(get_info().await.r#type, "DRAPlugin", "the re-created socket serves");
    plugin.shutdown().await;
    assert!(!opts.registration_socket().exists());
    assert!(!opts.dra_socket().exists());
}

/// The example binary, built next to this test by `cargo test`.
fn example_binary() -> PathBuf {
    testkit::example_binary("minimal_driver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_removes_both_sockets_and_unreachable_api_gives_per_claim_errors() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    // Port 1 on loopback: nothing listens, so every API request is refused.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let registry = dir.path().join("registry");
    let plugins = dir.path().join("plugins");
    let mut child = tokio::process::Command::new(example_binary())
        .args(["--driver-name", DRIVER, "--claim-cache", "get-only"])
        .arg("--registry-dir")
        .arg(&registry)
        .arg("--plugins-dir")
        .arg(&plugins)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let reg = registry.join(format!("{DRIVER}-reg.sock"));
    let dra = plugins.join(DRIVER).join("dra.sock");
    wait_until("both sockets exist", Duration::from_secs(10), || {
        reg.exists() && dra.exists()
    })
    .await;

    let info = RegistrationClient::new(uds_channel(&reg).await)
        .get_info(InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.endpoint, dra.display().to_string());
    let response = prepare_v1(&uds_channel(&dra).await, vec![claim("ns", "a", "ua")]).await;
    let error = &response.claims["ua"].error;
    assert!(
        error.contains("ns/a (uid ua)") && error.contains("API request failed"),
        "{error}"
    );

    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the plugin exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!reg.exists(), "registration socket removed");
    assert!(!dra.exists(), "DRA socket removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_handle_stops_serving_and_removes_both_sockets() {
    let api = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), ClaimCacheMode::Watch);
    let plugin = kubeletplugin::start(opts.clone(), RecordingDriver::default(), api.client())
        .await
        .unwrap();
    let (registration, dra) = (opts.registration_socket(), opts.dra_socket());
    assert!(registration.exists() && dra.exists());
    drop(plugin);
    wait_until(
        "both sockets removed after the handle was dropped",
        Duration::from_secs(3),
        || !registration.exists() && !dra.exists(),
    )
    .await;
}

/// `testkit::register_plugin`, which the end-to-end tests and the demo use as their kubelet:
/// GetInfo answers with the plugin's name, type and DRA socket, and the plugin records the
/// verdict NotifyRegistrationStatus brings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_kubelet_registers_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), ClaimCacheMode::GetOnly);
    let mut plugin = kubeletplugin::start(opts.clone(), RecordingDriver::default(), unreachable_client())
        .await
        .unwrap();
    let info = register_plugin(&opts.registration_socket(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(info.name, DRIVER);
    assert_eq!(info.r#type, "DRAPlugin");
    assert_eq!(PathBuf::from(&info.endpoint), opts.dra_socket());
    assert_eq!(plugin.wait_for_verdict().await, RegistrationState::Registered);
    plugin.shutdown().await;
}

/// A registration socket nobody serves is named once the wait is over.
#[tokio::test]
async fn the_test_kubelet_names_an_unserved_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join(format!("{DRIVER}-reg.sock"));
    let err = register_plugin(&socket, Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, RegistrationError::NotServed { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "the registration socket {} did not answer GetInfo within 200ms",
            socket.display()
        )
    );
}
