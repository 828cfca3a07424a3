//! The `netdra` binary's footprint: its size once stripped, and the resident memory of a
//! running, idle agent that publishes 100 devices and holds 100 prepared claims, beside the
//! same agent idle with nothing published (the baseline). Targets: both under 20 MiB.
//!
//! The binary measured is the one this run built (the `ci` profile: release optimisation
//! without LTO, debug assertions on), or `NETDRA_BINARY` when set (e.g. the release build:
//! thin LTO, stripped), whose size is taken after `strip`. The agent runs against the fake API server, with the SDK's NRI
//! harness as its runtime. Needs root (veths); under `CI=true` its absence is a failure.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../../netdra/tests/common/mod.rs"]
mod common;

use std::{io::Write, path::Path, process::Stdio, time::Duration};

use common::{dra_client, wait_published};
use kubeletplugin::proto::dra::v1 as dra;
use nri::runtime::{RuntimeListener, RuntimeOptions};
use serde_json::json;
use testkit::is_root;
use testkit::{FakeApiServer, RESOURCE_CLAIMS};

/// The binary to measure.
fn netdra() -> std::path::PathBuf {
    std::env::var_os("NETDRA_BINARY").map_or_else(|| env!("CARGO_BIN_EXE_netdra").into(), Into::into)
}
const DEVICES: usize = 100;
const DRIVER: &str = "footprint.netdra.dev";
const MIB: f64 = 1024.0 * 1024.0;

fn ip_batch(commands: &str) {
    let mut child = std::process::Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(commands.as_bytes()).unwrap();
    child.wait().unwrap();
}

/// The veths, deleted by name when dropped.
struct Veths;

impl Drop for Veths {
    fn drop(&mut self) {
        ip_batch(&(0..DEVICES).map(|i| format!("link del ndfp{i}\n")).collect::<String>());
    }
}

fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib * 1024
}

fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// Heap and stacks, and mapped files (mostly the binary's own code), of a resident set.
fn rss_parts(pid: u32) -> String {
    format!(
        "anonymous {:.1} MiB, files {:.1} MiB",
        status_bytes(pid, "RssAnon:") as f64 / MIB,
        status_bytes(pid, "RssFile:") as f64 / MIB
    )
}

/// Starts the agent with its own NRI harness and waits until NRI is connected.
async fn agent(
    dir: &Path,
    api: &FakeApiServer,
    filter: &str,
) -> (tokio::process::Child, nri::runtime::ConnectedPlugin) {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: f\n  cluster:\n    server: {}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: f\n    user: u\ncurrent-context: c\n",
            api.url()
        ),
    )
    .unwrap();
    let nri = dir.join("nri.sock");
    let listener = RuntimeListener::bind(&nri).unwrap();
    let child = tokio::process::Command::new(netdra())
        .args([
            "run",
            "--driver-name",
            DRIVER,
            "--node-name",
            "node-fp",
            "--metrics-address",
            "127.0.0.1:0",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--kubelet-registry-dir")
        .arg(dir.join("registry"))
        .arg("--kubelet-plugins-dir")
        .arg(dir.join("plugins"))
        .arg("--nri-socket")
        .arg(&nri)
        .args(["--device-filter", filter, "--log-level", "warn"])
        .env("MALLOC_ARENA_MAX", "2")
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let runtime = tokio::time::timeout(Duration::from_secs(20), listener.accept(RuntimeOptions::default()))
        .await
        .unwrap()
        .unwrap();
    (child, runtime)
}

async fn run() {
    // Size: a stripped copy of the binary this run built.
    let dir = tempfile::tempdir().unwrap();
    let stripped = dir.path().join("netdra");
    std::fs::copy(netdra(), &stripped)
        .unwrap_or_else(|e| panic!("{} (NETDRA_BINARY, an absolute path): {e}", netdra().display()));
    assert!(
        std::process::Command::new("strip")
            .arg(&stripped)
            .status()
            .unwrap()
            .success()
    );
    let size = std::fs::metadata(&stripped).unwrap().len();

    // Baseline: the agent idle with nothing to publish.
    let api = FakeApiServer::start().await.unwrap();
    let base_dir = tempfile::tempdir().unwrap();
    let (baseline, _runtime) = agent(base_dir.path(), &api, "false").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_rss = rss(baseline.id().unwrap());
    let baseline_parts = rss_parts(baseline.id().unwrap());
    drop(baseline);

    let _veths = Veths;
    ip_batch(
        &(0..DEVICES)
            .map(|i| format!("link add ndfp{i} type veth peer name ndfq{i}\n"))
            .collect::<String>(),
    );
    let api = FakeApiServer::start().await.unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    let filter = format!("device.attributes[\"{DRIVER}\"].ifName.startsWith(\"ndfp\")");
    let (child, _runtime) = agent(agent_dir.path(), &api, &filter).await;
    let devices = wait_published(&api, DEVICES).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "published, before Prepare: {:.1} MiB",
        rss(child.id().unwrap()) as f64 / MIB
    );
    for (i, device) in devices.values().enumerate() {
        api.seed(
            &RESOURCE_CLAIMS,
            "default",
            json!({
                "metadata": {"name": format!("c{i}"), "namespace": "default", "uid": format!("uid-c{i}")},
                "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "x"}}]}},
                "status": {
                    "allocation": {"devices": {"results": [{"request": "nic", "driver": DRIVER, "pool": "node-fp", "device": device}]}},
                    "reservedFor": [{"resource": "pods", "name": format!("p{i}"), "uid": format!("uid-p{i}")}],
                },
            }),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut client = dra_client(&agent_dir.path().join("plugins").join(DRIVER).join("dra.sock")).await;
    let claims = (0..DEVICES)
        .map(|i| dra::Claim {
            namespace: "default".into(),
            name: format!("c{i}"),
            uid: format!("uid-c{i}"),
        })
        .collect();
    let answer = client
        .node_prepare_resources(dra::NodePrepareResourcesRequest { claims })
        .await
        .unwrap()
        .into_inner();
    let failed: Vec<&String> = answer
        .claims
        .values()
        .map(|c| &c.error)
        .filter(|e| !e.is_empty())
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    let pid = child.id().unwrap();
    let threads = || std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count();
    println!(
        "right after Prepare: {:.1} MiB, {} threads",
        rss(pid) as f64 / MIB,
        threads()
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    println!("12 s later: {:.1} MiB, {} threads", rss(pid) as f64 / MIB, threads());
    let loaded_rss = rss(pid);
    let loaded_parts = rss_parts(pid);

    println!("\nnetdra footprint ({})", netdra().display());
    println!(
        "binary, stripped: {:.1} MiB (target < 20 MiB: {})",
        size as f64 / MIB,
        if size < 20 * 1024 * 1024 { "met" } else { "MISSED" }
    );
    println!(
        "resident memory, idle, nothing published (baseline): {:.1} MiB ({baseline_parts})",
        baseline_rss as f64 / MIB
    );
    println!(
        "resident memory, idle, {DEVICES} devices published, {DEVICES} claims prepared: {:.1} MiB ({loaded_parts}) (target < 20 MiB: {}; {:.2}x the baseline)",
        loaded_rss as f64 / MIB,
        if loaded_rss < 20 * 1024 * 1024 { "met" } else { "MISSED" },
        loaded_rss as f64 / baseline_rss as f64
    );
}

fn main() {
    if !testkit::available_or_skip(is_root(), "the footprint benchmark needs root (veths)") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
