//! The demo's container runtime: a real containerd through CRI when the demo is given its
//! socket, or else the NRI runtime harness, which sends the hooks a runtime sends for a pod
//! whose network namespace the demo makes itself.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use k8s_cri::v1::{
    LinuxPodSandboxConfig, ListPodSandboxRequest, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest, VersionRequest,
    runtime_service_client::RuntimeServiceClient,
};
use nri::{
    proto::api::{Event, LinuxNamespace, LinuxPodSandbox, PodSandbox},
    runtime::{ConnectedPlugin, RuntimeListener, RuntimeOptions},
};
use tonic::transport::Channel;

use super::host::Created;

/// The label every sandbox of one demo run carries: cleanup finds its pods by it.
const RUN_LABEL: &str = "netdra.dev/demo-run";

/// How long one runtime call may take before the demo gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A pod as the kubelet names it.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID: what the claim's `reservedFor` and the runtime's hooks both carry.
    pub uid: String,
}

/// The runtime the demo's pods run on.
pub enum PodRuntime {
    /// A real containerd, driven through CRI; the agent is its NRI plugin.
    Containerd(Containerd),
    /// The NRI harness: the agent is its plugin, the pods' namespaces are made here.
    Harness(Harness),
}

/// containerd through CRI.
pub struct Containerd {
    cri: RuntimeServiceClient<Channel>,
    socket: PathBuf,
    version: String,
    run: String,
    log_dir: PathBuf,
    sandboxes: HashMap<String, String>,
}

/// The NRI runtime harness.
pub struct Harness {
    listener: RuntimeListener,
    plugin: Option<ConnectedPlugin>,
    running: Vec<PodSandbox>,
}

impl PodRuntime {
    /// containerd at `socket`; its sandboxes are labelled with `run` and log under `log_dir`.
    pub async fn containerd(socket: &Path, run: &str, log_dir: PathBuf) -> anyhow::Result<Self> {
        let channel = testkit::unix_channel(socket).await?;
        let mut cri = RuntimeServiceClient::new(channel);
        let version = tokio::time::timeout(CALL_TIMEOUT, cri.version(VersionRequest::default()))
            .await
            .context("CRI Version timed out")?
            .with_context(|| format!("CRI Version at {}", socket.display()))?
            .into_inner();
        Ok(Self::Containerd(Containerd {
            cri,
            socket: socket.to_owned(),
            version: format!("{} {}", version.runtime_name, version.runtime_version),
            run: run.to_owned(),
            log_dir,
            sandboxes: HashMap::new(),
        }))
    }

    /// The harness, listening for the agent's NRI connection at `socket`.
    pub fn harness(socket: &Path) -> anyhow::Result<Self> {
        let listener = RuntimeListener::bind(socket).with_context(|| format!("listening on {}", socket.display()))?;
        Ok(Self::Harness(Harness {
            listener,
            plugin: None,
            running: Vec::new(),
        }))
    }

    /// One line saying which runtime this is.
    pub fn describe(&self) -> String {
        match self {
            Self::Containerd(c) => format!("{} through CRI at {}", c.version, c.socket.display()),
            Self::Harness(_) => {
                "the NRI runtime harness (no containerd given: the hooks are simulated, the namespaces and links are real)"
                    .into()
            }
        }
    }

    /// Waits for the agent's NRI plugin to be connected where the demo can see it (the
    /// harness accepts it; containerd's side is followed through the agent's readiness).
    pub async fn accept_plugin(&mut self) -> anyhow::Result<()> {
        if let Self::Harness(h) = self {
            let mut options = RuntimeOptions::default();
            options.request_timeout = Duration::from_secs(4);
            let plugin = tokio::time::timeout(Duration::from_secs(20), h.listener.accept(options))
                .await
                .context("the agent's NRI plugin did not connect to the harness in 20 s")?
                .context("NRI registration with the harness")?;
            h.plugin = Some(plugin);
        }
        Ok(())
    }

    /// Starts `pod`'s sandbox (the RunPodSandbox hook moves its interfaces in); the name of its
    /// network namespace under /run/netns.
    pub async fn run_pod(&mut self, pod: &Pod, created: &mut Created) -> anyhow::Result<String> {
        match self {
            Self::Containerd(c) => c.run_pod(pod).await,
            Self::Harness(h) => {
                let netns = "ndemo-pod".to_owned();
                created.netns(&netns)?;
                let sandbox = harness_sandbox(pod, &netns);
                h.running.push(sandbox.clone());
                h.plugin()?
                    .run_pod_sandbox(sandbox)
                    .await
                    .map_err(|s| anyhow::anyhow!("RunPodSandbox hook: {}", s.message))?;
                Ok(netns)
            }
        }
    }

