//! Starting a kubelet plugin: options, start-up checks, and the handle of a running plugin.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};
use tonic::transport::Server;

use crate::{
    checkpoint::{CheckpointError, FileCheckpoint},
    claims::{ClaimCacheMode, ClaimLookup},
    driver::{ClaimRef, DraDriver, PreparedClaim},
    health::{HEALTH_SERVICES, HealthFeed, HealthService},
    metadata::MetadataWriter,
    preparer::Preparer,
    proto::{dra, health, pluginregistration::registration_server::RegistrationServer},
    services::{DraService, RegistrationService, RegistrationState, SUPPORTED_VERSIONS},
    sockets::{self, SocketError},
    store::PreparedStore,
};

/// Default directory the kubelet watches for registration sockets.
pub const DEFAULT_REGISTRY_DIR: &str = "/var/lib/kubelet/plugins_registry";
/// Default parent of per-driver plugin directories.
pub const DEFAULT_PLUGINS_DIR: &str = "/var/lib/kubelet/plugins";

/// Reads the plugin's claim cache, for a driver's runtime hooks; see
/// [`PluginHandle::claim_cache_reader`].
#[derive(Clone)]
pub struct ClaimCacheReader(ClaimLookup);

impl ClaimCacheReader {
    /// The cached object of claim `namespace`/`name`, without an API request; `None` when it
    /// is not cached (or being fetched again), or without a cache.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<k8s_openapi::api::resource::v1::ResourceClaim>> {
        self.0.cached(namespace, name)
    }

    /// Whether `claim` is reserved for pod `pod_uid`, without an API request; `None` when the
    /// cache cannot tell (ask the API server then).
    pub fn reserves(&self, claim: &ClaimRef, pod_uid: &str) -> Option<bool> {
        self.0.reserves(claim, pod_uid)
    }
}

/// Why a plugin could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The driver name is not a valid DRA driver name.
    #[error("invalid driver name {name:?}: {reason}")]
    InvalidDriverName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A socket could not be set up.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The driver's store (see [`start_with_store`]) could not load the prepared claims.
    #[error("the prepared claims could not be loaded from the driver's store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Settings of a kubelet plugin. Paths default to the kubelet's standard layout.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PluginOptions {
    /// The DRA driver name (a DNS subdomain, e.g. `net.example.com`).
    pub driver_name: String,
    /// Directory the kubelet watches for registration sockets.
    pub registry_dir: PathBuf,
    /// This driver's plugin directory: holds the DRA socket and (unless the driver provides
    /// its own store) the checkpoint.
    pub plugin_dir: PathBuf,
    /// How claims are looked up.
    pub claim_cache: ClaimCacheMode,
    /// Deadline for one driver prepare/unprepare call; under the kubelet's 45 s so a hung
    /// driver yields a per-claim error instead of a kubelet timeout.
    pub call_timeout: Duration,
    /// How often the sockets are checked for removal.
    pub socket_check_interval: Duration,
    /// Identity of this kernel boot, kept with every prepared claim so that claims prepared
    /// before a reboot are prepared again. Defaults to `/proc/sys/kernel/random/boot_id`;
    /// `None` turns reboot detection off (said in a warning at start).
    pub boot_id: Option<String>,
    /// Device health for the kubelet (see [`health_channel`](crate::health_channel)); `None`
    /// (the default): the health services are neither announced nor served.
    pub health: Option<HealthFeed>,
    /// Device metadata for the workloads (KEP-5304, see [`MetadataWriter`]): the directory the
    /// CDI specs go to (the runtime's CDI spec directory, [`MetadataWriter::DEFAULT_CDI_DIR`]
    /// by default); `None` (the default): no metadata files.
    pub device_metadata: Option<PathBuf>,
}

/// Where the kernel tells its boot ID.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// This kernel boot's ID (`/proc/sys/kernel/random/boot_id`); an empty file is an error too.
pub fn current_boot_id() -> std::io::Result<String> {
    let id = std::fs::read_to_string(BOOT_ID_PATH)?.trim().to_owned();
    if id.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{BOOT_ID_PATH} is empty"),
        ));
    }
    Ok(id)
}

