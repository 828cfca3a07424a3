//! Operations: the kernel work of one pod's interfaces (an attach, a return), one at a time per
//! pod, owned by the node's task set, going on when the hook that started it has answered.
//!
//! An operation is registered before anything slow (reading claims, opening the namespace,
//! the write-ahead journal write), so a stop that comes meanwhile is never missed: it is queued on the
//! operation ([`Scope`]: the pod, one sandbox's namespace, or some claims), and the operation
//! returns what it covers before it ends. A pod refused at the runtime's resync because its
//! claim was still coming back from a pod that is gone waits here too, and is attached when an
//! operation ends.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::FutureExt;
use kubeletplugin::{ClaimRef, RequestDevices};
use netdev::{DetachOutcome, RestoreRecord};
use tokio::sync::watch;

use super::{Node, NodeError};
use crate::{
    driver::NetworkDriver,
    journal::JournalError,
    kernel::{AttachSpec, Kernel, KernelError, Location},
    lifecycle::{AttachFailure, Claim, Effect, Event, Found, Outcome, Phase, Refusal, Step, step},
    metadata::attached_requests,
    plan::PodRef,
};

/// How long Unprepare waits for a claim's interfaces to come home (the kubelet's own call
/// timeout is 45 s).
const UNPREPARE_WAIT: Duration = Duration::from_secs(40);

/// How long the sandbox hook waits for the device metadata update after an attach (a write
/// and an fsync per request): a slow disk must not take the hook's budget.
const METADATA_WAIT: Duration = Duration::from_secs(1);

/// How long the reads of claims may take on a hook's path (`get-only` claim cache), together.
const HOOK_GET: Duration = Duration::from_millis(500);

/// Why an operation on a pod's interfaces did not succeed. Cheap to clone: every hook waiting
/// for the operation gets it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The attach failed (what is left of it is returned).
    #[error("pod {pod}: cannot attach {what}: {source}")]
    Attach {
        /// The pod.
        pod: PodRef,
        /// `claim ns/c device d0`…
        what: String,
        /// The kernel's error.
        #[source]
        source: Arc<KernelError>,
    },
    /// Refused before any change (a claim held by another pod, no namespace, a failed read or
    /// journal write).
    #[error(transparent)]
    Refused(Arc<NodeError>),
    /// The journal refused the operation's intent: nothing was done.
    #[error("pod {pod}: the intent to return its interfaces could not be recorded: {source}")]
    Journal {
        /// The pod.
        pod: PodRef,
        /// Why.
        #[source]
        source: JournalError,
    },
    /// The operation ended without an answer (a panic outside the kernel call, an abort).
    #[error("pod {pod}: the operation on its interfaces ended without an answer (the agent is stopping, or it failed)")]
    Interrupted {
        /// The pod.
        pod: String,
    },
}

impl From<NodeError> for OpError {
    fn from(e: NodeError) -> Self {
        Self::Refused(Arc::new(e))
    }
}

/// Where an operation on a pod's interfaces stands.
#[derive(Debug, Clone)]
pub(crate) enum OpState {
    /// The kernel is at work.
    Running,
    /// The kernel answered (the hook may answer the runtime); the outcome is being journaled.
    Answered(Result<(), OpError>),
    /// Journaled and in memory; `Err` when the work failed.
    Settled(Result<(), OpError>),
}

impl OpState {
    /// The kernel's answer, once there is one.
    pub(crate) fn answer(&self) -> Option<Result<(), OpError>> {
        match self {
            Self::Running => None,
            Self::Answered(r) | Self::Settled(r) => Some(r.clone()),
        }
    }
}

/// What a stop returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every claim of the pod that is out.
    Pod,
    /// The claims out in this namespace: one sandbox of the pod (an old sandbox's removal
    /// never touches the new sandbox's interfaces).
    Netns(PathBuf),
    /// These claims.
    Claims(BTreeSet<String>),
}

impl Scope {
    fn covers(&self, uid: &str, claim: &Claim) -> bool {
        match self {
            Self::Pod => true,
            Self::Netns(path) => claim.phase.netns().is_some_and(|n| n.path == *path),
            Self::Claims(uids) => uids.contains(uid),
        }
    }
}

