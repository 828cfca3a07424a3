//! Device health for the kubelet (KEP-4680): the state of every published device from what the
//! kernel says of its link, fed to the kubelet plugin's health stream.
//!
//! Where a device's state comes from ([`report`], pure), by the phase of the claim holding it:
//!
//! | The device | Its state |
//! |---|---|
//! | in a pod (`Attached`) | its link in the pod's namespace, judged as in a pod (`netdev::judge`) |
//! | in a pod, but its link is not there | Unhealthy: the interface is gone from the pod |
//! | being moved (`Attaching`, `Detaching`) | Unknown, naming the pod |
//! | `Stranded` | Unhealthy: it could not be returned from the pod (netdra retries) |
//! | otherwise (free, prepared, returned), or shared (its claims' subinterfaces are in pods, it is not) | its link on the host, judged as on the host |
//! | not on the host and not held by a claim | left out: the kubelet reads a device it is no longer told about as Unknown after its window, which is what the protocol gives a device that went away |
//!
//! The shell ([`monitor`]) reads the host's links and the links of the devices in pods every
//! interval and publishes the whole report, changed or not (the plugin's stream sends changes at
//! once and re-sends the rest inside the kubelet's window). A read of the host that fails
//! publishes nothing: the devices decay to Unknown at the kubelet rather than keep a state
//! nobody checked. Each change of a device's state is logged with the pod holding it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::resource::v1::Device;
use kubeletplugin::{DeviceHealth, HealthReporter, HealthStatus};
use netdev::{Health, LinkState, Place, judge};

use crate::{
    driver::NetworkDriver,
    kernel::Kernel,
    lifecycle::{Claim, Phase},
    node::Node,
    plan::PodRef,
};

/// What holds a device, as health sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Held {
    /// In the pod's namespace: its link there (`Err`: why it could not be read), `None` when
    /// it is not there.
    InPod {
        /// The pod.
        pod: PodRef,
        /// Its name in the pod.
        name: String,
        /// What the pod's namespace shows.
        link: Result<Option<LinkState>, String>,
    },
    /// Being moved into or out of the pod.
    Moving {
        /// The pod.
        pod: PodRef,
    },
    /// It could not be returned from the pod.
    Stranded {
        /// The pod.
        pod: PodRef,
    },
}

/// The interface a published device stands for: its `ifName` attribute.
fn if_name(device: &Device) -> Option<&str> {
    device.attributes.as_ref()?.get("ifName")?.string.as_deref()
}

fn status(health: Health) -> HealthStatus {
    match health {
        Health::Healthy => HealthStatus::Healthy,
        Health::Unhealthy => HealthStatus::Unhealthy,
        Health::Unknown => HealthStatus::Unknown,
    }
}

/// The state of each of `published` (pool `pool`), from the host's links and what claims hold
/// (by device name); see the module documentation.
pub(crate) fn report(
    pool: &str,
    published: &[Device],
    host: &[LinkState],
    held: &HashMap<String, Held>,
) -> Vec<DeviceHealth> {
    let host: HashMap<&str, &LinkState> = host.iter().map(|l| (l.name.as_str(), l)).collect();
    published
        .iter()
        .filter_map(|device| {
            let (status, message) = match held.get(&device.name) {
                Some(Held::InPod { pod, name, link }) => match link {
                    Ok(Some(link)) => {
                        let verdict = judge(link, Place::Pod);
                        (status(verdict.health), format!("in pod {pod}: {}", verdict.message))
                    }
                    Ok(None) => (
                        HealthStatus::Unhealthy,
                        format!("interface {name} is gone from pod {pod}'s network namespace"),
                    ),
                    Err(error) => (
                        HealthStatus::Unknown,
                        format!("interface {name} in pod {pod} could not be read: {error}"),
                    ),
                },
                Some(Held::Moving { pod }) => (
                    HealthStatus::Unknown,
                    format!("being moved between the host and pod {pod}"),
                ),
                Some(Held::Stranded { pod }) => (
                    HealthStatus::Unhealthy,
                    format!("could not be returned from pod {pod}; netdra retries"),
                ),
                None => {
                    let verdict = judge(host.get(if_name(device)?)?, Place::Host);
                    (status(verdict.health), verdict.message)
                }
            };
            Some(DeviceHealth {
                pool: pool.to_owned(),
                device: device.name.clone(),
                status,
                message,
            })
        })
        .collect()
}

/// How long one read of a pod's link may take: a namespace that does not answer makes its
/// device Unknown, not the whole report late.
const POD_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The devices `claims` hold, by device name; the links in pods are read through `kernel`, all
/// at once.
async fn held<K: Kernel>(kernel: &K, claims: &BTreeMap<String, Claim>) -> HashMap<String, Held> {
    let reads = claims.values().flat_map(|claim| {
        let pod = &claim.plan.pod;
        claim
            .plan
            .devices
            .iter()
            .enumerate()
            // A shared NIC stays on the host: its health is its own link's, whoever shares it.
            .filter(|(_, device)| device.interface.placement == netdev::Placement::Move)
            .map(move |(i, device)| async move {
                let entry = match &claim.phase {
                    Phase::Attached { records, .. } => {
                        let record = records.get(i)?;
                        let link = match tokio::time::timeout(POD_READ_TIMEOUT, kernel.pod_link(record.clone())).await {
                            Ok(read) => read.map_err(|e| e.to_string()),
                            Err(_) => Err(format!(
                                "its network namespace did not answer within {POD_READ_TIMEOUT:?}"
                            )),
                        };
                        Held::InPod {
                            pod: pod.clone(),
                            name: record.name_in_pod.clone(),
                            link,
                        }
                    }
                    Phase::Attaching { .. } | Phase::Detaching { .. } => Held::Moving { pod: pod.clone() },
                    Phase::Stranded { .. } => Held::Stranded { pod: pod.clone() },
                    Phase::Prepared | Phase::Detached { .. } | Phase::Released => return None,
                };
                Some((device.device.clone(), entry))
            })
    });
    futures::future::join_all(reads).await.into_iter().flatten().collect()
}

