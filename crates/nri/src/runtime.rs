//! The runtime end of an NRI connection, for in-process tests of plugins and for demos that
//! simulate a container runtime. It behaves as containerd's NRI adaptation does on the points
//! plugins trip over: it serves `Runtime` on connection 2, validates the plugin's name and
//! index, rejects event masks with bits it does not support, splits `Synchronize` on request
//! and insists on the `more=true` answers, and can send `Configure` before it answers
//! `RegisterPlugin`.

use parking_lot::Mutex;
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use prost::Message;
use tokio::{
    net::UnixListener,
    sync::{Notify, mpsc, oneshot},
};

use crate::{
    endpoint::{Code, Endpoint, IncomingRequest, RequestHandler, Status},
    events::{EventSet, valid_events},
    frame::{PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN},
    proto::api::{
        ConfigureRequest, ConfigureResponse, Container, Empty, Event, PodSandbox, RegisterPluginRequest,
        RunPodSandboxRequest, StateChangeEvent, StopPodSandboxRequest, SynchronizeRequest, SynchronizeResponse,
        UpdateContainersRequest, UpdateContainersResponse,
    },
    service::{PLUGIN_SERVICE, RUNTIME_SERVICE},
    stub::StubOptions,
};

/// How the simulated runtime behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RuntimeOptions {
    /// Reported runtime name.
    pub name: String,
    /// Reported runtime version.
    pub version: String,
    /// Reported NRI version (`""` imitates a runtime older than NRI v0.12, as containerd 1.7).
    pub nri_version: String,
    /// Request timeout sent in `Configure` and used for every call.
    pub request_timeout: Duration,
    /// How long to wait for `RegisterPlugin`.
    pub registration_timeout: Duration,
    /// Send `Configure` (and wait for its answer) before answering `RegisterPlugin`.
    pub configure_before_register_reply: bool,
    /// Pods reported in `Synchronize`.
    pub pods: Vec<PodSandbox>,
    /// Containers reported in `Synchronize`.
    pub containers: Vec<Container>,
    /// Split `Synchronize` into messages of at most this many pods.
    pub sync_chunk_pods: Option<usize>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            name: "netdra-fake-runtime".into(),
            version: "0.0.0".into(),
            nri_version: String::new(),
            request_timeout: Duration::from_secs(2),
            registration_timeout: Duration::from_secs(5),
            configure_before_register_reply: false,
            pods: vec![],
            containers: vec![],
            sync_chunk_pods: None,
        }
    }
}

/// Why a plugin could not be set up by the simulated runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// Accepting the connection failed.
    #[error("accept failed: {0}")]
    Accept(#[from] std::io::Error),
    /// The plugin did not register in time.
    #[error("plugin registration timed out")]
    RegistrationTimeout,
    /// The plugin's registration was invalid.
    #[error("invalid registration: {0}")]
    InvalidRegistration(String),
    /// A call to the plugin failed.
    #[error("{call} failed: {status}")]
    Call {
        /// Which call.
        call: &'static str,
        /// Its status.
        status: Status,
    },
    /// The plugin's answer broke the protocol (e.g. a bad event mask).
    #[error("{0}")]
    Protocol(String),
}

/// A listening NRI socket.
pub struct RuntimeListener {
    listener: UnixListener,
    path: PathBuf,
}

