//! The runtime's side (NRI hooks): attach at RunPodSandbox, catch a missed attach at
//! CreateContainer and Synchronize, detach at StopPodSandbox, forget at RemovePodSandbox.
//!
//! Each hook waits for an attach only up to a share of the runtime's request timeout: the
//! kernel serialises namespace moves node-wide, so a burst of pods can queue longer than one
//! hook may take. An attach still running when RunPodSandbox has to answer goes on; the pod's
//! first CreateContainer (a call with its own budget) waits for the rest and fails the
//! container, naming claim and device, if it never completes.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use nri::{
    EventSet, HandlerError, Plugin, RuntimeInfo,
    proto::api::{Container, ContainerUpdate, CreateContainerResponse, Event, PodSandbox},
};

use crate::{
    core::Core,
    driver::NetworkDriver,
    plan::{PodRef, describe},
};

/// The [`nri::Plugin`] the runtime calls.
pub(crate) struct RuntimeSide<D>(pub Arc<Core<D>>);

fn pod_ref(pod: &PodSandbox) -> PodRef {
    PodRef {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
    }
}

impl<D: NetworkDriver> RuntimeSide<D> {
    /// The pod's plans not attached yet, after pointing at it any plan whose claim the cache
    /// now says is reserved for it.
    async fn unattached(&self, pod: &PodSandbox) -> Vec<crate::plan::ClaimPlan> {
        let core = &self.0;
        let plans = core.unattached_plans(&pod.uid);
        if plans.is_empty() && core.retarget(&pod_ref(pod)) {
            core.persist_or_log("re-targeting a plan").await;
            return core.unattached_plans(&pod.uid);
        }
        plans
    }

    /// Attaches (or joins the running attach of) the pod's planned interfaces and waits for
    /// it within the hook's share; `Ok` also when it is still running then.
    async fn attach_and_wait(&self, pod: &PodSandbox, hook: &str) -> Result<(), HandlerError> {
        let core = &self.0;
        let plans = self.unattached(pod).await;
        if plans.is_empty() && core.running_attach(&pod.uid).is_none() {
            return Ok(());
        }
        let pod_ref = pod_ref(pod);
        let attach = match core.running_attach(&pod.uid) {
            Some(running) => running,
            None => {
                let Some(netns) = nri::pod_netns_path(pod).filter(|p| Path::new(p).exists()) else {
                    let message = format!(
                        "pod {pod_ref}: no network namespace to attach {} to ({hook}); the pod cannot start without its interfaces",
                        describe(&plans)
                    );
                    for plan in &plans {
                        core.report_not_ready(plan, "NoNetworkNamespace", &message);
                    }
                    return Err(message.into());
                };
                core.start_attach(pod_ref.clone(), netns.into())
            }
        };
        match core.wait_attach(attach).await {
            Some(Ok(())) => Ok(()),
            Some(Err(message)) => Err(message.into()),
            None => {
                tracing::warn!(pod = %pod_ref, hook, "attach still running at the hook's deadline; the pod's first container waits for it");
                Ok(())
            }
        }
    }
}

impl<D: NetworkDriver> RuntimeSide<D> {
    async fn synchronize_pods(
        &self,
        pods: Vec<PodSandbox>,
        _containers: Vec<Container>,
    ) -> Result<Vec<ContainerUpdate>, HandlerError> {
        let core = &self.0;
        let running: BTreeMap<&str, &PodSandbox> = pods.iter().map(|p| (p.uid.as_str(), p)).collect();
        // Pods gone while the agent was away: their interfaces come back.
        let gone: Vec<String> = core
            .state
            .lock()
            .attached_pods()
            .into_keys()
            .filter(|uid| !running.contains_key(uid.as_str()))
            .collect();
        for uid in gone {
            tracing::info!(pod_uid = %uid, "pod is gone from the runtime; returning its interfaces");
            core.spawn_detach(uid, "the pod was gone when the runtime resynchronised".into());
        }
        // Pods that started while the agent was away: attach late (their containers wait).
        for pod in &pods {
            if self.unattached(pod).await.is_empty() {
                continue;
            }
            let pod_ref = pod_ref(pod);
            match nri::pod_netns_path(pod).filter(|p| Path::new(p).exists()) {
                Some(netns) => {
                    tracing::warn!(pod = %pod_ref, "pod is running without its interfaces (its RunPodSandbox hook was missed); attaching now");
                    let _ = core.start_attach(pod_ref, netns.into());
                }
                None => {
                    let plans = core.unattached_plans(&pod.uid);
                    let message = format!(
                        "pod {pod_ref}: its RunPodSandbox hook was missed and it has no network namespace; {} cannot be attached",
                        describe(&plans)
                    );
                    tracing::error!(%message);
                    for plan in &plans {
                        core.report_not_ready(plan, "HookMissed", &message);
                    }
                }
            }
        }
        Ok(Vec::new())
    }

    async fn run_pod(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        self.attach_and_wait(pod, "RunPodSandbox").await
    }

    async fn create(&self, pod: &PodSandbox, container: &Container) -> Result<CreateContainerResponse, HandlerError> {
        let core = &self.0;
        let missed = self.unattached(pod).await;
        if missed.is_empty() && core.running_attach(&pod.uid).is_none() {
            return Ok(CreateContainerResponse::default());
        }
        if core.running_attach(&pod.uid).is_none() {
            tracing::warn!(pod = %pod_ref(pod), container = %container.name, "pod reached CreateContainer without its interfaces (RunPodSandbox was missed); attaching now");
        }
        self.attach_and_wait(pod, "CreateContainer").await?;
        // Still running after this hook's share too: the container must not start without it.
        if core.running_attach(&pod.uid).is_some() || !core.unattached_plans(&pod.uid).is_empty() {
            let plans = core.unattached_plans(&pod.uid);
            let message = format!(
                "pod {}: container {}: {} not attached in time",
                pod_ref(pod),
                container.name,
                describe(&plans)
            );
            for plan in &plans {
                core.report_not_ready(plan, "AttachTimedOut", &message);
            }
            return Err(message.into());
        }
        Ok(CreateContainerResponse::default())
    }

    async fn stop_pod(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        let core = &self.0;
        if let Some(running) = core.running_attach(&pod.uid) {
            let _ = core.wait_attach(running).await;
        }
        core.detach_pod(&pod.uid, &format!("pod {} stopped", pod_ref(pod)))
            .await;
        Ok(())
    }

    async fn remove_pod(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        // Normally already returned at StopPodSandbox; this catches a missed stop.
        self.0
            .detach_pod(&pod.uid, &format!("pod {} removed", pod_ref(pod)))
            .await;
        Ok(())
    }
}

/// Every hook is counted and timed, by name and result.
async fn timed<D: NetworkDriver, T>(
    side: &RuntimeSide<D>,
    hook: &'static str,
    call: impl Future<Output = Result<T, HandlerError>>,
) -> Result<T, HandlerError> {
    let start = std::time::Instant::now();
    let result = call.await;
    side.0.metrics.hook(hook, result.is_ok(), start.elapsed());
    result
}

impl<D: NetworkDriver> Plugin for RuntimeSide<D> {
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
        containers: Vec<Container>,
    ) -> Result<Vec<ContainerUpdate>, HandlerError> {
        timed(self, "Synchronize", self.synchronize_pods(pods, containers)).await
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
        timed(self, "StopPodSandbox", self.stop_pod(pod)).await
    }

    async fn remove_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        timed(self, "RemovePodSandbox", self.remove_pod(pod)).await
    }
}
