//! What a driver author implements: [`DraDriver`], and the plain data it receives and returns.
//!
//! A driver never sees gRPC or Kubernetes plumbing: the SDK resolves each claim the kubelet
//! names, keeps only the allocation results of this driver with their opaque configuration,
//! hands them over as a [`ResolvedClaim`], and stores what the driver returns.

use std::{error::Error, fmt, future::Future, sync::Arc};

use k8s_openapi::api::resource::v1::ResourceClaim;
use serde::{Deserialize, Serialize};

/// A driver's failure; its `Display` becomes the claim's `error` string in the kubelet answer.
pub type DriverError = Box<dyn Error + Send + Sync>;

/// A claim as the kubelet names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClaimRef {
    /// Namespace of the ResourceClaim.
    pub namespace: String,
    /// Name of the ResourceClaim.
    pub name: String,
    /// UID of the ResourceClaim the kubelet means.
    pub uid: String,
}

impl fmt::Display for ClaimRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

/// Where an opaque configuration came from; class configuration comes first and the claim's
/// own configuration after it, so a driver merging them in order lets the claim win.
///
/// Exhaustive on purpose: every caller must handle each source, so a new one should
/// fail their build rather than fall into a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigSource {
    /// From the DeviceClass.
    Class,
    /// From the ResourceClaim.
    Claim,
}

/// One opaque configuration addressed to this driver that applies to a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeviceConfig {
    /// Class or claim.
    pub source: ConfigSource,
    /// The `parameters` object, unvalidated: validating it is the driver's job.
    pub parameters: serde_json::Value,
}

/// One device the scheduler allocated to this driver in a claim.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AllocatedDevice {
    /// The claim request this device satisfies.
    pub request: String,
    /// Pool the device belongs to.
    pub pool: String,
    /// Device name within the pool.
    pub device: String,
    /// Share ID, for devices allocated with consumable capacity.
    pub share_id: Option<String>,
    /// Opaque configurations of this driver that apply to this device, class first.
    pub configs: Vec<DeviceConfig>,
}

/// A claim resolved against the API: only what concerns this driver.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResolvedClaim {
    /// Which claim.
    pub claim: ClaimRef,
    /// The devices allocated to this driver; empty when the claim only uses other drivers.
    pub devices: Vec<AllocatedDevice>,
    /// The full object, for drivers that need more than the allocation.
    pub object: Arc<ResourceClaim>,
}

/// A device as prepared, reported to the kubelet and kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PreparedDevice {
    /// Requests this device satisfies (empty means all requests of the claim).
    pub requests: Vec<String>,
    /// Pool name.
    pub pool: String,
    /// Device name.
    pub device: String,
    /// CDI device IDs the runtime should inject, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cdi_device_ids: Vec<String>,
    /// Share ID, for devices allocated with consumable capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_id: Option<String>,
}

impl PreparedDevice {
    /// The device `device` of `pool`, prepared for `requests` (empty: every request of the
    /// claim), with no CDI IDs and no share; set the public fields for the rest.
    pub fn new(requests: Vec<String>, pool: impl Into<String>, device: impl Into<String>) -> Self {
        Self {
            requests,
            pool: pool.into(),
            device: device.into(),
            cdi_device_ids: Vec::new(),
            share_id: None,
        }
    }
}

/// What a driver returns from [`DraDriver::prepare`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Preparation {
    /// The prepared devices, reported to the kubelet.
    pub devices: Vec<PreparedDevice>,
    /// Anything the driver needs later (for unprepare, or for its runtime hooks); persisted in
    /// the store and handed back after a restart.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Preparation {
    /// One prepared device per allocated device, with no CDI IDs and no driver data: the
    /// answer of a driver that has nothing to set up at prepare time.
    pub fn of_allocation(claim: &ResolvedClaim) -> Self {
        Self {
            devices: claim
                .devices
                .iter()
                .map(|d| PreparedDevice {
                    requests: vec![d.request.clone()],
                    pool: d.pool.clone(),
                    device: d.device.clone(),
                    cdi_device_ids: Vec::new(),
                    share_id: d.share_id.clone(),
                })
                .collect(),
            data: serde_json::Value::Null,
        }
    }
}

/// A claim this plugin prepared, as kept in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedClaim {
    /// Which claim.
    pub claim: ClaimRef,
    /// What the driver prepared.
    pub preparation: Preparation,
    /// The kernel boot it was prepared in. A claim from an earlier boot is prepared again when
    /// the kubelet asks (whatever prepare set up did not survive the reboot), and is still
    /// handed to `unprepare` if the kubelet releases it instead. `None`: prepared while reboot
    /// detection was off (the boot ID could not be read), so it is prepared again once the
    /// boot is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// The driver logic behind the kubelet's DRA calls.
///
/// Calls for the same claim are serialised by the SDK; calls for different claims may run in
/// parallel. A claim already prepared is answered from the stored state without calling
/// `prepare` again, and unpreparing an unknown claim succeeds without calling `unprepare`.
///
/// `unprepare` must nevertheless be idempotent: when a batch's changes cannot be stored the
/// claims it released stay prepared and the kubelet retries, so `unprepare` runs again for a
/// claim it already released.
pub trait DraDriver: Send + Sync + 'static {
    /// Prepares the devices of one claim. Slow work (validation, lookups) belongs here: the
    /// kubelet allows 45 s for a whole batch.
    fn prepare(&self, claim: &ResolvedClaim) -> impl Future<Output = Result<Preparation, DriverError>> + Send;

    /// Releases what `prepare` set up. Receives exactly what `prepare` returned, possibly
    /// after a restart of the plugin. Also called to undo a `prepare` whose batch could not be
    /// stored. Must succeed again for a claim it already released (see the trait's docs).
    fn unprepare(&self, claim: &PreparedClaim) -> impl Future<Output = Result<(), DriverError>> + Send;
}
