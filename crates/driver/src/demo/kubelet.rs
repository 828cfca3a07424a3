//! The demo's kubelet: plugin registration and the DRA calls, over the plugin's real Unix
//! sockets with the kubelet's own gRPC messages.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use kubeletplugin::proto::{dra::v1 as dra, pluginregistration::PluginInfo};
use tonic::transport::Channel;

/// How long the kubelet side waits for the plugin's sockets and for the runtime hook.
const PLUGIN_WAIT: Duration = Duration::from_secs(20);

/// Registers the plugin as the kubelet does on seeing its socket: `GetInfo`, then
/// `NotifyRegistrationStatus`. Returns what the plugin said about itself.
pub async fn register(registry_dir: &Path, driver: &str) -> anyhow::Result<PluginInfo> {
    let socket = registry_dir.join(format!("{driver}-reg.sock"));
    let info = testkit::register_plugin(&socket, PLUGIN_WAIT)
        .await
        .context("registering the plugin")?;
    if info.name != driver || info.r#type != "DRAPlugin" {
        bail!(
            "the plugin registered as {:?} of type {:?}, not {driver:?} DRAPlugin",
            info.name,
            info.r#type
        );
    }
    Ok(info)
}

/// The DRA service at `endpoint`, as registration announced it.
pub struct DraPlugin {
    endpoint: PathBuf,
}

impl DraPlugin {
    /// The plugin whose DRA socket is `endpoint`.
    pub fn new(endpoint: impl Into<PathBuf>) -> Self {
        Self {
            endpoint: endpoint.into(),
        }
    }

    async fn client(&self) -> anyhow::Result<dra::dra_plugin_client::DraPluginClient<Channel>> {
        Ok(dra::dra_plugin_client::DraPluginClient::new(
            testkit::unix_channel(&self.endpoint).await?,
        ))
    }

    /// `NodePrepareResources` for one claim; its prepared devices. Retries while the runtime
    /// hook is not connected yet, as the kubelet retries a pod whose claim failed to prepare.
    pub async fn prepare(&self, claim: &dra::Claim) -> anyhow::Result<Vec<dra::Device>> {
        let start = Instant::now();
        loop {
            let mut answer = self
                .client()
                .await?
                .node_prepare_resources(dra::NodePrepareResourcesRequest {
                    claims: vec![claim.clone()],
                })
                .await
                .context("NodePrepareResources")?
                .into_inner();
            let result = answer
                .claims
                .remove(&claim.uid)
                .with_context(|| format!("NodePrepareResources answered nothing for claim uid {}", claim.uid))?;
            if result.error.is_empty() {
                return Ok(result.devices);
            }
            if !result.error.contains("not connected") || start.elapsed() > PLUGIN_WAIT {
                bail!("NodePrepareResources: {}", result.error);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `NodeUnprepareResources` for one claim.
    pub async fn unprepare(&self, claim: &dra::Claim) -> anyhow::Result<()> {
        let mut answer = self
            .client()
            .await?
            .node_unprepare_resources(dra::NodeUnprepareResourcesRequest {
                claims: vec![claim.clone()],
            })
            .await
            .context("NodeUnprepareResources")?
            .into_inner();
        let result = answer
            .claims
            .remove(&claim.uid)
            .with_context(|| format!("NodeUnprepareResources answered nothing for claim uid {}", claim.uid))?;
        if !result.error.is_empty() {
            bail!("NodeUnprepareResources: {}", result.error);
        }
        Ok(())
    }
}
