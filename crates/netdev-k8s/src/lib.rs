//! The Kubernetes side of a node's network devices: `netdev`'s kernel facts as the
//! `resource.k8s.io/v1` devices a DRA driver publishes.
//!
//! - [`Inventory`]: a scan of the node's interfaces (`netdev`'s netlink dump plus sysfs) into
//!   the devices to publish ([`Scan`]), each a [`NetDevice`] with a name that is a stable DNS
//!   label, attributes within the API's limits ([`LimitAction`] says what keeping them there
//!   changed), and a [`DeviceFilter`] (a default rule or CEL). [`select`] is the same scan over
//!   a given netlink snapshot.
//! - [`InventoryWatcher`]: keeps that list current on `netdev`'s change notifications
//!   ([`netdev::Changes`]) and periodic resyncs, and keeps allocated devices published while
//!   they sit in a pod ([`DeviceHolds`]).
//!
//! Everything that reads or changes the kernel is in `netdev`, which has no Kubernetes types;
//! this crate adds none of its own reads. The pure parts (the device model, names, attributes,
//! the filter, [`select`]) take plain data and a sysfs root, so they are tested without root.

mod attributes;
mod device;
mod filter;
mod inventory;
mod names;
mod watch;

pub use attributes::LimitAction;
pub use device::{Exclusion, Kind, NetDevice};
pub use filter::{DeviceFilter, FilterError};
pub use inventory::{Inventory, InventoryConfig, Scan, select};
pub use watch::{DeviceHolds, InventoryWatcher, WatchOptions};
