//! The shell around the lifecycle: the node's claims in memory, the journal that holds them,
//! and (in [`ops`]) the operations that run the lifecycle's effects through the kernel seam.
//!
//! Every change to a claim goes the same way ([`Txn`]): take the claims' locks (in UID order),
//! compute each claim's [`step`], commit what must be durable in one journal write, and only
//! then swap the new claims into memory and derive their status. Kernel work runs after the
//! commit, in an operation (one per pod at a time) that goes on when the hook that started it
//! has answered, and whose outcome is journaled when it ends.
//!
//! Races, and what happens (each is a unit test in `tests.rs`, named after it):
//! - **Stop, remove or Unprepare while an attach runs**: the stop is queued on the running
//!   operation, which returns what the stop covers once the attach has ended (the records are
//!   kept throughout). A stop hook waits for that within its budget, Unprepare until it is done.
//!   A stop that comes while the attach is still starting is queued the same way: the
//!   operation is registered before anything slow.
//! - **A second pod on a prepared or shared claim**: the pod's hooks look for standalone claims
//!   of its namespace that reserve it but are planned for another pod. A claim at home follows
//!   the new pod; a claim in use fails the new pod's sandbox (or first container) with an error
//!   naming the claim and the pod holding it, in every claim-cache mode. Never Running without it.
//! - **A pod's new sandbox**: a stop or removal covers only its own sandbox's namespace; the new
//!   sandbox's RunPodSandbox brings back what is still in the old one and attaches it.
//! - **A failed journal write**: nothing in memory changes and the kernel is not touched; the
//!   hook or the kubelet gets the error and retries. An outcome (the kernel did it either way)
//!   is retried until the journal takes it.
//! - **A panic in an operation or in a driver hook**: a kernel call that panics is an attach or
//!   detach of unknown outcome (its interfaces are looked for and returned); a panicking driver
//!   hook is logged; a guard answers every waiter of an operation that ended without an answer
//!   and forgets it, so later hooks for the pod are served; its claims are converged against the
//!   kernel by the next stop or Unprepare.
//! - **Many pods stopping at once**: each stop journals its intent and waits for its detach only
//!   up to its budget; there is no node-wide lock; the detaches go on behind the hooks.
//! - **SIGTERM**: the agent stops taking calls, then waits (bounded) for the operations in
//!   flight; a task that is moving an interface is never aborted while the agent shuts down.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::resource::v1::Device;
use kubeletplugin::{ClaimRef, MetadataWriter, PreparedClaim};
use netdev_k8s::DeviceHolds;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;
use tokio::{sync::watch, task::JoinSet};

mod ops;

pub use ops::OpError;
pub(crate) use ops::{OpState, Scope, may_come_home};

use crate::{
    api::ClaimApi,
    driver::NetworkDriver,
    journal::{Change, Journal, JournalError},
    kernel::{Kernel, KernelError},
    lifecycle::{Claim, Effect, Event, Note, Phase, Refusal, Step, step},
    locks::{Held, KeyLocks},
    metrics::Metrics,
    plan::{PodRef, describe},
    status::{StatusWriter, desired},
};

/// Journal keys: a claim of the node, and the kubelet plugin's record of a prepared claim.
const CLAIM: &str = "claim/";
const KUBELET: &str = "kubelet/";

/// Share of the runtime's request timeout a hook spends waiting for kernel work; the rest is
/// margin for the reply, so a slow kernel never gets the plugin dropped by the runtime.
const HOOK_SHARE: f64 = 0.75;

