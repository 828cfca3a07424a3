//! Linux network devices for DRA network drivers.
//!
//! - [`inventory`]: a scan of the node's interfaces (a netlink dump plus sysfs) into the
//!   `resource.k8s.io/v1` devices to publish, with [`names`] that are stable DNS labels,
//!   [`attributes`] within the API's limits, and a [`filter`] (a default rule or CEL).
//! - [`watch`]: keeps that list current on netlink notifications and periodic resyncs, and
//!   keeps allocated devices published while they sit in a pod.
//!
//! The pure parts ([`device::build`], [`names`], [`attributes`], [`filter`]) take plain data
//! and a sysfs root, so they are tested on fixture trees without root.

pub mod attributes;
pub mod device;
pub mod filter;
pub mod inventory;
pub mod link;
pub mod names;
pub mod netlink;
pub mod sysfs;
pub mod watch;

pub use device::{Exclusion, Kind, NetDevice};
pub use filter::{DeviceFilter, FilterError};
pub use inventory::{Inventory, InventoryConfig, Scan};
pub use sysfs::Sysfs;
pub use watch::{DeviceHolds, InventoryWatcher, WatchOptions};
