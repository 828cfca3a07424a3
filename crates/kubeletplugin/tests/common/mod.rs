//! Shared helpers for the kubeletplugin integration tests.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use kubeletplugin::{
    ClaimCacheMode, DraDriver, DriverError, PluginHandle, PluginOptions, Preparation, PreparedClaim, ResolvedClaim,
    proto::dra,
};
use serde_json::{Value, json};
use testkit::{FakeApiServer, RESOURCE_CLAIMS};
use tonic::transport::Channel;

pub const DRIVER: &str = "net.example.com";

/// A driver that records its calls, fails claims named `fail-*` and takes 200 ms for `slow-*`.
#[derive(Default, Clone)]
pub struct RecordingDriver {
    pub prepares: Arc<AtomicUsize>,
    pub unprepares: Arc<AtomicUsize>,
    pub unprepared: Arc<Mutex<Vec<PreparedClaim>>>,
    /// Prepares running now, and the most that ever ran at once.
    pub in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
}

impl DraDriver for RecordingDriver {
    async fn prepare(&self, claim: &ResolvedClaim) -> Result<Preparation, DriverError> {
        self.prepares.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if claim.claim.name.starts_with("slow-") {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if claim.claim.name.starts_with("fail-") {
            return Err(format!("device {} is on fire", claim.devices[0].device).into());
        }
        let mut p = Preparation::of_allocation(claim);
        p.data = json!({"interfaces": claim.devices.iter().map(|d| d.device.clone()).collect::<Vec<_>>()});
        Ok(p)
    }

    async fn unprepare(&self, claim: &PreparedClaim) -> Result<(), DriverError> {
        self.unprepares.fetch_add(1, Ordering::SeqCst);
        self.unprepared.lock().unwrap().push(claim.clone());
        Ok(())
    }
}

/// A ResourceClaim allocated to `driver` with one device per entry of `devices`.
pub fn allocated_claim(namespace: &str, name: &str, uid: &str, driver: &str, devices: &[&str]) -> Value {
    let results: Vec<Value> = devices
        .iter()
        .map(|d| json!({"request": "net", "driver": driver, "pool": "node1", "device": d}))
        .collect();
    json!({
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {"devices": {"requests": [{"name": "net", "exactly": {"deviceClassName": "net"}}]}},
        "status": {"allocation": {"devices": {"results": results}}},
    })
}

/// [`allocated_claim`] reserved for pod `pod_uid`, as the scheduler leaves a claim before it
/// binds the pod.
pub fn seed_reserved_claim(api: &FakeApiServer, namespace: &str, name: &str, uid: &str, pod_uid: &str) {
    let mut claim = allocated_claim(namespace, name, uid, DRIVER, &["eth1"]);
    claim["status"]["reservedFor"] = json!([{"resource": "pods", "name": pod_uid, "uid": pod_uid}]);
    api.seed(&RESOURCE_CLAIMS, namespace, claim);
}

pub fn seed_claim(api: &FakeApiServer, namespace: &str, name: &str, uid: &str, driver: &str, devices: &[&str]) {
    api.seed(
        &RESOURCE_CLAIMS,
        namespace,
        allocated_claim(namespace, name, uid, driver, devices),
    );
}

/// A pod bound to `node` that references `standalone` claims by name (`spec.resourceClaims`)
/// and `generated` claims made from its templates (`status.resourceClaimStatuses`).
pub fn pod(namespace: &str, name: &str, uid: &str, node: &str, standalone: &[&str], generated: &[&str]) -> Value {
    let mut refs: Vec<Value> = standalone
        .iter()
        .map(|c| json!({"name": format!("ref-{c}"), "resourceClaimName": c}))
        .collect();
    refs.extend(
        generated
            .iter()
            .map(|c| json!({"name": format!("tmpl-{c}"), "resourceClaimTemplateName": "net"})),
    );
    let statuses: Vec<Value> = generated
        .iter()
        .map(|c| json!({"name": format!("tmpl-{c}"), "resourceClaimName": c}))
        .collect();
    json!({
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}], "resourceClaims": refs},
        "status": {"phase": "Pending", "resourceClaimStatuses": statuses},
    })
}

