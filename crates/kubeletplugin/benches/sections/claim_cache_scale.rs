//! Benchmark: what the claim cache costs a node agent as the cluster grows. A cluster of
//! 1,000 and then 100,000 ResourceClaims, each allocated to a pod of one of 5,000 nodes, 110 of
//! them on this node, in the fake API server. For each cache mode side by side: the agent's heap
//! once synced, the bytes it received from the API server, and the API requests per Prepare of
//! this node's claims; then 20 pods bound after the agent started, each prepared 100 ms after its
//! binding.
//!
//! Targets (issue 20): the node-scoped agent's heap at 100,000 claims within 2 MiB of the same
//! agent at 1,000; 0 API requests at Prepare for a claim allocated >= 100 ms before it.
//!
//! A section of the `prepare_latency` benchmark binary (one binary: less to build).

use std::time::{Duration, Instant};

use crate::{ALLOCATOR, common::*};
use kubeletplugin::ClaimCacheMode;
use testkit::{FakeApiServer, PODS, RESOURCE_CLAIMS};

const NODES: usize = 5_000;
const THIS_NODE: &str = "node-0000";
const ON_THIS_NODE: usize = 110;
const LATE_PODS: usize = 20;
const SCALES: [usize; 2] = [1_000, 100_000];
const MIB: f64 = 1024.0 * 1024.0;

/// Which node pod `i` runs on: the first [`ON_THIS_NODE`] on this node, the rest spread over
/// the others.
fn node_of(i: usize) -> String {
    if i < ON_THIS_NODE {
        THIS_NODE.to_owned()
    } else {
        format!("node-{:04}", 1 + i % (NODES - 1))
    }
}

/// A claim shaped like a real network claim (one device, a class config, reserved for its pod)
/// and its pod, bound to its node; the claim is made from the pod's template, as most are.
fn seed(api: &FakeApiServer, namespace: &str, i: usize) {
    let pod_name = format!("pod-{i}");
    let claim_name = format!("{pod_name}-net-x7k2p");
    let node = node_of(i);
    // UIDs are unique in a cluster: the namespace is part of them here.
    let pod_uid = format!("{namespace}-{pod_name}");
    let mut claim = allocated_claim(
        namespace,
        &claim_name,
        &format!("{namespace}-{claim_name}"),
        DRIVER,
        &["eth1"],
    );
    claim["status"]["allocation"]["devices"]["results"][0]["pool"] = serde_json::json!(node);
    claim["status"]["allocation"]["devices"]["config"] = serde_json::json!([{
        "source": "FromClass",
        "opaque": {"driver": DRIVER, "parameters": {"interface": {"name": "net1", "mtu": 1400},
                   "addresses": ["192.0.2.10/24"], "routes": [{"destination": "198.51.100.0/24"}]}},
    }]);
    claim["status"]["reservedFor"] = serde_json::json!([{"resource": "pods", "name": pod_name, "uid": pod_uid}]);
    claim["metadata"]["labels"] = serde_json::json!({"app": "bench", "pod-template-hash": "5d4f8c7b9"});
    api.seed(&RESOURCE_CLAIMS, namespace, claim);
    api.seed(
        &PODS,
        namespace,
        pod(namespace, &pod_name, &pod_uid, &node, &[], &[&claim_name]),
    );
}

fn claim_ref(namespace: &str, i: usize) -> kubeletplugin::proto::dra::v1::Claim {
    let name = format!("pod-{i}-net-x7k2p");
    claim(namespace, &name, &format!("{namespace}-{name}"))
}

/// One mode at one scale.
struct Row {
    heap: usize,
    sync: Duration,
    sync_bytes: u64,
    sync_requests: usize,
    prepare_requests: usize,
    late_requests: usize,
}

