//! The per-pod plan of a claim, computed at Prepare: which host interface goes into which pod,
//! named and configured how. A plain function of the resolved claim, the published devices and
//! the plans already made; tested without root.
//!
//! Rules:
//! - The pod is the one in `status.reservedFor` (a `pods` consumer, in the claim's namespace).
//!   A claim reserved for several pods is refused: an exclusive interface cannot be shared.
//! - Every device must be published by this node (its `ifName` attribute names the host
//!   interface).
//! - Inside one pod every interface name is unique, across all of the pod's claims.

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{Device, DeviceAttribute};
use kubeletplugin::{ClaimRef, ResolvedClaim};
use serde::{Deserialize, Serialize};

use crate::{
    driver::{InterfacePlan, InterfaceRequest, NetworkDriver},
    opaque::{self, OpaqueError},
};

/// A pod, as the claim's `reservedFor` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodRef {
    /// The pod's namespace (the claim's).
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID: how the runtime's hooks find the plan.
    pub uid: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

/// One device of a claim, planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePlan {
    /// The claim request it satisfies.
    pub request: String,
    /// Its pool.
    pub pool: String,
    /// Its device name.
    pub device: String,
    /// Its share ID, if allocated with consumable capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_id: Option<String>,
    /// The interface on the host.
    pub host_interface: String,
    /// The interface's name in the pod.
    pub pod_interface: String,
    /// What the pod gets.
    pub interface: InterfacePlan,
    /// The device as published at Prepare, to keep it published while it sits in the pod
    /// (also after a restart, when the scan no longer sees it).
    pub published: Device,
}

/// A claim's plan: one pod, its devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimPlan {
    /// The claim.
    pub claim: ClaimRef,
    /// The pod it is reserved for.
    pub pod: PodRef,
    /// This driver's devices of the claim, in allocation order.
    pub devices: Vec<DevicePlan>,
}

/// Why a claim cannot be prepared. Every variant carries the claim; the message leaves it out
/// because the kubelet plugin SDK prefixes every per-claim error with it.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An opaque configuration is malformed or names a missing request.
    #[error(transparent)]
    Opaque(#[from] OpaqueError),
    /// The claim is reserved for no pod.
    #[error("not reserved for any pod (status.reservedFor has no pod)")]
    NoPod {
        /// The claim.
        claim: ClaimRef,
    },
    /// The claim is reserved for several pods.
    #[error("reserved for {pods} pods; an interface moved into a pod cannot be shared")]
    Shared {
        /// The claim.
        claim: ClaimRef,
        /// How many pods.
        pods: usize,
    },
    /// An allocated device is not published by this node.
    #[error("request {request:?}: device {pool}/{device} is not published by this node")]
    UnknownDevice {
        /// The claim.
        claim: ClaimRef,
        /// The request.
        request: String,
        /// The pool.
        pool: String,
        /// The device.
        device: String,
    },
    /// The driver refused the device's configuration.
    #[error("request {request:?}, device {device}: config: {message}")]
    Config {
        /// The claim.
        claim: ClaimRef,
        /// The request.
        request: String,
        /// The device.
        device: String,
        /// The driver's message (for the reference driver, `field: message`).
        message: String,
    },
    /// Two interfaces of one pod would get the same name.
    #[error(
        "request {request:?}, device {device}: config: name: {name:?} is already the name of device {other} in \
         pod {pod}"
    )]
    NameClash {
        /// The claim.
        claim: ClaimRef,
        /// The request.
        request: String,
        /// The device.
        device: String,
        /// The clashing name.
        name: String,
        /// The other device (`claim ns/name device X` when from another claim).
        other: String,
        /// The pod.
        pod: PodRef,
    },
}

/// The pod a claim is reserved for.
pub fn reserved_pod(claim: &ResolvedClaim) -> Result<PodRef, PlanError> {
    let pods: Vec<_> = claim
        .object
        .status
        .as_ref()
        .and_then(|s| s.reserved_for.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.resource == "pods" && c.api_group.as_deref().unwrap_or("").is_empty())
        .collect();
    match pods.as_slice() {
        [] => Err(PlanError::NoPod {
            claim: claim.claim.clone(),
        }),
        [pod] => Ok(PodRef {
            namespace: claim.claim.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        }),
        many => Err(PlanError::Shared {
            claim: claim.claim.clone(),
            pods: many.len(),
        }),
    }
}

/// The host interface behind a published device (its `ifName` attribute).
pub fn host_interface(device: &Device) -> Option<&str> {
    device
        .attributes
        .as_ref()?
        .get("ifName")
        .and_then(|a: &DeviceAttribute| a.string.as_deref())
}

/// Plans one claim. `published` is what this node publishes now (held devices included);
/// `others` are the plans of the node's other claims, for the name rule.
pub fn plan_claim<D: NetworkDriver>(
    driver_name: &str,
    driver: &D,
    claim: &ResolvedClaim,
    published: &[Device],
    others: &[&ClaimPlan],
) -> Result<ClaimPlan, PlanError> {
    opaque::check_requests(driver_name, claim)?;
    let pod = reserved_pod(claim)?;
    let by_name: BTreeMap<&str, &Device> = published.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut devices: Vec<DevicePlan> = Vec::with_capacity(claim.devices.len());
    for allocated in &claim.devices {
        let unknown = || PlanError::UnknownDevice {
            claim: claim.claim.clone(),
            request: allocated.request.clone(),
            pool: allocated.pool.clone(),
            device: allocated.device.clone(),
        };
        let device = by_name.get(allocated.device.as_str()).ok_or_else(unknown)?;
        let host = host_interface(device).ok_or_else(unknown)?;
        let config = opaque::merged(&claim.claim, allocated)?;
        let interface = driver
            .plan_interface(&InterfaceRequest {
                claim: &claim.claim,
                request: &allocated.request,
                device,
                host_interface: host,
                config: config.as_ref(),
            })
            .map_err(|e| PlanError::Config {
                claim: claim.claim.clone(),
                request: allocated.request.clone(),
                device: allocated.device.clone(),
                message: e.to_string(),
            })?;
        let pod_interface = interface.config.name.clone().unwrap_or_else(|| host.to_owned());
        let clash = devices
            .iter()
            .find(|d| d.pod_interface == pod_interface)
            .map(|d| d.device.clone())
            .or_else(|| {
                others
                    .iter()
                    .filter(|p| p.pod.uid == pod.uid && p.claim.uid != claim.claim.uid)
                    .flat_map(|p| p.devices.iter().map(move |d| (p, d)))
                    .find(|(_, d)| d.pod_interface == pod_interface)
                    .map(|(p, d)| format!("{} of claim {}/{}", d.device, p.claim.namespace, p.claim.name))
            });
        if let Some(other) = clash {
            return Err(PlanError::NameClash {
                claim: claim.claim.clone(),
                request: allocated.request.clone(),
                device: allocated.device.clone(),
                name: pod_interface,
                other,
                pod,
            });
        }
        devices.push(DevicePlan {
            request: allocated.request.clone(),
            pool: allocated.pool.clone(),
            device: allocated.device.clone(),
            share_id: allocated.share_id.clone(),
            host_interface: host.to_owned(),
            pod_interface,
            interface,
            published: (*device).clone(),
        });
    }
    Ok(ClaimPlan {
        claim: claim.claim.clone(),
        pod,
        devices,
    })
}
