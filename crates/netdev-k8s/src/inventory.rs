//! One inventory scan: the namespace's interfaces as the devices to publish.

use std::sync::Arc;

use k8s_openapi::api::resource::v1::Device;
use netdev::{NetlinkError, NetlinkSnapshot, Sysfs};

use crate::{
    attributes,
    device::{self, NetDevice},
    filter::DeviceFilter,
};

/// What a scan needs: whose devices, where sysfs is, which devices to publish.
#[derive(Debug)]
#[non_exhaustive]
pub struct InventoryConfig {
    /// The DRA driver name; also the domain of the driver's own attributes.
    pub driver: String,
    /// The sysfs tree to read.
    pub sysfs: Sysfs,
    /// Which devices are published.
    pub filter: DeviceFilter,
}

impl InventoryConfig {
    /// The devices of the DRA driver `driver`, read from `sysfs`, published when `filter`
    /// selects them.
    pub fn new(driver: impl Into<String>, sysfs: Sysfs, filter: DeviceFilter) -> Self {
        Self {
            driver: driver.into(),
            sysfs,
            filter,
        }
    }
}

/// The result of one scan.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Scan {
    /// Every interface of the namespace.
    pub devices: Vec<NetDevice>,
    /// The devices to publish, sorted by name.
    pub published: Vec<Device>,
    /// The interfaces left out, with the reason.
    pub left_out: Vec<(String, String)>,
    /// What keeping within the API's per-device limits changed, by device name.
    pub limited: Vec<(String, attributes::LimitAction)>,
    /// Netlink dumps repeated because a concurrent change interrupted them.
    pub retried_dumps: u32,
    /// The netlink snapshot was consistent (see [`NetlinkSnapshot::consistent`]).
    pub consistent: bool,
}

impl Scan {
    /// The published device called `name`.
    pub fn published(&self, name: &str) -> Option<&Device> {
        self.published.iter().find(|d| d.name == name)
    }
}

/// Scans a snapshot: builds the devices (reading sysfs), renders them and applies the filter.
pub fn select(snapshot: &NetlinkSnapshot, config: &InventoryConfig) -> Scan {
    let devices = device::build(snapshot, &config.sysfs);
    let mut published = Vec::new();
    let mut left_out = Vec::new();
    let mut limited = Vec::new();
    for d in &devices {
        let (rendered, actions) = attributes::render(d);
        limited.extend(actions.into_iter().map(|a| (d.name.clone(), a)));
        if config
            .filter
            .selects(&config.driver, &rendered, d.default_exclusion.is_none())
        {
            published.push(rendered);
        } else {
            let reason = match (&config.filter, &d.default_exclusion) {
                (DeviceFilter::Default, Some(why)) => why.to_string(),
                _ => "not selected by the device filter".to_owned(),
            };
            left_out.push((d.if_name.clone(), reason));
        }
    }
    published.sort_by(|a, b| a.name.cmp(&b.name));
    Scan {
        devices,
        published,
        left_out,
        limited,
        retried_dumps: snapshot.retried_dumps,
        consistent: snapshot.consistent,
    }
}

/// The inventory of the host network namespace (the one the runtime's blocking threads are in).
#[derive(Debug, Clone)]
pub struct Inventory {
    config: Arc<InventoryConfig>,
}

impl Inventory {
    /// An inventory with this configuration.
    pub fn new(config: InventoryConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &InventoryConfig {
        &self.config
    }

    /// Dumps netlink and builds the devices, on a blocking thread (netlink and sysfs reads
    /// block).
    pub async fn scan(&self) -> Result<Scan, NetlinkError> {
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || Ok(select(&netdev::snapshot()?, &config)))
            .await
            .map_err(NetlinkError::Task)?
    }
}
