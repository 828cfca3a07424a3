//! The state both paths share: the kubelet's Prepare writes plans into it, the runtime's
//! hooks attach and detach by them, and every change is persisted before it is acted on by
//! anyone else.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::api::resource::v1::Device;
use netdev::{AttachRequest, DetachOutcome, DeviceHolds, Netns, RestoreRecord};
use parking_lot::Mutex;
use tokio::{
    sync::watch,
    task::{JoinSet, spawn_blocking},
};

use crate::{
    driver::NetworkDriver,
    metrics::Metrics,
    plan::{ClaimPlan, PodRef},
    state::{Attachment, NodeState, StateError, StateFile, encode},
    status::{DeviceState, StatusWriter, claim_statuses},
};

/// The result of one pod's attach, shared by every hook that waits for it.
pub(crate) type AttachOutcome = Option<Result<(), String>>;

pub(crate) struct Core<D> {
    pub driver_name: String,
    pub driver: D,
    pub state: Mutex<NodeState>,
    file: StateFile,
    /// Serialises state writes, so the file always ends at the latest snapshot.
    write_lock: tokio::sync::Mutex<()>,
    /// Serialises detaches: a pod's stop, a resync and the kubelet's unprepare can each try to
    /// return the same interface, and netdev leaves racing calls on one interface to the caller.
    detach_lock: tokio::sync::Mutex<()>,
    pub holds: DeviceHolds,
    pub published: watch::Receiver<Vec<Device>>,
    pub status: StatusWriter,
    pub nri_connected: watch::Receiver<bool>,
    /// Attaches in flight, by pod UID.
    attaches: Mutex<HashMap<String, watch::Receiver<AttachOutcome>>>,
    /// Attach and detach tasks; aborted when the agent stops.
    pub tasks: Mutex<JoinSet<()>>,
    /// How long one hook waits for an attach: a share of the runtime's request timeout.
    pub hook_wait: Mutex<Duration>,
    pub metrics: Metrics,
    /// The kubelet plugin's claim cache, once the plugin has started.
    pub claims: std::sync::OnceLock<kubeletplugin::ClaimCacheReader>,
}

/// Share of the runtime's request timeout a hook spends waiting for an attach; the rest is
/// margin for the reply, so a slow kernel never gets the plugin dropped by the runtime.
const HOOK_SHARE: f64 = 0.75;

