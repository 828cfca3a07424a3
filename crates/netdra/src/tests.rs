//! The framework's interleavings, through the fake kernel and the fake API server, on tokio's
//! paused clock: deterministic, no root. Each test is named after the interleaving it plays
//! and asserts the final truth: where each interface is, what the journal holds, the claim's
//! status entries on the API server, and what each hook answered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::resource::v1::{Device, ResourceClaim};
use kubeletplugin::{
    ClaimMeta, ClaimRef, DraDriver, DriverError, MetadataDevice, MetadataWriter, PreparedChange, PreparedClaim,
    PreparedStore, RequestDevices, ResolvedClaim,
};
use netdev::RestoreRecord;
use nri::{
    Plugin,
    proto::api::{Container, LinuxNamespace, LinuxPodSandbox, PodSandbox},
};
use serde_json::{Value, json};
use tokio::{sync::watch, time::Instant};

use crate::{
    api::{ApiError, fake::FakeApi},
    driver::{HostDevice, InterfacePlan, InterfaceRequest, NetworkDriver},
    journal::{
        self, FileStorage, Journal,
        testing::{Faults, FaultyStorage},
    },
    kernel::fake::{FakeKernel, Fault, Gate, Op},
    kubelet::{JournalStore, KubeletSide},
    metrics::Metrics,
    node::{Node, Parts},
    plan::PodRef,
    reconcile,
    runtime::RuntimeSide,
    status::StatusWriter,
};

const DRIVER: &str = "net.example.com";
const MOVE: Duration = Duration::from_millis(20);

/// What the test driver is told to do, and what it saw.
#[derive(Default)]
struct Probe {
    panic_in_attached: AtomicBool,
    panic_in_plan: AtomicBool,
    attached: AtomicUsize,
    detached: AtomicUsize,
}

/// The reference driver, with panics on demand.
#[derive(Clone)]
struct TestDriver(Arc<Probe>);

impl NetworkDriver for TestDriver {
    fn plan_interface(&self, request: &InterfaceRequest<'_>) -> Result<InterfacePlan, DriverError> {
        assert!(
            !self.0.panic_in_plan.load(Ordering::SeqCst),
            "injected panic in plan_interface"
        );
        HostDevice.plan_interface(request)
    }

    fn attached(&self, _pod: &PodRef, _records: &[RestoreRecord]) {
        self.0.attached.fetch_add(1, Ordering::SeqCst);
        assert!(
            !self.0.panic_in_attached.load(Ordering::SeqCst),
            "injected panic in attached"
        );
    }

    fn detached(&self, _pod: &PodRef, _record: &RestoreRecord) {
        self.0.detached.fetch_add(1, Ordering::SeqCst);
    }
}

type TestNode = Node<TestDriver, FakeKernel>;

fn uid(name: &str) -> String {
    format!("uid-{name}")
}

fn claim_ref(name: &str) -> ClaimRef {
    ClaimRef {
        namespace: "ns".into(),
        name: name.into(),
        uid: uid(name),
    }
}

fn netns_path(pod: &str) -> String {
    format!("/var/run/netns/{pod}")
}

fn sandbox(pod: &str) -> PodSandbox {
    sandbox_in(pod, &netns_path(pod))
}

