//! Publishing a node's devices as ResourceSlices, and keeping them published.
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::resource::v1::{Device, ResourceSlice};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::sync::{Notify, broadcast, watch};

use crate::slices::{PoolSpec, SliceOp, plan};

/// How long changes are gathered before re-planning, so a burst costs one plan.
const SETTLE: Duration = Duration::from_millis(100);
/// Rounds of plan-and-write in one publication before giving up until the next change.
const MAX_ATTEMPTS: usize = 5;

/// A publication failed; the publisher retries on the next change or resync.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// A write failed.
    #[error("pool {pool}: {operation} failed: {source}")]
    Write {
        /// The pool.
        pool: String,
        /// What was written, e.g. `create` or `update node1-net-example-com-x7k2p`.
        operation: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The slices kept changing under the writes (conflicts, concurrent deletions).
    #[error("pool {pool}: slices still differ after {MAX_ATTEMPTS} rounds of writes")]
    Conflicts {
        /// The pool.
        pool: String,
    },
}

/// Counts of a publication's writes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// Slices created, updated and deleted.
    pub writes: usize,
}

/// Where a running publisher stands, for health checks and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishStatus {
    /// Whether the last publication succeeded (the slices match the devices).
    pub published: bool,
    /// Devices in the last publication attempted.
    pub devices: usize,
    /// Slice writes (creates, updates, deletes) of the successful publications since the start.
    pub writes: u64,
}

/// Keeps one pool's ResourceSlices equal to the devices it is given.
///
/// Publishing a node's devices as ResourceSlices, and keeping them published.
///
/// The publisher watches its own slices (field selectors `spec.nodeName` and `spec.driver`)
/// and re-plans whenever the desired devices change or its slices change behind its back: the
/// kubelet deletes a driver's slices while no plugin of it is connected, and at kubelet start.
/// Plans come from [`crate::slices::plan`], so an unchanged state costs no write.
pub struct SlicePublisher {
    api: Api<ResourceSlice>,
    status: watch::Sender<PublishStatus>,
    pool: PoolSpec,
    store: reflector::Store<ResourceSlice>,
    changed: std::sync::Arc<Notify>,
    seen: broadcast::Sender<Seen>,
    watch_task: tokio::task::JoinHandle<()>,
}

/// A slice state the watch delivered: name and resourceVersion, or `None` for a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    name: String,
    resource_version: Option<String>,
}

impl Seen {
    fn of(slice: &ResourceSlice, deleted: bool) -> Option<Self> {
        Some(Self {
            name: slice.metadata.name.clone()?,
            resource_version: if deleted {
                None
            } else {
                slice.metadata.resource_version.clone()
            },
        })
    }
}