async fn measure(api: &FakeApiServer, dir: &std::path::Path, mode: ClaimCacheMode, scale: usize) -> Row {
    let cached = match mode {
        ClaimCacheMode::Node { .. } => ON_THIS_NODE,
        ClaimCacheMode::Watch => scale,
        ClaimCacheMode::GetOnly => 0,
        other => panic!("no expected cache size for the claim cache mode {other:?}"),
    };
    api.clear_requests();
    let bytes_before = api.bytes_sent();
    let heap_before = ALLOCATOR.allocated();
    let start = Instant::now();
    let plugin = kubeletplugin::start(options(dir, mode.clone()), RecordingDriver::default(), api.client())
        .await
        .unwrap();
    if mode != ClaimCacheMode::GetOnly {
        while !(plugin.claim_cache_ready() && plugin.cached_claims() >= cached) {
            assert!(start.elapsed() < Duration::from_secs(300), "the cache did not sync");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let sync = start.elapsed();
    // Let the freed list buffers go before the heap is read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let heap = ALLOCATOR.allocated().saturating_sub(heap_before);
    let sync_bytes = api.bytes_sent() - bytes_before;
    let sync_requests = api.requests().len();

    let channel = uds_channel(plugin.dra_socket()).await;
    api.clear_requests();
    for i in 0..ON_THIS_NODE {
        let answer = prepare_v1(&channel, vec![claim_ref("bench", i)]).await;
        assert!(answer.claims.values().all(|c| c.error.is_empty()), "{answer:?}");
    }
    let prepare_requests = api.requests().len();
    unprepare_v1(&channel, (0..ON_THIS_NODE).map(|i| claim_ref("bench", i)).collect()).await;

    // Pods bound after the agent started, each prepared 100 ms after the scheduler bound it (its
    // claim allocated before that). A namespace of their own, so that every scale and mode
    // starts from the same cluster.
    let late_ns = format!("late-{}", dir.file_name().unwrap().to_string_lossy());
    for i in 0..LATE_PODS {
        seed(api, &late_ns, i);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.clear_requests();
    for i in 0..LATE_PODS {
        let answer = prepare_v1(&channel, vec![claim_ref(&late_ns, i)]).await;
        assert!(answer.claims.values().all(|c| c.error.is_empty()), "{answer:?}");
    }
    let late_requests = api.requests().len();
    unprepare_v1(&channel, (0..LATE_PODS).map(|i| claim_ref(&late_ns, i)).collect()).await;
    plugin.shutdown().await;
    for i in 0..LATE_PODS {
        api.remove(&PODS, &late_ns, &format!("pod-{i}"));
        api.remove(&RESOURCE_CLAIMS, &late_ns, &format!("pod-{i}-net-x7k2p"));
    }
    Row {
        heap,
        sync,
        sync_bytes,
        sync_requests,
        prepare_requests,
        late_requests,
    }
}

/// Runs the benchmark and prints its table.
pub fn run() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let api = FakeApiServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        println!(
            "claim_cache_scale: {NODES} nodes, {ON_THIS_NODE} pods with a claim on this node, \
             {LATE_PODS} more bound after start and prepared 100 ms later; one claim per Prepare"
        );
        println!(
            "  {:>9}  {:<9}  {:>10}  {:>8}  {:>11}  {:>13}  {:>16}  {:>16}",
            "claims",
            "mode",
            "heap MiB",
            "sync s",
            "sync MiB rx",
            "sync requests",
            "requests/Prepare",
            "late req/Prepare"
        );
        let mut node_heap = Vec::new();
        let mut late_ok = true;
        let mut seeded = 0;
        for scale in SCALES {
            while seeded < scale {
                seed(&api, "bench", seeded);
                seeded += 1;
            }
            // Seeding's event history is not what a cluster of this size keeps in memory.
            api.compact();
            let modes = [
                (
                    "node",
                    ClaimCacheMode::Node {
                        node_name: THIS_NODE.into(),
                    },
                ),
                ("watch", ClaimCacheMode::Watch),
                ("get-only", ClaimCacheMode::GetOnly),
            ];
            for (name, mode) in modes {
                let row = measure(&api, &dir.path().join(format!("{name}-{scale}")), mode, scale).await;
                println!(
                    "  {:>9}  {:<9}  {:>10.2}  {:>8.2}  {:>11.2}  {:>13}  {:>16.2}  {:>16.2}",
                    scale,
                    name,
                    row.heap as f64 / MIB,
                    row.sync.as_secs_f64(),
                    row.sync_bytes as f64 / MIB,
                    row.sync_requests,
                    row.prepare_requests as f64 / ON_THIS_NODE as f64,
                    row.late_requests as f64 / LATE_PODS as f64,
                );
                if name == "node" {
                    node_heap.push(row.heap);
                    late_ok &= row.prepare_requests == 0 && row.late_requests == 0;
                }
            }
        }
        let growth = (node_heap[1] as f64 - node_heap[0] as f64) / MIB;
        println!(
            "  node-scoped heap, {} -> {} claims: {growth:+.2} MiB (target within 2 MiB): {}",
            SCALES[0],
            SCALES[1],
            if growth.abs() <= 2.0 { "MET" } else { "NOT MET" }
        );
        println!(
            "  node-scoped Prepare of a claim allocated >= 100 ms before: 0 API requests: {}",
            if late_ok { "MET" } else { "NOT MET" }
        );
        // The request counts are deterministic: a regression there is a failure, not noise.
        assert!(late_ok, "the node-scoped cache made API requests at Prepare");
    });
}