    /// Stops `pod`'s sandbox (the StopPodSandbox hook returns its interfaces).
    pub async fn stop_pod(&mut self, pod: &Pod) -> anyhow::Result<()> {
        match self {
            Self::Containerd(c) => {
                let id = c.sandbox(pod)?;
                timed(c.cri.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id }))
                    .await
                    .context("CRI StopPodSandbox")?;
                Ok(())
            }
            Self::Harness(h) => {
                let sandbox = h.take_running(pod)?;
                h.plugin()?
                    .stop_pod_sandbox(sandbox.clone())
                    .await
                    .map_err(|s| anyhow::anyhow!("StopPodSandbox hook: {}", s.message))?;
                h.plugin()?
                    .state_change(Event::RemovePodSandbox, sandbox, None)
                    .await
                    .map_err(|s| anyhow::anyhow!("RemovePodSandbox hook: {}", s.message))?;
                Ok(())
            }
        }
    }

    /// Removes `pod`'s stopped sandbox (its namespace goes with it).
    pub async fn remove_pod(&mut self, pod: &Pod, created: &mut Created) -> anyhow::Result<()> {
        match self {
            Self::Containerd(c) => {
                let id = c.sandbox(pod)?;
                timed(c.cri.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }))
                    .await
                    .context("CRI RemovePodSandbox")?;
                c.sandboxes.remove(&pod.uid);
                Ok(())
            }
            Self::Harness(_) => {
                let failed = created.remove_namespaces();
                if !failed.is_empty() {
                    bail!("{}", failed.join("; "));
                }
                Ok(())
            }
        }
    }

    /// Stops and removes every pod this run started, whatever step it was in. Returns what
    /// could not be cleaned up.
    pub async fn clean_up(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        match self {
            Self::Containerd(c) => {
                // By label: a sandbox whose RunPodSandbox was interrupted has no recorded id.
                let filter = PodSandboxFilter {
                    label_selector: HashMap::from([(RUN_LABEL.to_owned(), c.run.clone())]),
                    ..Default::default()
                };
                let listed = timed(c.cri.list_pod_sandbox(ListPodSandboxRequest { filter: Some(filter) })).await;
                let ids = match listed {
                    Ok(list) => list.into_inner().items.into_iter().map(|p| p.id).collect(),
                    Err(e) => {
                        failed.push(format!("listing the demo's pods: {e:#}"));
                        c.sandboxes.values().cloned().collect::<Vec<_>>()
                    }
                };
                for id in ids {
                    let stop = timed(c.cri.stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    }))
                    .await;
                    let remove = timed(c.cri.remove_pod_sandbox(RemovePodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    }))
                    .await;
                    if let Err(e) = stop.and(remove) {
                        failed.push(format!("removing pod sandbox {id}: {e:#}"));
                    }
                }
                c.sandboxes.clear();
            }
            Self::Harness(h) => {
                for sandbox in std::mem::take(&mut h.running) {
                    if let Some(plugin) = &h.plugin
                        && let Err(s) = plugin.stop_pod_sandbox(sandbox.clone()).await
                    {
                        failed.push(format!("StopPodSandbox hook for pod {}: {}", sandbox.name, s.message));
                    }
                }
                if let Some(plugin) = h.plugin.take() {
                    plugin.shutdown().await;
                }
            }
        }
        failed
    }
}

impl Containerd {
    async fn run_pod(&mut self, pod: &Pod) -> anyhow::Result<String> {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                attempt: 0,
            }),
            hostname: pod.name.clone(),
            log_directory: self.log_dir.join(&pod.name).display().to_string(),
            labels: HashMap::from([(RUN_LABEL.to_owned(), self.run.clone())]),
            linux: Some(LinuxPodSandboxConfig::default()),
            ..Default::default()
        };
        let id = timed(self.cri.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        }))
        .await
        .context("CRI RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
        self.sandboxes.insert(pod.uid.clone(), id.clone());
        let status = timed(self.cri.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: true,
        }))
        .await
        .context("CRI PodSandboxStatus")?
        .into_inner();
        let info = status.info.values().cloned().collect::<Vec<_>>().join(" ");
        netns_name(&info).with_context(|| format!("pod sandbox {id}: its status names no /var/run/netns path"))
    }

    fn sandbox(&self, pod: &Pod) -> anyhow::Result<String> {
        self.sandboxes
            .get(&pod.uid)
            .cloned()
            .with_context(|| format!("pod {}/{} has no sandbox", pod.namespace, pod.name))
    }
}

impl Harness {
    fn plugin(&self) -> anyhow::Result<&ConnectedPlugin> {
        self.plugin.as_ref().context("the agent's NRI plugin is not connected")
    }

    fn take_running(&mut self, pod: &Pod) -> anyhow::Result<PodSandbox> {
        let at = self
            .running
            .iter()
            .position(|s| s.uid == pod.uid)
            .with_context(|| format!("pod {}/{} is not running", pod.namespace, pod.name))?;
        Ok(self.running.remove(at))
    }
}

fn harness_sandbox(pod: &Pod, netns: &str) -> PodSandbox {
    PodSandbox {
        id: format!("demo-{}", pod.uid),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        namespace: pod.namespace.clone(),
        linux: Some(LinuxPodSandbox {
            namespaces: vec![LinuxNamespace {
                r#type: "network".into(),
                path: format!("/var/run/netns/{netns}"),
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The namespace name in containerd's verbose sandbox status (`/var/run/netns/<name>`).
fn netns_name(info: &str) -> Option<String> {
    let at = info.find("/var/run/netns/")? + "/var/run/netns/".len();
    let name: String = info[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

async fn timed<T>(call: impl Future<Output = Result<T, tonic::Status>>) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message())),
        Err(_) => bail!("no answer in {CALL_TIMEOUT:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::netns_name;

    #[test]
    fn the_namespace_is_read_from_the_verbose_status() {
        let info =
            r#"{"runtimeSpec":{"linux":{"namespaces":[{"type":"network","path":"/var/run/netns/cni-1f2e-3d"}]}}}"#;
        assert_eq!(netns_name(info).as_deref(), Some("cni-1f2e-3d"));
        assert_eq!(netns_name(r#"{"path":"/var/run/netns/"}"#), None);
        assert_eq!(netns_name("{}"), None);
    }
}
