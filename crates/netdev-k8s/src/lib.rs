//! The Kubernetes side of a node's network devices: `netdev`'s kernel facts as the
//! `resource.k8s.io/v1` devices a DRA driver publishes.
//!
//! - [`inventory`]: a scan of the node's interfaces (`netdev`'s netlink dump plus sysfs) into
//!   the devices to publish, each a [`device`] model with [`names`] that are stable DNS labels,
//!   [`attributes`] within the API's limits, and a [`filter`] (a default rule or CEL).
//! - [`watch`]: keeps that list current on `netdev`'s change notifications
//!   ([`netdev::changes`]) and periodic resyncs, and keeps allocated devices published while
//!   they sit in a pod.
//!
//! Everything that reads or changes the kernel is in `netdev`, which has no Kubernetes types;
//! this crate adds none of its own reads. The pure parts ([`device::build`], [`names`],
//! [`attributes`], [`filter`], [`inventory::select`]) take plain data and a sysfs root, so they
//! are tested without root.

pub mod attributes;
pub mod device;
pub mod filter;
pub mod inventory;
pub mod names;
pub mod watch;

pub use device::{Exclusion, Kind, NetDevice};
pub use filter::{DeviceFilter, FilterError};
pub use inventory::{Inventory, InventoryConfig, Scan};
pub use watch::{DeviceHolds, InventoryWatcher, WatchOptions};