/// The operations running, by pod UID; the stops queued on them; the running pods waiting for
/// a claim to come home from a pod that is gone. One lock, so a stop is never missed between
/// an operation's last look and its end.
#[derive(Default)]
pub(crate) struct Ops {
    running: HashMap<String, watch::Receiver<OpState>>,
    stops: HashMap<String, Vec<(String, Scope)>>,
    waiting: HashMap<String, (PodRef, PathBuf)>,
}

impl Ops {
    /// The pods with an operation running.
    pub(crate) fn running_pods(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }
}

/// Answers the waiters of an operation and forgets it when it ends, also when it ends by a
/// panic or an abort (then with an error), so later hooks for the pod are served.
pub(crate) struct OpGuard<D: NetworkDriver, K: Kernel> {
    node: Arc<Node<D, K>>,
    pod: String,
    tx: watch::Sender<OpState>,
}

impl<D: NetworkDriver, K: Kernel> OpGuard<D, K> {
    fn answer(&self, result: Result<(), OpError>) {
        self.tx.send_replace(OpState::Answered(result));
    }
}

impl<D: NetworkDriver, K: Kernel> Drop for OpGuard<D, K> {
    fn drop(&mut self) {
        if matches!(*self.tx.borrow(), OpState::Settled(_)) {
            return;
        }
        // Ended without an answer (a panic, an abort): forget it so later hooks are served; a
        // claim it left attaching is converged by the next stop or Unprepare (see `stop`).
        self.node.ops.lock().running.remove(&self.pod);
        self.tx
            .send_replace(OpState::Settled(Err(OpError::Interrupted { pod: self.pod.clone() })));
    }
}

impl<D: NetworkDriver, K: Kernel> Node<D, K> {
    /// The operation running for pod `uid`.
    pub(crate) fn op(&self, uid: &str) -> Option<watch::Receiver<OpState>> {
        self.ops.lock().running.get(uid).cloned()
    }

    /// Waits for `op` until `ready` holds, at most `budget`; the last state seen.
    pub(crate) async fn wait(
        mut op: watch::Receiver<OpState>,
        budget: Duration,
        ready: impl Fn(&OpState) -> bool,
    ) -> OpState {
        let _ = tokio::time::timeout(budget, op.wait_for(|s| ready(s))).await;
        op.borrow().clone()
    }

    /// Registers an operation for `pod`; `None` when one is already running (the caller joins
    /// it).
    fn register(self: &Arc<Self>, pod: &str) -> Option<(OpGuard<D, K>, watch::Receiver<OpState>)> {
        let (tx, rx) = watch::channel(OpState::Running);
        let mut ops = self.ops.lock();
        if ops.running.contains_key(pod) {
            return None;
        }
        ops.running.insert(pod.to_owned(), rx.clone());
        drop(ops);
        Some((
            OpGuard {
                node: self.clone(),
                pod: pod.to_owned(),
                tx,
            },
            rx,
        ))
    }

    /// Whether a hook of `pod` may have anything to do: a claim planned for it, or a standalone
    /// claim of its namespace planned for another pod. No I/O; most pods have neither.
    fn may_concern(&self, pod: &PodRef) -> bool {
        self.claims.lock().values().any(|c| {
            c.phase != Phase::Released
                && (c.plan.pod.uid == pod.uid || (c.standalone && c.plan.claim.namespace == pod.namespace))
        })
    }

