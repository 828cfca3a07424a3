//! The claim's `status.devices[]` entries this driver writes, and the queue that writes them.
//!
//! Entries are plain data built from the plan and what happened ([`DeviceState`]); the
//! [`StatusWriter`] applies them by server-side apply to the claim's `status` subresource
//! under the driver's field manager, so other drivers' entries are left alone and an empty
//! list removes exactly this driver's entries. Writes happen on a task of their own, with
//! retry and backoff: a hook never waits for the API server and never fails because of it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::resource::v1::{AllocatedDeviceStatus, NetworkDeviceData, ResourceClaim},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::api::{Api, Patch, PatchParams};
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

/// The server-side apply body that makes `entries` this driver's entries of the claim.
pub fn apply_body(claim: &ClaimRef, entries: &[AllocatedDeviceStatus]) -> Value {
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        // The UID makes the API server refuse the write if the claim was re-created meanwhile.
        "metadata": {"name": claim.name, "namespace": claim.namespace, "uid": claim.uid},
        "status": {"devices": entries},
    })
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
    let params = PatchParams::apply(&driver).force();
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
            let api: Api<ResourceClaim> = Api::namespaced(client.clone(), &claim.namespace);
            let body = apply_body(&claim, &entries);
            match api.patch_status(&claim.name, &params, &Patch::Apply(&body)).await {
                Ok(_) => {
                    metrics.status_written(true);
                    let mut map = desired.lock();
                    // Keep a newer desired state that arrived during the write.
                    if map.get(&claim) == Some(&entries) {
                        map.remove(&claim);
                    }
                    tracing::debug!(%claim, entries = entries.len(), "claim status written");
                }
                Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {
                    metrics.status_written(false);
                    desired.lock().remove(&claim);
                    // Gone, re-created (UID precondition), or refused: a retry cannot help.
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
        let body = apply_body(&plan(false).claim, &entries);
        assert_eq!(body["metadata"]["uid"], "u");
        assert_eq!(body["status"]["devices"][0]["device"], "d0");
    }
}
