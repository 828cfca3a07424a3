//! Linux network devices for DRA network drivers: the kernel half, with no Kubernetes types
//! (`netdev-k8s` renders what is read here as `resource.k8s.io/v1` devices).
//!
//! What a node has:
//! - [`snapshot`]: a dump of the namespace's links, addresses and default routes into plain
//!   facts ([`NetlinkSnapshot`]), and [`Sysfs`]: the device behind each interface (PCI
//!   function, SR-IOV, RDMA, NUMA node, driver).
//! - [`Changes`]: notifications that links, addresses or routes changed, to rescan on.
//! - [`host_link_states`], [`pod_link_state`] and [`judge`]: whether an interface's link works,
//!   on the host or in a pod (DRA device health).
//!
//! What a pod gets:
//! - [`InterfaceConfig`]: an interface's configuration inside a pod, and the pure rules that
//!   validate it into a [`ValidConfig`].
//! - [`Netns`]: a network namespace, checked to be one before anything moves into it, and
//!   found again by its inode wherever it is still held ([`find_netns`]).
//! - [`attach_all`]: interfaces moved into a pod's namespace and configured, all or none, with
//!   a [`RestoreRecord`] of what to restore, read first ([`record_all`]) so the caller can
//!   journal it before anything moves ([`attach_recorded`]); [`detach`] brings them back, and
//!   [`locate`] says where a recorded interface is now (in the pod, on the host, or gone). With
//!   [`Placement::Macvlan`] (a shared NIC) the host interface stays put and a macvlan
//!   subinterface of it is created in the pod instead, with the same record and calls; a
//!   detach deletes it.
//! - Settings inside the pod, in the calling thread's namespace: ethtool features
//!   ([`Ethtool`]), offload sizes and queue length ([`tune_link`], [`link_tuning`]) and
//!   per-interface sysctls ([`read_sysctl`], [`write_sysctl`]).
//!
//! One netlink stack: a blocking `netlink-sys` socket with `netlink-packet-route` messages, not
//! `rtnetlink`, because it batches several requests in one datagram with the extended-ack text
//! (which the rule, neighbour and link settings need), parses lazily, sees `NLM_F_DUMP_INTR`,
//! and needs no connection task per namespace; `rtnetlink` adds none of that. Only [`Changes`]
//! reads its socket through the tokio reactor instead of blocking.
//!
//! The pure parts (configuration validation, [`judge`], the netlink decoders, [`Sysfs`] on a
//! fixture root) take plain data, so they are tested without root.

mod attach;
mod carry;
mod changes;
mod config;
mod detach;
mod ethtool;
#[cfg(feature = "bench-floor")]
#[doc(hidden)]
pub mod floor;
mod health;
mod holders;
mod link;
mod locate;
mod neighbours;
mod netlink;
mod netns;
mod record;
mod rtnl;
mod rules;
#[cfg(test)]
mod rules_kernel_tests;
mod settings;
mod subinterface;
mod sysctl;
mod sysfs;
mod tuning;

pub use attach::{
    AttachError, AttachRequest, Placement, Rollback, StepError, attach, attach_all, attach_recorded, record_all,
    record_at,
};
pub use changes::Changes;
pub use config::{
    ConfigError, EthtoolConfig, InterfaceConfig, IpFamily, LinkTuning, Mac, MacParseError, Neighbour, NeighbourConfig,
    Route, RouteConfig, RouteScope, Rule, RuleConfig, Sysctl, ValidConfig,
};
pub use detach::{DetachError, DetachOutcome, Detached, detach};
pub use ethtool::{Ethtool, EthtoolError, FeatureState};
pub use health::{Health, HealthError, LinkState, OperState, Place, Verdict, host_link_states, judge, pod_link_state};
pub use holders::find_netns;
pub use link::{AddressFacts, LinkFacts, NetlinkSnapshot};
pub use locate::{LocateError, Location, locate};
pub use netlink::{NetlinkError, snapshot};
pub use netns::{Netns, NetnsError};
pub use record::{HostAddress, HostInterface, HostRoute, RestoreRecord, Subinterface};
pub use rtnl::{KernelError, RtnlError};
pub use settings::HostSettings;
pub use subinterface::{
    CreatedSubinterface, DeleteOutcome, Leftover, MacvlanMode, SubinterfaceError, SubinterfaceRecord, SubinterfaceSpec,
    create as create_subinterface, delete as delete_subinterface, delete_on_host as delete_subinterface_on_host,
    leftovers as subinterface_leftovers, temporary_name as subinterface_temporary_name,
};
pub use sysctl::{SysctlError, read_sysctl, write_sysctl};
pub use sysfs::{PciFacts, Sysfs, SysfsFacts};
pub use tuning::{TuningError, link_tuning, tune_link};