/// Reads and publishes the health of the node's devices every `every`, until aborted (its owner,
/// the agent, aborts it; `reporter` is dropped then, which ends the kubelet's streams).
pub(crate) async fn monitor<D: NetworkDriver, K: Kernel>(
    node: Arc<Node<D, K>>,
    pool: String,
    reporter: HealthReporter,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: HashMap<String, (HealthStatus, String)> = HashMap::new();
    let mut failing = false;
    loop {
        tick.tick().await;
        let host = match node.kernel().host_links().await {
            Ok(host) => {
                if failing {
                    tracing::info!("device health: the host's links can be read again");
                }
                failing = false;
                host
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "device health: the host's links cannot be read; nothing is reported (the kubelet will read the devices as Unknown)");
                }
                failing = true;
                continue;
            }
        };
        let claims = node.claims();
        let held = held(node.kernel(), &claims).await;
        let published = node.published.borrow().clone();
        let devices = report(&pool, &published, &host, &held);
        for d in &devices {
            let now = (d.status, d.message.clone());
            if last.get(&d.device) != Some(&now) {
                match d.status {
                    HealthStatus::Healthy => tracing::info!(device = %d.device, message = %d.message, "device healthy"),
                    HealthStatus::Unhealthy => {
                        tracing::warn!(device = %d.device, message = %d.message, "device unhealthy")
                    }
                    HealthStatus::Unknown => {
                        tracing::info!(device = %d.device, message = %d.message, "device health unknown")
                    }
                }
                last.insert(d.device.clone(), now);
            }
        }
        last.retain(|device, _| devices.iter().any(|d| &d.device == device));
        reporter.publish(devices);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::resource::v1::DeviceAttribute;
    use netdev::OperState;

    use super::*;

    fn device(name: &str, if_name: &str) -> Device {
        Device {
            name: name.into(),
            attributes: Some(
                [(
                    "ifName".to_owned(),
                    DeviceAttribute {
                        string: Some(if_name.into()),
                        ..Default::default()
                    },
                )]
                .into(),
            ),
            ..Default::default()
        }
    }

    fn link(name: &str, admin_up: bool, carrier: bool, oper: OperState) -> LinkState {
        LinkState {
            name: name.into(),
            admin_up,
            carrier,
            oper,
        }
    }

    fn pod() -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
        }
    }

    fn states(report: &[DeviceHealth]) -> Vec<(&str, HealthStatus)> {
        report.iter().map(|d| (d.device.as_str(), d.status)).collect()
    }

    #[test]
    fn free_devices_are_judged_on_the_host_and_vanished_ones_left_out() {
        let published = [
            device("eth1", "eth1"),
            device("eth2", "eth2"),
            device("eth3", "eth3"),
            device("gone", "gone"),
        ];
        let host = [
            link("eth1", true, true, OperState::Up),
            link("eth2", true, false, OperState::Down),
            link("eth3", false, false, OperState::Down),
        ];
        let report = report("node-a", &published, &host, &HashMap::new());
        assert_eq!(
            states(&report),
            [
                ("eth1", HealthStatus::Healthy),
                ("eth2", HealthStatus::Unhealthy),
                ("eth3", HealthStatus::Unknown),
            ]
        );
        assert!(report.iter().all(|d| d.pool == "node-a"));
        assert!(report[1].message.contains("eth2"), "{}", report[1].message);
    }

    #[test]
    fn held_devices_are_judged_where_they_are() {
        let published = [
            device("a", "eth1"),
            device("b", "eth2"),
            device("c", "eth3"),
            device("d", "eth4"),
            device("e", "eth5"),
            device("f", "eth6"),
        ];
        // The host still has links of those names: a held device is never judged by them.
        let host: Vec<_> = (1..=6)
            .map(|i| link(&format!("eth{i}"), true, true, OperState::Up))
            .collect();
        let in_pod = |link: Result<Option<LinkState>, String>| Held::InPod {
            pod: pod(),
            name: "net1".into(),
            link,
        };
        let held = HashMap::from([
            (
                "a".to_owned(),
                in_pod(Ok(Some(link("net1", true, true, OperState::Up)))),
            ),
            (
                "b".to_owned(),
                in_pod(Ok(Some(link("net1", true, false, OperState::LowerLayerDown)))),
            ),
            ("c".to_owned(), in_pod(Ok(None))),
            ("d".to_owned(), in_pod(Err("namespace unreadable".into()))),
            ("e".to_owned(), Held::Moving { pod: pod() }),
            ("f".to_owned(), Held::Stranded { pod: pod() }),
        ]);
        let report = report("node-a", &published, &host, &held);
        assert_eq!(
            states(&report),
            [
                ("a", HealthStatus::Healthy),
                ("b", HealthStatus::Unhealthy),
                ("c", HealthStatus::Unhealthy),
                ("d", HealthStatus::Unknown),
                ("e", HealthStatus::Unknown),
                ("f", HealthStatus::Unhealthy),
            ]
        );
        for d in &report {
            assert!(
                d.message.contains("default/web"),
                "every held device names its pod: {}",
                d.message
            );
        }
        assert!(report[1].message.contains("net1"), "{}", report[1].message);
    }
}