/// Why a hook or the kubelet's call could not have what it asked for. Every variant names the
/// pod or claim.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A claim the pod uses is held by another pod (or being returned, or stranded).
    #[error("pod {pod}: claim {claim}: {refusal}")]
    Refused {
        /// The pod asking.
        pod: PodRef,
        /// The claim.
        claim: ClaimRef,
        /// Why.
        refusal: Refusal,
    },
    /// The pod has no network namespace to attach to.
    #[error("pod {pod}: no network namespace to attach {what} to ({hook}): {source}")]
    NoNetworkNamespace {
        /// The pod.
        pod: PodRef,
        /// `claim ns/c device d0`…
        what: String,
        /// The hook.
        hook: &'static str,
        /// What the kernel said of the path.
        #[source]
        source: KernelError,
    },
    /// Reading the host's state failed: nothing was changed.
    #[error("pod {pod}: cannot attach {what}: {source}")]
    AttachFailed {
        /// The pod.
        pod: PodRef,
        /// What was to be attached.
        what: String,
        /// The kernel's error, naming device and step.
        #[source]
        source: KernelError,
    },
    /// Whether the pod uses a claim of its namespace could not be read: it does not start
    /// until that is known (a pod never runs without an interface it was promised).
    #[error("pod {pod}: cannot tell whether it uses claim {claim}, which another pod holds: {error}")]
    Unknowable {
        /// The pod.
        pod: PodRef,
        /// The claim.
        claim: ClaimRef,
        /// Why the claim could not be read.
        error: String,
    },
    /// The journal could not be written: nothing was done.
    #[error("pod {pod}: {what}: the intent could not be recorded, so nothing was moved: {source}")]
    Journal {
        /// The pod.
        pod: PodRef,
        /// What was to be done.
        what: String,
        /// Why.
        #[source]
        source: JournalError,
    },
    /// A claim's interface could not be returned from its pod.
    #[error("claim {claim}: {refusal}")]
    Stranded {
        /// The claim.
        claim: ClaimRef,
        /// Where, and why.
        refusal: Refusal,
    },
    /// A claim's interfaces did not come home in time.
    #[error("claim {claim}: its interfaces were still {phase} after {waited:?}; the kubelet will retry")]
    NotHome {
        /// The claim.
        claim: ClaimRef,
        /// Where they were.
        phase: &'static str,
        /// How long it waited.
        waited: Duration,
    },
}

/// The node's claims and the machinery that changes them.
pub(crate) struct Node<D, K: Kernel> {
    pub driver_name: String,
    pub driver: D,
    kernel: K,
    pub(crate) journal: Journal,
    /// Committed claims by UID: what the journal holds.
    claims: Mutex<BTreeMap<String, Claim>>,
    /// Prepared claims not committed yet: the kubelet plugin commits its batch next.
    staged: Mutex<HashMap<String, Claim>>,
    /// The kubelet plugin's records of prepared claims, as the journal holds them.
    kubelet: Mutex<BTreeMap<String, PreparedClaim>>,
    locks: KeyLocks,
    /// The running operations, the stops they must honour before they end, and the pods
    /// waiting for a claim to come home.
    ops: Mutex<ops::Ops>,
    /// Every operation and background task; aborted when the node is dropped, awaited (with
    /// a bound) by [`Node::shutdown`].
    tasks: Mutex<JoinSet<()>>,
    pub holds: DeviceHolds,
    pub published: watch::Receiver<Vec<Device>>,
    status: StatusWriter,
    api: Arc<dyn ClaimApi>,
    pub nri_connected: watch::Receiver<bool>,
    hook_wait: Mutex<Duration>,
    pub metrics: Metrics,
    /// The device metadata files (KEP-5304), when the kubelet plugin writes them: each
    /// request's file gets the network data after the attach.
    pub(crate) metadata: Option<MetadataWriter>,
}

/// Everything a node is made of.
pub(crate) struct Parts<D, K> {
    pub driver_name: String,
    pub driver: D,
    pub kernel: K,
    pub journal: Journal,
    pub entries: BTreeMap<String, Value>,
    pub holds: DeviceHolds,
    pub published: watch::Receiver<Vec<Device>>,
    pub api: Arc<dyn ClaimApi>,
    pub nri_connected: watch::Receiver<bool>,
    pub metrics: Metrics,
    pub metadata: Option<MetadataWriter>,
}

/// The journal's entries decoded: the node's claims and the kubelet plugin's records, by UID.
pub(crate) type Decoded = (BTreeMap<String, Claim>, BTreeMap<String, PreparedClaim>);

