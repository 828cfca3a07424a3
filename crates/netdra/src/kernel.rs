//! The seam between the framework and the kernel: the few operations the framework asks of
//! `netdev` (open a pod's namespace, read what an attach would change, attach, detach, find an
//! interface, read a link's state for device health), as a trait with the real implementation ([`Netdev`]) and, for tests, a
//! recording fake that can fail, stall or panic at any step.
//!
//! Every call is a future: the real one runs netdev's blocking work on a blocking thread, so
//! a call dropped by its caller still finishes in the kernel (the framework never drops one
//! whose outcome it has not journaled); a fake can take its time on tokio's clock, which tests
//! pause.

use std::{path::Path, sync::Arc};

use netdev::{AttachRequest, Detached, LinkState, Netns, Placement, RestoreRecord, ValidConfig};

use crate::lifecycle::NetnsRef;

/// One interface to attach: the host interface and how it is configured in the pod.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AttachSpec {
    /// The interface's name on the host.
    pub device: String,
    /// Its configuration inside the pod.
    pub config: ValidConfig,
    /// Carry its host addresses and routes into the pod (see
    /// [`netdev::AttachRequest::carry_host_addresses`]).
    pub carry_host_addresses: bool,
    /// The host interface itself, or a subinterface of it made for the pod.
    pub placement: Placement,
}

impl AttachSpec {
    fn request(&self) -> AttachRequest<'_> {
        AttachRequest::new(&self.device, &self.config)
            .carrying_host_addresses(self.carry_host_addresses)
            .placed(&self.placement)
    }
}

/// Where an interface is.
pub use netdev::Location;