/// A sandbox of `pod` in the namespace at `path` (a pod's second sandbox has another one).
fn sandbox_in(pod: &str, path: &str) -> PodSandbox {
    PodSandbox {
        id: format!("sandbox-{pod}-{path}"),
        name: pod.into(),
        uid: uid(pod),
        namespace: "ns".into(),
        linux: Some(LinuxPodSandbox {
            namespaces: vec![LinuxNamespace {
                r#type: "network".into(),
                path: path.into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn published() -> Vec<Device> {
    (0..120)
        .map(|i| {
            serde_json::from_value(
                json!({"name": format!("d{i}"), "attributes": {"ifName": {"string": format!("eth{i}")}}}),
            )
            .unwrap()
        })
        .collect()
}

/// A claim allocated `devices`, each named `net<i>` in the pod, reserved for `pods`.
fn resolved(name: &str, pods: &[&str], devices: &[&str], standalone: bool) -> ResolvedClaim {
    let results: Vec<Value> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| json!({"request": format!("r{i}"), "driver": DRIVER, "pool": "node", "device": d}))
        .collect();
    let config: Vec<Value> = devices
        .iter()
        .enumerate()
        .map(|(i, _)| {
            json!({"source": "FromClaim", "requests": [format!("r{i}")], "opaque": {"driver": DRIVER, "parameters": {
                "apiVersion": "netdra.dev/v1alpha1", "kind": "InterfaceConfig",
                "name": format!("net{}", i + 1), "mtu": 1400, "addresses": [format!("10.{i}.0.2/24")]}}})
        })
        .collect();
    let owner = if standalone {
        json!([])
    } else {
        json!([{"apiVersion": "v1", "kind": "Pod", "name": pods[0], "uid": uid(pods[0]), "controller": true}])
    };
    let object: ResourceClaim = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "uid": uid(name), "ownerReferences": owner},
        "spec": {"devices": {"requests": devices.iter().enumerate().map(|(i, _)| json!({"name": format!("r{i}")})).collect::<Vec<_>>()}},
        "status": {
            "allocation": {"devices": {"results": results, "config": config}},
            "reservedFor": pods.iter().map(|p| json!({"resource": "pods", "name": p, "uid": uid(p)})).collect::<Vec<_>>(),
        },
    }))
    .unwrap();
    kubeletplugin::resolve_for_driver(DRIVER, &claim_ref(name), Arc::new(object)).unwrap()
}

/// One node: the fake kernel and API server outlive it (a restart keeps them), the journal
/// file too.
struct World {
    dir: tempfile::TempDir,
    kernel: FakeKernel,
    api: Arc<FakeApi>,
    faults: Faults,
    probe: Arc<Probe>,
    node: Arc<TestNode>,
    _published: watch::Sender<Vec<Device>>,
    _nri: watch::Sender<bool>,
    forget: tokio::task::JoinHandle<()>,
    /// The device metadata files, when the test has them written (see [`World::with_metadata`]).
    metadata: Option<MetadataWriter>,
}

impl World {
    async fn new() -> Self {
        Self::with_moves(MOVE).await
    }

    async fn with_moves(move_time: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kernel = FakeKernel::new(move_time);
        for i in 0..120 {
            kernel.add_link(&format!("eth{i}"), i % 2 == 1);
        }
        let api = Arc::new(FakeApi::default());
        api.watch_cache.store(true, Ordering::SeqCst);
        let faults = Faults::default();
        let probe = Arc::new(Probe::default());
        let (node, published, nri, forget) =
            Self::start(dir.path(), "boot-1", &kernel, &api, &faults, &probe, None).await;
        Self {
            dir,
            kernel,
            api,
            faults,
            probe,
            node,
            _published: published,
            _nri: nri,
            forget,
            metadata: None,
        }
    }

    /// A node whose kubelet plugin writes device metadata files under the world's directory;
    /// [`World::prepare`] writes each request's first generation as the plugin does.
    async fn with_metadata() -> Self {
        let mut w = Self::new().await;
        let writer = MetadataWriter::new(DRIVER, w.dir.path().join("plugin"), w.dir.path().join("cdi"));
        w.metadata = Some(writer);
        w.restart().await;
        w
    }

    async fn start(
        dir: &Path,
        boot: &str,
        kernel: &FakeKernel,
        api: &Arc<FakeApi>,
        faults: &Faults,
        probe: &Arc<Probe>,
        metadata: Option<MetadataWriter>,
    ) -> (
        Arc<TestNode>,
        watch::Sender<Vec<Device>>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let path = dir.join("netdra-state");
        let entries = crate::agent::journal_entries(&path, Some(boot)).await.unwrap();
        let storage = FaultyStorage {
            inner: FileStorage::new(&path),
            faults: faults.clone(),
        };
        let journal = Journal::start(path, storage, Some(boot.into()), entries.clone())
            .await
            .unwrap();
        let (published_tx, published) = watch::channel(crate::tests::published());
        let (nri_tx, nri) = watch::channel(true);
        let (settled_tx, settled) = tokio::sync::mpsc::unbounded_channel();
        let status = StatusWriter::start(api.clone(), DRIVER, Metrics::default(), settled_tx);
        let node = Arc::new(
            Node::new(
                Parts {
                    driver_name: DRIVER.into(),
                    driver: TestDriver(probe.clone()),
                    kernel: kernel.clone(),
                    journal,
                    entries,
                    holds: netdev_k8s::DeviceHolds::default(),
                    published,
                    api: api.clone(),
                    nri_connected: nri,
                    metrics: Metrics::default(),
                    metadata,
                },
                status,
            )
            .unwrap(),
        );
        reconcile::against_kernel(&node).await;
        reconcile::report_all(&node);
        let forget = tokio::spawn(reconcile::forget_released(node.clone(), settled));
        (node, published_tx, nri_tx, forget)
    }

    /// The agent is killed (every task of it stops where it stands) and starts again in boot
    /// `boot`, converging its journal against the kernel.
    async fn restart_in(&mut self, boot: &str) {
        self.node.crash();
        self.forget.abort();
        let (node, published, nri, forget) = Self::start(
            self.dir.path(),
            boot,
            &self.kernel,
            &self.api,
            &self.faults,
            &self.probe,
            self.metadata.clone(),
        )
        .await;
        self.node = node;
        self._published = published;
        self._nri = nri;
        self.forget = forget;
    }

    async fn restart(&mut self) {
        self.restart_in("boot-1").await;
    }

    fn runtime(&self) -> RuntimeSide<TestDriver, FakeKernel> {
        RuntimeSide(self.node.clone())
    }

    /// Prepares as the kubelet plugin does: the driver, then one commit of the batch (and the
    /// driver's unprepare when that fails).
    async fn prepare_with(&self, claim: &str, pods: &[&str], devices: &[&str], standalone: bool) -> Result<(), String> {
        let resolved = resolved(claim, pods, devices, standalone);
        let consumers: Vec<(&str, String)> = pods.iter().map(|p| (*p, uid(p))).collect();
        let consumers: Vec<(&str, &str)> = consumers.iter().map(|(p, u)| (*p, u.as_str())).collect();
        self.api.put(&resolved.claim, &consumers);
        let side = KubeletSide(self.node.clone());
        let preparation = side.prepare(&resolved).await.map_err(|e| e.to_string())?;
        if let Some(writer) = &self.metadata {
            // What the plugin writes at Prepare: each request's devices, by name only.
            let requests: Vec<RequestDevices> = devices
                .iter()
                .enumerate()
                .map(|(i, d)| RequestDevices {
                    request: format!("r{i}"),
                    devices: vec![MetadataDevice::new("node", *d)],
                })
                .collect();
            writer.write_prepared(&ClaimMeta::of(&resolved), &requests).unwrap();
        }
        let prepared = PreparedClaim {
            claim: resolved.claim.clone(),
            preparation,
            boot_id: Some("boot-1".into()),
        };
        if let Err(e) = JournalStore(self.node.clone())
            .commit(vec![PreparedChange::Prepared(prepared.clone())])
            .await
        {
            side.unprepare(&prepared).await.unwrap();
            return Err(e.to_string());
        }
        Ok(())
    }

    async fn prepare(&self, claim: &str, pod: &str, devices: &[&str]) {
        self.prepare_with(claim, &[pod], devices, true).await.unwrap();
    }

    async fn unprepare(&self, claim: &str) -> Result<(), String> {
        let prepared = PreparedClaim {
            claim: claim_ref(claim),
            preparation: Default::default(),
            boot_id: Some("boot-1".into()),
        };
        KubeletSide(self.node.clone())
            .unprepare(&prepared)
            .await
            .map_err(|e| e.to_string())?;
        JournalStore(self.node.clone())
            .commit(vec![PreparedChange::Unprepared(claim_ref(claim))])
            .await
            .map_err(|e| e.to_string())
    }

    /// Makes the next call of `op` wait at the returned gate, before or after its work.
    fn stall(&self, op: Op, before: bool) -> Gate {
        let gate = Gate::default();
        self.kernel.inject(
            op,
            Fault::Stall {
                gate: gate.clone(),
                before,
            },
        );
        gate
    }

    fn add_pod(&self, pod: &str) -> u64 {
        self.kernel.add_netns(&netns_path(pod))
    }

    /// The runtime's resync after a restart lists pod `a`: claim `c`'s `host` interface ends
    /// in the pod's namespace (`inode`) as net1, journaled attached.
    async fn resync_pod_a_attaches(&self, host: &str, inode: u64) {
        self.runtime().synchronize(vec![sandbox("a")], vec![]).await.unwrap();
        self.settle().await;
        assert_eq!(self.place(host), format!("net:[{inode}] as net1"));
        assert_eq!(self.journal(), phases(&[("c", "attached")]));
    }

    async fn run_pod(&self, pod: &str) -> Result<(), String> {
        self.runtime()
            .run_pod_sandbox(&sandbox(pod))
            .await
            .map_err(|e| e.to_string())
    }

    async fn stop_pod(&self, pod: &str) {
        self.runtime().stop_pod_sandbox(&sandbox(pod)).await.unwrap();
    }

    async fn create_container(&self, pod: &str) -> Result<(), String> {
        let container = Container {
            name: "app".into(),
            ..Default::default()
        };
        self.runtime()
            .create_container(&sandbox(pod), &container)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Where interface `eth` is: `host`, the pod whose namespace holds it, or `gone`.
    fn place(&self, eth: &str) -> String {
        match self.kernel.link(eth) {
            None => "gone".into(),
            Some(link) => match link.netns {
                None => format!("host as {}", link.name),
                Some(inode) => format!("net:[{inode}] as {}", link.name),
            },
        }
    }

    /// The journal file's claims: UID → phase.
    fn journal(&self) -> BTreeMap<String, String> {
        let bytes = std::fs::read(self.dir.path().join("netdra-state")).unwrap();
        journal::decode(Path::new("j"), &bytes)
            .unwrap()
            .entries
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("claim/")?.to_owned(), v["phase"].as_str()?.to_owned())))
            .collect()
    }

    fn journal_keys(&self) -> Vec<String> {
        let bytes = std::fs::read(self.dir.path().join("netdra-state")).unwrap();
        journal::decode(Path::new("j"), &bytes)
            .unwrap()
            .entries
            .into_keys()
            .collect()
    }

    /// The claim's status on the API server: (status, reason, message) per device.
    fn status(&self, claim: &str) -> Vec<(String, String, String)> {
        self.api
            .devices(&claim_ref(claim))
            .iter()
            .filter(|d| d["driver"] == DRIVER)
            .map(|d| {
                let c = &d["conditions"][0];
                (
                    c["status"].as_str().unwrap_or_default().to_owned(),
                    c["reason"].as_str().unwrap_or_default().to_owned(),
                    c["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Lets the background work (operations, status writes) run on the paused clock.
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn phases(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(c, p)| (uid(c), (*p).to_owned())).collect()
}

#[tokio::test(start_paused = true)]
async fn the_happy_path_attaches_reports_and_returns() {
    let w = World::new().await;
    let inode = w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    assert_eq!(
        w.journal(),
        phases(&[("c", "prepared")]),
        "durable before Prepare answered"
    );
    w.run_pod("a").await.unwrap();
    assert_eq!(w.place("eth0"), format!("net:[{inode}] as net1"));
    w.settle().await;
    assert_eq!(w.journal(), phases(&[("c", "attached")]));
    assert_eq!(w.status("c")[0].0, "True");
    w.create_container("a").await.unwrap();
    w.stop_pod("a").await;
    assert_eq!(w.place("eth0"), "host as eth0");
    w.settle().await;
    assert_eq!(w.status("c")[0].1, "Detached");
    w.unprepare("c").await.unwrap();
    w.settle().await;
    assert!(w.status("c").is_empty(), "entries removed");
    assert!(
        w.journal_keys().is_empty(),
        "the journal is empty once the claim is gone"
    );
    assert_eq!(w.probe.attached.load(Ordering::SeqCst), 1);
    assert_eq!(w.probe.detached.load(Ordering::SeqCst), 1);
}

/// Device metadata (KEP-5304): the file the plugin wrote at Prepare names the device only;
/// once the attach succeeds, and before the sandbox hook answers, it carries the interface's
/// name and addresses in the pod.
#[tokio::test(start_paused = true)]
async fn the_metadata_file_gets_the_network_data_before_the_sandbox_hook_answers() {
    let w = World::with_metadata().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    let file = w.dir.path().join("plugin/dra-device-metadata/ns_c/r0/metadata.json");
    let first = |bytes: Vec<u8>| -> Value {
        serde_json::Deserializer::from_slice(&bytes)
            .into_iter::<Value>()
            .next()
            .unwrap()
            .unwrap()
    };
    let prepared = first(std::fs::read(&file).unwrap());
    assert_eq!(prepared["metadata"]["generation"], 1, "{prepared}");
    assert_eq!(prepared["requests"][0]["devices"][0]["name"], "d0");
    assert!(prepared["requests"][0]["devices"][0].get("networkData").is_none());

    w.run_pod("a").await.unwrap();
    let attached = first(std::fs::read(&file).unwrap());
    assert_eq!(attached["metadata"]["generation"], 2, "{attached}");
    let device = &attached["requests"][0]["devices"][0];
    assert_eq!(device["networkData"]["interfaceName"], "net1", "{attached}");
    assert_eq!(device["networkData"]["ips"], json!(["10.0.0.2/24"]));
    assert_eq!(device["attributes"]["ifName"], json!({"string": "eth0"}));

    w.stop_pod("a").await;
    w.unprepare("c").await.unwrap();
}

/// Finding 1: an attach still running when its pod stops; the stop answers within its
/// budget, the interface comes back when the attach ends, no record is dropped.
#[tokio::test(start_paused = true)]
async fn stop_during_attach_returns_the_interface_once_the_attach_ends() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d1"]).await;
    let gate = w.stall(Op::Attach, false);
    let run = w.run_pod("a").await;
    assert!(run.is_ok(), "the sandbox starts; its first container waits: {run:?}");
    gate.reached().await;
    assert_eq!(w.journal(), phases(&[("c", "attaching")]), "the intent is journaled");
    let started = Instant::now();
    w.stop_pod("a").await;
    assert!(
        started.elapsed() <= Duration::from_millis(1500),
        "the stop hook answered in its budget"
    );
    // The pod's namespace dies; a physical NIC would go back as devN, this one is held.
    gate.open();
    w.settle().await;
    assert_eq!(w.place("eth1"), "host as eth1");
    assert_eq!(w.journal(), phases(&[("c", "detached")]));
    assert_eq!(w.status("c")[0].1, "Detached");
    w.unprepare("c").await.unwrap();
}

/// Unprepare during an attach: it waits for the attach, returns the interface, then releases.
#[tokio::test(start_paused = true)]
async fn unprepare_during_attach_waits_returns_and_releases() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    let gate = w.stall(Op::Attach, true);
    w.run_pod("a").await.unwrap();
    gate.reached().await;
    let node = w.node.clone();
    let unprepare = tokio::spawn({
        let w_node = node.clone();
        async move {
            let prepared = PreparedClaim {
                claim: claim_ref("c"),
                preparation: Default::default(),
                boot_id: None,
            };
            KubeletSide(w_node.clone())
                .unprepare(&prepared)
                .await
                .map_err(|e| e.to_string())?;
            JournalStore(w_node)
                .commit(vec![PreparedChange::Unprepared(claim_ref("c"))])
                .await
                .map_err(|e| e.to_string())
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!unprepare.is_finished(), "Unprepare waits for the attach");
    gate.open();
    unprepare.await.unwrap().unwrap();
    assert_eq!(w.place("eth0"), "host as eth0");
    w.settle().await;
    assert!(w.journal().is_empty());
    assert!(w.status("c").is_empty());
}

/// Crash after the intent, before the move: the interface never left; after the restart the
/// claim is home and the running pod gets it at the runtime's resync.
#[tokio::test(start_paused = true)]
async fn crash_after_intent_before_move_then_resync_attaches() {
    let mut w = World::new().await;
    let inode = w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    let gate = w.stall(Op::Attach, true);
    w.run_pod("a").await.unwrap();
    gate.reached().await;
    assert_eq!(w.journal(), phases(&[("c", "attaching")]));
    w.restart().await;
    assert_eq!(w.place("eth0"), "host as eth0");
    assert_eq!(w.journal(), phases(&[("c", "detached")]));
    w.resync_pod_a_attaches("eth0", inode).await;
    assert_eq!(w.status("c")[0].0, "True");
}

/// Crash after the move, before the outcome: the journal says attaching with the interface in
/// the pod; the restart returns it (its configuration may be half done), the resync attaches it
/// again; Ready=True.
#[tokio::test(start_paused = true)]
async fn crash_after_move_before_outcome_is_undone_and_redone() {
    let mut w = World::new().await;
    let inode = w.add_pod("a");
    w.prepare("c", "a", &["d1"]).await;
    let gate = w.stall(Op::Attach, false);
    w.run_pod("a").await.unwrap();
    gate.reached().await;
    assert_eq!(w.place("eth1"), format!("net:[{inode}] as net1"));
    assert_eq!(w.journal(), phases(&[("c", "attaching")]));
    w.restart().await;
    assert_eq!(w.place("eth1"), "host as eth1", "an interrupted attach is undone");
    // Subinterfaces left on the host are swept at each start, only once the journal has
    // converged: a journaled one found on the host is then already settled.
    let calls = w.kernel.calls();
    let last_sweep = *w.kernel.sweeps().last().expect("a sweep at start");
    let converged = calls
        .iter()
        .rposition(|(op, _)| *op == Op::Locate)
        .expect("the restart located eth1");
    assert!(
        last_sweep > converged,
        "swept after converging: {calls:?}, sweep after {last_sweep} calls"
    );
    assert_eq!(w.kernel.sweeps().len(), 2, "one sweep per start");
    w.resync_pod_a_attaches("eth1", inode).await;
    assert_eq!(w.status("c")[0].0, "True");
}

/// Crash after the outcome: nothing to redo; the restart finds the interface in the pod and
/// reports it again.
#[tokio::test(start_paused = true)]
async fn crash_after_outcome_keeps_the_interface_in_the_pod() {
    let mut w = World::new().await;
    let inode = w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    w.run_pod("a").await.unwrap();
    w.settle().await;
    w.api.claims.lock().values_mut().for_each(|c| c.devices.clear());
    w.restart().await;
    w.resync_pod_a_attaches("eth0", inode).await;
    assert_eq!(
        w.status("c")[0].0,
        "True",
        "a status lost in the crash is written again"
    );
    let moves = w.kernel.calls().iter().filter(|(op, _)| *op == Op::Attach).count();
    assert_eq!(moves, 1, "not attached twice");
}

/// Crash during a detach, after the move back: the restart finishes it.
#[tokio::test(start_paused = true)]
async fn crash_during_detach_is_finished_at_restart() {
    let mut w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    w.run_pod("a").await.unwrap();
    w.settle().await;
    let gate = w.stall(Op::Detach, false);
    let stop = tokio::spawn({
        let runtime = w.runtime();
        async move { runtime.stop_pod_sandbox(&sandbox("a")).await.unwrap() }
    });
    gate.reached().await;
    assert_eq!(
        w.journal(),
        phases(&[("c", "detaching")]),
        "the intent to return is journaled"
    );
    stop.await.unwrap();
    w.restart().await;
    w.settle().await;
    assert_eq!(w.place("eth0"), "host as eth0");
    assert_eq!(w.journal(), phases(&[("c", "detached")]));
    assert_eq!(w.status("c")[0].1, "Detached");
}

/// A detach that finds the namespace dead while the agent was down: a veth is reported gone,
/// a physical NIC found on the host as devN is restored; neither is called "returned".
#[tokio::test(start_paused = true)]
async fn pods_gone_while_the_agent_was_down_are_reported_gone_or_restored() {
    let mut w = World::new().await;
    w.add_pod("a");
    w.add_pod("b");
    w.prepare("ca", "a", &["d0"]).await; // eth0: a veth
    w.prepare("cb", "b", &["d1"]).await; // eth1: physical
    w.run_pod("a").await.unwrap();
    w.run_pod("b").await.unwrap();
    w.settle().await;
    w.node.crash();
    w.kernel.kill_netns(&netns_path("a"));
    w.kernel.kill_netns(&netns_path("b"));
    assert_eq!(w.place("eth1"), "host as dev1");
    w.restart().await;
    w.runtime().synchronize(vec![], vec![]).await.unwrap();
    w.settle().await;
    assert_eq!(w.place("eth0"), "gone");
    assert_eq!(w.place("eth1"), "host as eth1");
    assert_eq!(w.status("ca")[0].1, "Gone");
    assert_eq!(w.status("cb")[0].1, "Detached");
    assert!(
        w.status("cb")[0].2.contains("found on the host as dev1"),
        "{:?}",
        w.status("cb")
    );
    w.unprepare("ca").await.unwrap();
    w.unprepare("cb").await.unwrap();
    w.settle().await;
    assert!(w.journal_keys().is_empty());
}

/// Finding 3: a journal of another boot is dropped; nothing is re-applied to host NICs.
#[tokio::test(start_paused = true)]
async fn a_previous_boots_journal_is_dropped_and_nothing_is_reapplied() {
    let mut w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d1"]).await;
    w.run_pod("a").await.unwrap();
    w.settle().await;
    // The reboot: namespaces are gone, NICs are back under their own names.
    w.node.crash();
    w.kernel.kill_netns(&netns_path("a"));
    w.kernel.add_link("eth1", true);
    let calls = w.kernel.calls().len();
    w.restart_in("boot-2").await;
    assert!(w.journal().is_empty(), "{:?}", w.journal());
    assert_eq!(
        w.kernel.calls().len(),
        calls,
        "no kernel call for the previous boot's claims"
    );
    assert!(w.node.claims().is_empty());
}

/// Finding 4, watch cache: pod b references a claim attached to pod a. Its sandbox fails
/// naming the claim and pod a while a holds it; once a stopped, the retry gets the interface.
#[tokio::test(start_paused = true)]
async fn a_second_pod_on_a_prepared_claim_fails_naming_the_claim_and_its_holder_until_it_is_gone() {
    second_pod_waits_for_the_first(true).await;
}

/// Finding 4 with `--claim-cache get-only`: the same, through a GET of the standalone claim.
#[tokio::test(start_paused = true)]
async fn a_second_pod_on_a_prepared_claim_is_refused_in_get_only_mode_too() {
    second_pod_waits_for_the_first(false).await;
}

async fn second_pod_waits_for_the_first(watch_cache: bool) {
    let w = World::new().await;
    w.api.watch_cache.store(watch_cache, Ordering::SeqCst);
    w.add_pod("a");
    let b_inode = w.add_pod("b");
    w.prepare("c", "a", &["d0"]).await;
    w.run_pod("a").await.unwrap();
    w.settle().await;
    // Pod b is scheduled with the same claim (the kubelet prepares a claim once).
    w.api.put(&claim_ref("c"), &[("a", &uid("a")), ("b", &uid("b"))]);
    let error = w.run_pod("b").await.unwrap_err();
    assert!(
        error.contains("claim ns/c") && error.contains("pod ns/a"),
        "names the claim and its holder: {error}"
    );
    let error = w.create_container("b").await.unwrap_err();
    assert!(error.contains("claim ns/c"), "{error}");
    assert_eq!(w.status("c")[0].0, "True", "pod a's status is untouched");
    // Pod a goes; the kubelet retries pod b's sandbox.
    w.stop_pod("a").await;
    w.api.put(&claim_ref("c"), &[("b", &uid("b"))]);
    w.run_pod("b").await.unwrap();
    w.create_container("b").await.unwrap();
    w.settle().await;
    assert_eq!(w.place("eth0"), format!("net:[{b_inode}] as net1"));
    assert_eq!(w.node.claim(&uid("c")).unwrap().plan.pod.uid, uid("b"));
    assert_eq!(w.status("c")[0].0, "True", "Ready=True for the new pod");
    if !watch_cache {
        assert!(*w.api.gets.lock() > 0, "get-only mode reads the claim");
    }
}

/// A claim really shared by two running pods: the second never runs without an error.
#[tokio::test(start_paused = true)]
async fn a_claim_shared_by_two_pods_never_runs_the_second_without_an_error() {
    let w = World::new().await;
    w.add_pod("a");
    w.add_pod("b");
    let reserved = w.prepare_with("c", &["a", "b"], &["d0"], true).await;
    assert!(
        reserved.unwrap_err().contains("reserved for 2 pods"),
        "Prepare refuses a claim reserved for two pods"
    );
    w.prepare("c", "a", &["d0"]).await;
    w.api.put(&claim_ref("c"), &[("a", &uid("a")), ("b", &uid("b"))]);
    w.run_pod("a").await.unwrap();
    for _ in 0..3 {
        let error = w.run_pod("b").await.unwrap_err();
        assert!(error.contains("claim ns/c") && error.contains("pod ns/a"), "{error}");
    }
    let error = w.create_container("b").await.unwrap_err();
    assert!(error.contains("claim ns/c"), "{error}");
}

/// Finding 5: a failed journal write at Prepare changes nothing; the kubelet's retry works.
#[tokio::test(start_paused = true)]
async fn a_failed_write_at_prepare_changes_nothing_and_the_retry_prepares() {
    let w = World::new().await;
    w.faults.fail_next(1);
    let error = w.prepare_with("c", &["a"], &["d0"], true).await.unwrap_err();
    assert!(error.contains("injected"), "{error}");
    assert!(w.node.claims().is_empty(), "memory unchanged");
    assert!(w.journal().is_empty());
    w.prepare("c", "a", &["d0"]).await;
    assert_eq!(w.journal(), phases(&[("c", "prepared")]));
}

/// Finding 5: a failed journal write at Unprepare keeps the claim (and its devices held); the
/// retry releases it.
#[tokio::test(start_paused = true)]
async fn a_failed_write_at_unprepare_keeps_the_claim_and_the_retry_releases_it() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    w.run_pod("a").await.unwrap();
    w.stop_pod("a").await;
    w.settle().await;
    w.faults.fail_next(1);
    let error = w.unprepare("c").await.unwrap_err();
    assert!(error.contains("injected"), "{error}");
    assert_eq!(w.journal(), phases(&[("c", "detached")]));
    assert_eq!(w.node.claim(&uid("c")).unwrap().phase.name(), "Detached");
    w.unprepare("c").await.unwrap();
    w.settle().await;
    assert!(w.journal().is_empty());
}

/// The journal's flush to disk fails behind a Prepare (the kubelet was answered once the file
/// held the claim): the next write, the attach's intent, rewrites the file whole from the
/// replica, and a crash after the attach finds everything.
#[tokio::test(start_paused = true)]
async fn a_failed_flush_behind_prepare_rewrites_the_journal_whole_at_the_next_write() {
    let mut w = World::new().await;
    let inode = w.add_pod("a");
    w.faults.fail_next_flush(1);
    w.prepare("c", "a", &["d0"]).await;
    // The flush runs on a blocking thread, on the real clock.
    for _ in 0..1000 {
        if w.faults.flushes_pending() == 0 && w.node.journal.flush_failed() {
            break;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        w.node.journal.flush_failed(),
        "the flush behind the commit ran and failed"
    );
    let before = std::fs::read_to_string(w.dir.path().join("netdra-state")).unwrap();
    w.run_pod("a").await.unwrap();
    let after = std::fs::read_to_string(w.dir.path().join("netdra-state")).unwrap();
    // Appending would have kept the first record after the boot record (the kubelet's).
    assert!(
        after.lines().nth(2).is_some_and(|l| l.contains("\"attaching\"")),
        "rewritten as a snapshot holding the intent, not appended to:\nbefore:\n{before}\nafter:\n{after}"
    );
    w.settle().await;
    w.restart().await;
    w.resync_pod_a_attaches("eth0", inode).await;
}

/// A power loss can leave the journal damaged after its first record (its appends were flushed
/// behind their answers): on the next boot it is dropped, not refused; on the same boot the
/// damage stops the start, naming the file.
#[tokio::test(start_paused = true)]
async fn a_damaged_journal_of_a_previous_boot_is_dropped_not_refused() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    let path = w.dir.path().join("netdra-state");
    let text = std::fs::read_to_string(&path).unwrap();
    let (head, last) = text.trim_end().rsplit_once('\n').unwrap();
    std::fs::write(&path, format!("{head}\n\0\0\0\0 zeros\n{last}\n")).unwrap();
    let entries = crate::agent::journal_entries(&path, Some("boot-2")).await.unwrap();
    assert!(entries.is_empty());
    let error = crate::agent::journal_entries(&path, Some("boot-1")).await.unwrap_err();
    assert!(error.to_string().contains(&path.display().to_string()), "{error}");
}

/// A failed journal write of the attach intent: nothing moves, the hook fails naming it.
#[tokio::test(start_paused = true)]
async fn a_failed_intent_write_moves_nothing_and_fails_the_sandbox() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    w.faults.fail_next(1);
    let error = w.run_pod("a").await.unwrap_err();
    assert!(
        error.contains("nothing was moved") && error.contains("claim ns/c"),
        "{error}"
    );
    assert_eq!(w.place("eth0"), "host as eth0");
    assert_eq!(w.journal(), phases(&[("c", "prepared")]));
    w.run_pod("a").await.unwrap();
    assert_ne!(w.place("eth0"), "host as eth0");
}

/// Finding 9: a panic in the attach answers the pod, returns whatever moved, and the next
/// hook for the pod is served.
#[tokio::test(start_paused = true)]
async fn a_panic_in_the_attach_answers_the_pod_and_later_hooks_are_served() {
    let w = World::new().await;
    let inode = w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    w.kernel.inject(Op::Attach, Fault::Panic);
    let error = w.run_pod("a").await.unwrap_err();
    assert!(error.contains("panic"), "{error}");
    w.settle().await;
    assert_eq!(w.place("eth0"), "host as eth0");
    assert_eq!(w.journal(), phases(&[("c", "detached")]));
    assert_eq!(w.status("c")[0].1, "AttachFailed");
    w.create_container("a").await.unwrap();
    assert_eq!(w.place("eth0"), format!("net:[{inode}] as net1"), "the retry attached");
}

/// A panicking driver hook: logged, the pod keeps its interface, the agent keeps serving.
#[tokio::test(start_paused = true)]
async fn a_panicking_driver_hook_is_contained() {
    let w = World::new().await;
    w.add_pod("a");
    w.add_pod("b");
    w.probe.panic_in_attached.store(true, Ordering::SeqCst);
    w.prepare("c", "a", &["d0"]).await;
    w.run_pod("a").await.unwrap();
    w.settle().await;
    assert_eq!(w.journal(), phases(&[("c", "attached")]));
    w.probe.panic_in_plan.store(true, Ordering::SeqCst);
    let error = w.prepare_with("c2", &["b"], &["d2"], true).await.unwrap_err();
    assert!(error.contains("panicked"), "{error}");
    w.probe.panic_in_plan.store(false, Ordering::SeqCst);
    w.prepare("c2", "b", &["d2"]).await;
    w.run_pod("b").await.unwrap();
    w.settle().await;
    assert_eq!(w.probe.attached.load(Ordering::SeqCst), 2);
    assert_eq!(w.journal(), phases(&[("c", "attached"), ("c2", "attached")]));
}

/// An attach that fails and is rolled back: the sandbox fails naming claim and device, the
/// claim says AttachFailed, the interface is home.
#[tokio::test(start_paused = true)]
async fn a_failed_attach_fails_the_sandbox_and_shows_on_the_claim() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    w.kernel.inject(Op::Attach, Fault::FailAfterMove { rolled_back: true });
    let error = w.run_pod("a").await.unwrap_err();
    assert!(error.contains("claim ns/c") && error.contains("d0"), "{error}");
    w.settle().await;
    assert_eq!(w.place("eth0"), "host as eth0");
    assert_eq!(w.journal(), phases(&[("c", "prepared")]));
    assert_eq!(w.status("c")[0].1, "AttachFailed");
}

/// An attach that fails without a full rollback: whatever is in the pod is returned.
#[tokio::test(start_paused = true)]
async fn a_failed_attach_without_rollback_is_returned_like_an_attached_one() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    w.kernel.inject(Op::Attach, Fault::FailAfterMove { rolled_back: false });
    assert!(w.run_pod("a").await.is_err());
    w.settle().await;
    assert_eq!(w.place("eth0"), "host as eth0");
    assert_eq!(w.journal(), phases(&[("c", "detached")]));
    assert_eq!(w.status("c")[0].1, "AttachFailed");
}

