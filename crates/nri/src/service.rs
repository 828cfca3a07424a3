//! Serves `nri.pkg.api.v1alpha1.Plugin` for a [`Plugin`]: every per-event RPC, `StateChange`
//! (how runtimes with NRI < v0.12 deliver most events), split `Synchronize`, and code 12 for
//! anything unknown so newer runtimes fall back correctly.

use parking_lot::Mutex;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use prost::Message;
use tokio::sync::watch;

use crate::{
    endpoint::{Code, IncomingRequest, RequestHandler, Status},
    events::valid_events,
    plugin::{HandlerError, Plugin, RuntimeInfo},
    proto::api::{
        ConfigureRequest, ConfigureResponse, Container, CreateContainerRequest, Empty, Event, PodSandbox,
        PostCreateContainerRequest, PostStartContainerRequest, PostUpdateContainerRequest, PostUpdatePodSandboxRequest,
        RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StateChangeEvent,
        StopContainerRequest, StopPodSandboxRequest, SynchronizeRequest, SynchronizeResponse, UpdateContainerRequest,
        UpdatePodSandboxRequest, UpdatePodSandboxResponse, ValidateContainerAdjustmentRequest,
    },
};

/// The fully qualified service name the runtime calls.
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
/// The fully qualified service name the plugin calls.
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
/// The runtime's default request timeout, until `Configure` says otherwise.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What one connection's service learned, shared with the connection runner.
#[derive(Default)]
pub(crate) struct Session {
    pub(crate) runtime: Mutex<Option<RuntimeInfo>>,
    /// Pods and containers of a split `Synchronize` received so far.
    sync_buffer: Mutex<(Vec<PodSandbox>, Vec<Container>)>,
    /// Becomes true once the final `Synchronize` was answered.
    pub(crate) synchronized: watch::Sender<bool>,
}

impl Session {
    pub(crate) fn request_timeout(&self) -> Duration {
        self.runtime
            .lock()
            .as_ref()
            .map_or(DEFAULT_REQUEST_TIMEOUT, |r| r.request_timeout)
    }
}

/// The `Plugin` service of one connection.
pub(crate) struct PluginService<P> {
    pub(crate) plugin: Arc<P>,
    pub(crate) session: Arc<Session>,
}

fn decode<M: Message + Default>(method: &str, payload: &[u8]) -> Result<M, Status> {
    M::decode(payload).map_err(|e| Status::new(Code::InvalidArgument, format!("malformed {method} request: {e}")))
}