    /// The standalone claims of `pod`'s namespace that reserve `pod` but are planned for another
    /// pod: the pod references them (a shared claim, or one whose reservation moved after
    /// Prepare). From the watch cache; in `get-only` mode (or on a cache miss) the claims are
    /// read, together, within [`HOOK_GET`]. A claim that cannot be read fails the hook, naming it.
    async fn referenced_elsewhere(&self, pod: &PodRef) -> Result<Vec<String>, NodeError> {
        let mut found = Vec::new();
        let mut to_get = Vec::new();
        for (uid, claim) in self.claims.lock().iter() {
            // A claim made from a pod's template belongs to that pod alone (the controller
            // owns it for the pod); only standalone claims are referenced by several pods.
            if !claim.standalone
                || claim.plan.claim.namespace != pod.namespace
                || claim.plan.pod.uid == pod.uid
                || claim.phase == Phase::Released
            {
                continue;
            }
            match self.api.reserves(&claim.plan.claim, &pod.uid) {
                Some(true) => found.push(uid.clone()),
                Some(false) => {}
                None => to_get.push((uid.clone(), claim.plan.claim.clone())),
            }
        }
        if to_get.is_empty() {
            return Ok(found);
        }
        let reads = futures::future::join_all(to_get.iter().map(|(_, claim)| self.api.get(claim)));
        let answers = tokio::time::timeout(HOOK_GET, reads)
            .await
            .map_err(|_| NodeError::Unknowable {
                pod: pod.clone(),
                claim: to_get[0].1.clone(),
                error: format!("no answer from the API server within {HOOK_GET:?}"),
            })?;
        for ((uid, claim), answer) in to_get.into_iter().zip(answers) {
            let object = answer.map_err(|e| NodeError::Unknowable {
                pod: pod.clone(),
                claim: claim.clone(),
                error: e.to_string(),
            })?;
            if let Some(object) = object
                && object.uid.as_deref() == Some(claim.uid.as_str())
                && object.consumers.iter().any(|c| c.uid == pod.uid)
            {
                found.push(uid);
            }
        }
        Ok(found)
    }

    /// Starts attaching into `netns` every claim of `pod` that is at home, after pointing at it
    /// the claims it references elsewhere and returning those still out in a previous sandbox
    /// of the pod; or joins the operation running for it. `Ok(None)`: nothing to attach.
    pub(crate) async fn attach_pod(
        self: &Arc<Self>,
        pod: &PodRef,
        netns: Option<&Path>,
        hook: &'static str,
    ) -> Result<Option<watch::Receiver<OpState>>, OpError> {
        if let Some(op) = self.op(&pod.uid) {
            return Ok(Some(op));
        }
        if !self.may_concern(pod) {
            return Ok(None);
        }
        let Some((guard, rx)) = self.register(&pod.uid) else {
            return Ok(self.op(&pod.uid));
        };
        match self.attach_registered(&guard, pod, netns, hook).await {
            Ok(Some(work)) => {
                let node = self.clone();
                let pod = pod.clone();
                self.spawn(async move {
                    node.run_attach(guard, pod, work).await;
                });
                Ok(Some(rx))
            }
            Ok(None) => {
                self.finish(guard, pod, Ok(())).await;
                Ok(None)
            }
            Err(e) => {
                let error = OpError::from(e);
                self.finish(guard, pod, Err(error.clone())).await;
                Err(error)
            }
        }
    }