/// A client for an API server that is not there: a loopback port nothing listens on.
pub fn unreachable_client() -> kube::Client {
    let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

pub fn options(dir: &Path, cache: ClaimCacheMode) -> PluginOptions {
    let mut o = PluginOptions::new(DRIVER);
    o.registry_dir = dir.join("plugins_registry");
    o.plugin_dir = dir.join("plugins").join(DRIVER);
    o.claim_cache = cache;
    o.socket_check_interval = Duration::from_millis(100);
    o
}

pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_for_cache<D: DraDriver>(plugin: &PluginHandle<D>, claims: usize) {
    wait_until("the claim cache is synced", Duration::from_secs(10), || {
        plugin.claim_cache_ready() && plugin.cached_claims() >= claims
    })
    .await;
}

/// A plugin started for a test: its directory, driver, handle and a DRA-socket channel.
pub struct Running {
    pub dir: tempfile::TempDir,
    pub driver: RecordingDriver,
    pub plugin: PluginHandle<RecordingDriver>,
    pub channel: Channel,
}

/// Starts a plugin with a [`RecordingDriver`] against `api`; in watch mode, waits until the
/// cache holds every claim the API has.
pub async fn start_plugin(api: &FakeApiServer, cache: ClaimCacheMode) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let driver = RecordingDriver::default();
    let plugin = kubeletplugin::start(options(dir.path(), cache.clone()), driver.clone(), api.client())
        .await
        .unwrap();
    match cache {
        ClaimCacheMode::Watch => wait_for_cache(&plugin, api.objects(&RESOURCE_CLAIMS).len()).await,
        ClaimCacheMode::Node { .. } => wait_for_cache(&plugin, 0).await,
        ClaimCacheMode::GetOnly => {}
        other => panic!("start_plugin: no wait for the claim cache mode {other:?}"),
    }
    let channel = uds_channel(plugin.dra_socket()).await;
    Running {
        dir,
        driver,
        plugin,
        channel,
    }
}

/// A gRPC channel over a unix socket (tonic client; authority `localhost`), or the test fails.
pub async fn uds_channel(path: &Path) -> Channel {
    testkit::unix_channel(path).await.unwrap()
}

pub fn claim(ns: &str, name: &str, uid: &str) -> dra::v1::Claim {
    dra::v1::Claim {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
    }
}

pub async fn prepare_v1(channel: &Channel, claims: Vec<dra::v1::Claim>) -> dra::v1::NodePrepareResourcesResponse {
    let mut c = dra::v1::dra_plugin_client::DraPluginClient::new(channel.clone());
    c.node_prepare_resources(dra::v1::NodePrepareResourcesRequest { claims })
        .await
        .unwrap()
        .into_inner()
}

pub async fn unprepare_v1(channel: &Channel, claims: Vec<dra::v1::Claim>) -> dra::v1::NodeUnprepareResourcesResponse {
    let mut c = dra::v1::dra_plugin_client::DraPluginClient::new(channel.clone());
    c.node_unprepare_resources(dra::v1::NodeUnprepareResourcesRequest { claims })
        .await
        .unwrap()
        .into_inner()
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The Python with grpcio for the kubelet peer: `NETDRA_PYTHON`, else the workspace `.venv`.
/// `None` (with the reason printed) when it is missing outside CI; in CI a missing peer fails.
pub fn peer_python() -> Option<PathBuf> {
    let python = std::env::var_os("NETDRA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    let reason = format!(
        "the kubelet peer needs {} with grpcio and grpcio-tools (run scripts/test.sh, which installs them)",
        python.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason}");
    }
    eprintln!("SKIPPED: {reason}");
    None
}

/// Runs the Python kubelet peer and returns its JSON lines.
pub async fn run_peer(python: &Path, registration_socket: &Path, extra: &[String]) -> Vec<Value> {
    let root = workspace_root();
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(root.join("tests/kubelet-peer/kubelet_peer.py"))
        .arg("--proto-dir")
        .arg(root.join("proto"))
        .arg("--registration-socket")
        .arg(registration_socket)
        .args(extra);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("kubelet peer timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubelet peer failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
