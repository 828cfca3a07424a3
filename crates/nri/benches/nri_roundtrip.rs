//! Benchmark: the round trip of a RunPodSandbox event through the SDK over a real unix socket
//! (runtime → multiplexer → ttrpc → decode → Plugin::run_pod_sandbox → encode → reply), with a
//! transport floor side by side: the same socket, multiplexer and ttrpc answered by a handler
//! that neither decodes nor dispatches.
//!
//! Target: p99 < 1 ms.
#![allow(missing_docs, clippy::unwrap_used)]

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use nri::{
    EventSet, HandlerError, Plugin, Status, StubOptions,
    proto::api::{LinuxNamespace, LinuxPodSandbox, PodSandbox, RunPodSandboxRequest},
    runtime::{RuntimeListener, RuntimeOptions},
    transport::{Endpoint, IncomingRequest, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, RequestHandler},
};
use prost::Message;

const CALLS: usize = 5_000;
const WARMUP: usize = 200;

struct NetworkPlugin;

impl Plugin for NetworkPlugin {
    fn events(&self) -> EventSet {
        EventSet::pod_lifecycle()
    }
    async fn run_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        // What a network driver reads on this path: the pod's identity and its netns.
        std::hint::black_box((&pod.uid, nri::pod_netns_path(pod)));
        Ok(())
    }
}

struct Floor;

impl RequestHandler for Floor {
    async fn handle(&self, _: IncomingRequest) -> Result<Vec<u8>, Status> {
        Ok(Vec::new())
    }
}

/// A pod as containerd describes it: labels, annotations, namespaces, IPs.
fn pod(i: usize) -> PodSandbox {
    let labels: HashMap<String, String> = [
        ("app", "bench"),
        ("pod-template-hash", "5d4f8c7b9"),
        ("io.kubernetes.pod.namespace", "default"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations: HashMap<String, String> = [
        ("kubernetes.io/config.seen", "2026-11-27T22:00:00Z"),
        ("kubernetes.io/config.source", "api"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    PodSandbox {
        id: format!("{i:064x}"),
        name: format!("bench-{i}"),
        uid: format!("00000000-0000-4000-8000-{i:012x}"),
        namespace: "default".into(),
        labels,
        annotations,
        linux: Some(LinuxPodSandbox {
            namespaces: ["pid", "ipc", "uts", "network"]
                .iter()
                .map(|t| LinuxNamespace {
                    r#type: t.to_string(),
                    path: if *t == "network" {
                        format!("/var/run/netns/cni-{i:08x}-0000-0000-0000-000000000000")
                    } else {
                        String::new()
                    },
                })
                .collect(),
            cgroup_parent: format!("/kubepods/besteffort/pod{i}"),
            ..Default::default()
        }),
        pid: 4242,
        ips: vec![format!("10.244.0.{}", i % 250)],
        ..Default::default()
    }
}

fn summary(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let q = |p: f64| testkit::percentile(&samples, p).as_secs_f64() * 1e6;
    (q(0.5), q(0.99), q(1.0))
}

async fn through_sdk(dir: &std::path::Path) -> Vec<Duration> {
    let listener = RuntimeListener::bind(dir.join("sdk.sock")).unwrap();
    let mut options = StubOptions::new("bench", "10");
    options.socket = listener.path().to_path_buf();
    let plugin = nri::connect(options, NetworkPlugin).unwrap();
    let runtime = listener.accept(RuntimeOptions::default()).await.unwrap();
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let p = pod(i);
        let start = Instant::now();
        runtime.run_pod_sandbox(p).await.unwrap();
        if i >= WARMUP {
            samples.push(start.elapsed());
        }
    }
    plugin.stop().await;
    samples
}

async fn transport_floor(dir: &std::path::Path) -> Vec<Duration> {
    let path = dir.join("floor.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let client = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let _plugin = Endpoint::start(server, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Arc::new(Floor));
    let runtime = Endpoint::start(client, RUNTIME_SERVICE_CONN, PLUGIN_SERVICE_CONN, Arc::new(Floor));
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let start = Instant::now();
        // Encoding is part of the runtime's side in both runs.
        let payload = RunPodSandboxRequest { pod: Some(pod(i)) }.encode_to_vec();
        runtime
            .call(nri::PLUGIN_SERVICE, "RunPodSandbox", payload, Duration::from_secs(2))
            .await
            .unwrap();
        if i >= WARMUP {
            samples.push(start.elapsed());
        }
    }
    samples
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sdk = summary(through_sdk(dir.path()).await);
        let floor = summary(transport_floor(dir.path()).await);
        println!("nri_roundtrip: RunPodSandbox runtime -> plugin -> reply over a unix socket, {CALLS} calls");
        println!(
            "  through the SDK plugin  : p50 {:.1} us  p99 {:.1} us  max {:.1} us",
            sdk.0, sdk.1, sdk.2
        );
        println!(
            "  transport floor (base)  : p50 {:.1} us  p99 {:.1} us  max {:.1} us",
            floor.0, floor.1, floor.2
        );
        println!(
            "  ratio SDK/floor         : p50 {:.2}x  p99 {:.2}x",
            sdk.0 / floor.0,
            sdk.1 / floor.1
        );
        println!(
            "  target p99 < 1 ms: {}",
            if sdk.1 < 1000.0 { "MET" } else { "NOT MET" }
        );
    });
}
