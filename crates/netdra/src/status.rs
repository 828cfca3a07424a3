//! The claim's `status.devices[]` entries this driver writes, and the loop that converges the
//! API server to them.
//!
//! What a claim's status says is a pure function of where its interfaces are ([`desired`]):
//! `Ready=True` with `networkData` while attached; `Ready=False` with reason `Detached` only
//! when an interface is home, `Gone` when it was destroyed with its namespace, `Stranded`
//! (saying where it is) when it could not be returned, `AttachFailed`, `NoNetworkNamespace`… with the
//! message of what happened; no entries for a claim that is only prepared or was unprepared.
//! The node derives it after every step and at start-up for every claim it holds, so a write
//! lost in a crash is made again. The [`StatusWriter`] reads the claim, replaces this driver's entries in `status.devices` (other
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
    api::resource::v1::{AllocatedDeviceStatus, NetworkDeviceData},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kubeletplugin::ClaimRef;
use netdev::RestoreRecord;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use crate::{
    api::{ApiError, ClaimApi},
    lifecycle::{Claim, Outcome, Phase},
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
        /// e.g. `AttachFailed`, `NoNetworkNamespace`, `Detached`.
        reason: &'a str,
        /// What happened, naming pod and device.
        message: &'a str,
    },
}

/// The status entry of one device.
pub fn device_status(driver: &str, plan: &DevicePlan, state: &DeviceState<'_>) -> AllocatedDeviceStatus {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let (condition, network_data) = match state {
        DeviceState::Attached(record) => (
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
            Some(network_data(plan, record)),
        ),
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

/// What the pod has of an attached device: its name in the pod, its addresses (those the config
/// gives, or the host's carried over), its MAC.
pub(crate) fn network_data(plan: &DevicePlan, record: &RestoreRecord) -> NetworkDeviceData {
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
    NetworkDeviceData {
        interface_name: Some(record.name_in_pod.clone()),
        ips: (!ips.is_empty()).then_some(ips),
        hardware_address: record.mac_in_pod.map(|m| m.to_string()),
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
/// drivers' entries stay as they are and where they are; this driver's follow them. A condition
/// that says what the server's entry for the same device already says keeps its
/// `lastTransitionTime`: nothing transitioned. `None` when the server already says exactly this
/// (no write needed).
///
/// # Errors
/// When an entry cannot be represented as JSON (it always can; serde's signature says it may not).
pub fn merged_devices(
    current: &[Value],
    driver: &str,
    entries: &[AllocatedDeviceStatus],
) -> Result<Option<Vec<Value>>, serde_json::Error> {
    let ours: Vec<&Value> = current
        .iter()
        .filter(|d| d.get("driver").and_then(Value::as_str) == Some(driver))
        .collect();
    let mut devices: Vec<Value> = current
        .iter()
        .filter(|d| d.get("driver").and_then(Value::as_str) != Some(driver))
        .cloned()
        .collect();
    let mut wanted = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut value = serde_json::to_value(entry)?;
        if let Some(old) = ours.iter().find(|o| same_device(o, &value)) {
            keep_transition_times(&mut value, old);
        }
        wanted.push(value);
    }
    let unchanged = ours.len() == wanted.len() && wanted.iter().all(|w| ours.contains(&w));
    if unchanged {
        return Ok(None);
    }
    devices.extend(wanted);
    Ok(Some(devices))
}

fn same_device(a: &Value, b: &Value) -> bool {
    ["pool", "device", "shareID"].iter().all(|k| a.get(k) == b.get(k))
}

/// Copies `lastTransitionTime` from `old`'s conditions into `new`'s where type and status agree.
fn keep_transition_times(new: &mut Value, old: &Value) {
    let Some(old_conditions) = old.get("conditions").and_then(Value::as_array) else {
        return;
    };
    let Some(conditions) = new.get_mut("conditions").and_then(Value::as_array_mut) else {
        return;
    };
    for condition in conditions {
        let before = old_conditions
            .iter()
            .find(|o| o.get("type") == condition.get("type") && o.get("status") == condition.get("status"));
        if let (Some(before), Some(time)) = (before, condition.get_mut("lastTransitionTime"))
            && let Some(old_time) = before.get("lastTransitionTime")
        {
            *time = old_time.clone();
        }
    }
}

/// The JSON merge patch of the claim's `status` subresource that sets `devices`; the API
/// server refuses it (409) unless the claim is still at `resource_version` with the claim's UID.
pub fn status_patch(claim: &ClaimRef, resource_version: &str, devices: &[Value]) -> Value {
    json!({
        "metadata": {"uid": claim.uid, "resourceVersion": resource_version},
        "status": {"devices": devices},
    })
}

/// What the status of a claim should say, derived from where its interfaces are; `None`
/// while an attach or detach is under way (its end says it).
pub fn desired(driver: &str, claim: &Claim) -> Option<Vec<AllocatedDeviceStatus>> {
    let plan = &claim.plan;
    let pod = &plan.pod;
    if let Some(note) = &claim.note
        && claim.phase.is_home()
    {
        let state = DeviceState::NotReady {
            reason: &note.reason,
            message: &note.message,
        };
        return Some(claim_statuses(driver, plan, &vec![state; plan.devices.len()]));
    }
    match &claim.phase {
        Phase::Prepared | Phase::Released => Some(Vec::new()),
        Phase::Attaching { .. } | Phase::Detaching { .. } => None,
        Phase::Attached { records, .. } => {
            let entries: Vec<AllocatedDeviceStatus> = plan
                .devices
                .iter()
                .zip(records)
                .map(|(d, r)| device_status(driver, d, &DeviceState::Attached(r)))
                .collect();
            Some(entries)
        }
        Phase::Detached { outcomes, why } | Phase::Stranded { outcomes, why, .. } => {
            let netns = match &claim.phase {
                Phase::Stranded { netns, .. } => Some(netns),
                _ => None,
            };
            let messages: Vec<(&'static str, String)> = plan
                .devices
                .iter()
                .zip(outcomes)
                .map(|(d, o)| outcome_condition(&d.host_interface, o, why, pod, netns))
                .collect();
            let states: Vec<DeviceState<'_>> = messages
                .iter()
                .map(|(reason, message)| DeviceState::NotReady { reason, message })
                .collect();
            Some(claim_statuses(driver, plan, &states))
        }
    }
}

fn outcome_condition(
    host: &str,
    outcome: &Outcome,
    why: &str,
    pod: &crate::plan::PodRef,
    netns: Option<&crate::lifecycle::NetnsRef>,
) -> (&'static str, String) {
    match outcome {
        Outcome::Returned => ("Detached", format!("{host} returned to the host: {why}")),
        Outcome::FoundOnHost { name } => (
            "Detached",
            format!("{host} found on the host as {name} and restored: {why}"),
        ),
        Outcome::Vanished => (
            "Gone",
            format!("{host} was destroyed with pod {pod}'s network namespace: {why}"),
        ),
        Outcome::Stranded { error } => (
            "Stranded",
            format!(
                "{host} could not be returned from pod {pod}'s network namespace {}: {error}",
                netns.map(ToString::to_string).unwrap_or_default()
            ),
        ),
    }
}

/// What one write attempt found.
enum Written {
    /// The entries are on the claim (written now, or already there).
    Done,
    /// The claim is gone or was re-created with another UID: nothing to write to.
    Gone,
}

/// Why one write attempt failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    /// The API server's answer, or no answer.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A read without a resourceVersion cannot be a precondition.
    #[error("claim {0} was read without a resourceVersion")]
    NoResourceVersion(ClaimRef),
    /// An entry did not encode.
    #[error("claim {0}: encoding its status entries: {1}")]
    Encode(ClaimRef, serde_json::Error),
}

/// One read-merge-write of a claim's entries.
async fn write(
    api: &dyn ClaimApi,
    claim: &ClaimRef,
    driver: &str,
    entries: &[AllocatedDeviceStatus],
) -> Result<Written, WriteError> {
    // The claim itself, not its status subresource: the same object, and a verb the driver
    // already holds (it reads claims at Prepare).
    let Some(current) = api.get(claim).await? else {
        return Ok(Written::Gone);
    };
    if current.uid.as_deref() != Some(claim.uid.as_str()) {
        return Ok(Written::Gone);
    }
    let Some(resource_version) = current.resource_version.as_deref() else {
        return Err(WriteError::NoResourceVersion(claim.clone()));
    };
    let Some(devices) =
        merged_devices(&current.devices, driver, entries).map_err(|e| WriteError::Encode(claim.clone(), e))?
    else {
        return Ok(Written::Done);
    };
    let body = status_patch(claim, resource_version, &devices);
    api.patch_status(claim, driver, body).await?;
    Ok(Written::Done)
}

/// Converges the claims' status entries to what the node's state says, in the background.
///
/// Level-triggered: the desired entries of a claim replace any not yet written; a write that
/// fails (a conflict, a refusal, no answer) is retried with backoff until the server holds
/// them or the claim is gone. Dropping the writer stops it; entries not yet written are
/// derived again from the journal by the next agent.
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
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Conflicts re-read at once this many times before the write backs off like any failure.
const CONFLICT_RETRIES: u32 = 3;

impl StatusWriter {
    /// Starts the writer for driver (and field manager) `driver`, counting its writes in
    /// `metrics`. `settled` hears of each claim whose desired entries the server now holds
    /// (or that is gone).
    pub(crate) fn start(
        api: Arc<dyn ClaimApi>,
        driver: &str,
        metrics: Metrics,
        settled: mpsc::UnboundedSender<ClaimRef>,
    ) -> Self {
        let desired: Arc<Mutex<HashMap<ClaimRef, Vec<AllocatedDeviceStatus>>>> = Arc::default();
        let (wake, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(api, driver.to_owned(), desired.clone(), metrics, rx, settled));
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
    api: Arc<dyn ClaimApi>,
    driver: String,
    desired: Arc<Mutex<HashMap<ClaimRef, Vec<AllocatedDeviceStatus>>>>,
    metrics: Metrics,
    mut wake: mpsc::UnboundedReceiver<ClaimRef>,
    settled: mpsc::UnboundedSender<ClaimRef>,
) {
    // Claims due for a write, with their attempt count and when.
    let mut due: BTreeMap<ClaimRef, (u32, Instant)> = BTreeMap::new();
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
            match write(&*api, &claim, &driver, &entries).await {
                Ok(written) => {
                    metrics.status_written(true);
                    let mut map = desired.lock();
                    // A newer desired state that arrived during the write is written next.
                    if map.get(&claim) == Some(&entries) {
                        map.remove(&claim);
                        drop(map);
                        let _ = settled.send(claim.clone());
                    }
                    match written {
                        Written::Done => tracing::debug!(%claim, entries = entries.len(), "claim status written"),
                        Written::Gone => tracing::info!(%claim, "claim gone or re-created; its status is not written"),
                    }
                }
                // Another writer came first: read again at once, a few times, then back off.
                Err(WriteError::Api(e)) if e.code() == Some(409) && attempts < CONFLICT_RETRIES => {
                    metrics.status_written(false);
                    tracing::debug!(%claim, "claim changed during the status write; reading it again");
                    due.insert(claim, (attempts + 1, Instant::now()));
                }
                Err(e) => {
                    // Refusals too (422, 403): the state may change (an allocation, a grant)
                    // and the desired entries are still true; converge when the server lets us.
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
                    placement: Default::default(),
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
        let devices = merged_devices(&[], "net.x", &entries).unwrap().unwrap();
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
        let merged = merged_devices(&[other.clone(), stale], "net.x", &entries)
            .unwrap()
            .unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!(
            merged[0], other,
            "another driver's entry is untouched, unknown fields included"
        );
        assert_eq!(merged[1]["device"], "d0");
        // An empty list removes exactly this driver's entries.
        assert_eq!(merged_devices(&merged, "net.x", &[]).unwrap(), Some(vec![other]));
    }

    #[test]
    fn an_unchanged_status_is_not_written_and_a_kept_condition_keeps_its_transition_time() {
        let entries = claim_statuses(
            "net.x",
            &plan(false),
            &[DeviceState::NotReady {
                reason: "Detached",
                message: "m",
            }],
        );
        let mut on_server = serde_json::to_value(&entries[0]).unwrap();
        on_server["conditions"][0]["lastTransitionTime"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(
            merged_devices(std::slice::from_ref(&on_server), "net.x", &entries).unwrap(),
            None,
            "the same condition at another time is no change"
        );
        let ready = claim_statuses("net.x", &plan(false), &[DeviceState::Attached(&record())]);
        let merged = merged_devices(&[on_server], "net.x", &ready).unwrap().unwrap();
        assert_ne!(merged[0]["conditions"][0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
    }

    #[test]
    fn the_status_follows_the_phase() {
        use crate::lifecycle::{NetnsRef, Note};
        let netns = NetnsRef {
            path: "/var/run/netns/p".into(),
            inode: 9,
        };
        let mut claim = Claim::prepared(plan(false), true);
        let reasons = |claim: &Claim| {
            desired("net.x", claim).map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        let c = &e.conditions.as_ref().unwrap()[0];
                        format!("{}/{}: {}", c.status, c.reason, c.message)
                    })
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(reasons(&claim), Some(vec![]), "only prepared: no entries");
        claim.phase = Phase::Attaching {
            netns: netns.clone(),
            records: vec![record()],
        };
        assert_eq!(reasons(&claim), None, "under way: its end says it");
        claim.phase = Phase::Attached {
            netns: netns.clone(),
            records: vec![record()],
        };
        assert!(reasons(&claim).unwrap()[0].starts_with("True/InterfaceAttached"));
        for (outcome, expected) in [
            (Outcome::Returned, "False/Detached: eth1 returned to the host: stopped"),
            (
                Outcome::FoundOnHost { name: "dev3".into() },
                "False/Detached: eth1 found on the host as dev3 and restored: stopped",
            ),
            (
                Outcome::Vanished,
                "False/Gone: eth1 was destroyed with pod ns/p (uid pu)'s network namespace: stopped",
            ),
        ] {
            claim.phase = Phase::Detached {
                outcomes: vec![outcome],
                why: "stopped".into(),
            };
            assert_eq!(reasons(&claim).unwrap()[0], expected);
        }
        claim.phase = Phase::Stranded {
            netns,
            records: vec![record()],
            outcomes: vec![Outcome::Stranded { error: "EBUSY".into() }],
            why: "stopped".into(),
        };
        assert_eq!(
            reasons(&claim).unwrap()[0],
            "False/Stranded: eth1 could not be returned from pod ns/p (uid pu)'s network namespace /var/run/netns/p (net:[9]): EBUSY"
        );
        claim.phase = Phase::Prepared;
        claim.note = Some(Note {
            reason: "AttachFailed".into(),
            message: "boom".into(),
        });
        assert_eq!(reasons(&claim).unwrap()[0], "False/AttachFailed: boom");
        claim.phase = Phase::Released;
        claim.note = None;
        assert_eq!(reasons(&claim), Some(vec![]), "released: entries removed");
    }
}