/// Finding 8: a stranded interface is Ready=False/Stranded saying where; Unprepare fails
/// until it is returned; the retry returns it.
#[tokio::test(start_paused = true)]
async fn a_stranded_interface_is_reported_where_it_is_and_retried() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    w.run_pod("a").await.unwrap();
    w.kernel.inject(Op::Detach, Fault::Fail);
    w.stop_pod("a").await;
    w.settle().await;
    assert_eq!(w.journal(), phases(&[("c", "stranded")]));
    let status = w.status("c");
    assert_eq!((status[0].0.as_str(), status[0].1.as_str()), ("False", "Stranded"));
    assert!(status[0].2.contains(&netns_path("a")), "{status:?}");
    assert_ne!(w.place("eth0"), "host as eth0");
    w.kernel.inject(Op::Detach, Fault::Fail);
    let error = w.unprepare("c").await.unwrap_err();
    assert!(error.contains("stranded") && error.contains("claim ns/c"), "{error}");
    w.unprepare("c").await.unwrap();
    assert_eq!(w.place("eth0"), "host as eth0");
}

/// Finding 8: after a crash every claim's status is derived again, a lost NotReady and a lost
/// removal included.
#[tokio::test(start_paused = true)]
async fn statuses_lost_in_a_crash_are_written_again() {
    let mut w = World::new().await;
    w.add_pod("a");
    w.add_pod("b");
    w.prepare("ready", "a", &["d0"]).await;
    w.prepare("failed", "b", &["d2"]).await;
    w.run_pod("a").await.unwrap();
    w.settle().await;
    assert_eq!(w.status("ready")[0].0, "True");
    // From here the API server takes no write until the crash.
    w.api
        .patch_failures
        .lock()
        .extend((0..1000).map(|_| ApiError::Transport("down".into())));
    w.kernel.inject(Op::Attach, Fault::FailAfterMove { rolled_back: true });
    assert!(w.run_pod("b").await.is_err());
    w.stop_pod("a").await;
    w.unprepare("ready").await.unwrap();
    w.settle().await;
    assert_eq!(w.status("ready")[0].0, "True", "the removal was lost");
    assert!(w.status("failed").is_empty(), "the NotReady was lost");
    w.node.crash();
    w.api.patch_failures.lock().clear();
    w.restart().await;
    w.settle().await;
    assert!(w.status("ready").is_empty(), "a lost removal is made again");
    assert!(
        !w.journal().contains_key(&uid("ready")),
        "and then the claim is forgotten"
    );
    assert_eq!(
        w.status("failed")[0].0.as_str(),
        "False",
        "a lost NotReady is made again: {:?}",
        w.status("failed")
    );
    assert_eq!(w.status("failed")[0].1, "AttachFailed");
}