/// Why a kernel operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The pod's namespace could not be used.
    #[error(transparent)]
    Netns(#[from] netdev::NetnsError),
    /// The attach (or the read before it) failed.
    #[error(transparent)]
    Attach(#[from] netdev::AttachError),
    /// The detach could not bring the interface back.
    #[error(transparent)]
    Detach(#[from] netdev::DetachError),
    /// Looking for the interface failed.
    #[error(transparent)]
    Locate(#[from] netdev::LocateError),
    /// Reading a link's state for device health failed.
    #[error(transparent)]
    Health(#[from] netdev::HealthError),
    /// Looking for, or deleting, subinterfaces left on the host failed.
    #[error(transparent)]
    Subinterface(#[from] netdev::SubinterfaceError),
    /// The operation panicked or its thread was lost: what it changed is unknown.
    #[error("{operation} failed unexpectedly: {message}")]
    Lost {
        /// `attach`, `detach`…
        operation: &'static str,
        /// The panic's message or the task's error.
        message: String,
    },
}

impl KernelError {
    /// Whether the kernel may have been left changed: an attach whose rollback was incomplete,
    /// or an operation that was lost mid-way. Every other failure changed nothing.
    pub fn may_have_changed(&self) -> bool {
        match self {
            Self::Attach(netdev::AttachError::Failed { rollback, .. }) => *rollback != netdev::Rollback::Restored,
            Self::Lost { .. } => true,
            _ => false,
        }
    }
}

/// The kernel operations the framework uses.
pub trait Kernel: Send + Sync + 'static {
    /// A pod network namespace, open and checked.
    type Netns: Send + Sync + 'static;

    /// Names the namespace at `path` by its inode (one `stat`; nothing is opened).
    fn identify(&self, path: &Path) -> Result<NetnsRef, KernelError>;

    /// Opens the namespace at `path`, checks that it is one, and names it by inode.
    fn open(&self, path: &Path) -> impl Future<Output = Result<(Arc<Self::Netns>, NetnsRef), KernelError>> + Send;

    /// Reads what attaching `specs` into the namespace `netns` would change (the restore
    /// records, in order); reads the host only and changes nothing, so it can run while the
    /// namespace is being opened.
    fn record(
        &self,
        netns: NetnsRef,
        specs: Arc<Vec<AttachSpec>>,
    ) -> impl Future<Output = Result<Vec<RestoreRecord>, KernelError>> + Send;

    /// Moves and configures, all or none (as recorded).
    fn attach(
        &self,
        netns: Arc<Self::Netns>,
        specs: Arc<Vec<AttachSpec>>,
        records: Vec<RestoreRecord>,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;

    /// Brings a recorded interface back to the host, wherever it is.
    fn detach(&self, record: RestoreRecord) -> impl Future<Output = Result<Detached, KernelError>> + Send;

    /// Where a recorded interface is now; changes nothing.
    fn locate(&self, record: RestoreRecord) -> impl Future<Output = Result<Location, KernelError>> + Send;

    /// The state of every link on the host, for device health; changes nothing.
    fn host_links(&self) -> impl Future<Output = Result<Vec<LinkState>, KernelError>> + Send;

    /// The state of a recorded interface in its pod's namespace (`None`: not there), for
    /// device health; changes nothing.
    fn pod_link(&self, record: RestoreRecord) -> impl Future<Output = Result<Option<LinkState>, KernelError>> + Send;

    /// Deletes every subinterface netdra made that is on the host (none belongs there: they
    /// are made in pods, and one on the host was moved there or left by a crash); the names
    /// deleted. Called at start-up, after the journal has converged. The default deletes
    /// nothing, for kernels that make no subinterfaces.
    fn sweep_subinterfaces(&self) -> impl Future<Output = Result<Vec<String>, KernelError>> + Send {
        async { Ok(Vec::new()) }
    }
}

/// The real kernel, through `netdev`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Netdev;

/// Runs netdev's blocking `work` on a blocking thread; a panic there is [`KernelError::Lost`].
async fn blocking<T: Send + 'static>(
    operation: &'static str,
    work: impl FnOnce() -> Result<T, KernelError> + Send + 'static,
) -> Result<T, KernelError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(KernelError::Lost {
            operation,
            message: crate::panic_message(e),
        })
    })
}

impl Kernel for Netdev {
    type Netns = Netns;

    async fn open(&self, path: &Path) -> Result<(Arc<Netns>, NetnsRef), KernelError> {
        let path = path.to_owned();
        blocking("open the pod's namespace", move || {
            let netns = Netns::open(&path)?;
            let inode = netns.inode()?;
            Ok((Arc::new(netns), NetnsRef { path, inode }))
        })
        .await
    }

    fn identify(&self, path: &Path) -> Result<NetnsRef, KernelError> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => netdev::NetnsError::Missing { path: path.into() },
            _ => netdev::NetnsError::Io {
                path: path.into(),
                source,
            },
        })?;
        Ok(NetnsRef {
            path: path.into(),
            inode: metadata.ino(),
        })
    }

    async fn record(&self, netns: NetnsRef, specs: Arc<Vec<AttachSpec>>) -> Result<Vec<RestoreRecord>, KernelError> {
        blocking("record", move || {
            let requests: Vec<AttachRequest<'_>> = specs.iter().map(AttachSpec::request).collect();
            Ok(netdev::record_at(&netns.path, netns.inode, &requests)?)
        })
        .await
    }

    async fn attach(
        &self,
        netns: Arc<Netns>,
        specs: Arc<Vec<AttachSpec>>,
        records: Vec<RestoreRecord>,
    ) -> Result<(), KernelError> {
        blocking("attach", move || {
            let requests: Vec<AttachRequest<'_>> = specs.iter().map(AttachSpec::request).collect();
            Ok(netdev::attach_recorded(&netns, &requests, &records)?)
        })
        .await
    }

    async fn detach(&self, record: RestoreRecord) -> Result<Detached, KernelError> {
        blocking("detach", move || Ok(netdev::detach(&record)?)).await
    }

    async fn locate(&self, record: RestoreRecord) -> Result<Location, KernelError> {
        blocking("locate", move || Ok(netdev::locate(&record)?)).await
    }

    async fn host_links(&self) -> Result<Vec<LinkState>, KernelError> {
        blocking("read the host's links", || Ok(netdev::host_link_states()?)).await
    }

    async fn pod_link(&self, record: RestoreRecord) -> Result<Option<LinkState>, KernelError> {
        blocking("read a link in a pod", move || Ok(netdev::pod_link_state(&record)?)).await
    }

    async fn sweep_subinterfaces(&self) -> Result<Vec<String>, KernelError> {
        blocking("sweep subinterfaces", || {
            let mut deleted = Vec::new();
            for leftover in netdev::subinterface_leftovers(crate::driver::SUBINTERFACE_TAG_PREFIX)? {
                // One that cannot be deleted does not keep the others.
                match netdev::delete_subinterface_on_host(leftover.index, &leftover.tag) {
                    Ok(netdev::DeleteOutcome::Deleted) => deleted.push(leftover.name),
                    Ok(netdev::DeleteOutcome::AlreadyGone) => {}
                    Err(e) => tracing::warn!(
                        link = %leftover.name,
                        tag = %leftover.tag,
                        "could not delete a subinterface left on the host: {e}"
                    ),
                }
            }
            Ok(deleted)
        })
        .await
    }
}

/// A kernel in memory, for the framework's unit tests.
#[cfg(test)]
pub(crate) mod fake;