impl PluginOptions {
    /// Defaults for `driver_name`: `/var/lib/kubelet/plugins_registry`,
    /// `/var/lib/kubelet/plugins/<driver>`, one GET per claim (set [`ClaimCacheMode::Node`]
    /// with the node's name for a Prepare without an API request), 40 s calls, 1 s socket
    /// checks, the current boot ID.
    pub fn new(driver_name: impl Into<String>) -> Self {
        let driver_name = driver_name.into();
        Self {
            registry_dir: PathBuf::from(DEFAULT_REGISTRY_DIR),
            plugin_dir: Path::new(DEFAULT_PLUGINS_DIR).join(&driver_name),
            driver_name,
            claim_cache: ClaimCacheMode::GetOnly,
            call_timeout: Duration::from_secs(40),
            socket_check_interval: Duration::from_secs(1),
            boot_id: match current_boot_id() {
                Ok(id) => Some(id),
                Err(error) => {
                    tracing::warn!("reboot detection off: cannot read {BOOT_ID_PATH}: {error}");
                    None
                }
            },
            health: None,
            device_metadata: None,
        }
    }

    /// The writer of this plugin's device metadata files, when [`Self::device_metadata`] is set:
    /// for a driver that adds what it learns after Prepare ([`MetadataWriter::update_request`]).
    pub fn metadata_writer(&self) -> Option<MetadataWriter> {
        let cdi_dir = self.device_metadata.as_ref()?;
        Some(MetadataWriter::new(&self.driver_name, &self.plugin_dir, cdi_dir))
    }

    /// `<registry dir>/<driver>-reg.sock`.
    pub fn registration_socket(&self) -> PathBuf {
        self.registry_dir.join(format!("{}-reg.sock", self.driver_name))
    }

    /// `<plugin dir>/dra.sock`.
    pub fn dra_socket(&self) -> PathBuf {
        self.plugin_dir.join("dra.sock")
    }

    /// `<plugin dir>/checkpoint`: where [`start`] keeps the prepared claims.
    pub fn checkpoint_file(&self) -> PathBuf {
        self.plugin_dir.join("checkpoint")
    }
}

/// Checks a DRA driver name: a DNS subdomain of at most 63 characters (ResourceSlice rules).
pub fn validate_driver_name(name: &str) -> Result<(), PluginError> {
    match k8snames::dns_subdomain_problem(name, 63) {
        None => Ok(()),
        Some("too long") => Err(PluginError::InvalidDriverName {
            name: name.to_string(),
            reason: "must be 1 to 63 characters",
        }),
        Some(reason) => Err(PluginError::InvalidDriverName {
            name: name.to_string(),
            reason,
        }),
    }
}

/// A running kubelet plugin. Call [`shutdown`](Self::shutdown) to stop it and remove its
/// sockets, which is how the kubelet learns the plugin is gone.
pub struct PluginHandle<D: DraDriver> {
    preparer: Arc<Preparer<D>>,
    registration: watch::Receiver<RegistrationState>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    cache_task: Option<JoinHandle<()>>,
    registration_socket: PathBuf,
    dra_socket: PathBuf,
}

/// Starts a plugin that keeps its prepared claims in the checkpoint file
/// ([`PluginOptions::checkpoint_file`], a [`FileCheckpoint`]): loads it, binds the DRA socket
/// and then the registration socket (so the kubelet never finds a registration whose endpoint
/// is not served yet).
///
/// `client` is the API client, or why there is none: the plugin still registers and answers
/// every claim with a per-claim error naming that reason.
pub async fn start<D: DraDriver>(
    options: PluginOptions,
    driver: D,
    client: kube::Client,
) -> Result<PluginHandle<D>, PluginError> {
    validate_driver_name(&options.driver_name)?;
    let (lookup, cache_future) = ClaimLookup::new(client, &options.claim_cache);
    let store = FileCheckpoint::new(options.checkpoint_file());
    let preparer = preparer(&options, driver, store, lookup).await?;
    serve(options, preparer, cache_future).await
}

