//! Moving host interfaces into a pod's network namespace and configuring them there, all or
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope},
    link::{LinkAttribute, LinkFlags, LinkMessage},
    route::{RouteAttribute, RouteMessage, RouteProtocol, RouteScope as KernelScope, RouteType},
};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::carry::read_carried;
use crate::config::{Mac, Rule, ValidConfig};
use crate::locate::find_on_host;
use crate::neighbours::add_neighbour;
use crate::netns::{Netns, NetnsError};
use crate::record::{
    HostInterface, HostRoute, LinkSelector, LinkView, RestoreRecord, Subinterface, get_link, record_hosts,
};
use crate::rtnl::{KernelError, Rtnl, RtnlError};
use crate::rules::{add_rule, delete_rule, route_in_table};
use crate::settings::HostSettings;
use crate::subinterface::{MacvlanMode, SubinterfaceError, SubinterfaceSpec, delete_in, derived_mac, prefix_of};
use crate::sysfs::Sysfs;

/// Where the pod's interface comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
#[non_exhaustive]
pub enum Placement {
    /// The host interface itself moves into the pod.
    #[default]
    Move,
    /// A macvlan subinterface of the host interface (its parent, which stays on the host and is
    /// never changed) is created in the pod, tagged with `tag` (its alias).
    Macvlan {
        /// The macvlan mode.
        mode: MacvlanMode,
        /// The subinterface's tag, `<prefix>:<claim>:<request>`: see the documentation of [`attach_all`].
        tag: String,
    },
}

/// One interface to attach, and how to configure it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AttachRequest<'a> {
    /// The interface's name on the host.
    pub device: &'a str,
    /// Its configuration inside the pod.
    pub config: &'a ValidConfig,
    /// Carry the interface's own host addresses and the routes through it into the pod (and
    /// put them back at detach), instead of the configuration's addresses and routes: what a
    /// secondary NIC keeping the address its cloud gave it needs. Only meaningful when the
    /// configuration has neither. Refused for a subinterface ([`Placement::Macvlan`]).
    pub carry_host_addresses: bool,
    /// Whether the interface itself moves, or a subinterface of it is made for the pod.
    pub placement: &'a Placement,
}

impl<'a> AttachRequest<'a> {
    /// Moves `device` configured as `config` ([`Placement::Move`]), without carrying its host
    /// addresses.
    pub fn new(device: &'a str, config: &'a ValidConfig) -> Self {
        Self {
            device,
            config,
            carry_host_addresses: false,
            placement: &Placement::Move,
        }
    }

    /// The same request, carrying the interface's host addresses and routes into the pod or
    /// not (see [`AttachRequest::carry_host_addresses`]).
    pub fn carrying_host_addresses(self, carry: bool) -> Self {
        Self {
            carry_host_addresses: carry,
            ..self
        }
    }

    /// The same request, with the interface placed in the pod as `placement` says.
    pub fn placed(self, placement: &'a Placement) -> Self {
        Self { placement, ..self }
    }
}

/// An attach that did not happen. Every variant leaves the host as it was, except
/// [`AttachError::Failed`] whose [`Rollback`] says whether that held.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// No interface of that name on the host.
    #[error("attach {device}: no such interface on the host")]
    NoSuchDevice {
        /// The interface asked for.
        device: String,
    },
    /// The interface's name in the pod is already used there.
    #[error("attach {device}: the name {name} is already taken in {netns}", netns = netns.display())]
    NameTaken {
        /// The interface asked for.
        device: String,
        /// The name it would take.
        name: String,
        /// The pod's namespace.
        netns: PathBuf,
    },
    /// Two interfaces of one call would take the same name in the pod.
    #[error("attach {device}: {other} would also be named {name} in the pod")]
    DuplicateName {
        /// The interface asked for.
        device: String,
        /// The other interface.
        other: String,
        /// The name both would take.
        name: String,
    },
    /// [`attach_recorded`] was given a different number of records than requests.
    #[error("attach {devices}: {requests} requested, {records} restore records given")]
    RecordCount {
        /// The interfaces asked for, comma-separated.
        devices: String,
        /// How many were asked for.
        requests: usize,
        /// How many records came with them.
        records: usize,
    },
    /// [`attach_recorded`] was given, for an interface, a record of another interface, pod
    /// name or namespace (records out of order, or of another call).
    #[error("attach {device}: the restore record given is of {recorded}")]
    NotItsRecord {
        /// The interface asked for.
        device: String,
        /// What the record is of: `eth2 as net1 in /var/run/netns/X`.
        recorded: String,
    },
    /// A subinterface was asked to carry its parent's host addresses, which stay with the parent.
    #[error(
        "attach {device}: a macvlan subinterface cannot carry the host addresses: they belong to \
         {device}, its parent, which stays on the host"
    )]
    CarryWithSubinterface {
        /// The parent asked for.
        device: String,
    },
    /// The subinterface asked for breaks a rule (its tag, its name); nothing was changed.
    #[error("attach {device}: {source}")]
    InvalidSubinterface {
        /// The parent asked for.
        device: String,
        /// The rule broken.
        #[source]
        source: Box<SubinterfaceError>,
    },
    /// The target namespace could not be used.
    #[error("attach: {0}")]
    Netns(#[from] NetnsError),
    /// Reading the host's state failed; nothing was changed.
    #[error("attach {device}: {step}: {source}")]
    Read {
        /// The interface asked for.
        device: String,
        /// What was being read.
        step: String,
        /// Why it failed.
        #[source]
        source: StepError,
    },
    /// A change failed; every interface of the call was then returned to the host.
    #[error("attach {device}: {step}: {source}; {rollback}")]
    Failed {
        /// The interface whose step failed.
        device: String,
        /// The step: `add route 10.20.0.0/16 via 10.10.0.1 in /var/run/netns/X`.
        step: String,
        /// The kernel's answer (or the socket's failure).
        #[source]
        source: StepError,
        /// How returning the interfaces went.
        rollback: Rollback,
    },
}

/// Why one kernel step of an attach failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// Routing netlink failed: the socket, the kernel's answer, or its decoding.
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
    /// The offload sizes or queue length could not be read or set.
    #[error(transparent)]
    Tuning(#[from] crate::tuning::TuningError),
    /// An ethtool feature could not be read or set.
    #[error(transparent)]
    Ethtool(#[from] crate::ethtool::EthtoolError),
    /// A sysctl could not be read or written (boxed: its error is the largest, and every
    /// attach result carries the space of the largest).
    #[error(transparent)]
    Sysctl(Box<crate::sysctl::SysctlError>),
    /// The pod's namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The subinterface could not be created (boxed: it is the largest of these).
    #[error(transparent)]
    Subinterface(Box<SubinterfaceError>),
}

impl From<crate::sysctl::SysctlError> for StepError {
    fn from(error: crate::sysctl::SysctlError) -> Self {
        Self::Sysctl(Box::new(error))
    }
}

impl From<SubinterfaceError> for StepError {
    fn from(error: SubinterfaceError) -> Self {
        Self::Subinterface(Box::new(error))
    }
}

impl StepError {
    /// The errno, when the kernel refused a routing netlink request.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Rtnl(e) => e.errno(),
            _ => None,
        }
    }
}

