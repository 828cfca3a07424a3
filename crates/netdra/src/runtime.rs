//! The runtime's side (NRI hooks). Each hook reads as: look up the pod's claims, start (or
//! join) the operation the lifecycle calls for, wait for it within the hook's share of the
//! runtime's timeout, answer.
//!
//! - RunPodSandbox: attach; an attach still running when the hook must answer goes on, and the
//!   pod's first CreateContainer (a call with its own budget) waits for the rest.
//! - CreateContainer: catches a missed RunPodSandbox; fails the container, naming claim and
//!   device, if the interfaces are not in the pod by its deadline. Never starts one without.
//! - StopPodSandbox and RemovePodSandbox: return the interfaces; never fail (a stopping pod is
//!   not held up); what the hook could not wait for goes on behind it, journaled.
//! - Synchronize: pods gone while the agent was away get their interfaces back; pods that
//!   started meanwhile get theirs late.

use std::{collections::BTreeSet, path::PathBuf, sync::Arc};

use tokio::time::Instant;

use nri::{
    EventSet, HandlerError, Plugin, RuntimeInfo,
    proto::api::{Container, ContainerUpdate, CreateContainerResponse, Event, PodSandbox},
};

use crate::{
    driver::NetworkDriver,
    kernel::Kernel,
    lifecycle::Phase,
    node::{Node, OpError, OpState, Scope, may_come_home},
    plan::PodRef,
};

/// Why a hook failed the pod or its container.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The node refused, or the attach failed.
    #[error(transparent)]
    Attach(#[from] OpError),
    /// The interfaces were not in the pod by the container's deadline.
    #[error("pod {pod}: container {container}: {what} not attached in time; the container would start without them")]
    NotInTime {
        /// The pod.
        pod: PodRef,
        /// The container.
        container: String,
        /// What is missing.
        what: String,
    },
}

/// The [`nri::Plugin`] the runtime calls.
pub(crate) struct RuntimeSide<D, K: Kernel>(pub Arc<Node<D, K>>);

fn pod_ref(pod: &PodSandbox) -> PodRef {
    PodRef {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
    }
}

fn netns(pod: &PodSandbox) -> Option<PathBuf> {
    nri::pod_netns_path(pod).map(PathBuf::from)
}

impl<D: NetworkDriver, K: Kernel> RuntimeSide<D, K> {
    /// Starts or joins the pod's attach and waits for the kernel's answer within the hook's
    /// share; `Ok(false)` when it is still running then. With `settled`, waits until the
    /// outcome is journaled too (the container's check reads the claims' phases).
    async fn attach_and_wait(&self, pod: &PodSandbox, hook: &'static str, settled: bool) -> Result<bool, HookError> {
        let node = &self.0;
        // The runtime's timeout runs from its request: so does the hook's share of it (under a
        // burst, journaling the intent can queue before the wait begins).
        let deadline = Instant::now() + node.hook_wait();
        let pod_ref = pod_ref(pod);
        let Some(op) = node.attach_pod(&pod_ref, netns(pod).as_deref(), hook).await? else {
            return Ok(true);
        };
        let ready = |s: &OpState| {
            if settled {
                matches!(s, OpState::Settled(_))
            } else {
                s.answer().is_some()
            }
        };
        let state = Node::<D, K>::wait(op, deadline.saturating_duration_since(Instant::now()), ready).await;
        if !ready(&state) {
            tracing::warn!(pod = %pod_ref, hook, "attach still running at the hook's deadline; the pod's first container waits for it");
            return Ok(false);
        }
        match state.answer() {
            Some(Ok(())) | None => Ok(true),
            Some(Err(error)) => Err(error.into()),
        }
    }

    async fn run_pod(&self, pod: &PodSandbox) -> Result<(), HookError> {
        self.attach_and_wait(pod, "RunPodSandbox", false).await.map(|_| ())
    }

    async fn create(&self, pod: &PodSandbox, container: &Container) -> Result<CreateContainerResponse, HookError> {
        let node = &self.0;
        let pod_ref = pod_ref(pod);
        let done = self.attach_and_wait(pod, "CreateContainer", true).await?;
        // Every claim of the pod must be in this sandbox's namespace, or the container would
        // start without it.
        let sandbox = netns(pod);
        let not_in = node.claims_of_pod(&pod.uid, |p| match p {
            Phase::Released => false,
            Phase::Attached { netns, .. } => sandbox.as_ref().is_some_and(|s| netns.path != *s),
            _ => true,
        });
        if !done || !not_in.is_empty() {
            let error = HookError::NotInTime {
                pod: pod_ref,
                container: container.name.clone(),
                what: node.describe(&not_in),
            };
            node.note(&not_in, "AttachTimedOut", &error.to_string()).await;
            return Err(error);
        }
        Ok(CreateContainerResponse::default())
    }

