//! The claim's `status.devices[]` entries this driver writes, and the queue that writes them.
//!
//! Entries are plain data built from the plan and what happened ([`DeviceState`]). The
//! [`StatusWriter`] reads the claim, replaces this driver's entries in `status.devices` (other
//! drivers' entries are kept as they are; an empty list removes exactly this driver's), and
//! writes the list back as a JSON merge patch of the `status` subresource with the claim's
//! resourceVersion and UID as preconditions: a concurrent writer makes it read again, a
//! re-created claim is left alone. Writes happen on a task of their own, with retry and
//! backoff: a hook never waits for the API server and never fails because of it.
//!
//! Not server-side apply, though the list is a list-map made for it: the real API server (1.36)
//! refuses an apply to a claim's status when the allocation's opaque parameters are not stored
//! with their keys in sorted order. It re-encodes the allocation while merging, sees it changed
//! and answers `422 status.allocation: field is immutable`. Any client that keeps its own key
//! order (all but kubectl, which sorts) creates such claims; a merge patch leaves the allocation's
//! bytes alone.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::resource::v1::{AllocatedDeviceStatus, NetworkDeviceData, ResourceClaim},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{
    api::{Api, DynamicObject, Patch, PatchParams},
    discovery::ApiResource,
};
use kubeletplugin::ClaimRef;
use netdev::RestoreRecord;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use crate::{
    metrics::Metrics,
    plan::{ClaimPlan, DevicePlan},
};

/// The condition type netdra writes on each device entry.
pub const READY: &str = "Ready";

/// What happened to one planned device, for its status entry.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceState<'a> {
    /// Attached: the record says how it looks in the pod.
    Attached(&'a RestoreRecord),
    /// Not attached, with the reason (a CamelCase word) and a message for people.
    NotReady {
        /// e.g. `AttachFailed`, `HookMissed`, `Detached`.
        reason: &'a str,
        /// What happened, naming pod and device.
        message: &'a str,
    },
}

/// The status entry of one device.
pub fn device_status(driver: &str, plan: &DevicePlan, state: &DeviceState<'_>) -> AllocatedDeviceStatus {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let (condition, network_data) = match state {
        DeviceState::Attached(record) => {
            let ips: Vec<String> = if plan.interface.carry_host_addresses {
                record.host.addresses.iter().map(|a| a.address.to_string()).collect()
            } else {
                plan.interface
                    .config
                    .addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            };
            (
                Condition {
                    type_: READY.into(),
                    status: "True".into(),
                    reason: "InterfaceAttached".into(),
                    message: format!(
                        "{} is {} in the pod's network namespace",
                        plan.host_interface, record.name_in_pod
                    ),
                    last_transition_time: now,
                    observed_generation: None,
                },
                Some(NetworkDeviceData {
                    interface_name: Some(record.name_in_pod.clone()),
                    ips: (!ips.is_empty()).then_some(ips),
                    hardware_address: record.mac_in_pod.map(|m| m.to_string()),
                }),
            )
        }
        DeviceState::NotReady { reason, message } => (
            Condition {
                type_: READY.into(),
                status: "False".into(),
                reason: (*reason).into(),
                message: (*message).into(),
                last_transition_time: now,
                observed_generation: None,
            },
            None,
        ),
    };
    AllocatedDeviceStatus {
        driver: driver.into(),
        pool: plan.pool.clone(),
        device: plan.device.clone(),
        share_id: plan.share_id.clone(),
        conditions: Some(vec![condition]),
        network_data,
        data: None,
    }
}

/// Every entry of a claim in one state (all attached, or all not ready for one reason).
pub fn claim_statuses(driver: &str, plan: &ClaimPlan, states: &[DeviceState<'_>]) -> Vec<AllocatedDeviceStatus> {
    plan.devices
        .iter()
        .zip(states)
        .map(|(d, s)| device_status(driver, d, s))
        .collect()
}

/// The claim's `status.devices` with this driver's entries replaced by `entries`: other
/// drivers' entries stay as they are and where they are; this driver's follow them.
///
/// # Errors
/// When an entry cannot be represented as JSON (it always can; serde's signature says it may not).
pub fn merged_devices(
    current: &[Value],
    driver: &str,
    entries: &[AllocatedDeviceStatus],
) -> Result<Vec<Value>, serde_json::Error> {
    let mut devices: Vec<Value> = current
        .iter()
        .filter(|d| d.get("driver").and_then(Value::as_str) != Some(driver))
        .cloned()
        .collect();
    for entry in entries {
        devices.push(serde_json::to_value(entry)?);
    }
    Ok(devices)
}

/// The JSON merge patch of the claim's `status` subresource that sets `devices`; the API
/// server refuses it (409) unless the claim is still at `resource_version` with the claim's UID.
pub fn status_patch(claim: &ClaimRef, resource_version: &str, devices: &[Value]) -> Value {
    json!({
        "metadata": {"uid": claim.uid, "resourceVersion": resource_version},
        "status": {"devices": devices},
    })
}

/// What one write attempt found.
enum Written {
    /// The entries are on the claim.
    Done,
    /// The claim is gone or was re-created with another UID: nothing to write to.
    Gone,
}

/// Why one write attempt failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    /// The API server's answer, or no answer.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// A read without a resourceVersion cannot be a precondition.
    #[error("claim {0} was read without a resourceVersion")]
    NoResourceVersion(ClaimRef),
    /// An entry did not encode.
    #[error("claim {0}: encoding its status entries: {1}")]
    Encode(ClaimRef, serde_json::Error),
}