fn failed(method: &str, pod: Option<&PodSandbox>, error: HandlerError) -> Status {
    let message = error.to_string();
    match pod {
        Some(p) => {
            tracing::warn!(method, pod = %format!("{}/{}", p.namespace, p.name), pod_uid = %p.uid, %message, "NRI handler failed")
        }
        None => tracing::warn!(method, %message, "NRI handler failed"),
    }
    Status::new(Code::Unknown, message)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl<P: Plugin> RequestHandler for PluginService<P> {
    async fn handle(&self, request: IncomingRequest) -> Result<Vec<u8>, Status> {
        if request.service != PLUGIN_SERVICE {
            return Err(Status::new(Code::Unimplemented, format!("service {}", request.service)));
        }
        let started = Instant::now();
        let result = self.dispatch(&request.method, &request.payload).await;
        let elapsed = started.elapsed();
        let budget = request.timeout.unwrap_or_else(|| self.session.request_timeout());
        if elapsed > budget / 2 {
            tracing::warn!(
                method = %request.method,
                elapsed_ms = ms(elapsed),
                timeout_ms = ms(budget),
                "NRI handler used more than half of the runtime's request timeout; past it the runtime drops the plugin"
            );
        }
        result
    }
}

impl<P: Plugin> PluginService<P> {
    async fn dispatch(&self, method: &str, payload: &[u8]) -> Result<Vec<u8>, Status> {
        let p = &*self.plugin;
        Ok(match method {
            "Configure" => self.configure(decode(method, payload)?).await?.encode_to_vec(),
            "Synchronize" => self.synchronize(decode(method, payload)?).await?.encode_to_vec(),
            "Shutdown" => {
                p.shutdown().await;
                Empty {}.encode_to_vec()
            }
            "StateChange" => {
                let e: StateChangeEvent = decode(method, payload)?;
                let event = Event::try_from(e.event).unwrap_or(Event::Unknown);
                self.event(event, e.pod.unwrap_or_default(), e.container.unwrap_or_default())
                    .await?;
                Empty {}.encode_to_vec()
            }
            "RunPodSandbox" => {
                self.pod_event(Event::RunPodSandbox, method, payload, |r: RunPodSandboxRequest| {
                    (r.pod, None)
                })
                .await?
            }
            "StopPodSandbox" => {
                self.pod_event(Event::StopPodSandbox, method, payload, |r: StopPodSandboxRequest| {
                    (r.pod, None)
                })
                .await?
            }
            "RemovePodSandbox" => {
                self.pod_event(
                    Event::RemovePodSandbox,
                    method,
                    payload,
                    |r: RemovePodSandboxRequest| (r.pod, None),
                )
                .await?
            }
            "PostUpdatePodSandbox" => {
                self.pod_event(
                    Event::PostUpdatePodSandbox,
                    method,
                    payload,
                    |r: PostUpdatePodSandboxRequest| (r.pod, None),
                )
                .await?
            }
            "PostCreateContainer" => {
                self.pod_event(
                    Event::PostCreateContainer,
                    method,
                    payload,
                    |r: PostCreateContainerRequest| (r.pod, r.container),
                )
                .await?
            }
            "StartContainer" => {
                self.pod_event(Event::StartContainer, method, payload, |r: StartContainerRequest| {
                    (r.pod, r.container)
                })
                .await?
            }
            "PostStartContainer" => {
                self.pod_event(
                    Event::PostStartContainer,
                    method,
                    payload,
                    |r: PostStartContainerRequest| (r.pod, r.container),
                )
                .await?
            }
            "PostUpdateContainer" => {
                self.pod_event(
                    Event::PostUpdateContainer,
                    method,
                    payload,
                    |r: PostUpdateContainerRequest| (r.pod, r.container),
                )
                .await?
            }
            "RemoveContainer" => {
                self.pod_event(Event::RemoveContainer, method, payload, |r: RemoveContainerRequest| {
                    (r.pod, r.container)
                })
                .await?
            }
            "CreateContainer" => {
                let r: CreateContainerRequest = decode(method, payload)?;
                let (pod, container) = (r.pod.unwrap_or_default(), r.container.unwrap_or_default());
                p.create_container(&pod, &container)
                    .await
                    .map_err(|e| failed(method, Some(&pod), e))?
                    .encode_to_vec()
            }
            "UpdateContainer" => {
                let r: UpdateContainerRequest = decode(method, payload)?;
                p.update_container(&r)
                    .await
                    .map_err(|e| failed(method, r.pod.as_ref(), e))?
                    .encode_to_vec()
            }
            "StopContainer" => {
                let r: StopContainerRequest = decode(method, payload)?;
                let (pod, container) = (r.pod.unwrap_or_default(), r.container.unwrap_or_default());
                p.stop_container(&pod, &container)
                    .await
                    .map_err(|e| failed(method, Some(&pod), e))?
                    .encode_to_vec()
            }
            "UpdatePodSandbox" => {
                let r: UpdatePodSandboxRequest = decode(method, payload)?;
                p.update_pod_sandbox(&r)
                    .await
                    .map_err(|e| failed(method, r.pod.as_ref(), e))?;
                UpdatePodSandboxResponse {}.encode_to_vec()
            }
            "ValidateContainerAdjustment" => {
                let r: ValidateContainerAdjustmentRequest = decode(method, payload)?;
                p.validate_container_adjustment(&r)
                    .await
                    .map_err(|e| failed(method, r.pod.as_ref(), e))?
                    .encode_to_vec()
            }
            other => return Err(Status::new(Code::Unimplemented, format!("method {other}"))),
        })
    }

    /// Serves the dedicated RPC of an event whose answer carries nothing: decodes the request,
    /// takes its pod (and container) out with `parts`, and delivers the event.
    async fn pod_event<M: Message + Default>(
        &self,
        event: Event,
        method: &str,
        payload: &[u8],
        parts: fn(M) -> (Option<PodSandbox>, Option<Container>),
    ) -> Result<Vec<u8>, Status> {
        let (pod, container) = parts(decode(method, payload)?);
        self.event(event, pod.unwrap_or_default(), container.unwrap_or_default())
            .await?;
        // Every one of these responses (RunPodSandboxResponse, ...) is an empty message, whose
        // encoding is zero bytes.
        Ok(Vec::new())
    }

    /// Delivers a pod or container event that has no response payload (via its own RPC or
    /// via `StateChange`).
    async fn event(&self, event: Event, pod: PodSandbox, container: Container) -> Result<(), Status> {
        let p = &*self.plugin;
        let (pod, c) = (&pod, &container);
        let result = match event {
            Event::RunPodSandbox => p.run_pod_sandbox(pod).await,
            Event::StopPodSandbox => p.stop_pod_sandbox(pod).await,
            Event::RemovePodSandbox => p.remove_pod_sandbox(pod).await,
            Event::PostUpdatePodSandbox => p.post_update_pod_sandbox(pod).await,
            Event::CreateContainer => p.create_container(pod, c).await.map(drop),
            Event::PostCreateContainer => p.post_create_container(pod, c).await,
            Event::StartContainer => p.start_container(pod, c).await,
            Event::PostStartContainer => p.post_start_container(pod, c).await,
            Event::UpdateContainer => Ok(()),
            Event::PostUpdateContainer => p.post_update_container(pod, c).await,
            Event::StopContainer => p.stop_container(pod, c).await.map(drop),
            Event::RemoveContainer => p.remove_container(pod, c).await,
            other => {
                return Err(Status::new(
                    Code::Unimplemented,
                    format!("event {} is not delivered through StateChange", other.as_str_name()),
                ));
            }
        };
        result.map_err(|e| failed(event.as_str_name(), Some(pod), e))
    }

    async fn configure(&self, r: ConfigureRequest) -> Result<ConfigureResponse, Status> {
        let info = RuntimeInfo {
            name: r.runtime_name,
            version: r.runtime_version,
            nri_version: r.nri_version,
            config: r.config,
            request_timeout: positive_ms(r.request_timeout).unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            registration_timeout: positive_ms(r.registration_timeout).unwrap_or(Duration::from_secs(5)),
        };
        let wanted = self.plugin.events();
        let accepted = valid_events(&info.nri_version);
        let events = wanted.intersection(accepted);
        let dropped = wanted.difference(accepted);
        if !dropped.is_empty() {
            tracing::warn!(
                runtime = %info.name, nri_version = %info.nri_version, dropped_mask = format!("{:#x}", dropped.mask()),
                "the runtime does not support some subscribed events; not subscribing to them"
            );
        }
        if events.is_empty() {
            // A zero mask would subscribe the plugin to every event.
            return Err(Status::new(
                Code::InvalidArgument,
                "the plugin subscribes to no event this runtime supports",
            ));
        }
        // The runtime's field is an int32; a mask that does not fit is refused, never sent as 0
        // (which would subscribe the plugin to every event).
        let mask = i32::try_from(events.mask()).map_err(|_| {
            Status::new(
                Code::InvalidArgument,
                format!(
                    "event mask {:#x} does not fit ConfigureResponse.events (int32)",
                    events.mask()
                ),
            )
        })?;
        self.plugin
            .configure(&info)
            .await
            .map_err(|e| failed("Configure", None, e))?;
        tracing::info!(
            runtime = %info.name, version = %info.version,
            nri_version = if info.nri_version.is_empty() { "(not sent: before v0.12)" } else { &info.nri_version },
            request_timeout_ms = ms(info.request_timeout), events = format!("{:#x}", events.mask()),
            "configured by the runtime"
        );
        *self.session.runtime.lock() = Some(info);
        Ok(ConfigureResponse { events: mask })
    }

    async fn synchronize(&self, r: SynchronizeRequest) -> Result<SynchronizeResponse, Status> {
        let (pods, containers) = {
            let mut buffer = self.session.sync_buffer.lock();
            buffer.0.extend(r.pods);
            buffer.1.extend(r.containers);
            if r.more {
                // A chunk of a split Synchronize: the runtime insists on exactly this answer.
                return Ok(SynchronizeResponse {
                    update: vec![],
                    more: true,
                });
            }
            std::mem::take(&mut *buffer)
        };
        tracing::info!(
            pods = pods.len(),
            containers = containers.len(),
            "synchronizing with the runtime"
        );
        let update = self
            .plugin
            .synchronize(pods, containers)
            .await
            .map_err(|e| failed("Synchronize", None, e))?;
        self.session.synchronized.send_replace(true);
        Ok(SynchronizeResponse { update, more: false })
    }
}

fn positive_ms(ms: i64) -> Option<Duration> {
    u64::try_from(ms).ok().filter(|v| *v > 0).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventSet;
    use proptest::prelude::*;

    struct Quiet;

    impl Plugin for Quiet {
        fn events(&self) -> EventSet {
            EventSet::pod_lifecycle()
        }
    }

    const METHODS: &[&str] = &[
        "Configure",
        "Synchronize",
        "Shutdown",
        "StateChange",
        "RunPodSandbox",
        "StopPodSandbox",
        "RemovePodSandbox",
        "UpdatePodSandbox",
        "PostUpdatePodSandbox",
        "CreateContainer",
        "PostCreateContainer",
        "StartContainer",
        "PostStartContainer",
        "UpdateContainer",
        "PostUpdateContainer",
        "StopContainer",
        "RemoveContainer",
        "ValidateContainerAdjustment",
        "NoSuchMethod",
    ];

    proptest! {
        #[test]
        fn every_method_decoder_takes_arbitrary_bytes_without_panicking(
            method in proptest::sample::select(METHODS),
            payload in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let service = PluginService { plugin: Arc::new(Quiet), session: Arc::default() };
            let request = IncomingRequest {
                service: PLUGIN_SERVICE.into(),
                method: method.into(),
                payload: bytes::Bytes::from(payload),
                timeout: None,
            };
            match rt.block_on(service.handle(request)) {
                Ok(_) => {}
                Err(status) => prop_assert!(
                    [Code::InvalidArgument, Code::Unimplemented, Code::Unknown].contains(&status.code),
                    "{status}"
                ),
            }
        }
    }
}
