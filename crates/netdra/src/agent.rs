//! Starting the node agent: the journal, the inventory, the slice publisher, the kubelet
//! plugin, the NRI plugin and the status writer, joined by one [`Node`]; and the handle that
//! owns them. Start-up converges the journal to the kernel before the runtime's hooks connect.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::api::resource::v1::Device;
use kubeletplugin::{PluginHandle, PluginOptions, PoolSpec, PublishStatus, RegistrationState, SlicePublisher};
use netdev_k8s::{Inventory, InventoryConfig, InventoryWatcher, WatchOptions};
use nri::{ConnectionState, Stub, StubOptions};
use serde_json::Value;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::{
    api::Kube,
    driver::NetworkDriver,
    journal::{self, FileStorage, Journal, JournalError},
    kernel::{Kernel, Netdev},
    kubelet::{JournalStore, KubeletSide},
    metrics::Metrics,
    node::{Node, Parts},
    reconcile,
    runtime::RuntimeSide,
    status::StatusWriter,
};

/// Everything the agent needs to know to start.
#[derive(Debug)]
#[non_exhaustive]
pub struct AgentOptions {
    /// The kubelet plugin's settings (driver name, socket directories, claim cache).
    pub plugin: PluginOptions,
    /// The NRI plugin's settings (runtime socket, name, index).
    pub nri: StubOptions,
    /// The node this agent runs on: the slices' node and pool.
    pub node_name: String,
    /// What the inventory scans and publishes (its `driver` must be the driver name).
    pub inventory: InventoryConfig,
    /// How the inventory follows changes.
    pub watch: WatchOptions,
    /// The agent's journal (see the README's "State"); `<plugin dir>/netdra-state` by default.
    pub state_file: PathBuf,
    /// Where the agent counts; unregistered (nobody scrapes them) by default.
    pub metrics: Metrics,
    /// How often each device's link is read for the kubelet's device health; `None` serves no
    /// health (the services are not announced). Every 500 ms by default: a change reaches the
    /// kubelet within a second.
    pub device_health: Option<Duration>,
}

impl AgentOptions {
    /// Options with defaults around the given plugin, NRI and inventory settings.
    pub fn new(
        plugin: PluginOptions,
        nri: StubOptions,
        node_name: impl Into<String>,
        inventory: InventoryConfig,
    ) -> Self {
        Self {
            state_file: plugin.plugin_dir.join("netdra-state"),
            plugin,
            nri,
            node_name: node_name.into(),
            inventory,
            watch: WatchOptions::default(),
            metrics: Metrics::default(),
            device_health: Some(DEFAULT_HEALTH_EVERY),
        }
    }
}

/// How often device health is read by default.
pub const DEFAULT_HEALTH_EVERY: Duration = Duration::from_millis(500);

/// What readiness depends on, each part on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The kubelet accepted the plugin's registration.
    pub registered: bool,
    /// The container runtime's NRI connection is up.
    pub nri_connected: bool,
    /// The last publication of this node's ResourceSlices succeeded.
    pub slices_published: bool,
}