/// Claims and kubelet records from the journal's entries; an entry that does not decode is a
/// start-up error naming it (the journal may be the only record of interfaces in pods).
pub(crate) fn decode_entries(path: &Path, entries: &BTreeMap<String, Value>) -> Result<Decoded, JournalError> {
    let unusable = |key: &str, e: serde_json::Error| JournalError::Unusable {
        path: path.to_owned(),
        reason: format!("entry {key}: {e}"),
    };
    let mut claims = BTreeMap::new();
    let mut kubelet = BTreeMap::new();
    for (key, value) in entries {
        if let Some(uid) = key.strip_prefix(CLAIM) {
            claims.insert(uid.to_owned(), Claim::deserialize(value).map_err(|e| unusable(key, e))?);
        } else if let Some(uid) = key.strip_prefix(KUBELET) {
            kubelet.insert(
                uid.to_owned(),
                PreparedClaim::deserialize(value).map_err(|e| unusable(key, e))?,
            );
        } else {
            return Err(JournalError::Unusable {
                path: path.to_owned(),
                reason: format!("unknown entry {key}"),
            });
        }
    }
    Ok((claims, kubelet))
}

fn claim_change(uid: &str, claim: &Claim) -> Change {
    (
        format!("{CLAIM}{uid}"),
        Some(serde_json::to_string(claim).expect("a claim always serialises")),
    )
}

/// The journal change recording (or, with `None`, forgetting) the kubelet plugin's record of
/// prepared claim `uid`.
pub(crate) fn kubelet_change(uid: &str, record: Option<&PreparedClaim>) -> Change {
    (
        format!("{KUBELET}{uid}"),
        record.map(|r| serde_json::to_string(r).expect("a prepared claim always serialises")),
    )
}

/// A step over several claims, under their locks: computed on top of each other, committed
/// together.
pub(crate) struct Txn<'a, D, K: Kernel> {
    node: &'a Node<D, K>,
    _held: Held<'a>,
    steps: BTreeMap<String, Step>,
}

impl<D: NetworkDriver, K: Kernel> Txn<'_, D, K> {
    /// The claim as it stands in this transaction.
    pub(crate) fn claim(&self, uid: &str) -> Option<Claim> {
        if let Some(step) = self.steps.get(uid) {
            return Some(step.claim.clone());
        }
        self.node.claims.lock().get(uid).cloned()
    }

    /// Adds claim `uid` as it is to be (a newly prepared one). Its status is not written: a
    /// claim just prepared has no entries of this driver, and Prepare makes no API request.
    pub(crate) fn put(&mut self, uid: &str, claim: Claim) {
        self.steps.insert(
            uid.to_owned(),
            Step {
                claim,
                effects: vec![Effect::Journal],
            },
        );
    }

    /// Applies `event` to claim `uid` (on top of earlier steps of this transaction).
    pub(crate) fn step(&mut self, uid: &str, event: Event) -> Result<&Step, Refusal> {
        debug_assert!(self._held.holds(uid), "a step on claim {uid} without its lock");
        let claim = self.claim(uid).ok_or(Refusal::Released)?;
        let mut next = step(&claim, event)?;
        if let Some(earlier) = self.steps.remove(uid) {
            let mut effects = earlier.effects;
            for effect in next.effects {
                if !effects.contains(&effect) {
                    effects.push(effect);
                }
            }
            next.effects = effects;
        }
        self.steps.insert(uid.to_owned(), next);
        Ok(&self.steps[uid])
    }

    /// Commits: the steps that ask for it in one journal write (with `extra` changes), then
    /// into memory; status and holds follow. The steps, for the caller's other effects.
    pub(crate) async fn commit(self, extra: Vec<Change>) -> Result<BTreeMap<String, Step>, JournalError> {
        let node = self.node;
        let mut changes = extra;
        for (uid, step) in &self.steps {
            if step.effects.contains(&Effect::Journal) {
                changes.push(claim_change(uid, &step.claim));
            }
        }
        node.journal.commit(changes).await?;
        let mut claims = node.claims.lock();
        for (uid, step) in &self.steps {
            claims.insert(uid.clone(), step.claim.clone());
        }
        drop(claims);
        for step in self.steps.values() {
            if step.effects.contains(&Effect::ReleaseHolds) {
                for device in &step.claim.plan.devices {
                    node.holds.release(&device.device);
                }
            }
            if step.effects.contains(&Effect::Status) || step.claim.note.is_some() {
                node.report(&step.claim);
            }
        }
        Ok(self.steps)
    }
}

