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

use k8s_openapi::api::resource::v1::{Device, DeviceAttribute, ResourceClaim, ResourceClaimConsumerReference};
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
#[non_exhaustive]
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
#[non_exhaustive]
pub struct ClaimPlan {
    /// The claim.
    pub claim: ClaimRef,
    /// The pod it is reserved for.
    pub pod: PodRef,
    /// This driver's devices of the claim, in allocation order.
    pub devices: Vec<DevicePlan>,
}

/// `claim ns/a device d0; claim ns/b device d1, d2`: what a set of plans moves, for messages.
pub fn describe(plans: &[ClaimPlan]) -> String {
    plans
        .iter()
        .map(|p| {
            let devices: Vec<&str> = p.devices.iter().map(|d| d.device.as_str()).collect();
            format!(
                "claim {}/{} device {}",
                p.claim.namespace,
                p.claim.name,
                devices.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a claim cannot be prepared. Every variant carries the claim; the message leaves it out
/// because the kubelet plugin SDK prefixes every per-claim error with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

/// The pods in a claim's `status.reservedFor` (core `pods` consumers; other kinds are not
/// pods and get no interface).
pub(crate) fn pod_consumers(claim: &ResourceClaim) -> impl Iterator<Item = &ResourceClaimConsumerReference> {
    claim
        .status
        .as_ref()
        .and_then(|s| s.reserved_for.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.resource == "pods" && c.api_group.as_deref().unwrap_or("").is_empty())
}

/// The pod a claim is reserved for.
pub fn reserved_pod(claim: &ResolvedClaim) -> Result<PodRef, PlanError> {
    let pods: Vec<_> = pod_consumers(&claim.object).collect();
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::driver::HostDevice;

    const DRIVER: &str = "net.example.com";

    fn published(name: &str, ifname: &str) -> Device {
        serde_json::from_value(json!({"name": name, "attributes": {"ifName": {"string": ifname}}})).unwrap()
    }

    fn config(extra: Value) -> Value {
        let mut c = json!({"apiVersion": "netdra.dev/v1alpha1", "kind": "InterfaceConfig"});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    }

    /// A claim named `name` with one result per (request, device), the given allocation
    /// configs (source, requests, parameters) and reserved for `pods`.
    fn claim(name: &str, results: &[(&str, &str)], configs: &[(&str, &[&str], Value)], pods: &[&str]) -> ResolvedClaim {
        let object = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"devices": {
                "requests": results.iter().map(|(r, _)| json!({"name": r})).collect::<Vec<_>>(),
                "config": configs.iter().filter(|(s, _, _)| *s == "FromClaim")
                    .map(|(_, r, p)| json!({"requests": r, "opaque": {"driver": DRIVER, "parameters": p}}))
                    .collect::<Vec<_>>(),
            }},
            "status": {
                "allocation": {"devices": {
                    "results": results.iter()
                        .map(|(r, d)| json!({"request": r, "driver": DRIVER, "pool": "node", "device": d}))
                        .collect::<Vec<_>>(),
                    "config": configs.iter()
                        .map(|(s, r, p)| json!({"source": s, "requests": r, "opaque": {"driver": DRIVER, "parameters": p}}))
                        .collect::<Vec<_>>(),
                }},
                "reservedFor": pods.iter().map(|p| json!({"resource": "pods", "name": p, "uid": format!("uid-{p}")}))
                    .collect::<Vec<_>>(),
            },
        });
        let object: ResourceClaim = serde_json::from_value(object).unwrap();
        let claim = ClaimRef {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        };
        kubeletplugin::resolve_for_driver(DRIVER, &claim, Arc::new(object)).unwrap()
    }

    fn devices() -> Vec<Device> {
        vec![published("d0", "eth1"), published("d1", "eth2")]
    }

    #[test]
    fn the_claim_config_overrides_the_class_config_field_by_field() {
        let c = claim(
            "c",
            &[("nic", "d0")],
            &[
                ("FromClass", &[], config(json!({"name": "net1", "mtu": 9000}))),
                ("FromClaim", &["nic"], config(json!({"mtu": 1400}))),
            ],
            &["p"],
        );
        let plan = plan_claim(DRIVER, &HostDevice, &c, &devices(), &[]).unwrap();
        assert_eq!(plan.pod.uid, "uid-p");
        let d = &plan.devices[0];
        assert_eq!((d.host_interface.as_str(), d.pod_interface.as_str()), ("eth1", "net1"));
        assert_eq!(d.interface.config.mtu, Some(1400));
        assert!(d.interface.carry_host_addresses, "no addresses: the host's are carried");
    }

    #[test]
    fn pods_devices_and_names_are_checked() {
        let none = claim("c", &[("nic", "d0")], &[], &[]);
        assert!(matches!(
            plan_claim(DRIVER, &HostDevice, &none, &devices(), &[]),
            Err(PlanError::NoPod { .. })
        ));
        let two = claim("c", &[("nic", "d0")], &[], &["a", "b"]);
        let e = plan_claim(DRIVER, &HostDevice, &two, &devices(), &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "reserved for 2 pods; an interface moved into a pod cannot be shared"
        );
        let unknown = claim("c", &[("nic", "d9")], &[], &["p"]);
        let e = plan_claim(DRIVER, &HostDevice, &unknown, &devices(), &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "request \"nic\": device node/d9 is not published by this node"
        );

        // Two claims of one pod may not give two interfaces one name; other pods may.
        let first = claim(
            "c1",
            &[("nic", "d0")],
            &[("FromClaim", &["nic"], config(json!({"name": "net1"})))],
            &["p"],
        );
        let first = plan_claim(DRIVER, &HostDevice, &first, &devices(), &[]).unwrap();
        let second = claim(
            "c2",
            &[("nic", "d1")],
            &[("FromClaim", &["nic"], config(json!({"name": "net1"})))],
            &["p"],
        );
        let e = plan_claim(DRIVER, &HostDevice, &second, &devices(), &[&first]).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"net1\" is already the name of device d0 of claim ns/c1"),
            "{e}"
        );
        let elsewhere = claim(
            "c3",
            &[("nic", "d1")],
            &[("FromClaim", &["nic"], config(json!({"name": "net1"})))],
            &["q"],
        );
        assert!(plan_claim(DRIVER, &HostDevice, &elsewhere, &devices(), &[&first]).is_ok());
    }

    #[test]
    fn configuration_errors_name_request_device_and_field() {
        let c = claim(
            "c",
            &[("nic", "d0")],
            &[("FromClaim", &["nic"], config(json!({"mtu": 10})))],
            &["p"],
        );
        let e = plan_claim(DRIVER, &HostDevice, &c, &devices(), &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "request \"nic\", device d0: config: mtu: 10 is outside 68..=65535"
        );
        let c = claim(
            "c",
            &[("nic", "d0")],
            &[("FromClaim", &["nci"], config(json!({})))],
            &["p"],
        );
        let e = plan_claim(DRIVER, &HostDevice, &c, &devices(), &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("spec.devices.config[0].requests[0]: the claim has no request \"nci\""),
            "{e}"
        );
    }
}