impl Drop for SlicePublisher {
    fn drop(&mut self) {
        self.watch_task.abort();
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl SlicePublisher {
    /// Starts watching the pool's slices; waits until the first list arrived.
    pub async fn start(client: Client, pool: PoolSpec) -> Self {
        let api: Api<ResourceSlice> = Api::all(client);
        let (store, writer) = reflector::store();
        let changed = std::sync::Arc::new(Notify::new());
        let config =
            watcher::Config::default().fields(&format!("spec.nodeName={},spec.driver={}", pool.node_name, pool.driver));
        let notify = changed.clone();
        let (seen, _) = broadcast::channel(1024);
        let seen_tx = seen.clone();
        // Events come out after the reflector applied them: the store is never behind them.
        let stream = watcher(api.clone(), config).default_backoff().reflect(writer);
        let watch_task = tokio::spawn(async move {
            stream
                .for_each(|event| {
                    match &event {
                        Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                            let _ = Seen::of(s, false).map(|seen| seen_tx.send(seen));
                        }
                        Ok(watcher::Event::Delete(s)) => {
                            let _ = Seen::of(s, true).map(|seen| seen_tx.send(seen));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "ResourceSlice watch failed; retrying"),
                    }
                    if event.is_ok() {
                        notify.notify_one();
                    }
                    futures::future::ready(())
                })
                .await;
        });
        let _ = store.wait_until_ready().await;
        Self {
            api,
            pool,
            store,
            changed,
            seen,
            watch_task,
            status: watch::channel(PublishStatus::default()).0,
        }
    }

    /// Follows the publisher's status (also after [`Self::run`] took it over).
    pub fn status(&self) -> watch::Receiver<PublishStatus> {
        self.status.subscribe()
    }

    /// Makes the pool's slices publish `devices`: plans against the watched slices, writes,
    /// waits for the writes to come back through the watch, and plans again until a plan is
    /// empty, so a change that races with the writes (the kubelet deleting slices) is caught.
    /// A conflict waits a moment and plans again.
    pub async fn publish(&self, devices: &[Device]) -> Result<Published, PublishError> {
        let mut published = Published::default();
        for round in 1..=MAX_ATTEMPTS {
            let existing: Vec<ResourceSlice> = self.store.state().iter().map(|s| (**s).clone()).collect();
            let ops = plan(&self.pool, devices, &existing);
            tracing::debug!(pool = %self.pool.pool, existing = existing.len(), ops = ops.len(), "planned ResourceSlices");
            if ops.is_empty() {
                return Ok(published);
            }
            // Subscribed before writing, so none of our writes' watch events can be missed.
            let mut seen = self.seen.subscribe();
            match self.apply(ops, &mut published).await {
                Ok(written) => {
                    tracing::info!(pool = %self.pool.pool, devices = devices.len(), writes = published.writes, "published ResourceSlices");
                    wait_for_watch(&mut seen, written).await;
                }
                Err(e) if conflict(&e) => {
                    tracing::info!(pool = %self.pool.pool, round, error = %e, "slice write conflicted; re-planning");
                    // Give the watch a moment to deliver whatever we conflicted with.
                    tokio::time::sleep(SETTLE).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(PublishError::Conflicts {
            pool: self.pool.pool.clone(),
        })
    }

    /// Publishes whenever `devices` changes or the pool's slices change, until `devices` closes.
    pub async fn run(self, mut devices: watch::Receiver<Vec<Device>>) {
        loop {
            let current = devices.borrow_and_update().clone();
            let result = self.publish(&current).await;
            self.status.send_modify(|status| {
                status.devices = current.len();
                status.published = result.is_ok();
                if let Ok(published) = &result {
                    status.writes += published.writes as u64;
                }
            });
            if let Err(e) = result {
                tracing::error!(error = %e, "publishing ResourceSlices failed; retrying on the next change");
            }
            tokio::select! {
                changed = devices.changed() => if changed.is_err() { return },
                () = self.changed.notified() => {}
            }
            tokio::time::sleep(SETTLE).await;
        }
    }

    /// Writes the plan; returns what the watch will show for each write.
    async fn apply(&self, ops: Vec<SliceOp>, published: &mut Published) -> Result<Vec<Seen>, PublishError> {
        let pool = &self.pool.pool;
        let failed = |operation: String| {
            move |source: kube::Error| PublishError::Write {
                pool: pool.clone(),
                operation,
                source: Box::new(source),
            }
        };
        let mut written = Vec::new();
        for op in ops {
            let seen = match op {
                SliceOp::Create(slice) => {
                    let created = self
                        .api
                        .create(&PostParams::default(), &slice)
                        .await
                        .map_err(failed("create".into()))?;
                    Seen::of(&created, false)
                }
                SliceOp::Update(slice) => {
                    let name = slice.metadata.name.clone().unwrap_or_default();
                    let updated = self
                        .api
                        .replace(&name, &PostParams::default(), &slice)
                        .await
                        .map_err(failed(format!("update {name}")))?;
                    Seen::of(&updated, false)
                }
                SliceOp::Delete { name } => match self.api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => Some(Seen {
                        name,
                        resource_version: None,
                    }),
                    // Already gone is what we wanted; the watch may already have said so.
                    Err(kube::Error::Api(s)) if s.code == 404 => None,
                    Err(e) => return Err(failed(format!("delete {name}"))(e)),
                },
            };
            written.extend(seen);
            published.writes += 1;
        }
        Ok(written)
    }
}

/// Waits until the watch delivered every one of our writes (bounded), so the next plan sees
/// them, and also anything that happened after them.
async fn wait_for_watch(seen: &mut broadcast::Receiver<Seen>, mut pending: Vec<Seen>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Ok(event)) => pending.retain(|p| *p != event),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                tracing::warn!(
                    pending = pending.len(),
                    "the ResourceSlice watch did not show our writes in time"
                );
                return;
            }
        }
    }
}

fn conflict(e: &PublishError) -> bool {
    matches!(e, PublishError::Write { source, .. } if is_conflict(source))
}
