//! Starting the node agent: the inventory, the slice publisher, the kubelet plugin, the NRI
//! plugin and the status writer, joined by one [`Core`]; and the handle that owns them.

use std::{path::PathBuf, sync::Arc};

use k8s_openapi::api::resource::v1::Device;
use kubeletplugin::{
    PluginHandle, PluginOptions, RegistrationState,
    publisher::{PublishStatus, SlicePublisher},
    slices::PoolSpec,
};
use netdev::{Inventory, InventoryConfig, InventoryWatcher, WatchOptions};
use nri::{ConnectionState, Stub, StubOptions};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    core::Core,
    driver::NetworkDriver,
    kubelet::KubeletSide,
    metrics::Metrics,
    runtime::RuntimeSide,
    state::{StateError, StateFile},
    status::StatusWriter,
};

/// Everything the agent needs to know to start.
#[derive(Debug)]
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
    /// The agent's state file; `<plugin dir>/netdra-state` by default.
    pub state_file: PathBuf,
    /// Where the agent counts; unregistered (nobody scrapes them) by default.
    pub metrics: Metrics,
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
        }
    }
}

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
pub enum AgentError {
    /// The state file could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The inventory could not be scanned.
    #[error("scanning the node's interfaces: {0}")]
    Inventory(#[from] netdev::netlink::NetlinkError),
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
/// so in order and removes the kubelet sockets.
pub struct Agent<D: NetworkDriver> {
    core: Arc<Core<D>>,
    plugin: Option<PluginHandle<KubeletSide<D>>>,
    stub: Option<Stub>,
    _watcher: InventoryWatcher,
    publish_status: watch::Receiver<PublishStatus>,
    tasks: Vec<JoinHandle<()>>,
}

impl<D: NetworkDriver> Drop for Agent<D> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.core.tasks.lock().abort_all();
    }
}

/// Starts the node agent for `driver`.
pub async fn start<D: NetworkDriver>(
    options: AgentOptions,
    driver: D,
    client: kube::Client,
) -> Result<Agent<D>, AgentError> {
    let driver_name = options.plugin.driver_name.clone();
    if options.inventory.driver != driver_name {
        return Err(AgentError::DriverMismatch {
            inventory: options.inventory.driver.clone(),
            plugin: driver_name,
        });
    }
    kubeletplugin::validate_driver_name(&driver_name)?;
    options.nri.validate()?;
    let file = StateFile::new(&options.state_file);
    let state = file.load().await?;
    let watcher = InventoryWatcher::start(Inventory::new(options.inventory), options.watch).await?;
    let holds = watcher.holds();
    for device in state.claims.values().flat_map(|e| &e.plan.devices) {
        holds.hold_as(device.published.clone());
    }
    let mut tasks = Vec::new();

    // The driver's say on each published device, on every inventory change.
    let mut scanned = watcher.devices();
    let (published_tx, published) = watch::channel(Vec::<Device>::new());
    let publish = move |driver: &D, devices: &[Device]| -> Vec<Device> {
        devices.iter().cloned().filter_map(|d| driver.publish(d)).collect()
    };
    let (nri_tx, nri_connected) = watch::channel(false);
    let metrics = options.metrics;
    let status = StatusWriter::start(client.clone(), &driver_name, metrics.clone());
    let core = Arc::new(Core::new(
        driver_name.clone(),
        driver,
        state,
        file,
        holds,
        published.clone(),
        status,
        nri_connected,
        metrics.clone(),
    ));
    published_tx.send_replace(publish(&core.driver, &scanned.borrow_and_update()));
    let publish_core = core.clone();
    tasks.push(tokio::spawn(async move {
        while scanned.changed().await.is_ok() {
            let devices = publish(&publish_core.driver, &scanned.borrow_and_update());
            published_tx.send_replace(devices);
        }
    }));

    let stub = nri::connect(options.nri, RuntimeSide(core.clone()))?;
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

    let plugin = kubeletplugin::start(options.plugin, KubeletSide(core.clone()), client.clone()).await?;
    let _ = core.claims.set(plugin.claim_cache_reader());
    let pool = PoolSpec {
        driver: driver_name.clone(),
        node_name: options.node_name.clone(),
        pool: options.node_name.clone(),
        owner: None,
    };
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
    // Status writes lost in a crash are written again from the state.
    core.report_all();
    tracing::info!(driver = %driver_name, node = %options.node_name, "netdra agent started");
    Ok(Agent {
        core,
        plugin: Some(plugin),
        stub: Some(stub),
        _watcher: watcher,
        publish_status,
        tasks,
    })
}

impl<D: NetworkDriver> Agent<D> {
    /// Whether the runtime's NRI connection is up.
    pub fn nri_connected(&self) -> bool {
        *self.core.nri_connected.borrow()
    }

    /// Where the kubelet's registration stands.
    pub fn registration(&self) -> RegistrationState {
        self.plugin
            .as_ref()
            .map_or(RegistrationState::Pending, PluginHandle::registration)
    }

    /// Registered with the kubelet, connected to the runtime, slices published.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            registered: self.registration() == RegistrationState::Registered,
            nri_connected: self.nri_connected(),
            slices_published: self.publish_status.borrow().published,
        }
    }

    /// Claims whose status is not written yet.
    pub fn pending_status(&self) -> usize {
        self.core.status.pending()
    }

    /// Stops in order: the kubelet plugin (its sockets go, so the kubelet sees the driver
    /// leave), the NRI connection, then the rest. Interfaces stay where they are: the state
    /// file says where, for the next start.
    pub async fn shutdown(mut self) {
        if let Some(plugin) = self.plugin.take() {
            plugin.shutdown().await;
        }
        if let Some(stub) = self.stub.take() {
            stub.stop().await;
        }
        let pending: Vec<_> = {
            let mut tasks = self.core.tasks.lock();
            std::mem::take(&mut *tasks)
        }
        .join_all()
        .await;
        drop(pending);
        tracing::info!(driver = %self.core.driver_name, "netdra agent stopped");
    }
}
