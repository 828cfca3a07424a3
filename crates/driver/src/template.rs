//! The one file a driver author edits.
//!
//! netdra does everything a DRA network driver shares: the kubelet plugin (registration,
//! Prepare, Unprepare, checkpoint), the runtime's NRI hooks (attach at RunPodSandbox, detach at
//! StopPodSandbox, late attach when a hook was missed), ResourceSlice publishing, claim status,
//! metrics. What is left is this file: the reference driver, which moves whole host interfaces
//! into pods ("host-device") or, with `--mode shared-nic`, shares each among pods through a
//! macvlan subinterface per claim ("shared-nic"). To write your own, change it in this order:
//!
//! 1. **The name.** [`DEFAULT_DRIVER_NAME`] is the DRA driver name DeviceClasses select
//!    (`--driver-name` overrides it); use a domain you own.
//! 2. **What is published.** The inventory publishes what its filter selects: by default every
//!    interface backed by a device except the node's uplink and pod networking, or what a CEL
//!    `--device-filter` says. [`Driver::publish`] then sees each device: drop it (return
//!    `None`) or add attributes for DeviceClass selectors.
//! 3. **What a pod gets.** [`Driver::plan_interface`] turns the claim's configuration (the
//!    DeviceClass's, then the claim's, already parsed as `netdra.dev/v1alpha2`
//!    `InterfaceConfig`) into the interface's configuration in the pod. It runs at Prepare,
//!    where slow work belongs; its error becomes the claim's Prepare error.
//! 4. **Around attach and detach.** [`Driver::attached`] and [`Driver::detached`] run after the
//!    kernel work, on the runtime's hook path: keep them short.

use kubeletplugin::DriverError;
use netdev::RestoreRecord;
use netdra::{InterfacePlan, InterfaceRequest, NetworkDriver, PodRef};

/// Step 1: the DRA driver name.
pub const DEFAULT_DRIVER_NAME: &str = "netdra.dev";

/// What the reference driver gives a pod (`--mode`).
#[derive(Debug, Clone, Copy, Default)]
pub enum Mode {
    /// Whole host interfaces moved into pods, one pod each (netdra's `HostDevice`).
    #[default]
    HostDevice,
    /// Each host interface shared: a macvlan subinterface per claim, up to `slots` claims per
    /// interface (netdra's `SharedNic`).
    SharedNic(netdra::SharedNic),
}

/// The reference driver, in either mode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Driver {
    /// What a pod gets.
    pub mode: Mode,
}

impl NetworkDriver for Driver {
    /// Step 2: publish every device the inventory selected, as it is. A driver for SR-IOV VFs
    /// would return `None` unless the `kind` attribute is `sriov-vf`, or add a `vlan` attribute
    /// read from its own configuration.
    fn publish(
        &self,
        device: k8s_openapi::api::resource::v1::Device,
    ) -> Option<k8s_openapi::api::resource::v1::Device> {
        match self.mode {
            Mode::HostDevice => Some(device),
            // Published once, shareable, with its subinterface slots as consumable capacity.
            Mode::SharedNic(shared) => shared.publish(device),
        }
    }

    /// Step 3: the configuration as given, validated by netdev's rules (every error names its
    /// field). Without addresses and routes the interface keeps its own host addresses and the
    /// routes through it, as a secondary NIC keeps what its cloud assigned.
    fn plan_interface(&self, request: &InterfaceRequest<'_>) -> Result<InterfacePlan, DriverError> {
        // The reference rules live in netdra's `HostDevice` and `SharedNic`; replace these
        // calls with your own.
        match self.mode {
            Mode::HostDevice => netdra::HostDevice.plan_interface(request),
            Mode::SharedNic(shared) => shared.plan_interface(request),
        }
    }

    /// Step 4: say what happened; nothing else to do for whole interfaces.
    fn attached(&self, pod: &PodRef, records: &[RestoreRecord]) {
        for record in records {
            tracing::debug!(%pod, host = %record.host.name, pod_name = %record.name_in_pod, "attached");
        }
    }

    /// Step 4: nothing to undo for whole interfaces.
    fn detached(&self, pod: &PodRef, record: &RestoreRecord) {
        tracing::debug!(%pod, host = %record.host.name, "detached");
    }
}