impl Readiness {
    /// All three hold.
    pub fn ready(&self) -> bool {
        self.registered && self.nri_connected && self.slices_published
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The journal could not be read or started.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The inventory could not be scanned.
    #[error("scanning the node's interfaces: {0}")]
    Inventory(#[from] netdev::NetlinkError),
    /// The NRI plugin's settings were refused.
    #[error("NRI plugin settings: {0}")]
    Nri(#[from] nri::ConfigError),
    /// The kubelet plugin did not start.
    #[error(transparent)]
    Plugin(#[from] kubeletplugin::PluginError),
    /// The inventory's driver name is not the plugin's.
    #[error("the inventory publishes for driver {inventory:?} but the plugin is {plugin:?}")]
    DriverMismatch {
        /// The inventory's.
        inventory: String,
        /// The plugin's.
        plugin: String,
    },
}

/// A running node agent. Dropping it stops everything it started; [`Agent::shutdown`] does
/// so in order, waits for the kernel work in flight, and removes the kubelet sockets.
pub struct Agent<D: NetworkDriver, K: Kernel = Netdev> {
    node: Arc<Node<D, K>>,
    plugin: Option<PluginHandle<KubeletSide<D, K>>>,
    stub: Option<Stub>,
    _watcher: InventoryWatcher,
    readiness: ReadinessProbe,
    tasks: Vec<JoinHandle<()>>,
    /// The device health monitor, which holds the reporter: stopped first at shutdown, so the
    /// kubelet's health streams end at once instead of holding the plugin's server open.
    health: Option<JoinHandle<()>>,
}

impl<D: NetworkDriver, K: Kernel> Drop for Agent<D, K> {
    fn drop(&mut self) {
        for task in self.tasks.iter().chain(&self.health) {
            task.abort();
        }
    }
}

/// How long [`Agent::shutdown`] waits for kernel work in flight.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// What readiness depends on, readable without the agent (for a `/readyz` handler that may
/// outlive it). Cheap to clone.
#[derive(Clone)]
pub struct ReadinessProbe {
    registration: watch::Receiver<RegistrationState>,
    nri_connected: watch::Receiver<bool>,
    publish_status: watch::Receiver<PublishStatus>,
}

impl ReadinessProbe {
    /// Where each part stands now.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            registered: *self.registration.borrow() == RegistrationState::Registered,
            nri_connected: *self.nri_connected.borrow(),
            slices_published: self.publish_status.borrow().published,
        }
    }
}

/// Starts the node agent for `driver`, moving interfaces with the real kernel.
pub async fn start<D: NetworkDriver>(
    options: AgentOptions,
    driver: D,
    client: kube::Client,
) -> Result<Agent<D>, AgentError> {
    start_with_kernel(options, driver, Netdev, client).await
}

/// Starts the node agent for `driver` with `kernel` doing the kernel work (a wrapper of
/// [`Netdev`] that observes or delays it, in tests).
pub async fn start_with_kernel<D: NetworkDriver, K: Kernel>(
    options: AgentOptions,
    driver: D,
    kernel: K,
    client: kube::Client,
) -> Result<Agent<D, K>, AgentError> {
    let driver_name = options.plugin.driver_name.clone();
    if options.inventory.driver != driver_name {
        return Err(AgentError::DriverMismatch {
            inventory: options.inventory.driver.clone(),
            plugin: driver_name,
        });
    }
    kubeletplugin::validate_driver_name(&driver_name)?;
    options.nri.validate()?;
    let boot_id = options.plugin.boot_id.clone();
    let entries = journal_entries(&options.state_file, boot_id.as_deref()).await?;
    let journal = Journal::start(
        options.state_file.clone(),
        FileStorage::new(&options.state_file),
        boot_id.clone(),
        entries.clone(),
    )
    .await?;
    let watcher = InventoryWatcher::start(Inventory::new(options.inventory), options.watch).await?;
    let mut tasks = Vec::new();

    // The driver's say on each published device, on every inventory change.
    let mut scanned = watcher.devices();
    let (published_tx, published) = watch::channel(Vec::<Device>::new());
    let (nri_tx, nri_connected) = watch::channel(false);
    let metrics = options.metrics;
    let api = Arc::new(Kube::new(client.clone()));
    let (settled_tx, settled) = mpsc::unbounded_channel();
    let status = StatusWriter::start(api.clone(), &driver_name, metrics.clone(), settled_tx);
    let node = Arc::new(Node::new(
        Parts {
            driver_name: driver_name.clone(),
            driver,
            kernel,
            journal,
            entries,
            holds: watcher.holds(),
            published: published.clone(),
            api: api.clone(),
            nri_connected: nri_connected.clone(),
            metrics: metrics.clone(),
            metadata: options.plugin.metadata_writer(),
        },
        status,
    )?);
    let publish = |node: &Node<D, K>, devices: &[Device]| -> Vec<Device> {
        devices
            .iter()
            .cloned()
            .filter_map(|d| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.driver.publish(d)))
                    .unwrap_or_else(|panic| {
                        tracing::error!(panic = %crate::panic_text(&*panic), "the driver's publish panicked; the device is left out");
                        None
                    })
            })
            .collect()
    };
    published_tx.send_replace(publish(&node, &scanned.borrow_and_update()));
    let publish_node = node.clone();
    tasks.push(tokio::spawn(async move {
        while scanned.changed().await.is_ok() {
            let devices = publish(&publish_node, &scanned.borrow_and_update());
            published_tx.send_replace(devices);
        }
    }));

    // The journal against the kernel, before any hook can act on it.
    reconcile::against_kernel(&node).await;
    reconcile::report_all(&node);
    tasks.push(tokio::spawn(reconcile::retry_stranded(node.clone())));
    tasks.push(tokio::spawn(reconcile::forget_released(node.clone(), settled)));

    let stub = nri::connect(options.nri, RuntimeSide(node.clone()))?;
    let mut nri_state = stub.watch_state();
    let nri_metrics = metrics.clone();
    tasks.push(tokio::spawn(async move {
        let mut last_session = 0;
        loop {
            let session = match &*nri_state.borrow_and_update() {
                ConnectionState::Connected { session, .. } => Some(*session),
                _ => None,
            };
            if let Some(session) = session
                && session != last_session
            {
                if last_session != 0 {
                    nri_metrics.reconnected();
                }
                last_session = session;
            }
            nri_tx.send_replace(session.is_some());
            if nri_state.changed().await.is_err() {
                nri_tx.send_replace(false);
                return;
            }
        }
    }));

    let mut plugin_options = options.plugin;
    let health = options.device_health.map(|every| {
        let (reporter, feed) = kubeletplugin::health_channel(kubeletplugin::HealthOptions::default());
        plugin_options.health = Some(feed);
        (reporter, every)
    });
    let plugin = kubeletplugin::start_with_store(
        plugin_options,
        KubeletSide(node.clone()),
        JournalStore(node.clone()),
        client.clone(),
    )
    .await?;
    api.set_cache(plugin.claim_cache_reader());
    let health = health.map(|(reporter, every)| {
        tokio::spawn(crate::health::monitor(
            node.clone(),
            options.node_name.clone(),
            reporter,
            every,
        ))
    });
    let pool = PoolSpec::new(driver_name.clone(), options.node_name.clone());
    let publisher = SlicePublisher::start(client, pool).await;
    let publish_status = publisher.status();
    let mut followed = publisher.status();
    tasks.push(tokio::spawn(publisher.run(published)));
    tasks.push(tokio::spawn(async move {
        while followed.changed().await.is_ok() {
            let status = *followed.borrow_and_update();
            metrics.published(status.devices, status.writes);
        }
    }));
    let readiness = ReadinessProbe {
        registration: plugin.registration_watch(),
        nri_connected,
        publish_status,
    };
    tracing::info!(driver = %driver_name, node = %options.node_name, "netdra agent started");
    Ok(Agent {
        node,
        plugin: Some(plugin),
        stub: Some(stub),
        _watcher: watcher,
        readiness,
        tasks,
        health,
    })
}