    async fn stop_pod(&self, pod: &PodSandbox, why: &str) {
        let node = &self.0;
        let deadline = Instant::now() + node.hook_wait();
        // Only this sandbox's interfaces: an old sandbox's removal never touches a new one's.
        let scope = netns(pod).map_or(Scope::Pod, Scope::Netns);
        if let Some(op) = node.stop(&pod_ref(pod), why, scope).await {
            let left = deadline.saturating_duration_since(Instant::now());
            let state = Node::<D, K>::wait(op, left, |s| matches!(s, OpState::Settled(_))).await;
            if !matches!(state, OpState::Settled(_)) {
                tracing::warn!(pod = %pod_ref(pod), "interfaces still being returned at the hook's deadline; that goes on behind it");
            }
        }
    }

    async fn synchronize_pods(&self, pods: Vec<PodSandbox>) -> Result<Vec<ContainerUpdate>, HandlerError> {
        let node = &self.0;
        let running: BTreeSet<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
        // Pods gone while the agent was away: their interfaces come back, before the pods that
        // run are attached (a claim may go from one to the other).
        let gone: BTreeSet<PodRef> = node
            .claims()
            .into_values()
            .filter(|c| c.phase.is_out())
            .map(|c| c.plan.pod)
            .filter(|p| !running.contains(p.uid.as_str()))
            .collect();
        let mut returns = Vec::new();
        for pod in gone {
            tracing::info!(pod = %pod, "pod is gone from the runtime; returning its interfaces");
            if let Some(op) = node
                .stop(&pod, "the pod was gone when the runtime resynchronised", Scope::Pod)
                .await
            {
                returns.push(Node::<D, K>::wait(op, node.hook_wait(), |s| {
                    matches!(s, OpState::Settled(_))
                }));
            }
        }
        futures::future::join_all(returns).await;
        // Pods that started while the agent was away: attach late (their containers wait).
        for pod in &pods {
            let pod_ref = pod_ref(pod);
            let path = netns(pod);
            match node.attach_pod(&pod_ref, path.as_deref(), "Synchronize").await {
                Ok(Some(_)) => {
                    tracing::warn!(pod = %pod_ref, "pod is running without its interfaces (its RunPodSandbox hook was missed); attaching now");
                }
                Ok(None) => {}
                Err(OpError::Refused(e)) if may_come_home(&e) && path.is_some() => {
                    tracing::warn!(pod = %pod_ref, error = %e, "a claim of the running pod is not home yet; it is attached when it is");
                    node.wait_for_claims(pod_ref, path.unwrap_or_default());
                }
                Err(e) => {
                    tracing::error!(pod = %pod_ref, error = %e, "cannot attach a running pod's interfaces at resync")
                }
            }
        }
        Ok(Vec::new())
    }
}

/// Every hook is counted and timed, by name and result.
async fn timed<D: NetworkDriver, K: Kernel, T, E: Into<HandlerError>>(
    side: &RuntimeSide<D, K>,
    hook: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, HandlerError> {
    let start = std::time::Instant::now();
    let result = call.await.map_err(Into::into);
    side.0.metrics.hook(hook, result.is_ok(), start.elapsed());
    result
}

impl<D: NetworkDriver, K: Kernel> Plugin for RuntimeSide<D, K> {
    fn events(&self) -> EventSet {
        EventSet::pod_lifecycle().with(Event::CreateContainer)
    }

    async fn configure(&self, runtime: &RuntimeInfo) -> Result<(), HandlerError> {
        self.0.set_request_timeout(runtime.request_timeout);
        Ok(())
    }

    async fn synchronize(
        &self,
        pods: Vec<PodSandbox>,
        _containers: Vec<Container>,
    ) -> Result<Vec<ContainerUpdate>, HandlerError> {
        timed(self, "Synchronize", self.synchronize_pods(pods)).await
    }

    async fn run_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        timed(self, "RunPodSandbox", self.run_pod(pod)).await
    }

    async fn create_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> Result<CreateContainerResponse, HandlerError> {
        timed(self, "CreateContainer", self.create(pod, container)).await
    }

    async fn stop_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        let why = format!("pod {} stopped", pod_ref(pod));
        timed(self, "StopPodSandbox", async {
            self.stop_pod(pod, &why).await;
            Ok::<_, HandlerError>(())
        })
        .await
    }

    async fn remove_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        // Normally already returned at StopPodSandbox; this catches a missed stop.
        let why = format!("pod {} removed", pod_ref(pod));
        timed(self, "RemovePodSandbox", async {
            self.stop_pod(pod, &why).await;
            Ok::<_, HandlerError>(())
        })
        .await
    }
}
