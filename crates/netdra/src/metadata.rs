//! Device metadata after the attach (KEP-5304): what the pod's containers read of their
//! interfaces.
//!
//! The kubelet plugin writes each request's metadata file at Prepare with the devices' names
//! only: a network device's name in the pod, its addresses and MAC are known once the plan is
//! made, and true once the attach succeeded. After a successful attach, and before the sandbox
//! hook answers (the runtime resolves the CDI bind mount when it creates the containers, which
//! is after the hook), each request's file is rewritten with the devices' published attributes
//! and their network data — the same data the claim's status carries.

use std::collections::BTreeMap;

use kubeletplugin::{MetadataDevice, RequestDevices};
use netdev::RestoreRecord;

use crate::{plan::ClaimPlan, status::network_data};

/// The metadata of each request of an attached claim: `records` are the interfaces' records in
/// plan order, as the claim's phase holds them. Requests keep the order of their first device.
pub(crate) fn attached_requests(plan: &ClaimPlan, records: &[RestoreRecord]) -> Vec<RequestDevices> {
    let mut requests: Vec<RequestDevices> = Vec::new();
    for (device, record) in plan.devices.iter().zip(records) {
        let entry = MetadataDevice {
            attributes: device.published.attributes.clone().unwrap_or_else(BTreeMap::new),
            network_data: Some(network_data(device, record)),
            ..MetadataDevice::new(&device.pool, &device.device)
        };
        match requests.iter_mut().find(|r| r.request == device.request) {
            Some(request) => request.devices.push(entry),
            None => requests.push(RequestDevices {
                request: device.request.clone(),
                devices: vec![entry],
            }),
        }
    }
    requests
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::resource::v1::DeviceAttribute;
    use kubeletplugin::ClaimRef;
    use netdev::InterfaceConfig;
    use serde_json::json;

    use super::*;
    use crate::{
        driver::InterfacePlan,
        plan::{DevicePlan, PodRef},
    };

    /// A claim of `devices` (request, host interface), each named `net<i>` with one address.
    fn plan(devices: &[(&str, &str)]) -> ClaimPlan {
        let devices = devices
            .iter()
            .enumerate()
            .map(|(i, (request, host))| {
                let config = InterfaceConfig {
                    name: Some(format!("net{i}")),
                    addresses: vec![format!("10.0.{i}.2/24")],
                    ..Default::default()
                };
                DevicePlan {
                    request: (*request).into(),
                    pool: "node".into(),
                    device: format!("d-{host}"),
                    share_id: None,
                    host_interface: (*host).into(),
                    pod_interface: format!("net{i}"),
                    interface: InterfacePlan {
                        config: config.validate().unwrap(),
                        carry_host_addresses: false,
                        placement: Default::default(),
                    },
                    published: serde_json::from_value(
                        json!({"name": format!("d-{host}"), "attributes": {"ifName": {"string": host}}}),
                    )
                    .unwrap(),
                }
            })
            .collect();
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
            devices,
        }
    }

    fn record(device: &DevicePlan, i: usize) -> RestoreRecord {
        serde_json::from_value(json!({
            "host": {"name": device.host_interface, "index": 7 + i, "mtu": 1500, "mac": format!("02:00:00:00:00:0{i}"),
                     "up": true, "addresses": [], "routes": []},
            "netns": "/var/run/netns/x", "nameInPod": device.pod_interface, "macInPod": format!("02:00:00:00:00:0{i}")
        }))
        .unwrap()
    }

    #[test]
    fn devices_are_grouped_by_request_with_their_attributes_and_network_data() {
        let plan = plan(&[("net", "eth1"), ("net", "eth3"), ("extra", "eth5")]);
        let records: Vec<RestoreRecord> = plan.devices.iter().enumerate().map(|(i, d)| record(d, i)).collect();
        let requests = attached_requests(&plan, &records);

        let names: Vec<(&str, Vec<&str>)> = requests
            .iter()
            .map(|r| {
                (
                    r.request.as_str(),
                    r.devices.iter().map(|d| d.device.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(names, [("net", vec!["d-eth1", "d-eth3"]), ("extra", vec!["d-eth5"])]);
        let second = &requests[0].devices[1];
        assert_eq!(
            second.attributes.get("ifName"),
            Some(&DeviceAttribute {
                string: Some("eth3".into()),
                ..DeviceAttribute::default()
            })
        );
        let data = second.network_data.as_ref().expect("network data");
        assert_eq!(data.interface_name.as_deref(), Some("net1"));
        assert_eq!(data.ips.as_deref(), Some(&["10.0.1.2/24".to_string()][..]));
        assert_eq!(data.hardware_address.as_deref(), Some("02:00:00:00:00:01"));
    }

    #[test]
    fn a_claim_without_records_has_no_metadata_to_update() {
        assert!(attached_requests(&plan(&[("net", "eth1")]), &[]).is_empty());
    }
}