    /// The part of an attach before the kernel moves anything: which claims, the namespace,
    /// the host's state, and the intent made durable. `Ok(None)`: nothing to attach.
    async fn attach_registered(
        self: &Arc<Self>,
        _registered: &OpGuard<D, K>,
        pod: &PodRef,
        netns: Option<&Path>,
        hook: &'static str,
    ) -> Result<Option<AttachWork<K>>, NodeError> {
        let foreign = self.referenced_elsewhere(pod).await?;
        let own = self.claims_of_pod(&pod.uid, Phase::is_home);
        // Out in a previous sandbox of the pod (its stop was missed): returned first. Only when
        // the runtime is creating a sandbox, which is then the pod's current one.
        let stale: Vec<String> = match netns {
            Some(path) if hook == "RunPodSandbox" => self
                .claims
                .lock()
                .iter()
                .filter(|(_, c)| {
                    c.plan.pod.uid == pod.uid && c.phase.is_out() && c.phase.netns().is_some_and(|n| n.path != path)
                })
                .map(|(uid, _)| uid.clone())
                .collect(),
            _ => Vec::new(),
        };
        let uids: Vec<String> = own.iter().chain(&foreign).chain(&stale).cloned().collect();
        if uids.is_empty() {
            return Ok(None);
        }
        let what = self.describe(&uids);
        let Some(path) = netns else {
            return Err(self.no_netns(pod, &uids, &what, hook, None).await);
        };
        let netns_ref = match self.kernel.identify(path) {
            Ok(netns_ref) => netns_ref,
            Err(e) => return Err(self.no_netns(pod, &uids, &what, hook, Some(e)).await),
        };
        if !stale.is_empty() {
            tracing::warn!(pod = %pod, claims = %self.describe(&stale), "interfaces still in a previous sandbox of the pod; returning them first");
            self.return_claims(pod, &stale, "the pod has a new sandbox").await;
        }

        let mut txn = self.txn(uids.clone()).await;
        for uid in foreign.iter().chain(&stale) {
            let Some(claim) = txn.claim(uid) else { continue };
            match txn.step(uid, Event::Retarget(pod.clone())) {
                Ok(_) if claim.plan.pod.uid != pod.uid => {
                    tracing::warn!(pod = %pod, claim = %claim.plan.claim, from = %claim.plan.pod, "a claim planned for another pod reserves this one; its plan now follows it");
                }
                Ok(_) => {}
                Err(refusal) => {
                    return Err(NodeError::Refused {
                        pod: pod.clone(),
                        claim: claim.plan.claim,
                        refusal,
                    });
                }
            }
        }
        let to_attach: Vec<String> = uids
            .iter()
            .filter(|uid| {
                txn.claim(uid)
                    .is_some_and(|c| c.phase.is_home() && c.plan.pod.uid == pod.uid)
            })
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if to_attach.is_empty() {
            txn.commit(Vec::new()).await.map_err(|source| NodeError::Journal {
                pod: pod.clone(),
                what: what.clone(),
                source,
            })?;
            return Ok(None);
        }
        let mut specs = Vec::new();
        let mut sizes = Vec::new();
        for uid in &to_attach {
            let claim = txn.claim(uid).expect("locked claims stay");
            sizes.push(claim.plan.devices.len());
            specs.extend(claim.plan.devices.iter().map(|d| AttachSpec {
                device: d.host_interface.clone(),
                config: d.interface.config.clone(),
                carry_host_addresses: d.interface.carry_host_addresses,
                placement: d.interface.placement.clone(),
            }));
        }
        let what = self.describe(&to_attach);
        let specs = Arc::new(specs);
        // The host's state is read while the namespace is opened (a thread enters it).
        let (opened, recorded) = tokio::join!(
            self.kernel.open(path),
            self.kernel.record(netns_ref.clone(), specs.clone())
        );
        let ns = match opened {
            Ok((ns, opened_ref)) if opened_ref.inode == netns_ref.inode => ns,
            Ok(_) => {
                drop(txn);
                let e = KernelError::Netns(netdev::NetnsError::NotANetworkNamespace {
                    path: path.into(),
                    reason: "it was replaced by another namespace while being opened".into(),
                });
                return Err(self.no_netns(pod, &uids, &what, hook, Some(e)).await);
            }
            Err(e) => {
                drop(txn);
                return Err(self.no_netns(pod, &uids, &what, hook, Some(e)).await);
            }
        };
        let records = match recorded {
            Ok(records) => records,
            Err(source) => {
                drop(txn);
                let error = NodeError::AttachFailed {
                    pod: pod.clone(),
                    what,
                    source,
                };
                self.metrics.attach_failed();
                self.note(&to_attach, "AttachFailed", &error.to_string()).await;
                return Err(error);
            }
        };
        let mut chunks = records.clone().into_iter();
        for (uid, size) in to_attach.iter().zip(&sizes) {
            let mine: Vec<_> = chunks.by_ref().take(*size).collect();
            let claim = txn.claim(uid).map(|c| c.plan.claim);
            txn.step(
                uid,
                Event::Attach {
                    pod: pod.uid.clone(),
                    netns: netns_ref.clone(),
                    records: mine,
                },
            )
            .map_err(|refusal| NodeError::Refused {
                pod: pod.clone(),
                claim: claim.unwrap_or_else(|| ClaimRef {
                    namespace: pod.namespace.clone(),
                    name: String::new(),
                    uid: uid.clone(),
                }),
                refusal,
            })?;
        }
        // Write-ahead: the intent (namespace, inode, records) is durable before the move.
        txn.commit(Vec::new()).await.map_err(|source| NodeError::Journal {
            pod: pod.clone(),
            what: what.clone(),
            source,
        })?;
        Ok(Some(AttachWork {
            ns,
            specs,
            records,
            uids: to_attach,
            what,
        }))
    }