impl<D: NetworkDriver> Core<D> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        driver_name: String,
        driver: D,
        state: NodeState,
        file: StateFile,
        holds: DeviceHolds,
        published: watch::Receiver<Vec<Device>>,
        status: StatusWriter,
        nri_connected: watch::Receiver<bool>,
        metrics: Metrics,
    ) -> Self {
        Self {
            driver_name,
            driver,
            state: Mutex::new(state),
            file,
            write_lock: tokio::sync::Mutex::new(()),
            detach_lock: tokio::sync::Mutex::new(()),
            holds,
            published,
            status,
            nri_connected,
            attaches: Mutex::default(),
            tasks: Mutex::new(JoinSet::new()),
            hook_wait: Mutex::new(Duration::from_secs_f64(2.0 * HOOK_SHARE)),
            metrics,
            claims: std::sync::OnceLock::new(),
        }
    }

    /// Sets the hook wait from the runtime's request timeout.
    pub fn set_request_timeout(&self, timeout: Duration) {
        if !timeout.is_zero() {
            *self.hook_wait.lock() = timeout.mul_f64(HOOK_SHARE);
        }
    }

    /// Writes the current state to the file.
    pub async fn persist(&self) -> Result<(), StateError> {
        let _guard = self.write_lock.lock().await;
        let bytes = encode(&self.state.lock());
        self.file.store(bytes).await
    }

    /// Persists, logging a failure: used after kernel changes that happened anyway.
    pub async fn persist_or_log(&self, after: &str) {
        if let Err(e) = self.persist().await {
            tracing::error!(error = %e, "state not saved after {after}; a crash now would lose track of it");
        }
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// Points unattached plans at `pod` when the claim cache now says their claim is reserved
    /// for it alone: Prepare may have read the claim before the cache saw its reservation move
    /// to this pod (a claim reused by a new pod). No API request; whether anything changed.
    pub fn retarget(&self, pod: &PodRef) -> bool {
        let Some(read) = self.claims.get() else {
            return false;
        };
        let mut changed = false;
        let mut state = self.state.lock();
        for entry in state.claims.values_mut() {
            if entry.attached.is_some() || entry.plan.pod.uid == pod.uid {
                continue;
            }
            let claim = &entry.plan.claim;
            let Some(object) = read(&claim.namespace, &claim.name) else {
                continue;
            };
            let reserved: Vec<_> = object
                .status
                .as_ref()
                .and_then(|s| s.reserved_for.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.resource == "pods")
                .collect();
            if object.metadata.uid.as_deref() == Some(claim.uid.as_str())
                && reserved.len() == 1
                && reserved[0].uid == pod.uid
            {
                tracing::warn!(claim = %claim, from = %entry.plan.pod, to = %pod, "the claim's reservation moved after Prepare; its plan now follows the new pod");
                entry.plan.pod = PodRef {
                    namespace: claim.namespace.clone(),
                    name: reserved[0].name.clone(),
                    uid: pod.uid.clone(),
                };
                changed = true;
            }
        }
        changed
    }

    /// The plans of pod `uid` that are not attached yet.
    pub fn unattached_plans(&self, uid: &str) -> Vec<ClaimPlan> {
        let state = self.state.lock();
        state
            .claims
            .values()
            .filter(|e| e.plan.pod.uid == uid && e.attached.is_none())
            .map(|e| e.plan.clone())
            .collect()
    }

    /// Starts attaching pod `pod`'s planned interfaces into `netns`, or joins the attach
    /// already running for it.
    pub fn start_attach(self: &Arc<Self>, pod: PodRef, netns: PathBuf) -> watch::Receiver<AttachOutcome> {
        let mut attaches = self.attaches.lock();
        if let Some(running) = attaches.get(&pod.uid) {
            return running.clone();
        }
        let (tx, rx) = watch::channel(None);
        attaches.insert(pod.uid.clone(), rx.clone());
        drop(attaches);
        let core = self.clone();
        self.spawn(async move {
            let answer = {
                let core = core.clone();
                let uid = pod.uid.clone();
                move |result| {
                    core.attaches.lock().remove(&uid);
                    let _ = tx.send(Some(result));
                }
            };
            core.attach_pod(&pod, netns, answer).await;
        });
        rx
    }

    /// The attach running for pod `uid`, if any.
    pub fn running_attach(&self, uid: &str) -> Option<watch::Receiver<AttachOutcome>> {
        self.attaches.lock().get(uid).cloned()
    }

    /// Waits for an attach up to the hook's share of the runtime's timeout; `None` when it
    /// is still running then.
    pub async fn wait_attach(&self, mut attach: watch::Receiver<AttachOutcome>) -> Option<Result<(), String>> {
        let wait = *self.hook_wait.lock();
        match tokio::time::timeout(wait, attach.wait_for(Option::is_some)).await {
            Ok(Ok(outcome)) => outcome.clone(),
            Ok(Err(_)) => Some(Err(
                "the attach task ended without an answer (the agent is stopping)".into()
            )),
            Err(_) => None,
        }
    }

    /// Attaches, updates the state, then calls `answer` (the hooks waiting for it go on)
    /// before the state file's fsync, status and driver hook: a crash loses the record in the
    /// same window either way (between the move and the fsync), so the runtime need not wait.
    async fn attach_pod(&self, pod: &PodRef, netns: PathBuf, answer: impl FnOnce(Result<(), String>)) {
        let plans = self.unattached_plans(&pod.uid);
        if plans.is_empty() {
            return answer(Ok(()));
        }
        let what = crate::plan::describe(&plans);
        let owned = plans.clone();
        let path = netns.clone();
        let started = std::time::Instant::now();
        let attached = spawn_blocking(move || {
            let requests: Vec<AttachRequest<'_>> = owned
                .iter()
                .flat_map(|p| &p.devices)
                .map(|d| AttachRequest {
                    device: &d.host_interface,
                    config: &d.interface.config,
                    carry_host_addresses: d.interface.carry_host_addresses,
                })
                .collect();
            let netns = Netns::open(&path).map_err(|e| e.to_string())?;
            netdev::attach_all(&netns, &requests).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("the attach task failed: {e}"))
        .and_then(|r| r);
        match attached {
            Ok(records) => {
                let mut records = records.into_iter();
                {
                    let mut state = self.state.lock();
                    for plan in &plans {
                        let mine: Vec<RestoreRecord> = records.by_ref().take(plan.devices.len()).collect();
                        if let Some(entry) = state.claims.get_mut(&plan.claim.uid) {
                            entry.attached = Some(Attachment {
                                netns: netns.clone(),
                                records: mine,
                            });
                        }
                    }
                }
                answer(Ok(()));
                self.persist_or_log("an attach").await;
                let all: Vec<RestoreRecord> = {
                    let state = self.state.lock();
                    plans
                        .iter()
                        .filter_map(|p| state.claims.get(&p.claim.uid)?.attached.clone())
                        .flat_map(|a| a.records)
                        .collect()
                };
                for plan in &plans {
                    self.report_attached(plan);
                }
                self.driver.attached(pod, &all);
                tracing::info!(pod = %pod, netns = %netns.display(), claims = %what, elapsed = ?started.elapsed(), "interfaces attached");
            }
            Err(error) => {
                let message = format!("pod {pod}: cannot attach {what}: {error}");
                for plan in &plans {
                    self.report_not_ready(plan, "AttachFailed", &message);
                }
                self.metrics.attach_failed();
                tracing::error!(%message, "attach failed; nothing is left in the pod");
                answer(Err(message));
            }
        }
    }

    /// Writes `Ready=True` with the network data of an attached claim.
    pub fn report_attached(&self, plan: &ClaimPlan) {
        let state = self.state.lock();
        let Some(attachment) = state.claims.get(&plan.claim.uid).and_then(|e| e.attached.as_ref()) else {
            return;
        };
        let states: Vec<DeviceState<'_>> = attachment.records.iter().map(DeviceState::Attached).collect();
        let entries = claim_statuses(&self.driver_name, plan, &states);
        drop(state);
        self.status.set(&plan.claim, entries);
    }

    /// Writes `Ready=False` on every device of a claim.
    pub fn report_not_ready(&self, plan: &ClaimPlan, reason: &str, message: &str) {
        let states = vec![DeviceState::NotReady { reason, message }; plan.devices.len()];
        self.status
            .set(&plan.claim, claim_statuses(&self.driver_name, plan, &states));
    }

    /// Returns the interfaces of every claim attached to pod `uid`; best effort, never fails.
    pub async fn detach_pod(&self, uid: &str, why: &str) {
        let plans: Vec<ClaimPlan> = {
            let state = self.state.lock();
            state
                .claims
                .values()
                .filter(|e| e.plan.pod.uid == uid && e.attached.is_some())
                .map(|e| e.plan.clone())
                .collect()
        };
        for plan in plans {
            self.detach_claim(&plan, why).await;
        }
    }

    /// Returns one claim's interfaces to the host and forgets the attachment, unless one is
    /// stranded (then it stays recorded for the next try). Nothing to do when another caller
    /// got there first.
    pub async fn detach_claim(&self, plan: &ClaimPlan, why: &str) {
        let _one_at_a_time = self.detach_lock.lock().await;
        let attachment = {
            let state = self.state.lock();
            state.claims.get(&plan.claim.uid).and_then(|e| e.attached.clone())
        };
        let Some(attachment) = attachment else {
            return;
        };
        let records = attachment.records.clone();
        let results = spawn_blocking(move || records.iter().map(netdev::detach).collect::<Vec<_>>()).await;
        let mut stranded = Vec::new();
        match results {
            Ok(results) => {
                for (record, result) in attachment.records.iter().zip(results) {
                    match result {
                        Ok(done) => {
                            let outcome = match &done.outcome {
                                DetachOutcome::Returned => "returned".to_owned(),
                                DetachOutcome::FoundOnHost { name } => format!("found on the host as {name}"),
                                DetachOutcome::Vanished => "vanished with the pod's namespace".to_owned(),
                            };
                            if done.incomplete.is_empty() {
                                tracing::info!(pod = %plan.pod, claim = %plan.claim, interface = %record.host.name, outcome, why, "interface detached");
                            } else {
                                tracing::warn!(pod = %plan.pod, claim = %plan.claim, interface = %record.host.name, outcome, why, incomplete = ?done.incomplete, "interface detached, not fully restored");
                            }
                            self.driver.detached(&plan.pod, record);
                        }
                        Err(e) => {
                            self.metrics.detach_failed();
                            tracing::error!(pod = %plan.pod, claim = %plan.claim, error = %e, why, "interface stranded in the pod");
                            stranded.push(record.clone());
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(pod = %plan.pod, claim = %plan.claim, error = %e, "the detach task failed");
                stranded = attachment.records.clone();
            }
        }
        {
            let mut state = self.state.lock();
            if let Some(entry) = state.claims.get_mut(&plan.claim.uid) {
                entry.attached = (!stranded.is_empty()).then(|| Attachment {
                    netns: attachment.netns.clone(),
                    records: stranded,
                });
            }
        }
        self.persist_or_log("a detach").await;
        self.report_not_ready(plan, "Detached", &format!("returned to the host: {why}"));
    }

    /// Spawns [`Self::detach_pod`] on the agent's task set.
    pub fn spawn_detach(self: &Arc<Self>, uid: String, why: String) {
        let core = self.clone();
        self.spawn(async move { core.detach_pod(&uid, &why).await });
    }

    /// Writes the status of every attached claim again (after a restart, writes that were
    /// still queued are lost).
    pub fn report_all(&self) {
        let plans: Vec<ClaimPlan> = {
            let state = self.state.lock();
            state
                .claims
                .values()
                .filter(|e| e.attached.is_some())
                .map(|e| e.plan.clone())
                .collect()
        };
        for plan in &plans {
            self.report_attached(plan);
        }
    }
}
