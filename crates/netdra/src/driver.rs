//! What a driver author implements: [`NetworkDriver`].
//!
//! The framework does everything a DRA network driver shares (the kubelet and runtime
//! plumbing, the checkpoint, moving interfaces, claim status); a driver decides only what is
//! specific to it: which devices it publishes and how, and how a claim's configuration turns
//! into one interface's configuration inside the pod.

use std::num::NonZeroU32;

use k8s_openapi::api::resource::v1::{CapacityRequestPolicy, CapacityRequestPolicyRange, Device, DeviceCapacity};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubeletplugin::{ClaimRef, DriverError};
use netdev::{InterfaceConfig, MacvlanMode, Placement, RestoreRecord, ValidConfig};

use crate::plan::PodRef;

/// One allocated device to plan for, with everything the framework knows of it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct InterfaceRequest<'a> {
    /// The claim.
    pub claim: &'a ClaimRef,
    /// The claim request the device satisfies.
    pub request: &'a str,
    /// The device as this node publishes it (name and attributes).
    pub device: &'a Device,
    /// The interface's name on the host.
    pub host_interface: &'a str,
    /// The class and claim configuration for it, merged (class first); `None` when there is
    /// none. Already versioned and strictly parsed, not yet validated.
    pub config: Option<&'a InterfaceConfig>,
}

impl<'a> InterfaceRequest<'a> {
    /// A request for `device` (the host's `host_interface`), allocated for `request` of `claim`,
    /// with its merged configuration if any: what the framework passes to
    /// [`NetworkDriver::plan_interface`], for a driver's own tests.
    pub fn new(
        claim: &'a ClaimRef,
        request: &'a str,
        device: &'a Device,
        host_interface: &'a str,
        config: Option<&'a InterfaceConfig>,
    ) -> Self {
        Self {
            claim,
            request,
            device,
            host_interface,
            config,
        }
    }
}

/// What the pod gets for one device, decided at Prepare and applied at RunPodSandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct InterfacePlan {
    /// The validated configuration inside the pod.
    pub config: ValidConfig,
    /// Carry the interface's host addresses and routes into the pod (see
    /// [`netdev::AttachRequest::carry_host_addresses`]).
    pub carry_host_addresses: bool,
    /// Where the pod's interface comes from: the host interface itself (the default, and what
    /// plans written before this field mean), or a subinterface of it made for the pod.
    #[serde(default)]
    pub placement: Placement,
}

impl InterfacePlan {
    /// The host interface itself moved into the pod and configured with `config`, without its
    /// host addresses; set the public fields for the rest.
    pub fn new(config: ValidConfig) -> Self {
        Self {
            config,
            carry_host_addresses: false,
            placement: Placement::default(),
        }
    }
}

/// A Kubernetes DRA network driver's own decisions; the framework does the rest.
///
/// Every method is called on the node agent's async runtime and must not block: they sit on
/// the Prepare path (45 s budget for a batch) or, for the hooks, on the runtime's hook path
/// (2 s per call, shared with the attach itself).
pub trait NetworkDriver: Send + Sync + 'static {
    /// A published device: return it (attributes may be added or changed) or `None` to leave
    /// it out. Called on every inventory change; the default publishes what the inventory's
    /// filter selected, unchanged.
    fn publish(&self, device: Device) -> Option<Device> {
        Some(device)
    }

    /// How one allocated device is configured in the pod. An error fails the claim's Prepare
    /// with its message (prefixed by the claim, request and device); nothing is attached.
    fn plan_interface(&self, request: &InterfaceRequest<'_>) -> Result<InterfacePlan, DriverError>;

    /// Called after the pod's interfaces were attached; `records` say what was moved, in plan
    /// order. The default does nothing.
    fn attached(&self, pod: &PodRef, records: &[RestoreRecord]) {
        let _ = (pod, records);
    }

    /// Called after an interface left a pod (returned, found on the host, or vanished with
    /// the pod's namespace). The default does nothing.
    fn detached(&self, pod: &PodRef, record: &RestoreRecord) {
        let _ = (pod, record);
    }
}

/// The reference driver: whole host interfaces moved into pods ("host-device").
///
/// Configuration is `netdra.dev/v1alpha2` (or `v1alpha1`) `InterfaceConfig`, validated by
/// `netdev`'s rules.
/// Without addresses and routes in it, the interface keeps its own host addresses and the
/// routes through it inside the pod, and gets them back at detach.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostDevice;

impl NetworkDriver for HostDevice {
    fn plan_interface(&self, request: &InterfaceRequest<'_>) -> Result<InterfacePlan, DriverError> {
        let config = request.config.cloned().unwrap_or_default();
        let carry_host_addresses = config.addresses.is_empty() && config.routes.is_empty();
        Ok(InterfacePlan {
            config: config.validate()?,
            carry_host_addresses,
            placement: Placement::Move,
        })
    }
}

/// How the subinterfaces netdra makes are tagged: their alias is this, the claim's UID, `:`
/// and the request's name. The start-up sweep deletes the macvlans on the host whose alias has
/// exactly that shape, and nothing else.
pub const SUBINTERFACE_TAG_PREFIX: &str = "netdra:";

