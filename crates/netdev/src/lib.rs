//! Linux network devices for DRA network drivers.
//!
//! What a node has:
//! - [`inventory`]: a scan of the node's interfaces (a netlink dump plus sysfs) into the
//!   `resource.k8s.io/v1` devices to publish, with [`names`] that are stable DNS labels,
//!   [`attributes`] within the API's limits, and a [`filter`] (a default rule or CEL).
//! - [`watch`]: keeps that list current on netlink notifications and periodic resyncs, and
//!   keeps allocated devices published while they sit in a pod.
//! - [`health`]: whether an interface's link works, on the host or in a pod (DRA device health).
//!
//! What a pod gets:
//! - [`config`]: an interface's configuration inside a pod and the pure rules that validate it.
//! - [`netns`]: a network namespace, checked to be one before anything moves into it, and
//!   found again by its inode wherever it is still held ([`holders`]).
//! - [`attach`](mod@attach): interfaces moved into a pod's namespace and configured, all or
//!   none, with a [`record`] of what to restore, read first so the caller can journal it before
//!   anything moves; [`detach`](mod@detach) brings them back, and [`locate`](mod@locate) says
//!   where a recorded interface is now (in the pod, on the host, or gone).
//!
//! The pure parts ([`device::build`], [`names`], [`attributes`], [`filter`], [`config`],
//! [`health::judge`]) take plain data and a sysfs root, so they are tested without root.

pub mod attach;
pub mod attributes;
pub mod config;
pub mod detach;
pub mod device;
pub mod filter;
#[cfg(feature = "bench-floor")]
#[doc(hidden)]
pub mod floor;
pub mod health;
pub mod holders;
pub mod inventory;
pub mod link;
pub mod locate;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod record;
mod rtnl;
mod subinterface;
pub mod sysfs;
pub mod watch;

pub use attach::{AttachError, AttachRequest, Rollback, attach, attach_all, attach_recorded, record_all, record_at};
pub use config::{
    ConfigError, InterfaceConfig, IpFamily, LinkTuning, Mac, Neighbour, RouteConfig, Rule, Sysctl, ValidConfig,
};
pub use detach::{DetachError, DetachOutcome, Detached, detach};
pub use device::{Exclusion, Kind, NetDevice};
pub use filter::{DeviceFilter, FilterError};
pub use health::{Health, HealthError, LinkState, OperState, Place, Verdict, host_link_states, judge, pod_link_state};
pub use holders::find_netns;
pub use inventory::{Inventory, InventoryConfig, Scan};
pub use locate::{LocateError, Location, locate};
pub use netns::{Netns, NetnsError};
pub use record::RestoreRecord;
pub use rtnl::{KernelError, RtnlError};
pub use subinterface::{
    CreatedSubinterface, DeleteOutcome, Leftover, MacvlanMode, SubinterfaceError, SubinterfaceRecord, SubinterfaceSpec,
    create as create_subinterface, delete as delete_subinterface, delete_on_host as delete_subinterface_on_host,
    leftovers as subinterface_leftovers,
};
pub use sysfs::Sysfs;
pub use watch::{DeviceHolds, InventoryWatcher, WatchOptions};