impl<D: NetworkDriver, K: Kernel> Node<D, K> {
    pub(crate) fn new(parts: Parts<D, K>, status: StatusWriter) -> Result<Self, JournalError> {
        let (claims, kubelet) = decode_entries(parts.journal.path(), &parts.entries)?;
        for claim in claims.values().filter(|c| c.phase != Phase::Released) {
            for device in &claim.plan.devices {
                parts.holds.hold_as(device.published.clone());
            }
        }
        Ok(Self {
            driver_name: parts.driver_name,
            driver: parts.driver,
            kernel: parts.kernel,
            journal: parts.journal,
            claims: Mutex::new(claims),
            staged: Mutex::default(),
            kubelet: Mutex::new(kubelet),
            locks: KeyLocks::default(),
            ops: Mutex::default(),
            tasks: Mutex::new(JoinSet::new()),
            holds: parts.holds,
            published: parts.published,
            status,
            api: parts.api,
            nri_connected: parts.nri_connected,
            hook_wait: Mutex::new(Duration::from_secs_f64(2.0 * HOOK_SHARE)),
            metrics: parts.metrics,
            metadata: parts.metadata,
        })
    }

    /// Forgets a released claim whose status entries are gone: the last trace of it.
    pub(crate) async fn forget_released(&self, claim: &ClaimRef) {
        let _held = self.locks.lock([claim.uid.clone()]).await;
        if self.claim(&claim.uid).map(|c| c.phase) != Some(Phase::Released) {
            return;
        }
        match self.journal.commit(vec![(format!("{CLAIM}{}", claim.uid), None)]).await {
            Ok(()) => {
                self.claims.lock().remove(&claim.uid);
                tracing::debug!(%claim, "released claim forgotten");
            }
            Err(e) => tracing::warn!(%claim, error = %e, "a released claim could not be forgotten yet"),
        }
    }

    /// The agent is killed: every task stops where it stands (tests only).
    #[cfg(test)]
    pub(crate) fn crash(&self) {
        self.tasks.lock().abort_all();
    }