/// The capacity a shared NIC publishes: how many subinterfaces it takes.
pub const SLOTS: &str = "slots";

/// The second reference driver: one NIC shared by many pods ("shared-nic").
///
/// Each host interface is published once, with `allowMultipleAllocations` and a consumable
/// capacity of [`SLOTS`] (every allocation takes exactly one, so the scheduler allocates a
/// parent to at most `slots` claims at a time). Each allocated claim gets a `macvlan`
/// subinterface (bridge mode: siblings reach each other) created on the parent directly in the
/// pod's namespace and configured from the same `InterfaceConfig`; it is deleted at detach.
/// The parent never moves and is never changed; it must be up for its subinterfaces to have
/// carrier. There is no carry-over: the parent's addresses stay the parent's.
#[derive(Debug, Clone, Copy)]
pub struct SharedNic {
    slots: NonZeroU32,
}

impl SharedNic {
    /// A shared-NIC driver publishing `slots` subinterfaces per parent.
    pub fn new(slots: NonZeroU32) -> Self {
        Self { slots }
    }

    /// How many subinterfaces each parent takes.
    pub fn slots(&self) -> NonZeroU32 {
        self.slots
    }
}

impl NetworkDriver for SharedNic {
    fn publish(&self, mut device: Device) -> Option<Device> {
        let one = || Quantity("1".into());
        device.allow_multiple_allocations = Some(true);
        device.capacity.get_or_insert_with(Default::default).insert(
            SLOTS.into(),
            DeviceCapacity {
                value: Quantity(self.slots.to_string()),
                request_policy: Some(CapacityRequestPolicy {
                    default: Some(one()),
                    valid_range: Some(CapacityRequestPolicyRange {
                        min: one(),
                        max: Some(one()),
                        step: None,
                    }),
                    valid_values: None,
                }),
            },
        );
        Some(device)
    }

    fn plan_interface(&self, request: &InterfaceRequest<'_>) -> Result<InterfacePlan, DriverError> {
        let config = request.config.cloned().unwrap_or_default();
        Ok(InterfacePlan {
            config: config.validate()?,
            carry_host_addresses: false,
            placement: Placement::Macvlan {
                mode: MacvlanMode::Bridge,
                tag: format!("{SUBINTERFACE_TAG_PREFIX}{}:{}", request.claim.uid, request.request),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn device() -> Device {
        serde_json::from_value(json!({"name": "eth1", "attributes": {"ifName": {"string": "eth1"}}})).expect("device")
    }

    fn slots(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("not zero")
    }

    fn claim() -> ClaimRef {
        ClaimRef {
            namespace: "default".into(),
            name: "shared-0".into(),
            uid: "0c7e4c1a-uid".into(),
        }
    }

    #[test]
    fn a_shared_nic_is_published_once_with_one_slot_per_allocation() {
        let published = SharedNic::new(slots(4)).publish(device()).expect("published");
        assert_eq!(published.allow_multiple_allocations, Some(true));
        let slots = &published.capacity.as_ref().expect("capacity")[SLOTS];
        assert_eq!(slots.value, Quantity("4".into()));
        let policy = slots.request_policy.as_ref().expect("a request policy");
        assert_eq!(policy.default, Some(Quantity("1".into())));
        let range = policy.valid_range.as_ref().expect("a range");
        assert_eq!(
            (range.min.clone(), range.max.clone()),
            (Quantity("1".into()), Some(Quantity("1".into())))
        );
        // The attributes stay as the inventory made them.
        assert_eq!(published.attributes, device().attributes);
    }

    #[test]
    fn a_shared_nic_claim_gets_a_macvlan_tagged_with_its_claim_and_request() {
        let config = InterfaceConfig {
            name: Some("net1".into()),
            addresses: vec!["10.233.0.10/24".into()],
            ..InterfaceConfig::default()
        };
        let device = device();
        let claim = claim();
        let request = InterfaceRequest {
            claim: &claim,
            request: "nic",
            device: &device,
            host_interface: "eth1",
            config: Some(&config),
        };
        let plan = SharedNic::new(slots(2)).plan_interface(&request).expect("planned");
        assert_eq!(
            plan.placement,
            Placement::Macvlan {
                mode: MacvlanMode::Bridge,
                tag: "netdra:0c7e4c1a-uid:nic".into(),
            }
        );
        assert!(!plan.carry_host_addresses, "the parent's addresses stay the parent's");
        assert_eq!(plan.config.name.as_deref(), Some("net1"));

        let bad = InterfaceConfig {
            addresses: vec!["10.233.0.10".into()],
            ..InterfaceConfig::default()
        };
        let err = SharedNic::new(slots(2))
            .plan_interface(&InterfaceRequest {
                config: Some(&bad),
                ..request
            })
            .expect_err("not CIDR");
        assert!(err.to_string().starts_with("addresses[0]:"), "{err}");
    }

    #[test]
    fn plans_written_before_placement_existed_mean_a_move() {
        let plan: InterfacePlan = serde_json::from_value(json!({
            "config": {"name": null, "mtu": null, "hardwareAddress": null, "addresses": [], "routes": [], "up": true},
            "carryHostAddresses": true,
        }))
        .expect("an old plan decodes");
        assert_eq!(plan.placement, Placement::Move);
    }
}