/// The journal's entries to start from: a previous boot's are dropped with a warning naming
/// the claims (their interfaces did not survive the reboot; nothing of them is re-applied). Its
/// boot is read first: appends are flushed behind their answers, so a power loss can leave a
/// previous boot's file damaged anywhere after its first record, and it is not used either way.
pub(crate) async fn journal_entries(
    path: &std::path::Path,
    boot_id: Option<&str>,
) -> Result<BTreeMap<String, Value>, AgentError> {
    let Some(bytes) = journal::read(path).await? else {
        return Ok(BTreeMap::new());
    };
    if let (Some(previous), Some(current)) = (journal::boot_of(&bytes), boot_id)
        && previous != current
    {
        match journal::decode(path, &bytes) {
            Ok(contents) if contents.entries.is_empty() => {}
            Ok(contents) => {
                let claims: Vec<String> = crate::node::decode_entries(path, &contents.entries)
                    .map(|(claims, _)| claims.values().map(|c| c.plan.claim.to_string()).collect())
                    .unwrap_or_else(|_| contents.entries.keys().cloned().collect());
                tracing::warn!(
                    previous_boot = previous,
                    claims = ?claims,
                    "the journal is from a previous boot: its claims are dropped, nothing of them is re-applied (the kubelet prepares them again)"
                );
            }
            Err(e) => tracing::warn!(
                previous_boot = previous,
                error = %e,
                "the journal is from a previous boot and damaged (a power loss before its last lines reached the disk); it is dropped, nothing of it is re-applied"
            ),
        }
        return Ok(BTreeMap::new());
    }
    let contents = journal::decode(path, &bytes)?;
    if contents.torn_tail {
        tracing::warn!(path = %path.display(), "the journal's last write was interrupted by a crash; it is dropped (it was never acknowledged)");
    }
    Ok(contents.entries)
}

impl<D: NetworkDriver, K: Kernel> Agent<D, K> {
    /// Whether the runtime's NRI connection is up.
    pub fn nri_connected(&self) -> bool {
        *self.node.nri_connected.borrow()
    }

    /// Where the kubelet's registration stands.
    pub fn registration(&self) -> RegistrationState {
        self.plugin
            .as_ref()
            .map_or(RegistrationState::Pending, PluginHandle::registration)
    }

    /// Registered with the kubelet, connected to the runtime, slices published.
    pub fn readiness(&self) -> Readiness {
        self.readiness.readiness()
    }

    /// A handle that reads readiness without holding the agent.
    pub fn readiness_probe(&self) -> ReadinessProbe {
        self.readiness.clone()
    }

    /// Claims whose status is not written yet.
    pub fn pending_status(&self) -> usize {
        self.node.pending_status()
    }

    /// Stops in order: the kubelet plugin (its sockets go, so the kubelet sees the driver
    /// leave), the NRI connection (no more hooks), then waits up to [`SHUTDOWN_WAIT`] for the
    /// kernel work in flight to finish and be journaled. Interfaces stay where they are: the
    /// journal says where, for the next start.
    pub async fn shutdown(mut self) {
        if let Some(health) = self.health.take() {
            health.abort();
            // Cancelled, as asked: the reporter it held is dropped.
            let _ = health.await;
        }
        if let Some(plugin) = self.plugin.take() {
            plugin.shutdown().await;
        }
        if let Some(stub) = self.stub.take() {
            stub.stop().await;
        }
        self.node.shutdown(SHUTDOWN_WAIT).await;
        tracing::info!(driver = %self.node.driver_name, "netdra agent stopped");
    }
}
