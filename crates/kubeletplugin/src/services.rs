//! The gRPC services the kubelet calls: registration, and DRA v1 + v1beta1 over one core.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::{
    driver::{ClaimRef, DraDriver, PreparedDevice},
    preparer::Preparer,
    proto::{dra, pluginregistration as reg},
};

/// The plugin type the kubelet routes to its DRA handler.
pub const DRA_PLUGIN_TYPE: &str = "DRAPlugin";
/// Announced services, in order of preference (the kubelet takes the first it supports).
pub const SUPPORTED_VERSIONS: [&str; 2] = ["v1.DRAPlugin", "v1beta1.DRAPlugin"];

/// Where the kubelet's registration of this plugin stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RegistrationState {
    /// The kubelet has not reported a verdict yet.
    #[default]
    Pending,
    /// The kubelet accepted the plugin.
    Registered,
    /// The kubelet rejected the plugin, with its reason.
    Rejected(String),
}

/// `pluginregistration.Registration`: tells the kubelet who we are and records its verdict.
pub(crate) struct RegistrationService {
    pub(crate) driver_name: String,
    pub(crate) endpoint: String,
    /// [`SUPPORTED_VERSIONS`], and the health services when the plugin has a feed.
    pub(crate) supported_versions: Vec<String>,
    pub(crate) state: watch::Sender<RegistrationState>,
}

#[tonic::async_trait]
impl reg::registration_server::Registration for RegistrationService {
    async fn get_info(&self, _: Request<reg::InfoRequest>) -> Result<Response<reg::PluginInfo>, Status> {
        tracing::debug!(driver = %self.driver_name, "kubelet asked for plugin info");
        Ok(Response::new(reg::PluginInfo {
            r#type: DRA_PLUGIN_TYPE.to_string(),
            name: self.driver_name.clone(),
            endpoint: self.endpoint.clone(),
            supported_versions: self.supported_versions.clone(),
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<reg::RegistrationStatus>,
    ) -> Result<Response<reg::RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        let state = if status.plugin_registered {
            tracing::info!(driver = %self.driver_name, "kubelet registered the plugin");
            RegistrationState::Registered
        } else {
            tracing::error!(driver = %self.driver_name, error = %status.error, "kubelet rejected the plugin");
            RegistrationState::Rejected(status.error)
        };
        self.state.send_replace(state);
        Ok(Response::new(reg::RegistrationStatusResponse {}))
    }
}

/// Checks the kubelet's claim list; a claim without namespace, name or UID is a malformed
/// request (a gRPC error), the only case that fails the whole call.
fn claim_refs(claims: impl IntoIterator<Item = (String, String, String)>) -> Result<Vec<ClaimRef>, Status> {
    claims
        .into_iter()
        .map(|(namespace, name, uid)| {
            if namespace.is_empty() || name.is_empty() || uid.is_empty() {
                Err(Status::invalid_argument(format!(
                    "claim with namespace {namespace:?}, name {name:?}, uid {uid:?}: all three are required"
                )))
            } else {
                Ok(ClaimRef { namespace, name, uid })
            }
        })
        .collect()
}

/// The DRA node service of one API version, over the shared [`Preparer`].
pub(crate) struct DraService<D> {
    pub(crate) preparer: Arc<Preparer<D>>,
}

impl<D> Clone for DraService<D> {
    fn clone(&self) -> Self {
        Self {
            preparer: self.preparer.clone(),
        }
    }
}

/// Implements one version's service; the versions differ only in package and `share_id`.
macro_rules! dra_service {
    ($version:ident, $device:expr) => {
        #[tonic::async_trait]
        impl<D: DraDriver> dra::$version::dra_plugin_server::DraPlugin for DraService<D> {
            async fn node_prepare_resources(
                &self,
                request: Request<dra::$version::NodePrepareResourcesRequest>,
            ) -> Result<Response<dra::$version::NodePrepareResourcesResponse>, Status> {
                use dra::$version as v;
                let claims = claim_refs(
                    request
                        .into_inner()
                        .claims
                        .into_iter()
                        .map(|c| (c.namespace, c.name, c.uid)),
                )?;
                let results = self.preparer.prepare_all(claims).await;
                let device: fn(PreparedDevice) -> v::Device = $device;
                let claims = results
                    .into_iter()
                    .map(|(uid, result)| {
                        let answer = match result {
                            Ok(devices) => v::NodePrepareResourceResponse {
                                devices: devices.into_iter().map(device).collect(),
                                error: String::new(),
                            },
                            Err(error) => v::NodePrepareResourceResponse {
                                devices: vec![],
                                error: error.to_string(),
                            },
                        };
                        (uid, answer)
                    })
                    .collect();
                Ok(Response::new(v::NodePrepareResourcesResponse { claims }))
            }

            async fn node_unprepare_resources(
                &self,
                request: Request<dra::$version::NodeUnprepareResourcesRequest>,
            ) -> Result<Response<dra::$version::NodeUnprepareResourcesResponse>, Status> {
                use dra::$version as v;
                let claims = claim_refs(
                    request
                        .into_inner()
                        .claims
                        .into_iter()
                        .map(|c| (c.namespace, c.name, c.uid)),
                )?;
                let claims = self
                    .preparer
                    .unprepare_all(claims)
                    .await
                    .into_iter()
                    .map(|(uid, result)| {
                        (
                            uid,
                            v::NodeUnprepareResourceResponse {
                                error: result.err().map(|e| e.to_string()).unwrap_or_default(),
                            },
                        )
                    })
                    .collect();
                Ok(Response::new(v::NodeUnprepareResourcesResponse { claims }))
            }
        }
    };
}

dra_service!(v1, |d| dra::v1::Device {
    request_names: d.requests,
    pool_name: d.pool,
    device_name: d.device,
    cdi_device_ids: d.cdi_device_ids,
    share_id: d.share_id,
});

dra_service!(v1beta1, |d| dra::v1beta1::Device {
    request_names: d.requests,
    pool_name: d.pool,
    device_name: d.device,
    cdi_device_ids: d.cdi_device_ids,
});