/// Status writes answered 409, 422, 403, 500 and a dropped connection before succeeding.
#[tokio::test(start_paused = true)]
async fn status_converges_through_conflicts_refusals_and_a_dropped_connection() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    let status = |code: u16| ApiError::Status {
        code,
        message: format!("injected {code}"),
    };
    w.api.patch_failures.lock().extend([
        status(409),
        status(422),
        status(403),
        status(500),
        ApiError::Transport("connection dropped".into()),
    ]);
    w.run_pod("a").await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(w.api.patches.lock().len(), 6, "five failures, then the write");
    assert_eq!(w.status("c")[0].0, "True");
}

/// Finding 7: fifty pods stopping at once with 20 ms per namespace move (one at a time, as the
/// kernel's rtnl lock has it): every stop hook answers within its budget; the detaches go on,
/// journaled.
#[tokio::test(start_paused = true)]
async fn fifty_pods_stopping_at_once_each_answer_within_the_budget() {
    burst_of_stops(50, MOVE).await;
}

/// The same burst where the moves take longer than the hook's whole budget (100 × 20 ms): the
/// hooks still answer in time; what they could not wait for finishes behind them.
#[tokio::test(start_paused = true)]
async fn a_burst_longer_than_the_budget_answers_every_stop_in_time() {
    burst_of_stops(100, MOVE).await;
}