/// One read-merge-write of a claim's entries.
async fn write(
    api: &Api<DynamicObject>,
    claim: &ClaimRef,
    driver: &str,
    entries: &[AllocatedDeviceStatus],
) -> Result<Written, WriteError> {
    // The claim itself, not its status subresource: the same object, and a verb the driver
    // already holds (it reads claims at Prepare).
    let current = match api.get(&claim.name).await {
        Ok(current) => current,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Written::Gone),
        Err(e) => return Err(e.into()),
    };
    if current.metadata.uid.as_deref() != Some(claim.uid.as_str()) {
        return Ok(Written::Gone);
    }
    let Some(resource_version) = current.metadata.resource_version.as_deref() else {
        return Err(WriteError::NoResourceVersion(claim.clone()));
    };
    let listed = current
        .data
        .pointer("/status/devices")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let devices = merged_devices(&listed, driver, entries).map_err(|e| WriteError::Encode(claim.clone(), e))?;
    let params = PatchParams {
        field_manager: Some(driver.to_owned()),
        ..PatchParams::default()
    };
    let body = status_patch(claim, resource_version, &devices);
    api.patch_status(&claim.name, &params, &Patch::Merge(&body)).await?;
    Ok(Written::Done)
}

/// Writes claim status entries in the background. Dropping it stops the writer; entries not
/// yet written are lost (the next agent writes them again from its state).
pub struct StatusWriter {
    desired: Arc<Mutex<HashMap<ClaimRef, Vec<AllocatedDeviceStatus>>>>,
    wake: mpsc::UnboundedSender<ClaimRef>,
    task: JoinHandle<()>,
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Conflicts re-read at once this many times before the write backs off like any failure.
const CONFLICT_RETRIES: u32 = 3;

impl StatusWriter {
    /// Starts the writer for driver (and field manager) `driver`, counting its writes in
    /// `metrics`.
    pub fn start(client: kube::Client, driver: &str, metrics: Metrics) -> Self {
        let desired: Arc<Mutex<HashMap<ClaimRef, Vec<AllocatedDeviceStatus>>>> = Arc::default();
        let (wake, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(client, driver.to_owned(), desired.clone(), metrics, rx));
        Self { desired, wake, task }
    }

    /// Makes `entries` this driver's entries of `claim` (an empty list removes them). Returns
    /// at once; a later call for the same claim replaces an entry not yet written.
    pub fn set(&self, claim: &ClaimRef, entries: Vec<AllocatedDeviceStatus>) {
        self.desired.lock().insert(claim.clone(), entries);
        let _ = self.wake.send(claim.clone());
    }