    async fn no_netns(
        &self,
        pod: &PodRef,
        uids: &[String],
        what: &str,
        hook: &'static str,
        source: Option<KernelError>,
    ) -> NodeError {
        let error = NodeError::NoNetworkNamespace {
            pod: pod.clone(),
            what: what.to_owned(),
            hook,
            source: source.unwrap_or_else(|| {
                KernelError::Netns(netdev::NetnsError::Missing {
                    path: "(the runtime named none)".into(),
                })
            }),
        };
        let own: Vec<String> = uids
            .iter()
            .filter(|u| self.claim(u).is_some_and(|c| c.plan.pod.uid == pod.uid))
            .cloned()
            .collect();
        self.note(&own, "NoNetworkNamespace", &error.to_string()).await;
        error
    }

    /// The kernel's attach, its outcome journaled, then whatever a stop queued meanwhile.
    async fn run_attach(self: Arc<Self>, guard: OpGuard<D, K>, pod: PodRef, work: AttachWork<K>) {
        let started = std::time::Instant::now();
        let result = std::panic::AssertUnwindSafe(self.kernel.attach(work.ns, work.specs, work.records))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(KernelError::Lost {
                    operation: "attach",
                    message: crate::panic_text(&*panic),
                })
            });
        let error = result.err().map(|e| OpError::Attach {
            pod: pod.clone(),
            what: work.what.clone(),
            source: Arc::new(e),
        });
        let failure = error.as_ref().map(|e| AttachFailure {
            message: e.to_string(),
            rolled_back: !matches!(e, OpError::Attach { source, .. } if source.may_have_changed()),
        });
        if error.is_none() {
            // Before the hook answers: the runtime reads the files when it creates the
            // containers, after the sandbox hook.
            self.update_metadata(&pod, &work.uids).await;
        }
        guard.answer(error.clone().map_or(Ok(()), Err));
        match &failure {
            None => {
                tracing::info!(pod = %pod, claims = %work.what, elapsed = ?started.elapsed(), "interfaces attached")
            }
            Some(f) => {
                self.metrics.attach_failed();
                tracing::error!(pod = %pod, error = %f.message, rolled_back = f.rolled_back, "attach failed");
            }
        }
        let event = Event::AttachDone(failure.map_or(Ok(()), Err));
        let events: Vec<(String, Event)> = work.uids.iter().map(|u| (u.clone(), event.clone())).collect();
        let steps = self.commit_events(&events).await;
        let mut detach = Vec::new();
        for (uid, step) in &steps {
            if step.effects.contains(&Effect::DriverAttached)
                && let Phase::Attached { records, .. } = &step.claim.phase
            {
                self.driver_hook("attached", || self.driver.attached(&pod, records));
            }
            if step.effects.contains(&Effect::Detach) {
                detach.push(uid.clone());
            }
        }
        if !detach.is_empty() {
            self.run_detach(&pod, &detach).await;
        }
        self.finish(guard, &pod, error.map_or(Ok(()), Err)).await;
    }

    /// Rewrites the device metadata of attached claims `uids` of `pod` with what the pod now
    /// has. A failure is logged: the pod keeps its interfaces, and its containers read the
    /// metadata written at Prepare (names, no network data).
    async fn update_metadata(&self, pod: &PodRef, uids: &[String]) {
        let Some(writer) = self.metadata.clone() else { return };
        let updates: Vec<(ClaimRef, Vec<RequestDevices>)> = {
            let claims = self.claims.lock();
            uids.iter()
                .filter_map(|uid| claims.get(uid))
                .filter_map(|c| match &c.phase {
                    Phase::Attaching { records, .. } => {
                        Some((c.plan.claim.clone(), attached_requests(&c.plan, records)))
                    }
                    _ => None,
                })
                .collect()
        };
        if updates.is_empty() {
            return;
        }
        let written = tokio::time::timeout(
            METADATA_WAIT,
            tokio::task::spawn_blocking(move || {
                let mut failures = Vec::new();
                for (claim, requests) in updates {
                    for r in requests {
                        if let Err(e) = writer.update_request(&claim, &r.request, &r.devices) {
                            failures.push(e);
                        }
                    }
                }
                failures
            }),
        )
        .await;
        match written {
            Err(_) => {
                tracing::warn!(pod = %pod, "the device metadata update after the attach takes longer than {METADATA_WAIT:?}; the hook answers without waiting for it")
            }
            Ok(Ok(failures)) => {
                for error in failures {
                    tracing::warn!(pod = %pod, %error, "the device metadata keeps what Prepare wrote: the update after the attach failed");
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(pod = %pod, error = %e, "the device metadata update after the attach was lost")
            }
        }
    }

    /// Ends an operation: first returns whatever the stops queued on it cover (so a stop during
    /// an attach never leaves an interface in a stopped pod), then answers its waiters, then
    /// tries the pods waiting for a claim to come home.
    async fn finish(self: &Arc<Self>, guard: OpGuard<D, K>, pod: &PodRef, result: Result<(), OpError>) {
        loop {
            let stops = {
                let mut ops = self.ops.lock();
                match ops.stops.remove(&pod.uid) {
                    Some(stops) if !stops.is_empty() => stops,
                    _ => {
                        ops.running.remove(&pod.uid);
                        drop(ops);
                        guard.tx.send_replace(OpState::Settled(result));
                        break;
                    }
                }
            };
            let covered: BTreeMap<String, String> = self
                .claims
                .lock()
                .iter()
                .filter(|(_, c)| c.plan.pod.uid == pod.uid && c.phase.is_out())
                .filter_map(|(uid, c)| {
                    let (why, _) = stops.iter().find(|(_, scope)| scope.covers(uid, c))?;
                    Some((uid.clone(), why.clone()))
                })
                .collect();
            for (why, uids) in group_by_reason(covered) {
                self.return_claims(pod, &uids, &why).await;
            }
        }
        self.retry_waiting();
    }

    /// Returns claims of `pod` that are out: the intent journaled, the kernel work, the outcome
    /// journaled.
    async fn return_claims(&self, pod: &PodRef, uids: &[String], why: &str) {
        let events: Vec<(String, Event)> = uids
            .iter()
            .map(|u| (u.clone(), Event::Stop { why: why.to_owned() }))
            .collect();
        // Write-ahead: the intent to return is durable before the kernel acts.
        let steps = self.commit_events(&events).await;
        let detaching: Vec<String> = steps
            .iter()
            .filter(|(_, s)| matches!(s.claim.phase, Phase::Detaching { .. }))
            .map(|(u, _)| u.clone())
            .collect();
        self.run_detach(pod, &detaching).await;
    }

    /// Applies each claim's event and commits them together, retried while the journal
    /// refuses: it follows kernel work that happened (or must happen) either way, and until the
    /// write succeeds the journal still holds what the next start converges.
    async fn commit_events(&self, events: &[(String, Event)]) -> BTreeMap<String, Step> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut txn = self.txn(events.iter().map(|(u, _)| u.clone())).await;
            for (uid, event) in events {
                if let Err(refusal) = txn.step(uid, event.clone()) {
                    tracing::debug!(claim_uid = %uid, %refusal, "the event does not apply to the claim");
                }
            }
            match txn.commit(Vec::new()).await {
                Ok(steps) => return steps,
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?backoff, "a step could not be journaled; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Runs a driver hook; a panic in it is logged, never takes down the agent or the pod.
    fn driver_hook(&self, name: &str, hook: impl FnOnce()) {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook)) {
            tracing::error!(hook = name, panic = %crate::panic_text(&*panic), "the driver's hook panicked; going on");
        }
    }

    /// Returns the interfaces of `pod` that `scope` covers. While an operation runs for the pod
    /// (an attach), the stop is queued on it: it returns them when it has ended. The operation
    /// to wait for, if any.
    pub(crate) async fn stop(
        self: &Arc<Self>,
        pod: &PodRef,
        why: &str,
        scope: Scope,
    ) -> Option<watch::Receiver<OpState>> {
        loop {
            {
                let mut ops = self.ops.lock();
                if let Some(op) = ops.running.get(&pod.uid).cloned() {
                    ops.stops
                        .entry(pod.uid.clone())
                        .or_default()
                        .push((why.to_owned(), scope));
                    return Some(op);
                }
            }
            // An attach that ended without an outcome (its operation panicked): converged first.
            let stuck = self.claims_of_pod(&pod.uid, |p| matches!(p, Phase::Attaching { .. }));
            if !stuck.is_empty() {
                self.converge(&stuck).await;
            }
            let covered = self
                .claims
                .lock()
                .iter()
                .any(|(uid, c)| c.plan.pod.uid == pod.uid && c.phase.is_out() && scope.covers(uid, c));
            if !covered {
                return None;
            }
            let Some((guard, rx)) = self.register(&pod.uid) else {
                continue;
            };
            self.ops
                .lock()
                .stops
                .entry(pod.uid.clone())
                .or_default()
                .push((why.to_owned(), scope));
            let node = self.clone();
            let pod = pod.clone();
            self.spawn(async move { node.finish(guard, &pod, Ok(())).await });
            return Some(rx);
        }
    }

    /// Converges claims to the kernel: where each journaled interface is (in its pod's namespace
    /// by inode, on the host, gone, or not known), and the step that follows from it. At
    /// start-up for every claim that may be out; while running for an attach whose operation
    /// ended without an outcome. What must come back is left `Detaching` for a stop to return.
    pub(crate) async fn converge(&self, uids: &[String]) {
        let mut events = Vec::new();
        for uid in uids {
            let Some(claim) = self.claim(uid) else { continue };
            let records = match &claim.phase {
                Phase::Attaching { records, .. }
                | Phase::Attached { records, .. }
                | Phase::Detaching { records, .. }
                | Phase::Stranded { records, .. } => records.clone(),
                _ => continue,
            };
            let mut places = Vec::new();
            for record in records {
                let name = record.host.name.clone();
                let located = std::panic::AssertUnwindSafe(self.kernel.locate(record))
                    .catch_unwind()
                    .await;
                places.push(match located {
                    Ok(Ok(Location::InPod { .. })) => Found::InPod,
                    Ok(Ok(Location::OnHost { .. })) => Found::OnHost,
                    Ok(Ok(Location::Gone)) => Found::Gone,
                    Ok(Err(e)) => {
                        tracing::warn!(claim = %claim.plan.claim, interface = %name, error = %e, "cannot tell where the interface is");
                        Found::Unknown
                    }
                    Err(_) => Found::Unknown,
                });
            }
            tracing::info!(claim = %claim.plan.claim, phase = claim.phase.name(), found = ?places, "journaled interfaces located");
            events.push((uid.clone(), Event::Found(places)));
        }
        self.commit_events(&events).await;
    }

    /// Brings back every interface of the `uids` (claims of `pod` that are detaching) not yet
    /// home, then journals where each ended.
    async fn run_detach(&self, pod: &PodRef, uids: &[String]) {
        let mut results: Vec<(String, Vec<(RestoreRecord, Outcome)>)> = Vec::new();
        for uid in uids {
            let Some(Claim {
                phase: Phase::Detaching { records, done, why, .. },
                plan,
                ..
            }) = self.claim(uid)
            else {
                continue;
            };
            let mut outcomes = Vec::new();
            for (record, done) in records.iter().zip(&done) {
                if done.is_some() {
                    continue;
                }
                let result = std::panic::AssertUnwindSafe(self.kernel.detach(record.clone()))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        Err(KernelError::Lost {
                            operation: "detach",
                            message: crate::panic_text(&*panic),
                        })
                    });
                let outcome = match result {
                    Ok(detached) => {
                        let outcome = match detached.outcome {
                            // A deleted subinterface is as done as a returned interface.
                            DetachOutcome::Returned | DetachOutcome::Deleted => Outcome::Returned,
                            DetachOutcome::FoundOnHost { name } => Outcome::FoundOnHost { name },
                            DetachOutcome::Vanished => Outcome::Vanished,
                        };
                        if detached.incomplete.is_empty() {
                            tracing::info!(pod = %pod, claim = %plan.claim, interface = %record.host.name, outcome = ?outcome, why, "interface detached");
                        } else {
                            tracing::warn!(pod = %pod, claim = %plan.claim, interface = %record.host.name, outcome = ?outcome, why, incomplete = ?detached.incomplete, "interface detached, not fully restored");
                        }
                        outcome
                    }
                    Err(e) => {
                        self.metrics.detach_failed();
                        tracing::error!(pod = %pod, claim = %plan.claim, interface = %record.host.name, error = %e, why, "interface stranded");
                        Outcome::Stranded { error: e.to_string() }
                    }
                };
                outcomes.push((record.clone(), outcome));
            }
            results.push((uid.clone(), outcomes));
        }
        let events: Vec<(String, Event)> = results
            .iter()
            .map(|(uid, outcomes)| {
                (
                    uid.clone(),
                    Event::DetachDone(outcomes.iter().map(|(_, o)| o.clone()).collect()),
                )
            })
            .collect();
        let steps = self.commit_events(&events).await;
        for (uid, outcomes) in &results {
            if !steps
                .get(uid)
                .is_some_and(|s| s.effects.contains(&Effect::DriverDetached))
            {
                continue;
            }
            for (record, _) in outcomes.iter().filter(|(_, o)| o.is_settled()) {
                self.driver_hook("detached", || self.driver.detached(pod, record));
            }
        }
    }

    /// A running pod refused at the runtime's resync because its claim is still on its way
    /// back from a pod that is gone: attached when an operation ends.
    pub(crate) fn wait_for_claims(&self, pod: PodRef, netns: PathBuf) {
        self.ops.lock().waiting.insert(pod.uid.clone(), (pod, netns));
    }

    fn retry_waiting(self: &Arc<Self>) {
        let waiting: Vec<(PodRef, PathBuf)> = self.ops.lock().waiting.drain().map(|(_, v)| v).collect();
        for (pod, netns) in waiting {
            let node = self.clone();
            self.spawn(async move {
                match node.attach_pod(&pod, Some(&netns), "Synchronize").await {
                    Ok(_) => tracing::info!(pod = %pod, "claim home: attaching the running pod's interfaces late"),
                    Err(OpError::Refused(e)) if may_come_home(&e) => node.wait_for_claims(pod, netns),
                    Err(e) => tracing::error!(pod = %pod, error = %e, "cannot attach a running pod's interfaces"),
                }
            });
        }
    }

    /// Unprepare's part: brings the claim's interfaces home (waiting for an attach or return
    /// under way), so that the kubelet plugin's commit can release it.
    pub(crate) async fn bring_home(self: &Arc<Self>, claim: &ClaimRef) -> Result<(), NodeError> {
        if let Some(staged) = self.unstage(&claim.uid) {
            // A prepare whose commit failed: it was never in the journal.
            for device in &staged.plan.devices {
                self.holds.release(&device.device);
            }
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + UNPREPARE_WAIT;
        let why = "the claim was unprepared";
        let scope = Scope::Claims(BTreeSet::from([claim.uid.clone()]));
        loop {
            let Some(current) = self.claim(&claim.uid) else {
                return Ok(());
            };
            if current.phase.is_home() || current.phase == Phase::Released {
                return Ok(());
            }
            if let Phase::Stranded { .. } = current.phase
                && tokio::time::Instant::now() >= deadline
            {
                return Err(NodeError::Stranded {
                    claim: claim.clone(),
                    refusal: step(&current, Event::Release).err().unwrap_or(Refusal::Released),
                });
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(NodeError::NotHome {
                    claim: claim.clone(),
                    phase: current.phase.name(),
                    waited: UNPREPARE_WAIT,
                });
            }
            let pod = current.plan.pod.clone();
            if let Some(op) = self.stop(&pod, why, scope.clone()).await {
                Self::wait(op, left, |s| matches!(s, OpState::Settled(_))).await;
            }
            match self.claim(&claim.uid) {
                Some(after) if matches!(after.phase, Phase::Stranded { .. }) => {
                    return Err(NodeError::Stranded {
                        claim: claim.clone(),
                        refusal: step(&after, Event::Release).err().unwrap_or(Refusal::Released),
                    });
                }
                // No progress (a journal that refuses, an operation that ended without one):
                // not a busy loop.
                Some(after) if after.phase == current.phase => tokio::time::sleep(Duration::from_millis(500)).await,
                _ => {}
            }
        }
    }
}

/// What an attach needs once its intent is durable.
struct AttachWork<K: Kernel> {
    ns: Arc<K::Netns>,
    specs: Arc<Vec<AttachSpec>>,
    records: Vec<RestoreRecord>,
    uids: Vec<String>,
    what: String,
}

fn group_by_reason(covered: BTreeMap<String, String>) -> Vec<(String, Vec<String>)> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (uid, why) in covered {
        groups.entry(why).or_default().push(uid);
    }
    groups.into_iter().collect()
}

/// Whether a refusal is for a claim held by, or on its way back from, another pod: it may come
/// home, and a pod waiting for it is tried again when an operation ends.
pub(crate) fn may_come_home(e: &NodeError) -> bool {
    matches!(
        e,
        NodeError::Refused {
            refusal: Refusal::Returning { .. } | Refusal::InUse { .. },
            ..
        }
    )
}