    /// Waits for the operations in flight (never aborting one that is moving an interface),
    /// at most `bound`; what is still running then is named, its intent being in the journal.
    pub(crate) async fn shutdown(&self, bound: Duration) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock());
        let drained = tokio::time::timeout(bound, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            let pods = self.ops.lock().running_pods();
            tracing::warn!(pods = ?pods, ?bound, "operations still running at shutdown; their intent is journaled and the next start converges them");
            tasks.detach_all();
        }
        // Not needed to survive the agent's end (the page cache holds the journal), but a
        // shutdown is often followed by the node's.
        if let Err(e) = self.journal.flush().await {
            tracing::warn!(error = %e, "the journal could not be flushed to disk at shutdown");
        }
    }

    /// Sets the hooks' wait from the runtime's request timeout.
    pub(crate) fn set_request_timeout(&self, timeout: Duration) {
        if !timeout.is_zero() {
            *self.hook_wait.lock() = timeout.mul_f64(HOOK_SHARE);
        }
    }

    pub(crate) fn hook_wait(&self) -> Duration {
        *self.hook_wait.lock()
    }

    /// Starts a transaction over `uids`.
    pub(crate) async fn txn(&self, uids: impl IntoIterator<Item = String>) -> Txn<'_, D, K> {
        Txn {
            node: self,
            _held: self.locks.lock(uids).await,
            steps: BTreeMap::new(),
        }
    }

    /// Keeps a newly planned claim until the kubelet plugin commits its batch.
    pub(crate) fn stage(&self, claim: Claim) {
        self.staged.lock().insert(claim.plan.claim.uid.clone(), claim);
    }

    /// A staged claim.
    pub(crate) fn staged(&self, uid: &str) -> Option<Claim> {
        self.staged.lock().get(uid).cloned()
    }

    /// Forgets a staged claim (committed, or its commit failed and it was rolled back).
    pub(crate) fn unstage(&self, uid: &str) -> Option<Claim> {
        self.staged.lock().remove(uid)
    }

    /// Runs `f` with the plans of every claim of the node that is not released, staged ones
    /// included, borrowed (a batch of Prepares would otherwise each copy every plan).
    pub(crate) fn with_plans<T>(&self, f: impl FnOnce(&[&crate::plan::ClaimPlan]) -> T) -> T {
        let claims = self.claims.lock();
        let staged = self.staged.lock();
        let plans: Vec<&crate::plan::ClaimPlan> = claims
            .values()
            .filter(|c| c.phase != Phase::Released)
            .chain(staged.values())
            .map(|c| &c.plan)
            .collect();
        f(&plans)
    }

    /// The kubelet plugin's records of prepared claims.
    pub(crate) fn kubelet_records(&self) -> Vec<PreparedClaim> {
        self.kubelet.lock().values().cloned().collect()
    }

    /// Sets (or with `None` forgets) the kubelet plugin's record of claim `uid`, after its
    /// commit.
    pub(crate) fn set_kubelet_record(&self, uid: &str, record: Option<PreparedClaim>) {
        let mut kubelet = self.kubelet.lock();
        match record {
            Some(record) => kubelet.insert(uid.to_owned(), record),
            None => kubelet.remove(uid),
        };
    }

    /// A copy of claim `uid`.
    pub(crate) fn claim(&self, uid: &str) -> Option<Claim> {
        self.claims.lock().get(uid).cloned()
    }

    /// The kernel seam, for reads that change nothing (device health).
    pub(crate) fn kernel(&self) -> &K {
        &self.kernel
    }

    /// Every claim, for tests, status and device health.
    pub(crate) fn claims(&self) -> BTreeMap<String, Claim> {
        self.claims.lock().clone()
    }

    /// The UIDs of the claims planned for pod `uid` that match `filter`.
    pub(crate) fn claims_of_pod(&self, uid: &str, filter: impl Fn(&Phase) -> bool) -> Vec<String> {
        self.claims
            .lock()
            .iter()
            .filter(|(_, c)| c.plan.pod.uid == uid && filter(&c.phase))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Claims whose status is not written yet.
    pub(crate) fn pending_status(&self) -> usize {
        self.status.pending()
    }

    /// Writes the status a claim's phase calls for.
    pub(crate) fn report(&self, claim: &Claim) {
        if let Some(entries) = desired(&self.driver_name, claim) {
            self.status.set(&claim.plan.claim, entries);
        }
    }

    /// Sets a note (a reason for the status) on claims at home; memory only.
    pub(crate) async fn note(&self, uids: &[String], reason: &str, message: &str) {
        let mut txn = self.txn(uids.iter().cloned()).await;
        for uid in uids {
            if let Some(mut claim) = txn.claim(uid)
                && claim.phase.is_home()
            {
                claim.note = Some(Note {
                    reason: reason.to_owned(),
                    message: message.to_owned(),
                });
                txn.steps.insert(
                    uid.clone(),
                    Step {
                        claim,
                        effects: vec![Effect::Status],
                    },
                );
            }
        }
        // Nothing journaled: a commit without journal changes cannot fail.
        let _ = txn.commit(Vec::new()).await;
    }

    /// `claim ns/c device d0; …` for the claims `uids`.
    pub(crate) fn describe(&self, uids: &[String]) -> String {
        let claims = self.claims.lock();
        let plans: Vec<_> = uids
            .iter()
            .filter_map(|u| claims.get(u))
            .map(|c| c.plan.clone())
            .collect();
        describe(&plans)
    }

    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }
}