    /// Claims whose entries are not written yet.
    pub fn pending(&self) -> usize {
        self.desired.lock().len()
    }
}

async fn run(
    client: kube::Client,
    driver: String,
    desired: Arc<Mutex<HashMap<ClaimRef, Vec<AllocatedDeviceStatus>>>>,
    metrics: Metrics,
    mut wake: mpsc::UnboundedReceiver<ClaimRef>,
) {
    // Claims due for a write, with their attempt count and when.
    let mut due: BTreeMap<ClaimRef, (u32, Instant)> = BTreeMap::new();
    let resource = ApiResource::erase::<ResourceClaim>(&());
    loop {
        let next = due.values().map(|(_, at)| *at).min();
        tokio::select! {
            claim = wake.recv() => match claim {
                Some(claim) => { due.insert(claim, (0, Instant::now())); }
                None => return,
            },
            () = async { tokio::time::sleep_until(next.unwrap_or_else(Instant::now)).await }, if next.is_some() => {}
        }
        let now = Instant::now();
        let ready: Vec<(ClaimRef, u32)> = due
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(c, (n, _))| (c.clone(), *n))
            .collect();
        for (claim, attempts) in ready {
            due.remove(&claim);
            let Some(entries) = desired.lock().get(&claim).cloned() else {
                continue;
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &claim.namespace, &resource);
            match write(&api, &claim, &driver, &entries).await {
                Ok(Written::Done) => {
                    metrics.status_written(true);
                    let mut map = desired.lock();
                    // Keep a newer desired state that arrived during the write.
                    if map.get(&claim) == Some(&entries) {
                        map.remove(&claim);
                    }
                    tracing::debug!(%claim, entries = entries.len(), "claim status written");
                }
                Ok(Written::Gone) => {
                    desired.lock().remove(&claim);
                    tracing::info!(%claim, "claim gone or re-created; its status is not written");
                }
                // Another writer came first: read again at once, a few times, then back off.
                Err(WriteError::Api(kube::Error::Api(s))) if s.code == 409 && attempts < CONFLICT_RETRIES => {
                    metrics.status_written(false);
                    tracing::debug!(%claim, "claim changed during the status write; reading it again");
                    due.insert(claim, (attempts + 1, Instant::now()));
                }
                Err(WriteError::Api(kube::Error::Api(s))) if s.code == 422 || s.code == 400 => {
                    metrics.status_written(false);
                    desired.lock().remove(&claim);
                    // Refused as invalid: a retry cannot help.
                    tracing::warn!(%claim, code = s.code, message = %s.message, "claim status not written; not retrying");
                }
                Err(e) => {
                    metrics.status_written(false);
                    let backoff = FIRST_BACKOFF
                        .saturating_mul(2u32.saturating_pow(attempts.min(8)))
                        .min(MAX_BACKOFF);
                    tracing::warn!(%claim, error = %e, retry_in = ?backoff, "claim status write failed; will retry");
                    due.insert(claim, (attempts + 1, Instant::now() + backoff));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{driver::InterfacePlan, plan::PodRef};
    use netdev::InterfaceConfig;

    fn plan(carry: bool) -> ClaimPlan {
        let config = InterfaceConfig {
            name: Some("net1".into()),
            addresses: if carry { vec![] } else { vec!["10.10.0.2/24".into()] },
            ..Default::default()
        };
        ClaimPlan {
            claim: ClaimRef {
                namespace: "ns".into(),
                name: "c".into(),
                uid: "u".into(),
            },
            pod: PodRef {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "pu".into(),
            },
            devices: vec![DevicePlan {
                request: "nic".into(),
                pool: "node".into(),
                device: "d0".into(),
                share_id: None,
                host_interface: "eth1".into(),
                pod_interface: "net1".into(),
                interface: InterfacePlan {
                    config: config.validate().unwrap(),
                    carry_host_addresses: carry,
                },
                published: Default::default(),
            }],
        }
    }

    fn record() -> RestoreRecord {
        serde_json::from_value(json!({
            "host": {"name": "eth1", "index": 7, "mtu": 1500, "mac": "02:00:00:00:00:07", "up": true,
                     "addresses": [{"address": "192.0.2.9/24", "scope": 0}], "routes": []},
            "netns": "/var/run/netns/x", "nameInPod": "net1", "macInPod": "02:00:00:00:00:07"
        }))
        .unwrap()
    }

    #[test]
    fn an_attached_device_reports_its_network_data() {
        let record = record();
        for (carry, ips) in [(false, "10.10.0.2/24"), (true, "192.0.2.9/24")] {
            let entries = claim_statuses("net.x", &plan(carry), &[DeviceState::Attached(&record)]);
            let e = serde_json::to_value(&entries[0]).unwrap();
            assert_eq!(e["driver"], "net.x");
            assert_eq!((e["pool"].as_str(), e["device"].as_str()), (Some("node"), Some("d0")));
            assert_eq!(
                e["networkData"],
                json!({"interfaceName": "net1", "ips": [ips], "hardwareAddress": "02:00:00:00:00:07"})
            );
            assert_eq!(e["conditions"][0]["type"], "Ready");
            assert_eq!(e["conditions"][0]["status"], "True");
        }
    }

    #[test]
    fn a_failure_reports_reason_and_message_without_network_data() {
        let state = DeviceState::NotReady {
            reason: "AttachFailed",
            message: "pod ns/p: cannot attach",
        };
        let entries = claim_statuses("net.x", &plan(false), &[state]);
        let e = serde_json::to_value(&entries[0]).unwrap();
        assert!(e.get("networkData").is_none());
        assert_eq!(e["conditions"][0]["status"], "False");
        assert_eq!(e["conditions"][0]["reason"], "AttachFailed");
        let devices = merged_devices(&[], "net.x", &entries).unwrap();
        let body = status_patch(&plan(false).claim, "41", &devices);
        assert_eq!(body["metadata"]["uid"], "u");
        assert_eq!(body["metadata"]["resourceVersion"], "41");
        assert_eq!(body["status"]["devices"][0]["device"], "d0");
    }

    #[test]
    fn other_drivers_entries_are_kept_and_this_drivers_replaced() {
        let other = json!({"driver": "gpu.example.com", "pool": "node", "device": "gpu0", "data": {"x": 1}});
        let stale = json!({"driver": "net.x", "pool": "node", "device": "old"});
        let entries = claim_statuses(
            "net.x",
            &plan(false),
            &[DeviceState::NotReady {
                reason: "HookMissed",
                message: "m",
            }],
        );
        let merged = merged_devices(&[other.clone(), stale], "net.x", &entries).unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!(
            merged[0], other,
            "another driver's entry is untouched, unknown fields included"
        );
        assert_eq!(merged[1]["device"], "d0");
        // An empty list removes exactly this driver's entries.
        assert_eq!(merged_devices(&merged, "net.x", &[]).unwrap(), vec![other]);
    }
}