/// Starts a plugin, as [`start`] does, that keeps its prepared claims in `store` instead of
/// the checkpoint file: a driver with durable state of its own makes that state and the
/// prepared claims one write per kubelet batch.
pub async fn start_with_store<D: DraDriver, S: PreparedStore>(
    options: PluginOptions,
    driver: D,
    store: S,
    client: kube::Client,
) -> Result<PluginHandle<D>, PluginError> {
    validate_driver_name(&options.driver_name)?;
    let (lookup, cache_future) = ClaimLookup::new(client, &options.claim_cache);
    let preparer = preparer(&options, driver, store, lookup)
        .await
        .map_err(|e| PluginError::Store(Box::new(e)))?;
    serve(options, preparer, cache_future).await
}

/// Loads `store` into a preparer; its error is the store's own, so that [`start`] reports the
/// checkpoint's errors as they are.
async fn preparer<D: DraDriver, S: PreparedStore>(
    options: &PluginOptions,
    driver: D,
    store: S,
    lookup: ClaimLookup,
) -> Result<Preparer<D>, S::Error> {
    if options.boot_id.is_none() {
        tracing::warn!("reboot detection off: no boot ID; stored prepared claims are trusted after a reboot");
    }
    let preparer = Preparer::new(
        options.driver_name.clone(),
        Arc::new(driver),
        lookup,
        store,
        options.call_timeout,
        options.boot_id.clone(),
    )
    .await?;
    Ok(match options.metadata_writer() {
        Some(writer) => preparer.with_metadata(writer).await,
        None => preparer,
    })
}

/// Serves a loaded preparer: binds the DRA socket and then the registration socket, then
/// spawns the claim watch.
async fn serve<D: DraDriver>(
    options: PluginOptions,
    preparer: Preparer<D>,
    cache_future: Option<impl Future<Output = ()> + Send + 'static>,
) -> Result<PluginHandle<D>, PluginError> {
    let preparer = Arc::new(preparer);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (registration_tx, registration_rx) = watch::channel(RegistrationState::Pending);
    let dra_socket = options.dra_socket();
    let registration_socket = options.registration_socket();

    let dra_listener = sockets::bind(&dra_socket)?;
    let service = DraService {
        preparer: preparer.clone(),
    };
    let health_service = options.health.clone().map(|feed| HealthService { feed });
    let dra_router = move || {
        Server::builder()
            .add_service(dra::v1::dra_plugin_server::DraPluginServer::new(service.clone()))
            .add_service(dra::v1beta1::dra_plugin_server::DraPluginServer::new(service.clone()))
            .add_optional_service(
                health_service
                    .clone()
                    .map(health::v1::dra_resource_health_server::DraResourceHealthServer::new),
            )
            .add_optional_service(
                health_service
                    .clone()
                    .map(health::v1alpha1::dra_resource_health_server::DraResourceHealthServer::new),
            )
    };
    let dra_server = tokio::spawn(sockets::serve(
        dra_socket.clone(),
        dra_listener,
        dra_router,
        shutdown_rx.clone(),
        options.socket_check_interval,
    ));

    let registration_listener = match sockets::bind(&registration_socket) {
        Ok(l) => l,
        Err(e) => {
            let _ = shutdown_tx.send(true);
            let _ = dra_server.await;
            return Err(e.into());
        }
    };
    let health_services = options.health.as_ref().map_or(&[][..], |_| &HEALTH_SERVICES[..]);
    let registration = Arc::new(RegistrationService {
        driver_name: options.driver_name.clone(),
        endpoint: dra_socket.display().to_string(),
        supported_versions: SUPPORTED_VERSIONS
            .iter()
            .chain(health_services)
            .map(|s| s.to_string())
            .collect(),
        state: registration_tx,
    });
    let registration_router = move || Server::builder().add_service(RegistrationServer::from_arc(registration.clone()));
    let registration_server = tokio::spawn(sockets::serve(
        registration_socket.clone(),
        registration_listener,
        registration_router,
        shutdown_rx,
        options.socket_check_interval,
    ));
    // Spawned once nothing can fail any more, so that the handle is its only owner. Nobody
    // asks for a claim before the registration socket exists, so it starts in time.
    let cache_task = cache_future.map(tokio::spawn);
    tracing::info!(
        driver = %options.driver_name,
        registration_socket = %registration_socket.display(),
        dra_socket = %dra_socket.display(),
        claim_cache = ?options.claim_cache,
        device_health = options.health.is_some(),
        device_metadata = ?options.device_metadata,
        "kubelet plugin serving"
    );
    Ok(PluginHandle {
        preparer,
        registration: registration_rx,
        shutdown: shutdown_tx,
        servers: vec![dra_server, registration_server],
        cache_task,
        registration_socket,
        dra_socket,
    })
}

