//! What a plugin author implements: [`Plugin`], a default for every event.

use std::{error::Error, future::Future, time::Duration};

use crate::{
    events::EventSet,
    proto::api::{
        Container, ContainerUpdate, CreateContainerResponse, PodSandbox, StopContainerResponse, UpdateContainerRequest,
        UpdateContainerResponse, UpdatePodSandboxRequest, ValidateContainerAdjustmentRequest,
        ValidateContainerAdjustmentResponse,
    },
};

/// A handler's failure. Its `Display` is sent to the runtime as the call's error message
/// (for `RunPodSandbox` and `CreateContainer` the runtime then fails the pod or container).
pub type HandlerError = Box<dyn Error + Send + Sync>;

/// What the runtime said about itself in `Configure`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RuntimeInfo {
    /// Runtime name, e.g. `containerd`.
    pub name: String,
    /// Runtime version.
    pub version: String,
    /// NRI version of the runtime (sent since NRI v0.12; empty before).
    pub nri_version: String,
    /// Plugin configuration (for plugins launched by the runtime; empty for external ones).
    pub config: String,
    /// The runtime's deadline for each call to the plugin; a call that exceeds it makes the
    /// runtime drop the plugin.
    pub request_timeout: Duration,
    /// The runtime's registration deadline.
    pub registration_timeout: Duration,
}

/// An NRI plugin. Every event has a default that accepts it and changes nothing; implement
/// the ones the plugin cares about and list them in [`events`](Plugin::events).
///
/// Handlers run under the runtime's request timeout (2 s by default, see [`RuntimeInfo`]); a
/// handler that takes more than half of it is logged as a warning. A handler that panics
/// fails only its call: the runtime gets an `Internal` error naming the method, and the
/// connection keeps serving.
pub trait Plugin: Send + Sync + 'static {
    /// The events to subscribe to. The SDK sends the runtime this set limited to what that
    /// runtime accepts, so an older runtime never rejects the plugin for a newer event.
    fn events(&self) -> EventSet;

    /// The runtime configured the plugin (once per connection).
    fn configure(&self, runtime: &RuntimeInfo) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = runtime;
        async { Ok(()) }
    }

    /// Every existing pod and container, after (re)connecting; split messages are joined first.
    fn synchronize(
        &self,
        pods: Vec<PodSandbox>,
        containers: Vec<Container>,
    ) -> impl Future<Output = Result<Vec<ContainerUpdate>, HandlerError>> + Send {
        let _ = (pods, containers);
        async { Ok(Vec::new()) }
    }

    /// The runtime is shutting down; the connection closes next.
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// A pod sandbox was created (its network namespace exists and CNI has run).
    fn run_pod_sandbox(&self, pod: &PodSandbox) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = pod;
        async { Ok(()) }
    }

    /// A pod sandbox is stopping.
    fn stop_pod_sandbox(&self, pod: &PodSandbox) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = pod;
        async { Ok(()) }
    }

    /// A pod sandbox was removed.
    fn remove_pod_sandbox(&self, pod: &PodSandbox) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = pod;
        async { Ok(()) }
    }

    /// A pod sandbox's resources are being updated (NRI v0.10+).
    fn update_pod_sandbox(
        &self,
        request: &UpdatePodSandboxRequest,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = request;
        async { Ok(()) }
    }

    /// A pod sandbox's resources were updated (NRI v0.10+).
    fn post_update_pod_sandbox(&self, pod: &PodSandbox) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = pod;
        async { Ok(()) }
    }

    /// A container is being created; the response may adjust it.
    fn create_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = Result<CreateContainerResponse, HandlerError>> + Send {
        let _ = (pod, container);
        async { Ok(CreateContainerResponse::default()) }
    }

    /// A container was created.
    fn post_create_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// A container is starting.
    fn start_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// A container started.
    fn post_start_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// A container's resources are being updated.
    fn update_container(
        &self,
        request: &UpdateContainerRequest,
    ) -> impl Future<Output = Result<UpdateContainerResponse, HandlerError>> + Send {
        let _ = request;
        async { Ok(UpdateContainerResponse::default()) }
    }

    /// A container's resources were updated.
    fn post_update_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// A container is stopping.
    fn stop_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = Result<StopContainerResponse, HandlerError>> + Send {
        let _ = (pod, container);
        async { Ok(StopContainerResponse::default()) }
    }

    /// A container was removed.
    fn remove_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// The runtime asks whether the adjustments of all plugins are acceptable (NRI v0.10+).
    fn validate_container_adjustment(
        &self,
        request: &ValidateContainerAdjustmentRequest,
    ) -> impl Future<Output = Result<ValidateContainerAdjustmentResponse, HandlerError>> + Send {
        let _ = request;
        async { Ok(ValidateContainerAdjustmentResponse::default()) }
    }
}

/// The network namespace path of a pod (the `network` entry of its Linux namespaces), if the
/// runtime reported one.
pub fn pod_netns_path(pod: &PodSandbox) -> Option<&str> {
    pod.linux
        .as_ref()?
        .namespaces
        .iter()
        .find(|ns| ns.r#type == "network" && !ns.path.is_empty())
        .map(|ns| ns.path.as_str())
}