impl RuntimeListener {
    /// Binds `path` (removing a stale socket first).
    pub fn bind(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let _ = std::fs::remove_file(&path);
        Ok(Self {
            listener: UnixListener::bind(&path)?,
            path,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one plugin and takes it through registration, configuration and sync.
    pub async fn accept(&self, options: RuntimeOptions) -> Result<ConnectedPlugin, RuntimeError> {
        let (stream, _) = self.listener.accept().await?;
        let (registered_tx, registered_rx) = oneshot::channel();
        let (updates_tx, updates) = mpsc::unbounded_channel();
        let configured = Arc::new(Notify::new());
        let handler = Arc::new(RuntimeService {
            registered: Mutex::new(Some(registered_tx)),
            configured: configured.clone(),
            wait_for_configure: options.configure_before_register_reply,
            updates: updates_tx,
        });
        let endpoint = Endpoint::start(stream, RUNTIME_SERVICE_CONN, PLUGIN_SERVICE_CONN, handler);
        let registration = tokio::time::timeout(options.registration_timeout, registered_rx)
            .await
            .map_err(|_| RuntimeError::RegistrationTimeout)?
            .map_err(|_| RuntimeError::Protocol("connection closed before registration".into()))??;
        let mut plugin = ConnectedPlugin {
            endpoint,
            name: registration.plugin_name,
            index: registration.plugin_idx,
            events: EventSet::empty(),
            request_timeout: options.request_timeout,
            updates,
        };
        let configure = ConfigureRequest {
            config: String::new(),
            runtime_name: options.name.clone(),
            runtime_version: options.version.clone(),
            registration_timeout: options.registration_timeout.as_millis() as i64,
            request_timeout: options.request_timeout.as_millis() as i64,
            nri_version: options.nri_version.clone(),
        };
        let configured_result: Result<ConfigureResponse, Status> = plugin.call("Configure", &configure).await;
        configured.notify_one();
        let reply = configured_result.map_err(|status| RuntimeError::Call {
            call: "Configure",
            status,
        })?;
        let mask = reply.events as u32;
        let valid = valid_events(&options.nri_version).mask();
        if mask & !valid != 0 {
            plugin.endpoint.close();
            return Err(RuntimeError::Protocol(format!(
                "invalid plugin events {mask:#x} (this runtime accepts {valid:#x})"
            )));
        }
        // As the runtime does: no events means every event.
        plugin.events = EventSet::from_mask(if mask == 0 { valid } else { mask });
        plugin
            .synchronize(options.pods, options.containers, options.sync_chunk_pods)
            .await?;
        Ok(plugin)
    }
}

/// A plugin connected to the simulated runtime.
pub struct ConnectedPlugin {
    endpoint: Endpoint,
    /// Registered name.
    pub name: String,
    /// Registered index.
    pub index: String,
    /// Events the plugin subscribed to.
    pub events: EventSet,
    request_timeout: Duration,
    /// `UpdateContainers` requests the plugin sent.
    pub updates: mpsc::UnboundedReceiver<UpdateContainersRequest>,
}

impl ConnectedPlugin {
    /// Calls a `Plugin` method with a typed request and response.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<Resp, Status> {
        let reply = self
            .endpoint
            .call(PLUGIN_SERVICE, method, request.encode_to_vec(), self.request_timeout)
            .await?;
        Resp::decode(reply).map_err(|e| Status::new(Code::Internal, format!("malformed {method} response: {e}")))
    }

    /// Calls any service and method with raw bytes.
    pub async fn call_raw(&self, service: &str, method: &str, payload: Vec<u8>) -> Result<bytes::Bytes, Status> {
        self.endpoint.call(service, method, payload, self.request_timeout).await
    }

    async fn synchronize(
        &self,
        pods: Vec<PodSandbox>,
        containers: Vec<Container>,
        chunk: Option<usize>,
    ) -> Result<(), RuntimeError> {
        let chunk = chunk.unwrap_or(usize::MAX).max(1);
        let mut pods = pods.into_iter().peekable();
        let mut containers = Some(containers);
        loop {
            let batch: Vec<_> = pods.by_ref().take(chunk).collect();
            let more = pods.peek().is_some();
            let request = SynchronizeRequest {
                pods: batch,
                containers: if more {
                    vec![]
                } else {
                    containers.take().unwrap_or_default()
                },
                more,
            };
            let reply: SynchronizeResponse =
                self.call("Synchronize", &request)
                    .await
                    .map_err(|status| RuntimeError::Call {
                        call: "Synchronize",
                        status,
                    })?;
            if more {
                if !reply.more || !reply.update.is_empty() {
                    return Err(RuntimeError::Protocol(
                        "plugin does not handle split sync requests".into(),
                    ));
                }
            } else {
                return Ok(());
            }
        }
    }

    /// Delivers RunPodSandbox through its dedicated RPC.
    pub async fn run_pod_sandbox(&self, pod: PodSandbox) -> Result<(), Status> {
        self.call::<_, Empty>("RunPodSandbox", &RunPodSandboxRequest { pod: Some(pod) })
            .await
            .map(drop)
    }

    /// Delivers StopPodSandbox through its dedicated RPC.
    pub async fn stop_pod_sandbox(&self, pod: PodSandbox) -> Result<(), Status> {
        self.call::<_, Empty>("StopPodSandbox", &StopPodSandboxRequest { pod: Some(pod) })
            .await
            .map(drop)
    }

    /// Delivers an event through `StateChange`, as runtimes with NRI < v0.12 do.
    pub async fn state_change(
        &self,
        event: Event,
        pod: PodSandbox,
        container: Option<Container>,
    ) -> Result<(), Status> {
        let request = StateChangeEvent {
            event: event as i32,
            pod: Some(pod),
            container,
        };
        self.call::<_, Empty>("StateChange", &request).await.map(drop)
    }

    /// Sends `Shutdown`, then closes the connection (as a stopping runtime does).
    pub async fn shutdown(self) {
        let _ = self.call::<_, Empty>("Shutdown", &Empty {}).await;
        self.endpoint.close();
    }

    /// Closes the connection abruptly (as a crashing runtime does).
    pub fn close(&self) {
        self.endpoint.close();
    }
}

struct RuntimeService {
    registered: Mutex<Option<oneshot::Sender<Result<RegisterPluginRequest, RuntimeError>>>>,
    configured: Arc<Notify>,
    wait_for_configure: bool,
    updates: mpsc::UnboundedSender<UpdateContainersRequest>,
}

impl RequestHandler for RuntimeService {
    async fn handle(&self, request: IncomingRequest) -> Result<Vec<u8>, Status> {
        if request.service != RUNTIME_SERVICE {
            return Err(Status::new(Code::Unimplemented, format!("service {}", request.service)));
        }
        match request.method.as_str() {
            "RegisterPlugin" => {
                let r = RegisterPluginRequest::decode(request.payload)
                    .map_err(|e| Status::new(Code::InvalidArgument, e.to_string()))?;
                let check = StubOptions::new(r.plugin_name.clone(), r.plugin_idx.clone()).validate();
                let sender = self.registered.lock().take();
                let Some(sender) = sender else {
                    return Err(Status::new(Code::InvalidArgument, "plugin already registered"));
                };
                if let Err(e) = check {
                    let message = e.to_string();
                    let _ = sender.send(Err(RuntimeError::InvalidRegistration(message.clone())));
                    return Err(Status::new(Code::InvalidArgument, message));
                }
                let _ = sender.send(Ok(r));
                if self.wait_for_configure {
                    // containerd signals "registered" inside this handler, so Configure can
                    // reach the plugin before this reply does.
                    self.configured.notified().await;
                }
                Ok(Empty {}.encode_to_vec())
            }
            "UpdateContainers" => {
                let r = UpdateContainersRequest::decode(request.payload)
                    .map_err(|e| Status::new(Code::InvalidArgument, e.to_string()))?;
                let _ = self.updates.send(r);
                Ok(UpdateContainersResponse { failed: vec![] }.encode_to_vec())
            }
            other => Err(Status::new(Code::Unimplemented, format!("method {other}"))),
        }
    }
}