impl<D: DraDriver> Drop for PluginHandle<D> {
    /// A handle dropped without [`PluginHandle::shutdown`] still stops everything it started:
    /// the servers see the shutdown signal and remove their sockets on their own, and the claim
    /// watch is aborted.
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.cache_task.take() {
            task.abort();
        }
    }
}

impl<D: DraDriver> PluginHandle<D> {
    /// Where the kubelet's registration stands.
    pub fn registration(&self) -> RegistrationState {
        self.registration.borrow().clone()
    }

    /// Follows the kubelet's registration (for a readiness probe that outlives the handle).
    pub fn registration_watch(&self) -> watch::Receiver<RegistrationState> {
        self.registration.clone()
    }

    /// Waits until the kubelet reports a verdict (registered or rejected).
    pub async fn wait_for_verdict(&mut self) -> RegistrationState {
        let _ = self.registration.wait_for(|s| *s != RegistrationState::Pending).await;
        self.registration()
    }

    /// The registration socket path.
    pub fn registration_socket(&self) -> &Path {
        &self.registration_socket
    }

    /// The DRA service socket path.
    pub fn dra_socket(&self) -> &Path {
        &self.dra_socket
    }

    /// Whether claim lookups are served from a synced watch cache.
    pub fn claim_cache_ready(&self) -> bool {
        self.preparer.lookup().cache_ready()
    }

    /// A reader of the claim watch cache, for a driver's runtime hooks: the current object of a
    /// claim by namespace and name, without an API request (`None` when not cached, or in
    /// GET-only mode).
    pub fn claim_cache_reader(&self) -> ClaimCacheReader {
        ClaimCacheReader(self.preparer.lookup().clone())
    }

    /// Number of claims in the watch cache.
    pub fn cached_claims(&self) -> usize {
        self.preparer.lookup().cached_claims()
    }

    /// The claims currently prepared (as last committed to the store).
    pub async fn prepared_claims(&self) -> Vec<PreparedClaim> {
        self.preparer.prepared_claims()
    }

    /// Stops serving and removes both sockets, in order: the servers first (the kubelet sees
    /// the registration socket go), then the claim watch.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for server in std::mem::take(&mut self.servers) {
            let _ = server.await;
        }
        if let Some(task) = self.cache_task.take() {
            task.abort();
        }
        tracing::info!(registration_socket = %self.registration_socket.display(), "kubelet plugin stopped; sockets removed");
    }
}

/// Resolves on SIGTERM or SIGINT: how the kubelet's pod lifecycle and an operator stop a plugin.
pub async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names() {
        for ok in ["net.example.com", "a", "dra-net.x1.io"] {
            assert!(validate_driver_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Net.example.com", "a..b", "-a.b", "a_b", &"a".repeat(64)] {
            assert!(validate_driver_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_paths_follow_the_kubelet_layout() {
        let o = PluginOptions::new("net.example.com");
        assert_eq!(
            o.registration_socket(),
            Path::new("/var/lib/kubelet/plugins_registry/net.example.com-reg.sock")
        );
        assert_eq!(
            o.dra_socket(),
            Path::new("/var/lib/kubelet/plugins/net.example.com/dra.sock")
        );
    }
}