async fn burst_of_stops(pods: usize, move_time: Duration) {
    let w = World::with_moves(move_time).await;
    for i in 0..pods {
        let pod = format!("p{i}");
        w.add_pod(&pod);
        w.prepare(&format!("c{i}"), &pod, &[&format!("d{i}")]).await;
        w.run_pod(&pod).await.unwrap();
    }
    w.settle().await;
    let budget = w.node.hook_wait();
    let stops: Vec<_> = (0..pods)
        .map(|i| {
            let runtime = w.runtime();
            tokio::spawn(async move {
                let started = Instant::now();
                runtime.stop_pod_sandbox(&sandbox(&format!("p{i}"))).await.unwrap();
                started.elapsed()
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for stop in stops {
        slowest = slowest.max(stop.await.unwrap());
    }
    println!("{pods} stops, {move_time:?} per move: slowest hook {slowest:?} (budget {budget:?})");
    assert!(
        slowest <= budget + Duration::from_millis(5),
        "slowest stop hook {slowest:?}"
    );
    w.settle().await;
    for i in 0..pods {
        assert_eq!(w.place(&format!("eth{i}")), format!("host as eth{i}"));
    }
    assert!(w.journal().values().all(|p| p == "detached"));
}

/// Finding 6 and SIGTERM: shutdown waits for the attach in flight, which ends journaled.
#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_the_kernel_work_in_flight_and_journals_it() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    let gate = w.stall(Op::Attach, false);
    w.run_pod("a").await.unwrap();
    gate.reached().await;
    let node = w.node.clone();
    let shutdown = tokio::spawn(async move { node.shutdown(Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!shutdown.is_finished(), "shutdown waits for the attach");
    gate.open();
    shutdown.await.unwrap();
    assert_eq!(w.journal(), phases(&[("c", "attached")]));
}

/// A claim prepared for a pod before the cache saw its reservation move (the old
/// "stale cache" case): the new pod's hook finds it and it follows the pod.
#[tokio::test(start_paused = true)]
async fn a_plan_follows_its_claim_to_the_pod_it_is_now_reserved_for() {
    let w = World::new().await;
    let inode = w.add_pod("new");
    w.prepare("c", "old", &["d0"]).await;
    w.api.put(&claim_ref("c"), &[("new", &uid("new"))]);
    w.run_pod("new").await.unwrap();
    assert_eq!(w.place("eth0"), format!("net:[{inode}] as net1"));
    assert_eq!(w.node.claim(&uid("c")).unwrap().plan.pod.uid, uid("new"));
}

/// A pod whose namespace cannot be opened: its sandbox fails, naming the claim.
#[tokio::test(start_paused = true)]
async fn a_pod_without_a_network_namespace_fails_naming_the_claim() {
    let w = World::new().await;
    w.prepare("c", "a", &["d0"]).await;
    let error = w.run_pod("a").await.unwrap_err();
    assert!(
        error.contains("no network namespace") && error.contains("claim ns/c"),
        "{error}"
    );
    w.settle().await;
    assert_eq!(w.status("c")[0].1, "NoNetworkNamespace");
}

/// A stalled attach past the hook's share: RunPodSandbox answers in time; the first container
/// waits for the rest and fails, naming the claim, if it does not come.
#[tokio::test(start_paused = true)]
async fn a_slow_attach_lets_the_sandbox_start_and_holds_the_container() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    let gate = w.stall(Op::Attach, true);
    let started = Instant::now();
    w.run_pod("a").await.unwrap();
    assert!(started.elapsed() <= Duration::from_millis(1500));
    let error = w.create_container("a").await.unwrap_err();
    assert!(
        error.contains("not attached in time") && error.contains("claim ns/c"),
        "{error}"
    );
    gate.open();
    w.settle().await;
    w.create_container("a").await.unwrap();
}

/// A pod namespace whose path is gone but that something still holds (a leftover process, a
/// bind mount): the interface in it is found by the namespace's inode and brought home.
#[tokio::test(start_paused = true)]
async fn a_held_namespace_without_its_path_is_found_by_inode_and_emptied() {
    let mut w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    w.run_pod("a").await.unwrap();
    w.settle().await;
    w.node.crash();
    w.kernel.unmount_held(&netns_path("a"));
    w.restart().await;
    w.runtime().synchronize(vec![], vec![]).await.unwrap();
    w.settle().await;
    assert_eq!(w.place("eth0"), "host as eth0");
    assert_eq!(w.status("c")[0].1, "Detached");
    assert!(
        w.status("c")[0].2.contains("returned to the host"),
        "{:?}",
        w.status("c")
    );
}

/// A claim made from a pod's template belongs to that pod: another pod that the cache says it
/// reserves neither takes it nor is refused for it.
#[tokio::test(start_paused = true)]
async fn a_claim_from_another_pods_template_is_left_to_that_pod() {
    let w = World::new().await;
    let a = w.add_pod("a");
    w.add_pod("b");
    w.prepare_with("c", &["a"], &["d0"], false).await.unwrap();
    w.run_pod("a").await.unwrap();
    w.api.put(&claim_ref("c"), &[("a", &uid("a")), ("b", &uid("b"))]);
    w.run_pod("b").await.unwrap();
    assert_eq!(w.place("eth0"), format!("net:[{a}] as net1"));
    assert_eq!(w.node.claim(&uid("c")).unwrap().plan.pod.uid, uid("a"));
}

/// A pod's new sandbox while its interface is still in the old one (the old sandbox's stop was
/// missed): the new sandbox gets it; the old sandbox's removal later leaves it there.
#[tokio::test(start_paused = true)]
async fn a_new_sandbox_gets_the_interface_and_the_old_ones_removal_leaves_it() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    w.run_pod("a").await.unwrap();
    w.settle().await;
    let second = w.kernel.add_netns("/var/run/netns/a-2");
    w.runtime()
        .run_pod_sandbox(&sandbox_in("a", "/var/run/netns/a-2"))
        .await
        .unwrap();
    assert_eq!(
        w.place("eth0"),
        format!("net:[{second}] as net1"),
        "moved to the new sandbox"
    );
    w.runtime()
        .remove_pod_sandbox(&sandbox_in("a", &netns_path("a")))
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(
        w.place("eth0"),
        format!("net:[{second}] as net1"),
        "the old sandbox's removal left it"
    );
    let container = Container {
        name: "app".into(),
        ..Default::default()
    };
    w.runtime()
        .create_container(&sandbox_in("a", "/var/run/netns/a-2"), &container)
        .await
        .unwrap();
    let error = w
        .runtime()
        .create_container(&sandbox_in("a", &netns_path("a")), &container)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("claim ns/c"),
        "a container of the old sandbox would lack it: {error}"
    );
}

/// A stop while an attach is still reading claims and opening the namespace (before its
/// intent is journaled): the stop waits with the operation and the interface comes back.
#[tokio::test(start_paused = true)]
async fn a_stop_while_an_attach_is_starting_is_not_lost() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    let gate = w.stall(Op::Open, true);
    let run = tokio::spawn({
        let runtime = w.runtime();
        async move { runtime.run_pod_sandbox(&sandbox("a")).await.map_err(|e| e.to_string()) }
    });
    gate.reached().await;
    let stop = tokio::spawn({
        let runtime = w.runtime();
        async move { runtime.stop_pod_sandbox(&sandbox("a")).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    gate.open();
    let _ = run.await.unwrap();
    stop.await.unwrap();
    w.settle().await;
    assert_eq!(w.place("eth0"), "host as eth0");
    assert!(w.journal().values().all(|p| p == "detached"), "{:?}", w.journal());
}

/// Finding 4 as seen on the real cluster: the pod holding a standalone claim is deleted while
/// the agent is down; a new pod with the same claim starts meanwhile (no Prepare: the kubelet
/// prepared the claim once). At the runtime's resync the claim comes back from the gone pod
/// and then goes into the running one.
#[tokio::test(start_paused = true)]
async fn the_runtimes_resync_returns_a_gone_pods_claim_then_attaches_the_running_pod() {
    let mut w = World::new().await;
    w.add_pod("a");
    let b = w.add_pod("b");
    w.prepare("c", "a", &["d1"]).await;
    w.run_pod("a").await.unwrap();
    w.settle().await;
    w.node.crash();
    w.kernel.kill_netns(&netns_path("a"));
    w.api.put(&claim_ref("c"), &[("b", &uid("b"))]);
    w.restart().await;
    w.runtime().synchronize(vec![sandbox("b")], vec![]).await.unwrap();
    w.settle().await;
    assert_eq!(w.place("eth1"), format!("net:[{b}] as net1"));
    assert_eq!(w.node.claim(&uid("c")).unwrap().plan.pod.uid, uid("b"));
    assert_eq!(w.status("c")[0].0, "True");
}

/// The same when returning the claim outlasts the resync's budget: the running pod waits and is
/// attached when the return ends.
#[tokio::test(start_paused = true)]
async fn a_running_pod_waits_for_a_claim_still_coming_back_and_gets_it() {
    let mut w = World::new().await;
    w.add_pod("a");
    let b = w.add_pod("b");
    w.prepare("c", "a", &["d0"]).await;
    w.run_pod("a").await.unwrap();
    w.settle().await;
    w.node.crash();
    w.api.put(&claim_ref("c"), &[("b", &uid("b"))]);
    w.restart().await;
    let gate = w.stall(Op::Detach, true);
    w.runtime().synchronize(vec![sandbox("b")], vec![]).await.unwrap();
    assert_ne!(w.place("eth0"), format!("net:[{b}] as net1"));
    gate.open();
    w.settle().await;
    assert_eq!(w.place("eth0"), format!("net:[{b}] as net1"));
}

/// An attach whose operation ended without an outcome (aborted) leaves its claim attaching;
/// Unprepare converges it against the kernel and returns what moved.
#[tokio::test(start_paused = true)]
async fn an_attach_left_without_an_outcome_is_converged_by_unprepare() {
    let w = World::new().await;
    w.add_pod("a");
    w.prepare("c", "a", &["d0"]).await;
    let gate = w.stall(Op::Attach, false);
    w.run_pod("a").await.unwrap();
    gate.reached().await;
    w.node.crash();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(w.journal(), phases(&[("c", "attaching")]));
    assert!(w.node.op(&uid("a")).is_none(), "the aborted operation is forgotten");
    w.unprepare("c").await.unwrap();
    assert_eq!(w.place("eth0"), "host as eth0");
    w.settle().await;
    assert!(w.journal().is_empty());
}

/// `get-only` claim cache: a claim that cannot be read fails the pod's sandbox, naming it,
/// rather than let the pod run without an interface it may be owed.
#[tokio::test(start_paused = true)]
async fn an_unreadable_claim_fails_the_sandbox_naming_it() {
    let w = World::new().await;
    w.api.watch_cache.store(false, Ordering::SeqCst);
    w.add_pod("a");
    w.add_pod("b");
    w.prepare("c", "a", &["d0"]).await;
    w.api
        .get_failures
        .lock()
        .push_back(ApiError::Transport("connection refused".into()));
    let error = w.run_pod("b").await.unwrap_err();
    assert!(error.contains("cannot tell whether it uses claim ns/c"), "{error}");
    w.run_pod("b").await.unwrap();
}

/// Device health follows each device where it is: on the host while free, in the pod's
/// namespace while attached (a lost carrier there is Unhealthy, naming the pod), on the host
/// again once returned; the monitor's end ends the kubelet's streams.
#[tokio::test(start_paused = true)]
async fn device_health_follows_the_device_into_the_pod_and_back() {
    use kubeletplugin::{HealthOptions, HealthStatus, health_channel};

    let w = World::new().await;
    w.add_pod("a");
    let (reporter, feed) = health_channel(HealthOptions::default());
    let monitor = tokio::spawn(crate::health::monitor(
        w.node.clone(),
        "node".into(),
        reporter,
        Duration::from_millis(500),
    ));
    let state = |device: &str| {
        let feed = feed.clone();
        let device = device.to_owned();
        async move {
            // After the monitor's next publication.
            tokio::time::sleep(Duration::from_millis(600)).await;
            let report = feed.current().unwrap();
            report
                .into_iter()
                .find(|d| d.device == device)
                .map(|d| (d.status, d.message))
        }
    };
    assert_eq!(state("d0").await.unwrap().0, HealthStatus::Healthy, "free, on the host");
    w.prepare("c", "a", &["d0"]).await;
    w.run_pod("a").await.unwrap();
    w.settle().await;
    let (status, message) = state("d0").await.unwrap();
    assert_eq!(status, HealthStatus::Healthy, "{message}");
    assert!(message.contains("in pod ns/a"), "{message}");
    w.kernel.set_carrier("eth0", false);
    let (status, message) = state("d0").await.unwrap();
    assert_eq!(status, HealthStatus::Unhealthy, "{message}");
    assert!(message.contains("net1") && message.contains("ns/a"), "{message}");
    w.kernel.set_carrier("eth0", true);
    assert_eq!(state("d0").await.unwrap().0, HealthStatus::Healthy);
    w.stop_pod("a").await;
    w.settle().await;
    let (status, message) = state("d0").await.unwrap();
    assert_eq!(status, HealthStatus::Healthy);
    assert!(!message.contains("pod"), "back on the host: {message}");
    monitor.abort();
    let _ = monitor.await;
    w.unprepare("c").await.unwrap();
}