/// How the rollback after a failed attach went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rollback {
    /// Every interface is back on the host as it was, and every subinterface deleted.
    Restored,
    /// Some of it could not be undone; each entry says what.
    Incomplete(Vec<String>),
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Restored => f.write_str("rolled back: the host interfaces are as they were"),
            Self::Incomplete(problems) => write!(f, "rolling back failed too: {}", problems.join("; ")),
        }
    }
}

/// Attaches one interface; see [`attach_all`].
pub fn attach(netns: &Netns, device: &str, config: &ValidConfig) -> Result<RestoreRecord, AttachError> {
    let mut records = attach_all(netns, &[AttachRequest::new(device, config)])?;
    records
        .pop()
        .ok_or_else(|| AttachError::NoSuchDevice { device: device.into() })
}

/// Attaches every requested interface into `netns`, or none: a failure returns those already
/// moved. The records, in request order, are what [`detach`](crate::detach()) needs; persist them before
/// anything else can fail. This is [`record_all`] then [`attach_recorded`] in one call, for a
/// caller that need not persist the records before the move.
///
/// Moving host interfaces into a pod's network namespace and configuring them there, all or
/// none.
///
/// The kernel work per interface, in order:
/// 1. On the host socket: read the link, its PCI function (sysfs), its addresses and its
///    routes ([`RestoreRecord`](crate::RestoreRecord)).
/// 2. On a socket inside the pod: check that the name it will take is free there (and whether
///    its index is).
/// 3. On the host socket, **one** `RTM_SETLINK` by index carrying `IFLA_NET_NS_FD`, the new
///    name, the MTU, the MAC address and `IFF_UP`: the kernel moves the link first and applies
///    the rest inside the pod's namespace (`do_setlink`). When the interface's index is free in
///    the pod, the message asks to keep it (`IFLA_NEW_IFINDEX`), so it is known without a
///    lookup.
/// 4. Once every interface has moved, on the pod socket, one datagram with every address and
///    then every route; the kernel answers each message on its own. IPv6 addresses are added
///    without duplicate address
///    detection (`IFA_F_NODAD`): they were assigned, and a tentative address would hold up the
///    pod's first packets and the routes that use it as source.
///
/// Policy rules belong to the namespace, not to an interface: a rule given twice in one call
/// (by two interfaces' configurations, or carried from the host and configured both) is added
/// once.
///
/// Any failure after step 3 returns every interface of the call to the host under its own name,
/// MTU, MAC and up/down state, with its addresses and routes, deletes the rules the call added
/// in the pod (a retry would otherwise meet them, `EEXIST`), and the error names the step that
/// failed and how the rollback went.
///
/// The work comes in two halves, for a caller that journals before it changes anything
/// (write-ahead): [`record_all`] is step 1, reads only, and returns the restore records with
/// the namespace's path and inode; the caller persists them, so that after a crash in the middle
/// of the move it knows what to look for and how to put it back ([`locate`](crate::locate()),
/// [`detach`](crate::detach())); then [`attach_recorded`] checks that each recorded index still
/// names its interface on the host and does steps 2 to 4 (and the rollback) from those records.
/// [`attach_all`] is both in one call.
///
/// # Shared NICs: a macvlan subinterface instead of the interface
///
/// A request whose [`Placement`] is [`Placement::Macvlan`] leaves its host interface (the
/// parent) where and as it is, and gives the pod a `macvlan` subinterface of it, created
/// directly in the pod's namespace ([`crate::create_subinterface`]). One record type and one
/// set of calls serve both placements; only these steps differ:
/// - **Record** (changes nothing): the parent must exist on the host ([`AttachError::NoSuchDevice`]
///   otherwise). The record's `host` is the parent's link state (name, index, MTU, MAC, PCI
///   function…) with no addresses, routes or settings: nothing of the parent is touched, so
///   nothing of it is restored. `mac_in_pod` is the configured MAC, else one derived from the
///   tag (see [`SubinterfaceSpec::mac_in_pod`]), so it is known before the kernel acts, and
///   `subinterface` holds the mode and tag. Carrying the host addresses is refused
///   ([`AttachError::CarryWithSubinterface`]): they belong to the parent, which keeps them. The
///   subinterface's spec is checked here too ([`AttachError::InvalidSubinterface`]): its tag
///   must start with a prefix ending in the first `:` (`netdra:` of
///   `netdra:<claim>:<request>`), which is the prefix the tag is checked against: the caller
///   chooses it with the tag; `passthru` mode is refused (it changes the parent).
/// - **Attach** ([`attach_recorded`]): the parent must still exist under its recorded name
///   (its index is not compared: it is not moved, and may be re-created); the name the
///   subinterface takes must be free in the pod, as for a moved interface. Instead of step 3,
///   one `RTM_NEWLINK` creates the macvlan in the pod, down under a temporary name, with its
///   mode, MAC and MTU, then one `RTM_SETLINK` there names it, tags it and brings it up as
///   configured; the configuration's addresses,
///   routes, rules, neighbours, tuning, features and sysctls follow exactly as for a moved
///   interface.
/// - **Rollback**: a subinterface is deleted (by its tag, in the pod), never returned; its
///   parent is not touched and nothing is restored on the host for it.
///
/// Everything here blocks and must run in the host namespace: a caller on an async runtime uses
/// a blocking thread (`spawn_blocking`). Attaches into different namespaces can run in
/// parallel (each call has its own sockets; the kernel serialises the moves themselves under
/// its rtnl lock). Two calls working on the **same** interface at once — an attach racing a
/// detach — are the caller's to prevent: each call re-reads the kernel's state rather than
/// trusting a cache, so neither corrupts the other's record, but the interface ends wherever
/// the later call left it.
pub fn attach_all(netns: &Netns, requests: &[AttachRequest<'_>]) -> Result<Vec<RestoreRecord>, AttachError> {
    check_requests(requests)?;
    // One host socket for both halves: nothing happens between them here.
    let mut host = host_socket(requests)?;
    let records = record_with(&mut host, netns.path(), netns.inode()?, requests)?;
    attach_with(&mut host, netns, requests, &records)?;
    Ok(records)
}

/// The first half of [`attach_all`], which changes nothing: checks the requests and reads
/// each interface's host state (step 1 of [`attach_all`]).
/// The records, in request order, carry the namespace's path and inode; the caller persists
/// them, then hands them to [`attach_recorded`].
pub fn record_all(netns: &Netns, requests: &[AttachRequest<'_>]) -> Result<Vec<RestoreRecord>, AttachError> {
    let inode = netns.inode()?;
    record_at(netns.path(), inode, requests)
}

/// [`record_all`] for the namespace at `netns_path` whose inode is `netns_inode`, without
/// opening it: only the host is read, so a caller can open the namespace meanwhile.
pub fn record_at(
    netns_path: &Path,
    netns_inode: u64,
    requests: &[AttachRequest<'_>],
) -> Result<Vec<RestoreRecord>, AttachError> {
    check_requests(requests)?;
    let mut host = host_socket(requests)?;
    record_with(&mut host, netns_path, netns_inode, requests)
}

/// The second half of [`attach_all`]: moves and configures the interfaces that [`record_all`]
/// recorded for the same `requests` and `netns`, all or none, returning them to the host as
/// recorded on failure. Records of other requests, or that no longer match the host (an
/// interface gone or renamed since), are refused before anything changes.
pub fn attach_recorded(
    netns: &Netns,
    requests: &[AttachRequest<'_>],
    records: &[RestoreRecord],
) -> Result<(), AttachError> {
    check_records(netns, requests, records)?;
    let mut host = host_socket(requests)?;
    // Time passed while the caller persisted the records: each index must still be its link
    // (a subinterface's parent, which does not move, need only still exist under its name).
    for record in records {
        let selector = match record.subinterface {
            Some(_) => LinkSelector::Name(&record.host.name),
            None => LinkSelector::Index(record.host.index),
        };
        let link = get_link(&mut host, selector).map_err(|source| AttachError::Read {
            device: record.host.name.clone(),
            step: "read the link".into(),
            source: source.into(),
        })?;
        if link.is_none_or(|link| link.name != record.host.name) {
            return Err(AttachError::NoSuchDevice {
                device: record.host.name.clone(),
            });
        }
    }
    attach_with(&mut host, netns, requests, records)
}

/// Refuses two interfaces that would take the same name in the pod, and subinterfaces that
/// break a rule.
fn check_requests(requests: &[AttachRequest<'_>]) -> Result<(), AttachError> {
    for (i, request) in requests.iter().enumerate() {
        check_placement(request)?;
        let name = pod_name(request);
        if let Some(other) = requests[..i].iter().find(|r| pod_name(r) == name) {
            return Err(AttachError::DuplicateName {
                device: request.device.into(),
                other: other.device.into(),
                name: name.into(),
            });
        }
    }
    Ok(())
}

/// Refuses a subinterface that would carry its parent's addresses, or whose spec is invalid
/// (among others, `passthru` mode: see [`SubinterfaceSpec::validate`]).
fn check_placement(request: &AttachRequest<'_>) -> Result<(), AttachError> {
    let Placement::Macvlan { mode, tag } = request.placement else {
        return Ok(());
    };
    if request.carry_host_addresses {
        return Err(AttachError::CarryWithSubinterface {
            device: request.device.into(),
        });
    }
    let spec = subinterface_spec(request.device, pod_name(request), *mode, tag, request.config);
    let invalid = |source| AttachError::InvalidSubinterface {
        device: request.device.into(),
        source: Box::new(source),
    };
    let Some(prefix) = prefix_of(tag) else {
        return Err(invalid(SubinterfaceError::InvalidSpec {
            name: spec.name_in_pod,
            field: "tag",
            reason: format!("{tag:?} has no prefix ending in ':'"),
        }));
    };
    spec.validate(prefix).map_err(invalid)
}

/// The subinterface `name_in_pod` of `parent`, as `config` configures it.
fn subinterface_spec(
    parent: &str,
    name_in_pod: &str,
    mode: MacvlanMode,
    tag: &str,
    config: &ValidConfig,
) -> SubinterfaceSpec {
    SubinterfaceSpec {
        parent: parent.into(),
        name_in_pod: name_in_pod.into(),
        mode,
        mac: config.hardware_address,
        mtu: config.mtu,
        up: config.up,
        tag: tag.into(),
    }
}

/// What a record of `request` says of its subinterface.
fn subinterface_of(request: &AttachRequest<'_>) -> Option<Subinterface> {
    match request.placement {
        Placement::Move => None,
        Placement::Macvlan { mode, tag } => Some(Subinterface {
            mode: *mode,
            tag: tag.clone(),
        }),
    }
}

/// Refuses records that are not one per request, in order, for `netns`.
fn check_records(netns: &Netns, requests: &[AttachRequest<'_>], records: &[RestoreRecord]) -> Result<(), AttachError> {
    if requests.len() != records.len() {
        return Err(AttachError::RecordCount {
            devices: requests.iter().map(|r| r.device).collect::<Vec<_>>().join(", "),
            requests: requests.len(),
            records: records.len(),
        });
    }
    for (request, record) in requests.iter().zip(records) {
        check_placement(request)?;
        if record.host.name != request.device
            || record.name_in_pod != pod_name(request)
            || record.netns != netns.path()
            || record.subinterface != subinterface_of(request)
        {
            let placement = match &record.subinterface {
                Some(subinterface) => format!(" (a macvlan tagged {:?})", subinterface.tag),
                None => String::new(),
            };
            return Err(AttachError::NotItsRecord {
                device: request.device.into(),
                recorded: format!(
                    "{} as {} in {}{placement}",
                    record.host.name,
                    record.name_in_pod,
                    record.netns.display()
                ),
            });
        }
    }
    Ok(())
}

/// A routing netlink socket in the host namespace.
fn host_socket(requests: &[AttachRequest<'_>]) -> Result<Rtnl, AttachError> {
    Rtnl::new().map_err(|source| AttachError::Read {
        device: requests.first().map(|r| r.device.to_owned()).unwrap_or_default(),
        step: "open a routing netlink socket".into(),
        source: source.into(),
    })
}

/// Step 1: reads everything first, so that a missing interface changes nothing. A
/// subinterface's parent is read as a link only: none of its addresses, routes or settings are
/// touched, so none are recorded.
fn record_with(
    host: &mut Rtnl,
    netns_path: &Path,
    netns_inode: u64,
    requests: &[AttachRequest<'_>],
) -> Result<Vec<RestoreRecord>, AttachError> {
    let sysfs = Sysfs::default();
    let mut links = Vec::new();
    let mut parents = Vec::new();
    for request in requests {
        let link = get_link(host, LinkSelector::Name(request.device))
            .map_err(|source| AttachError::Read {
                device: request.device.into(),
                step: "read the link".into(),
                source: source.into(),
            })?
            .ok_or_else(|| AttachError::NoSuchDevice {
                device: request.device.into(),
            })?;
        let pci = sysfs.interface(&link.name).pci.map(|p| p.address);
        match request.placement {
            Placement::Move => links.push((link, pci)),
            Placement::Macvlan { .. } => parents.push(parent_state(link, pci)),
        }
    }
    let moving: Vec<&AttachRequest<'_>> = requests
        .iter()
        .filter(|r| matches!(r.placement, Placement::Move))
        .collect();
    let devices = || moving.iter().map(|r| r.device).collect::<Vec<_>>().join(", ");
    let mut hosts = if links.is_empty() {
        Vec::new()
    } else {
        record_hosts(host, links).map_err(|source| AttachError::Read {
            device: devices(),
            step: "read addresses and routes".into(),
            source: source.into(),
        })?
    };
    // What an interface that carries its host state takes along (the rules of its tables, its
    // permanent neighbours, which the move flushes from the host and a detach adds back). Read
    // only for those: the neighbour dump is a round trip per interface on every attach
    // otherwise (measured: the 4-veth attach's overhead went from 0.9 to 1.2 ms).
    let carrying: Vec<HostInterface> = moving
        .iter()
        .zip(&hosts)
        .filter(|(request, _)| carries(request))
        .map(|(_, host_state)| host_state.clone())
        .collect();
    let mut carried = if carrying.is_empty() {
        Vec::new()
    } else {
        read_carried(host, &carrying).map_err(|e| {
            let (step, source) = e.into_step();
            AttachError::Read {
                device: devices(),
                step,
                source: source.into(),
            }
        })?
    }
    .into_iter();
    for (request, host_state) in moving.iter().zip(&mut hosts).filter(|(request, _)| carries(request)) {
        let Some(carried) = carried.next() else { break };
        for left in &carried.left {
            tracing::info!(device = %request.device, "not carried into the pod: {left}");
        }
        host_state.settings.neighbours = carried.neighbours;
        host_state.settings.rules = carried.rules;
    }
    for (request, host_state) in moving.iter().zip(&mut hosts) {
        let carried = std::mem::take(&mut host_state.settings);
        host_state.settings = crate::settings::record(host, host_state.index, &host_state.name, request.config)
            .map(|settings| HostSettings {
                rules: carried.rules,
                neighbours: carried.neighbours,
                ..settings
            })
            .map_err(|(step, source)| AttachError::Read {
                device: request.device.into(),
                step,
                source,
            })?;
    }
    // Back in request order: the moved interfaces' states, and the parents'.
    let (mut hosts, mut parents) = (hosts.into_iter(), parents.into_iter());
    let mut records = Vec::with_capacity(requests.len());
    for request in requests {
        let subinterface = subinterface_of(request);
        let state = match subinterface {
            None => hosts.next(),
            Some(_) => parents.next(),
        };
        let Some(host_state) = state else {
            return Err(AttachError::Read {
                device: request.device.into(),
                step: "record the host state".into(),
                source: RtnlError::Decode("fewer interfaces read than asked for".into()).into(),
            });
        };
        records.push(RestoreRecord {
            netns: netns_path.to_owned(),
            netns_inode: Some(netns_inode),
            name_in_pod: pod_name(request).to_owned(),
            // A subinterface's MAC is its own, not its parent's: the configured one, or the
            // one derived from its tag, known before the kernel acts.
            mac_in_pod: match &subinterface {
                None => request.config.hardware_address.or(host_state.mac),
                Some(s) => Some(request.config.hardware_address.unwrap_or_else(|| derived_mac(&s.tag))),
            },
            host: host_state,
            subinterface,
        });
    }
    Ok(records)
}

/// A subinterface's parent as recorded: its link state, with nothing to restore.
fn parent_state(link: LinkView, pci_address: Option<String>) -> HostInterface {
    HostInterface {
        name: link.name,
        index: link.index,
        mtu: link.mtu,
        mac: link.mac,
        permanent_mac: link.permanent_mac,
        pci_address,
        alias: link.alias,
        up: link.up,
        addresses: Vec::new(),
        routes: Vec::new(),
        settings: HostSettings::default(),
    }
}

/// Steps 2 to 4, with the rollback; `records` are `requests`' own, in order.
fn attach_with(
    host: &mut Rtnl,
    netns: &Netns,
    requests: &[AttachRequest<'_>],
    records: &[RestoreRecord],
) -> Result<(), AttachError> {
    let host_ns = Netns::current()?;
    let mut pod = Rtnl::from_socket(netns.socket()?);
    let mut keep_index = Vec::with_capacity(records.len());
    for record in records {
        let look = |what: &str| {
            let step = format!("look for {what} in {}", netns.path().display());
            let device = record.host.name.clone();
            move |source: RtnlError| AttachError::Read {
                device,
                step,
                source: source.into(),
            }
        };
        if get_link(&mut pod, LinkSelector::Name(&record.name_in_pod))
            .map_err(look(&record.name_in_pod))?
            .is_some()
        {
            return Err(AttachError::NameTaken {
                device: record.host.name.clone(),
                name: record.name_in_pod.clone(),
                netns: netns.path().to_owned(),
            });
        }
        // A subinterface is new: the kernel gives it an index of its own.
        let index_free = record.subinterface.is_none()
            && get_link(&mut pod, LinkSelector::Index(record.host.index))
                .map_err(look(&format!("interface index {}", record.host.index)))?
                .is_none();
        keep_index.push(index_free);
    }

    // Every move first, then one datagram configuring them all: each move holds the kernel's
    // rtnl lock for milliseconds and leaves work behind that requests in between would wait for.
    let mut batch = Vec::new();
    let mut steps = Vec::new();
    let mut rules = Vec::new();
    let mut indexes = Vec::with_capacity(records.len());
    for (at, ((request, record), keep)) in requests.iter().zip(records).zip(keep_index).enumerate() {
        let placed = match &record.subinterface {
            Some(subinterface) => create_in(netns, request.config, record, subinterface),
            None => move_in(host, &mut pod, netns, request.config, record, keep).map_err(|(step, e)| (step, e.into())),
        };
        let index = match placed {
            Ok(index) => index,
            Err((step, source)) => {
                let rollback = roll_back(host, &mut pod, &host_ns, &records[..=at], &[]);
                return Err(AttachError::Failed {
                    device: record.host.name.clone(),
                    step,
                    source,
                    rollback,
                });
            }
        };
        configure(&mut batch, &mut steps, &mut rules, at, index, netns, request, record);
        indexes.push(index);
    }
    // The rules this call added to the pod, which a rollback deletes: they belong to the
    // namespace, not to an interface, so nothing else takes them out.
    let mut added_rules: Vec<Rule> = Vec::new();
    if !batch.is_empty() {
        let failed = match pod.execute(batch) {
            Err(source) => {
                // Which messages the kernel took is unknown: every rule may be there.
                added_rules = rules.into_iter().map(|(_, rule)| rule).collect();
                Some((
                    0,
                    format!("configure the interfaces in {}", netns.path().display()),
                    source,
                ))
            }
            Ok(answers) => {
                added_rules = rules
                    .into_iter()
                    .filter(|(position, _)| answers.get(*position).is_some_and(Result::is_ok))
                    .map(|(_, rule)| rule)
                    .collect();
                answers
                    .into_iter()
                    .zip(steps)
                    .find_map(|(answer, (at, step))| answer.err().map(|e| (at, step, RtnlError::Kernel(e))))
            }
        };
        if let Some((at, step, source)) = failed {
            let rollback = roll_back(host, &mut pod, &host_ns, records, &added_rules);
            return Err(AttachError::Failed {
                device: records[at].host.name.clone(),
                step,
                source: source.into(),
                rollback,
            });
        }
    }
    // The settings that are not routing netlink messages: features and sysctls, from inside.
    for ((request, record), index) in requests.iter().zip(records).zip(indexes) {
        if let Err((step, source)) = crate::settings::apply_in_pod(netns, index, &record.name_in_pod, request.config) {
            let rollback = roll_back(host, &mut pod, &host_ns, records, &added_rules);
            return Err(AttachError::Failed {
                device: record.host.name.clone(),
                step,
                source,
                rollback,
            });
        }
    }
    Ok(())
}

fn pod_name<'a>(request: &AttachRequest<'a>) -> &'a str {
    request.config.name.as_deref().unwrap_or(request.device)
}

/// Step 3 for one interface: the one message that moves it, renamed and set up; its index in
/// the pod. When its host index is free in the pod it is asked to keep it
/// (`IFLA_NEW_IFINDEX`: the move fails rather than pick another), so no lookup follows.
fn move_in(
    host: &mut Rtnl,
    pod: &mut Rtnl,
    netns: &Netns,
    config: &ValidConfig,
    record: &RestoreRecord,
    keep_index: bool,
) -> Result<u32, (String, RtnlError)> {
    let ns = netns.path().display();
    let name = &record.name_in_pod;
    let mut message = set_link(&LinkChange {
        index: record.host.index,
        netns_fd: Some(netns.raw_fd()),
        name: Some(name),
        mtu: config.mtu,
        mac: config.hardware_address,
        up: config.up.then_some(true),
    });
    if keep_index
        && let RouteNetlinkMessage::SetLink(link) = &mut message
        && let Ok(index) = i32::try_from(record.host.index)
    {
        link.attributes.push(LinkAttribute::NewIfIndex(index));
    }
    let moved = timed_move(|| single(host.execute(vec![(message, 0)])));
    moved.map_err(|e| (format!("move {} into {ns} as {name}", record.host.name), e))?;
    if keep_index {
        return Ok(record.host.index);
    }
    let find = || format!("find {name} in {ns}");
    match get_link(pod, LinkSelector::Name(name)) {
        Ok(Some(link)) => Ok(link.index),
        Ok(None) => Err((
            find(),
            RtnlError::Kernel(KernelError {
                errno: Errno::ENODEV,
                message: None,
            }),
        )),
        Err(e) => Err((find(), e)),
    }
}

/// Step 3 for a subinterface: the one message that creates it in the pod, named, with its
/// mode, MAC, MTU and up state, then its tag (see [`crate::create_subinterface`]); its index
/// there. The parent is read, never changed.
fn create_in(
    netns: &Netns,
    config: &ValidConfig,
    record: &RestoreRecord,
    subinterface: &Subinterface,
) -> Result<u32, (String, StepError)> {
    let spec = subinterface_spec(
        &record.host.name,
        &record.name_in_pod,
        subinterface.mode,
        &subinterface.tag,
        config,
    );
    let step = || {
        format!(
            "create a macvlan of {} in {} as {}",
            record.host.name,
            netns.path().display(),
            record.name_in_pod
        )
    };
    // A tag without a prefix fails the spec's own check, with its reason.
    let prefix = prefix_of(&subinterface.tag).unwrap_or_default();
    crate::subinterface::create(netns, &spec, prefix)
        .map(|created| created.index)
        .map_err(|e| (step(), e.into()))
}

/// Step 4 for one interface: its addresses and routes, added to `batch`, each with its step
/// and the position `at` of the interface in the call. The rules go to `rules` too, with their
/// position in `batch`: a rule already there (of another interface of the call, or carried and
/// configured both) is not added again, since rules are namespace-wide and a second add fails
/// (`EEXIST`).
#[allow(clippy::too_many_arguments)]
fn configure(
    batch: &mut Vec<(RouteNetlinkMessage, u16)>,
    steps: &mut Vec<(usize, String)>,
    rules: &mut Vec<(usize, Rule)>,
    at: usize,
    index: u32,
    netns: &Netns,
    request: &AttachRequest<'_>,
    record: &RestoreRecord,
) {
    let ns = netns.path().display();
    let name = &record.name_in_pod;
    let config = request.config;
    // The device's own settings first: they do not depend on addresses or routes.
    if let Some(message) = crate::settings::tuning_in_pod(index, config) {
        batch.push((message, 0));
        steps.push((at, format!("set the offload sizes and queue length of {name} in {ns}")));
    }
    if carries(request) {
        for address in &record.host.addresses {
            let message = add_address(index, address.address, address.broadcast, address.scope);
            batch.push((message, NLM_F_CREATE | NLM_F_EXCL));
            steps.push((at, format!("add host address {} to {name} in {ns}", address.address)));
        }
        // Routes of every table but the local one, with the rules that look those tables up.
        for route in &record.host.routes {
            batch.push((add_route(index, route), NLM_F_CREATE | NLM_F_EXCL));
            steps.push((
                at,
                format!("add host route {} table {} in {ns}", route.destination, route.table),
            ));
        }
        for rule in &record.host.settings.rules {
            push_rule(batch, steps, rules, at, rule, || {
                format!("add host rule {rule} in {ns}")
            });
        }
        for neighbour in &record.host.settings.neighbours {
            batch.push((add_neighbour(index, neighbour), NLM_F_CREATE | NLM_F_EXCL));
            steps.push((at, format!("add host neighbour {neighbour} on {name} in {ns}")));
        }
    } else {
        for address in &config.addresses {
            batch.push((add_address(index, *address, None, 0), NLM_F_CREATE | NLM_F_EXCL));
            steps.push((at, format!("add address {address} to {name} in {ns}")));
        }
        for route in &config.routes {
            batch.push((add_route(index, &route_in_table(route)), NLM_F_CREATE | NLM_F_EXCL));
            steps.push((at, format!("add route {route} in {ns}")));
        }
    }
    // The configuration's own rules and neighbours, carrying or not.
    for rule in &config.rules {
        push_rule(batch, steps, rules, at, rule, || format!("add rule {rule} in {ns}"));
    }
    for neighbour in &config.neighbours {
        batch.push((add_neighbour(index, neighbour), NLM_F_CREATE | NLM_F_EXCL));
        steps.push((at, format!("add neighbour {neighbour} on {name} in {ns}")));
    }
}

/// Adds `rule` to `batch` (and `rules`), unless the call adds it already.
fn push_rule(
    batch: &mut Vec<(RouteNetlinkMessage, u16)>,
    steps: &mut Vec<(usize, String)>,
    rules: &mut Vec<(usize, Rule)>,
    at: usize,
    rule: &Rule,
    step: impl FnOnce() -> String,
) {
    if rules.iter().any(|(_, added)| added == rule) {
        return;
    }
    rules.push((batch.len(), rule.clone()));
    batch.push((add_rule(rule), NLM_F_CREATE | NLM_F_EXCL));
    steps.push((at, step()));
}

/// Whether the request carries the interface's host addresses, routes, rules and neighbours
/// into the pod: asked for, and the configuration gives no addresses or routes of its own.
fn carries(request: &AttachRequest<'_>) -> bool {
    matches!(request.placement, Placement::Move)
        && request.carry_host_addresses
        && request.config.addresses.is_empty()
        && request.config.routes.is_empty()
}

/// Deletes the rules the call added to the pod (`added_rules`), returns each recorded interface
/// to the host, wherever it got to, and deletes each subinterface (its parent untouched); what
/// could not be undone.
fn roll_back(
    host: &mut Rtnl,
    pod: &mut Rtnl,
    host_ns: &Netns,
    records: &[RestoreRecord],
    added_rules: &[Rule],
) -> Rollback {
    let mut problems = delete_rules(pod, records, added_rules);
    for record in records.iter().rev() {
        if let Some(subinterface) = &record.subinterface {
            // Deleted by its tag in the pod; gone already (or never made) is fine.
            if let Err(e) = delete_in(pod, &record.netns, &record.name_in_pod, &subinterface.tag) {
                problems.push(e.to_string());
            }
            continue;
        }
        if let Err(problem) = return_to_host(host, pod, host_ns, record) {
            problems.push(problem);
        }
        problems.extend(restore_addresses_and_routes(host, record));
    }
    if problems.is_empty() {
        Rollback::Restored
    } else {
        Rollback::Incomplete(problems)
    }
}

/// Deletes `rules` from the pod, the last added first; one that is gone already is fine. A rule
/// without a priority got one just below the first rule after priority 0 when added, so,
/// deleted in reverse order, the first match of any priority (what the kernel deletes) is
/// the one this call added. What failed, as messages.
fn delete_rules(pod: &mut Rtnl, records: &[RestoreRecord], rules: &[Rule]) -> Vec<String> {
    if rules.is_empty() {
        return Vec::new();
    }
    let ns = records
        .first()
        .map(|r| r.netns.display().to_string())
        .unwrap_or_default();
    let requests = rules.iter().rev().map(|rule| (delete_rule(rule), 0)).collect();
    match pod.execute(requests) {
        Err(e) => vec![format!("delete the rules added in {ns}: {e}")],
        Ok(answers) => answers
            .into_iter()
            .zip(rules.iter().rev())
            .filter_map(|(answer, rule)| match answer {
                Err(e) if e.errno != Errno::ENOENT => Some(format!("delete rule {rule} in {ns}: {e}")),
                _ => None,
            })
            .collect(),
    }
}

/// Moves a moved interface back from the pod if it is there (under either name), restoring
/// name, MTU, MAC and up/down state in the same message; if it never left, puts those back on
/// the host. The error says what could not be done.
fn return_to_host(host: &mut Rtnl, pod: &mut Rtnl, host_ns: &Netns, record: &RestoreRecord) -> Result<(), String> {
    let original = &record.host;
    let in_pod = [record.name_in_pod.as_str(), original.name.as_str()]
        .into_iter()
        .find_map(|name| get_link(pod, LinkSelector::Name(name)).ok().flatten())
        .filter(|link| record.identifies(link, None));
    match in_pod {
        Some(link) => {
            let message = set_link(&restoring(link.index, Some(host_ns.raw_fd()), original));
            single(pod.execute(vec![(message, 0)])).map_err(|e| {
                format!(
                    "move {} from {} back to the host as {}: {e}",
                    link.name,
                    record.netns.display(),
                    original.name
                )
            })
        }
        None => {
            let link = get_link(host, LinkSelector::Index(original.index))
                .map_err(|e| format!("find {} on the host: {e}", original.name))?
                .filter(|link| record.identifies(link, None))
                .ok_or_else(|| {
                    format!(
                        "{} is neither in {} nor on the host",
                        original.name,
                        record.netns.display()
                    )
                })?;
            let message = set_link(&restoring(link.index, None, original));
            single(host.execute(vec![(message, 0)])).map_err(|e| format!("restore {} on the host: {e}", original.name))
        }
    }
}

/// The one message that gives a link back its recorded name, MTU, MAC and state (and moves it,
/// with `netns_fd`).
pub(crate) fn restoring(index: u32, netns_fd: Option<RawFd>, original: &HostInterface) -> LinkChange<'_> {
    LinkChange {
        index,
        netns_fd,
        name: Some(&original.name),
        mtu: Some(original.mtu),
        mac: original.mac,
        up: Some(original.up),
    }
}

/// Re-adds recorded settings, addresses, then routes, on the host; ones that already exist
/// are fine. What failed, as messages.
///
/// The link is found by its recorded identity, not by name alone: when its name was taken on
/// the host meanwhile it came back under another (see [`crate::detach()`]), and the
/// interface holding the name must not get its addresses, neighbours, features or sysctls.
pub(crate) fn restore_addresses_and_routes(host: &mut Rtnl, record: &RestoreRecord) -> Vec<String> {
    let original = &record.host;
    if original.addresses.is_empty() && original.routes.is_empty() && original.settings.is_empty() {
        return Vec::new();
    }
    let (index, name) = match find_on_host(host, record) {
        Ok(Some(link)) => (link.index, link.name),
        Ok(None) => return vec![format!("{} is not on the host to restore its addresses", original.name)],
        Err(e) => return vec![format!("find {} on the host: {e}", original.name)],
    };
    let mut problems = crate::settings::restore_on_host(host, index, &name, &original.settings);
    let mut requests = Vec::new();
    let mut steps = Vec::new();
    for address in &original.addresses {
        requests.push((
            add_address(index, address.address, address.broadcast, address.scope),
            NLM_F_CREATE | NLM_F_EXCL,
        ));
        steps.push(format!("restore address {} on {name}", address.address));
    }
    for route in &original.routes {
        requests.push((add_route(index, route), NLM_F_CREATE | NLM_F_EXCL));
        steps.push(format!("restore route to {} on {name}", route.destination));
    }
    for neighbour in &original.settings.neighbours {
        requests.push((add_neighbour(index, neighbour), NLM_F_CREATE | NLM_F_EXCL));
        steps.push(format!("restore neighbour {neighbour} on {name}"));
    }
    if requests.is_empty() {
        return problems;
    }
    match host.execute(requests) {
        Err(e) => problems.push(format!("restore addresses and routes of {name}: {e}")),
        Ok(answers) => problems.extend(
            answers
                .into_iter()
                .zip(steps)
                .filter_map(|(answer, step)| match answer {
                    Err(e) if e.errno != Errno::EEXIST => Some(format!("{step}: {e}")),
                    _ => None,
                }),
        ),
    }
    problems
}

/// The one answer of a one-message request.
pub(crate) fn single(answers: Result<Vec<Result<(), KernelError>>, RtnlError>) -> Result<(), RtnlError> {
    match answers?.pop() {
        Some(answer) => answer.map_err(RtnlError::Kernel),
        None => Err(RtnlError::Decode("no answer to a request".into())),
    }
}

/// The changes one `RTM_SETLINK` makes; `None` leaves a property as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkChange<'a> {
    pub(crate) index: u32,
    pub(crate) netns_fd: Option<RawFd>,
    pub(crate) name: Option<&'a str>,
    pub(crate) mtu: Option<u32>,
    pub(crate) mac: Option<Mac>,
    pub(crate) up: Option<bool>,
}

pub(crate) fn set_link(change: &LinkChange<'_>) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = change.index;
    if let Some(up) = change.up {
        link.header.change_mask = LinkFlags::Up;
        if up {
            link.header.flags = LinkFlags::Up;
        }
    }
    // The namespace first: the kernel applies the rest inside the target namespace.
    if let Some(fd) = change.netns_fd {
        link.attributes.push(LinkAttribute::NetNsFd(fd));
    }
    if let Some(name) = change.name {
        link.attributes.push(LinkAttribute::IfName(name.to_owned()));
    }
    if let Some(mtu) = change.mtu {
        link.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = change.mac {
        link.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    RouteNetlinkMessage::SetLink(link)
}

pub(crate) fn add_address(
    index: u32,
    address: IpNet,
    broadcast: Option<std::net::Ipv4Addr>,
    scope: u8,
) -> RouteNetlinkMessage {
    let mut message = AddressMessage::default();
    message.header.index = index;
    message.header.prefix_len = address.prefix_len();
    message.header.scope = AddressScope::from(scope);
    let ip = address.addr();
    match ip {
        std::net::IpAddr::V4(_) => {
            message.header.family = AddressFamily::Inet;
            message.attributes.push(AddressAttribute::Local(ip));
        }
        std::net::IpAddr::V6(_) => {
            message.header.family = AddressFamily::Inet6;
            message.header.flags = AddressHeaderFlags::Nodad;
        }
    }
    message.attributes.push(AddressAttribute::Address(ip));
    if let Some(broadcast) = broadcast {
        message.attributes.push(AddressAttribute::Broadcast(broadcast));
    }
    RouteNetlinkMessage::NewAddress(message)
}

pub(crate) fn add_route(index: u32, route: &HostRoute) -> RouteNetlinkMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = match route.destination {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    message.header.destination_prefix_length = route.destination.prefix_len();
    message.header.protocol = RouteProtocol::from(route.protocol);
    message.header.scope = KernelScope::from(route.scope);
    message.header.kind = RouteType::Unicast;
    // Tables above 255 only fit the attribute.
    message.header.table = u8::try_from(route.table).unwrap_or(0);
    message.attributes.push(RouteAttribute::Table(route.table));
    if route.destination.prefix_len() > 0 {
        message
            .attributes
            .push(RouteAttribute::Destination(route.destination.addr().into()));
    }
    if let Some(gateway) = route.gateway {
        message.attributes.push(RouteAttribute::Gateway(gateway.into()));
    }
    if let Some(source) = route.source {
        message.attributes.push(RouteAttribute::PrefSource(source.into()));
    }
    if let Some(metric) = route.metric {
        message.attributes.push(RouteAttribute::Priority(metric));
    }
    message.attributes.push(RouteAttribute::Oif(index));
    RouteNetlinkMessage::NewRoute(message)
}

/// Runs one namespace move. With the `bench-floor` feature (benchmarks only) its duration is
/// added to the floor's totals, so a benchmark can tell the kernel's moves from netdra's own
/// work; otherwise it only runs.
pub(crate) fn timed_move<T>(move_it: impl FnOnce() -> T) -> T {
    #[cfg(feature = "bench-floor")]
    {
        let start = std::time::Instant::now();
        let moved = move_it();
        crate::floor::record_move(start.elapsed());
        moved
    }
    #[cfg(not(feature = "bench-floor"))]
    move_it()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InterfaceConfig;

    #[test]
    fn a_rule_given_twice_in_one_call_goes_in_the_batch_once() {
        let rule = |priority: Option<u32>, from: &str| Rule {
            priority,
            family: crate::config::IpFamily::V4,
            from: Some(from.parse().expect("prefix")),
            to: None,
            table: 100,
        };
        let (mut batch, mut steps, mut rules) = (Vec::new(), Vec::new(), Vec::new());
        // Interface 0 carries a host rule and is configured with it too; interface 1's
        // configuration gives it again, and one of its own; a rule without a priority is
        // another rule than the same with one.
        let given = [
            (0, rule(Some(1000), "10.1.0.0/24")),
            (0, rule(Some(1000), "10.1.0.0/24")),
            (1, rule(Some(1000), "10.1.0.0/24")),
            (1, rule(None, "10.1.0.0/24")),
            (1, rule(Some(1001), "10.2.0.0/24")),
        ];
        for (at, rule) in &given {
            // Another message of the interface first: positions are in the whole batch.
            batch.push((add_rule(rule), 0));
            steps.push((*at, "something else".to_owned()));
            push_rule(&mut batch, &mut steps, &mut rules, *at, rule, || {
                format!("add rule {rule}")
            });
        }
        assert_eq!(
            rules,
            [
                (1, given[0].1.clone()),
                (5, given[3].1.clone()),
                (7, given[4].1.clone())
            ]
        );
        assert_eq!(batch.len(), 8);
        assert_eq!(
            steps
                .iter()
                .filter(|(_, s)| s.starts_with("add rule"))
                .collect::<Vec<_>>(),
            [
                &(0, "add rule 1000: from 10.1.0.0/24 lookup 100".to_owned()),
                &(1, "add rule from 10.1.0.0/24 lookup 100".to_owned()),
                &(1, "add rule 1001: from 10.2.0.0/24 lookup 100".to_owned()),
            ]
        );
    }

    #[test]
    fn the_move_carries_namespace_name_mtu_mac_and_up_in_one_message() {
        let mac = Mac([2, 0xaa, 0, 0, 0, 1]);
        let RouteNetlinkMessage::SetLink(link) = set_link(&LinkChange {
            index: 7,
            netns_fd: Some(9),
            name: Some("net1"),
            mtu: Some(1400),
            mac: Some(mac),
            up: Some(true),
        }) else {
            panic!("a set-link message");
        };
        assert_eq!(link.header.index, 7);
        assert_eq!(link.header.flags, LinkFlags::Up);
        assert_eq!(link.header.change_mask, LinkFlags::Up);
        assert_eq!(
            link.attributes,
            [
                LinkAttribute::NetNsFd(9),
                LinkAttribute::IfName("net1".into()),
                LinkAttribute::Mtu(1400),
                LinkAttribute::Address(mac.0.to_vec()),
            ]
        );
    }

    #[test]
    fn bringing_down_clears_the_flag_under_the_mask_and_absent_fields_stay_out() {
        let RouteNetlinkMessage::SetLink(link) = set_link(&LinkChange {
            index: 3,
            netns_fd: None,
            name: None,
            mtu: None,
            mac: None,
            up: Some(false),
        }) else {
            panic!("a set-link message");
        };
        assert!(link.header.flags.is_empty());
        assert_eq!(link.header.change_mask, LinkFlags::Up);
        assert!(link.attributes.is_empty());
    }

    #[test]
    fn addresses_and_routes_are_the_messages_ip_would_send() {
        let RouteNetlinkMessage::NewAddress(v4) = add_address(4, "10.10.0.2/24".parse().expect("cidr"), None, 0) else {
            panic!("an address message");
        };
        assert_eq!(v4.header.family, AddressFamily::Inet);
        assert_eq!(v4.header.prefix_len, 24);
        assert!(
            v4.attributes
                .contains(&AddressAttribute::Local("10.10.0.2".parse().expect("ip")))
        );
        let RouteNetlinkMessage::NewAddress(v6) = add_address(4, "fd00::2/64".parse().expect("cidr"), None, 0) else {
            panic!("an address message");
        };
        assert_eq!(v6.header.flags, AddressHeaderFlags::Nodad);

        let config = InterfaceConfig {
            addresses: vec!["fd00::2/64".into()],
            routes: vec![crate::config::RouteConfig {
                destination: "default".into(),
                gateway: Some("fd00::1".into()),
                metric: Some(10),
                ..Default::default()
            }],
            ..Default::default()
        }
        .validate()
        .expect("valid");
        let RouteNetlinkMessage::NewRoute(route) = add_route(4, &route_in_table(&config.routes[0])) else {
            panic!("a route message");
        };
        assert_eq!(route.header.address_family, AddressFamily::Inet6);
        assert_eq!(route.header.destination_prefix_length, 0);
        assert_eq!(route.header.table, 254);
        assert_eq!(route.header.scope, KernelScope::Universe);
        assert_eq!(route.header.protocol, RouteProtocol::Static);
        assert!(
            !route
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
        assert!(route.attributes.contains(&RouteAttribute::Oif(4)));
        assert!(route.attributes.contains(&RouteAttribute::Priority(10)));
    }

    fn named_net1() -> ValidConfig {
        InterfaceConfig {
            name: Some("net1".into()),
            ..Default::default()
        }
        .validate()
        .expect("valid")
    }

    #[test]
    fn two_interfaces_named_alike_in_one_pod_are_refused_before_any_change() {
        let config = named_net1();
        // No root needed: the names are compared before anything is opened.
        let netns = Netns::current().expect("own namespace");
        let err = attach_all(
            &netns,
            &[AttachRequest::new("eth1", &config), AttachRequest::new("eth2", &config)],
        )
        .expect_err("duplicate");
        assert_eq!(err.to_string(), "attach eth2: eth1 would also be named net1 in the pod");
    }

    #[test]
    fn records_that_are_not_the_requests_own_are_refused_before_any_change() {
        let config = named_net1();
        // No root needed: the records are compared before anything is opened.
        let netns = Netns::current().expect("own namespace");
        let requests = [AttachRequest::new("eth1", &config), AttachRequest::new("eth2", &config)];
        let err = attach_recorded(&netns, &requests[..1], &[]).expect_err("no record");
        assert!(
            matches!(
                err,
                AttachError::RecordCount {
                    requests: 1,
                    records: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.to_string(), "attach eth1: 1 requested, 0 restore records given");

        let record = RestoreRecord {
            host: crate::record::HostInterface {
                name: "eth2".into(),
                index: 7,
                mtu: 1500,
                mac: None,
                permanent_mac: None,
                pci_address: None,
                alias: None,
                up: true,
                addresses: Vec::new(),
                routes: Vec::new(),
                settings: Default::default(),
            },
            netns: netns.path().to_owned(),
            netns_inode: None,
            name_in_pod: "net1".into(),
            mac_in_pod: None,
            subinterface: None,
        };
        let err = attach_recorded(&netns, &requests, std::slice::from_ref(&record)).expect_err("one short");
        assert_eq!(
            err.to_string(),
            "attach eth1, eth2: 2 requested, 1 restore records given"
        );
        let err = attach_recorded(&netns, &requests[..1], &[record]).expect_err("another's record");
        assert!(matches!(err, AttachError::NotItsRecord { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "attach eth1: the restore record given is of eth2 as net1 in /proc/thread-self/ns/net"
        );
    }

    #[test]
    fn rollback_reports_name_every_problem() {
        assert_eq!(
            Rollback::Incomplete(vec!["a".into(), "b".into()]).to_string(),
            "rolling back failed too: a; b"
        );
    }
}
