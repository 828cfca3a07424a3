//! Shared NICs: a `macvlan` subinterface of a host interface (the parent), created directly in
//! a pod's network namespace, for a claim that shares its parent with others instead of taking
//! the whole NIC.
//!
//! The rules:
//! - The parent never moves. [`create`] sends **one** `RTM_NEWLINK` on a host socket with
//!   `NLM_F_CREATE | NLM_F_EXCL`, the parent's index (`IFLA_LINK`) and the pod's namespace
//!   (`IFLA_NET_NS_FD`): the kernel creates the link in the pod's namespace, so it never
//!   appears on the host, and destroys it with that namespace (a macvlan is not returned to
//!   the host as a physical interface is). Name, MTU, MAC, up state and mode come in the same
//!   message. The parent is neither changed nor brought up: a subinterface has carrier only
//!   while its parent is up with carrier (siblings in bridge mode cannot talk otherwise).
//! - Every subinterface carries a tag, its alias (`IFLA_IFALIAS`): `netdra:<claim>:<request>`,
//!   starting with the caller's prefix. The kernel ignores an alias in `RTM_NEWLINK` (it
//!   applies it only on `RTM_SETLINK`), so the tag is set right after, on a socket inside the
//!   pod; if that fails the link is deleted again.
//! - Nothing is deleted unless it carries the tag: [`delete`] finds the link in the pod by its
//!   recorded name and tag (else by the tag alone, in case the pod renamed it), and
//!   [`delete_on_host`] checks the tag of the index it is given. A crash between the creation
//!   and the alias leaves an untagged link in the pod that [`delete`] does not touch: it dies
//!   with the pod's namespace, like every subinterface.
//! - The record ([`SubinterfaceRecord::new`]) is computed from the spec and the namespace's
//!   path and inode alone, so the caller journals it before the kernel acts.
//!
//! Where a tagged link can be, and who finds it: in its pod's namespace ([`delete`]); in that
//! namespace after the pod died while a bind mount or a process still holds it ([`delete`]
//! opens the namespace by its recorded inode, wherever held); on the host only if someone moved
//! it there (`ip link set … netns 1`), which [`leftovers`] lists for a sweep. A crash can leave
//! none on the host: creation happens in the pod's namespace.
//!
//! Like [`attach`](mod@crate::attach), this blocks and runs in the host namespace.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoData, InfoKind, InfoMacVlan, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage},
};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::attach::single;
use crate::config::{MAX_INTERFACE_NAME, Mac};
use crate::netns::{Netns, NetnsError};
use crate::record::{LinkSelector, LinkView, dump_links, get_link};
use crate::rtnl::{Rtnl, RtnlError};

/// The longest tag: `IFALIASZ` less the terminating NUL.
pub(crate) const MAX_TAG: usize = 255;

/// How a macvlan reaches its siblings and the outside (`IFLA_MACVLAN_MODE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MacvlanMode {
    /// Siblings on the same parent talk to each other directly (`MACVLAN_MODE_BRIDGE`).
    #[default]
    Bridge,
    /// No traffic between siblings (`MACVLAN_MODE_PRIVATE`).
    Private,
    /// Traffic between siblings goes through the external switch (`MACVLAN_MODE_VEPA`).
    Vepa,
    /// The one subinterface takes over the parent (`MACVLAN_MODE_PASSTHRU`).
    Passthru,
}

impl From<MacvlanMode> for netlink_packet_route::link::MacVlanMode {
    fn from(mode: MacvlanMode) -> Self {
        match mode {
            MacvlanMode::Bridge => Self::Bridge,
            MacvlanMode::Private => Self::Private,
            MacvlanMode::Vepa => Self::Vepa,
            MacvlanMode::Passthru => Self::Passthrough,
        }
    }
}

/// A subinterface to create in a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubinterfaceSpec {
    /// The parent: a host interface's name.
    pub parent: String,
    /// The subinterface's name in the pod.
    pub name_in_pod: String,
    /// The macvlan mode.
    #[serde(default)]
    pub mode: MacvlanMode,
    /// Its MAC address; the kernel picks a random one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    /// Its MTU; the parent's when absent (it cannot exceed the parent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Whether it is brought up.
    pub up: bool,
    /// What identifies it as the caller's, written as its alias: `netdra:<claim uid>:<request>`.
    pub tag: String,
}

impl SubinterfaceSpec {
    /// Checks what can be checked without the kernel: the names are interface names, the MAC
    /// is a unicast address, the tag fits an alias and starts with `tag_prefix` (non-empty).
    pub fn validate(&self, tag_prefix: &str) -> Result<(), SubinterfaceError> {
        let invalid = |field: &'static str, reason: String| SubinterfaceError::InvalidSpec {
            name: self.name_in_pod.clone(),
            field,
            reason,
        };
        check_interface_name(&self.parent).map_err(|r| invalid("parent", r))?;
        check_interface_name(&self.name_in_pod).map_err(|r| invalid("nameInPod", r))?;
        if let Some(mac) = self.mac
            && (mac.0[0] & 1 != 0 || mac.0 == [0; 6])
        {
            return Err(invalid("mac", format!("{mac} is not a unicast address")));
        }
        if tag_prefix.is_empty() {
            return Err(invalid("tag", "the tag prefix is empty".into()));
        }
        if !self.tag.starts_with(tag_prefix) {
            return Err(invalid(
                "tag",
                format!("{:?} does not start with {tag_prefix:?}", self.tag),
            ));
        }
        if self.tag.len() > MAX_TAG {
            return Err(invalid(
                "tag",
                format!("{} bytes long; an alias has at most {MAX_TAG}", self.tag.len()),
            ));
        }
        if self.tag.contains('\0') {
            return Err(invalid("tag", "contains a NUL byte".into()));
        }
        Ok(())
    }
}

/// What [`delete`] needs, journaled before [`create`] acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubinterfaceRecord {
    /// The parent's name on the host.
    pub parent: String,
    /// The subinterface's name in the pod.
    pub name_in_pod: String,
    /// Its tag (alias).
    pub tag: String,
    /// The pod's namespace, as given.
    pub netns: PathBuf,
    /// That namespace's identity (the inode of its nsfs file), by which it is found again.
    pub netns_inode: u64,
    /// Its MAC address in the pod, when the spec set one (else the kernel picks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_in_pod: Option<Mac>,
}

impl SubinterfaceRecord {
    /// The record of `spec` created in the namespace at `netns` whose inode is `netns_inode`.
    pub fn new(spec: &SubinterfaceSpec, netns: &Path, netns_inode: u64) -> Self {
        Self {
            parent: spec.parent.clone(),
            name_in_pod: spec.name_in_pod.clone(),
            tag: spec.tag.clone(),
            netns: netns.to_owned(),
            netns_inode,
            mac_in_pod: spec.mac,
        }
    }
}

/// A subinterface [`create`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatedSubinterface {
    /// Its index in the pod's namespace.
    pub index: u32,
    /// Its MAC address (the spec's, or the one the kernel picked).
    pub mac: Option<Mac>,
}

/// What [`delete`] or [`delete_on_host`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The tagged link was there and is deleted.
    Deleted,
    /// No tagged link: its namespace is gone (and it with it), or it is not there.
    AlreadyGone,
}

/// A link on the host carrying a tag with the caller's prefix (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Its index on the host.
    pub index: u32,
    /// Its name on the host.
    pub name: String,
    /// Its tag.
    pub tag: String,
}

/// A subinterface operation that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SubinterfaceError {
    /// The spec breaks a rule; nothing was asked of the kernel.
    #[error("subinterface {name}: {field}: {reason}")]
    InvalidSpec {
        /// The subinterface's name in the pod.
        name: String,
        /// The spec's field, as serialised.
        field: &'static str,
        /// The rule broken.
        reason: String,
    },
    /// No interface of the parent's name on the host.
    #[error("subinterface {name}: the parent {parent} does not exist on the host")]
    ParentMissing {
        /// The parent's name.
        parent: String,
        /// The subinterface's name in the pod.
        name: String,
    },
    /// The parent exists but cannot carry a macvlan.
    #[error("subinterface {name}: the parent {parent} cannot carry one: {reason}")]
    ParentUnusable {
        /// The parent's name.
        parent: String,
        /// The subinterface's name in the pod.
        name: String,
        /// Why: `it is itself a macvlan`, `it is a loopback interface`…
        reason: String,
    },
    /// The name is already used in the pod's namespace.
    #[error("subinterface {name} on {parent}: the name is already taken in {netns}", netns = netns.display())]
    NameTaken {
        /// The parent's name.
        parent: String,
        /// The name.
        name: String,
        /// The pod's namespace.
        netns: PathBuf,
    },
    /// The pod's namespace could not be used.
    #[error("subinterface {name}: {source}")]
    Netns {
        /// The subinterface's name in the pod.
        name: String,
        /// Why.
        #[source]
        source: NetnsError,
    },
    /// The kernel refused a step, or could not be asked.
    #[error("subinterface {name}: {step}: {source}")]
    Kernel {
        /// The subinterface's name (in the pod, or on the host for [`delete_on_host`]).
        name: String,
        /// The step: `create it on eth0 in /var/run/netns/X`.
        step: String,
        /// The kernel's answer (with its extended-ack text), or the socket's failure.
        #[source]
        source: RtnlError,
    },
}

/// Creates `spec`'s macvlan in `netns` (see the module documentation): its index and MAC in
/// the pod. Nothing is created when the spec is invalid (`tag_prefix` as in
/// [`SubinterfaceSpec::validate`]), the parent is missing or unusable, or the name is taken.
pub fn create(
    netns: &Netns,
    spec: &SubinterfaceSpec,
    tag_prefix: &str,
) -> Result<CreatedSubinterface, SubinterfaceError> {
    spec.validate(tag_prefix)?;
    let name = &spec.name_in_pod;
    let ns = netns.path().display();
    let kernel = |step: String| {
        move |source| SubinterfaceError::Kernel {
            name: name.clone(),
            step,
            source,
        }
    };
    let mut host = Rtnl::new().map_err(kernel("open a routing netlink socket".into()))?;
    let parent_index = usable_parent(&mut host, spec)?;
    let mut pod = Rtnl::from_socket(netns.socket().map_err(|source| SubinterfaceError::Netns {
        name: name.clone(),
        source,
    })?);

    let message = new_macvlan(parent_index, netns.raw_fd(), spec);
    match single(host.execute(vec![(message, NLM_F_CREATE | NLM_F_EXCL)])) {
        Ok(()) => {}
        // With `NLM_F_EXCL` the kernel looks for the name in the target namespace.
        Err(e) if e.errno() == Some(Errno::EEXIST) => {
            return Err(SubinterfaceError::NameTaken {
                parent: spec.parent.clone(),
                name: name.clone(),
                netns: netns.path().to_owned(),
            });
        }
        Err(e) => return Err(kernel(format!("create it on {} in {ns}", spec.parent))(e)),
    }

    let link = get_link(&mut pod, LinkSelector::Name(name))
        .and_then(|link| {
            link.ok_or(RtnlError::Kernel(crate::rtnl::KernelError {
                errno: Errno::ENODEV,
                message: None,
            }))
        })
        .map_err(kernel(format!("find it in {ns} after creating it")))?;
    // Never set by the creation today; checked in case a kernel starts applying it there.
    if link.alias.as_deref() != Some(spec.tag.as_str())
        && let Err(e) = single(pod.execute(vec![(set_alias(link.index, &spec.tag), 0)]))
    {
        let undo = match single(pod.execute(vec![(del_link(link.index), 0)])) {
            Ok(()) => "it was deleted again".to_owned(),
            Err(undo) => format!("deleting it failed too ({undo}); it goes with the namespace"),
        };
        return Err(kernel(format!("tag it {:?} in {ns}; {undo}", spec.tag))(e));
    }
    Ok(CreatedSubinterface {
        index: link.index,
        mac: link.mac,
    })
}

/// Deletes `record`'s subinterface from its pod's namespace, wherever that namespace is still
/// held; idempotent. Only a link carrying the recorded tag is deleted.
pub fn delete(record: &SubinterfaceRecord) -> Result<DeleteOutcome, SubinterfaceError> {
    let name = &record.name_in_pod;
    let netns = match Netns::open_expecting(&record.netns, Some(record.netns_inode)) {
        Ok(netns) => netns,
        // A macvlan dies with its namespace.
        Err(NetnsError::Missing { .. } | NetnsError::NotANetworkNamespace { .. } | NetnsError::Gone { .. }) => {
            return Ok(DeleteOutcome::AlreadyGone);
        }
        Err(source) => {
            return Err(SubinterfaceError::Netns {
                name: name.clone(),
                source,
            });
        }
    };
    let mut pod = Rtnl::from_socket(netns.socket().map_err(|source| SubinterfaceError::Netns {
        name: name.clone(),
        source,
    })?);
    delete_in(&mut pod, netns.path(), name, &record.tag)
}

/// [`delete`] on a socket in the pod's namespace (at `netns`, for the errors): the link under
/// `name` if it carries `tag`, else whichever link carries it; [`DeleteOutcome::AlreadyGone`]
/// when none does.
pub(crate) fn delete_in(
    pod: &mut Rtnl,
    netns: &Path,
    name: &str,
    tag: &str,
) -> Result<DeleteOutcome, SubinterfaceError> {
    let ns = netns.display();
    let kernel = |step: String| {
        move |source| SubinterfaceError::Kernel {
            name: name.to_owned(),
            step,
            source,
        }
    };
    let tagged = |link: &LinkView| link.alias.as_deref() == Some(tag);
    let found = match get_link(pod, LinkSelector::Name(name)).map_err(kernel(format!("look in {ns}")))? {
        Some(link) if tagged(&link) => Some(link),
        // Renamed in the pod, or the name is another link's: the tag decides.
        _ => dump_links(pod)
            .map_err(kernel(format!("look in {ns}")))?
            .into_iter()
            .find(tagged),
    };
    let Some(link) = found else {
        return Ok(DeleteOutcome::AlreadyGone);
    };
    remove(pod, link.index).map_err(kernel(format!("delete {} in {ns}", link.name)))
}

/// The prefix of `tag` that [`SubinterfaceSpec::validate`] checks when the caller gives none of
/// its own: up to and including its first `:` (`netdra:` of `netdra:<claim>:<request>`);
/// `None` when it has no `:`.
pub(crate) fn prefix_of(tag: &str) -> Option<&str> {
    tag.find(':').map(|end| &tag[..=end])
}

/// The host's links whose tag starts with `tag_prefix` (non-empty): subinterfaces someone moved
/// to the host (see the module documentation), for a sweep with [`delete_on_host`].
pub fn leftovers(tag_prefix: &str) -> Result<Vec<Leftover>, SubinterfaceError> {
    let kernel = |source| SubinterfaceError::Kernel {
        name: String::new(),
        step: format!("list the host's links tagged {tag_prefix:?}"),
        source,
    };
    if tag_prefix.is_empty() {
        return Err(SubinterfaceError::InvalidSpec {
            name: String::new(),
            field: "tag",
            reason: "the tag prefix is empty".into(),
        });
    }
    let mut host = Rtnl::new().map_err(kernel)?;
    Ok(dump_links(&mut host)
        .map_err(kernel)?
        .into_iter()
        .filter_map(|link| {
            let tag = link.alias.filter(|a| a.starts_with(tag_prefix))?;
            Some(Leftover {
                index: link.index,
                name: link.name,
                tag,
            })
        })
        .collect())
}

/// Deletes the host link at `index` if it carries exactly `tag`; [`DeleteOutcome::AlreadyGone`]
/// when there is no such link or the index now names another (untagged or otherwise tagged).
pub fn delete_on_host(index: u32, tag: &str) -> Result<DeleteOutcome, SubinterfaceError> {
    let kernel = |step: String| {
        move |source| SubinterfaceError::Kernel {
            name: format!("index {index}"),
            step,
            source,
        }
    };
    let mut host = Rtnl::new().map_err(kernel("open a routing netlink socket".into()))?;
    match get_link(&mut host, LinkSelector::Index(index)).map_err(kernel("look on the host".into()))? {
        Some(link) if link.alias.as_deref() == Some(tag) => {
            remove(&mut host, index).map_err(kernel(format!("delete {} on the host", link.name)))
        }
        _ => Ok(DeleteOutcome::AlreadyGone),
    }
}

/// Deletes link `index`; one that vanished meanwhile is already gone.
fn remove(rtnl: &mut Rtnl, index: u32) -> Result<DeleteOutcome, RtnlError> {
    match single(rtnl.execute(vec![(del_link(index), 0)])) {
        Ok(()) => Ok(DeleteOutcome::Deleted),
        Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(DeleteOutcome::AlreadyGone),
        Err(e) => Err(e),
    }
}

/// The parent's index, once it is known to exist and to be able to carry a macvlan. The kernel
/// would accept a macvlan as parent (it stacks on that one's own parent instead): refused, so
/// that a subinterface's parent is what the spec says.
fn usable_parent(host: &mut Rtnl, spec: &SubinterfaceSpec) -> Result<u32, SubinterfaceError> {
    let mut request = LinkMessage::default();
    request.attributes.push(LinkAttribute::IfName(spec.parent.clone()));
    let answer = host
        .get(RouteNetlinkMessage::GetLink(request))
        .map_err(|source| SubinterfaceError::Kernel {
            name: spec.name_in_pod.clone(),
            step: format!("read the parent {}", spec.parent),
            source,
        })?;
    let Some(RouteNetlinkMessage::NewLink(parent)) = answer else {
        return Err(SubinterfaceError::ParentMissing {
            parent: spec.parent.clone(),
            name: spec.name_in_pod.clone(),
        });
    };
    if let Some(reason) = parent_problem(&parent) {
        return Err(SubinterfaceError::ParentUnusable {
            parent: spec.parent.clone(),
            name: spec.name_in_pod.clone(),
            reason,
        });
    }
    Ok(parent.header.index)
}

/// Why a link cannot be a parent, if it cannot.
fn parent_problem(link: &LinkMessage) -> Option<String> {
    if link.header.flags.contains(LinkFlags::Loopback) {
        return Some("it is a loopback interface".into());
    }
    if link.header.link_layer_type != LinkLayerType::Ether {
        return Some(format!(
            "it is not an Ethernet interface ({:?})",
            link.header.link_layer_type
        ));
    }
    let kind = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    });
    match kind {
        Some(kind @ (InfoKind::MacVlan | InfoKind::MacVtap)) => Some(format!("it is itself a {kind}")),
        _ => None,
    }
}

/// The one `RTM_NEWLINK` that creates `spec`'s macvlan on parent `parent_index` in the
/// namespace `netns_fd`. The tag is not in it: the kernel ignores an alias at creation.
fn new_macvlan(parent_index: u32, netns_fd: RawFd, spec: &SubinterfaceSpec) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    if spec.up {
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
    }
    link.attributes.push(LinkAttribute::Link(parent_index));
    link.attributes.push(LinkAttribute::NetNsFd(netns_fd));
    link.attributes.push(LinkAttribute::IfName(spec.name_in_pod.clone()));
    if let Some(mtu) = spec.mtu {
        link.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.mac {
        link.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    link.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::MacVlan),
        LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(spec.mode.into())])),
    ]));
    RouteNetlinkMessage::NewLink(link)
}

/// `RTM_SETLINK` giving link `index` the alias `tag`.
fn set_alias(index: u32, tag: &str) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.attributes.push(LinkAttribute::IfAlias(tag.to_owned()));
    RouteNetlinkMessage::SetLink(link)
}

/// `RTM_DELLINK` of link `index`.
fn del_link(index: u32) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    RouteNetlinkMessage::DelLink(link)
}

/// The kernel's rule for interface names (`dev_valid_name`); the problem, if any.
fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an interface name cannot be empty".into());
    }
    if name.len() > MAX_INTERFACE_NAME {
        return Err(format!(
            "{name:?} is {} bytes long; an interface name has at most {MAX_INTERFACE_NAME}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a usable interface name"));
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == ':' || c.is_whitespace()) {
        return Err(format!("{name:?} contains {c:?}, which an interface name cannot hold"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage};

    use super::*;

    fn spec() -> SubinterfaceSpec {
        SubinterfaceSpec {
            parent: "eth0".into(),
            name_in_pod: "net1".into(),
            mode: MacvlanMode::Bridge,
            mac: Some(Mac([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01])),
            mtu: Some(1400),
            up: true,
            tag: "netdra:uid:req".into(),
        }
    }

    /// The datagram `Rtnl::execute` sends for `message` as request 1.
    fn wire(message: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
        let mut message = NetlinkMessage::from(message);
        message.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        message.header.sequence_number = 1;
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    /// An attribute: length, type, value, padding (from `struct nlattr`).
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(value);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    #[test]
    fn the_creation_is_the_message_the_uapi_describes() {
        // Numbers from include/uapi/linux/if_link.h, rtnetlink.h and netlink.h.
        const RTM_NEWLINK: u16 = 16;
        const IFLA_ADDRESS: u16 = 1;
        const IFLA_IFNAME: u16 = 3;
        const IFLA_MTU: u16 = 4;
        const IFLA_LINK: u16 = 5;
        const IFLA_LINKINFO: u16 = 18;
        const IFLA_NET_NS_FD: u16 = 28;
        const IFLA_INFO_KIND: u16 = 1;
        const IFLA_INFO_DATA: u16 = 2;
        const IFLA_MACVLAN_MODE: u16 = 1;
        const MACVLAN_MODE_BRIDGE: u32 = 4;
        const IFF_UP: u32 = 1;
        // NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE.
        const FLAGS: u16 = 0x1 | 0x4 | 0x200 | 0x400;

        let mut attributes = Vec::new();
        attributes.extend(nla(IFLA_LINK, &7u32.to_ne_bytes()));
        attributes.extend(nla(IFLA_NET_NS_FD, &9u32.to_ne_bytes()));
        attributes.extend(nla(IFLA_IFNAME, b"net1\0"));
        attributes.extend(nla(IFLA_MTU, &1400u32.to_ne_bytes()));
        attributes.extend(nla(IFLA_ADDRESS, &[0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01]));
        let data = nla(IFLA_MACVLAN_MODE, &MACVLAN_MODE_BRIDGE.to_ne_bytes());
        // The kind goes with its NUL, like every string attribute; the kernel takes either.
        let info = [nla(IFLA_INFO_KIND, b"macvlan\0"), nla(IFLA_INFO_DATA, &data)].concat();
        attributes.extend(nla(IFLA_LINKINFO, &info));

        // struct ifinfomsg: family, pad, type, index, flags, change.
        let mut body = vec![0u8, 0];
        body.extend_from_slice(&0u16.to_ne_bytes());
        body.extend_from_slice(&0i32.to_ne_bytes());
        body.extend_from_slice(&IFF_UP.to_ne_bytes());
        body.extend_from_slice(&IFF_UP.to_ne_bytes());
        body.extend(attributes);
        // struct nlmsghdr: length, type, flags, sequence, port.
        let mut expected = Vec::new();
        expected.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes());
        expected.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        expected.extend_from_slice(&FLAGS.to_ne_bytes());
        expected.extend_from_slice(&1u32.to_ne_bytes());
        expected.extend_from_slice(&0u32.to_ne_bytes());
        expected.extend(body);

        assert_eq!(expected.len(), 108);
        assert_eq!(wire(new_macvlan(7, 9, &spec()), NLM_F_CREATE | NLM_F_EXCL), expected);
    }

    #[test]
    fn every_mode_is_the_kernels_number_and_down_leaves_the_flags_alone() {
        for (mode, number) in [
            (MacvlanMode::Private, 1u32),
            (MacvlanMode::Vepa, 2),
            (MacvlanMode::Bridge, 4),
            (MacvlanMode::Passthru, 8),
        ] {
            assert_eq!(u32::from(netlink_packet_route::link::MacVlanMode::from(mode)), number);
        }
        let down = SubinterfaceSpec {
            up: false,
            mac: None,
            mtu: None,
            ..spec()
        };
        let RouteNetlinkMessage::NewLink(link) = new_macvlan(7, 9, &down) else {
            panic!("a new-link message");
        };
        assert!(link.header.flags.is_empty() && link.header.change_mask.is_empty());
        assert!(
            !link
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Mtu(_) | LinkAttribute::Address(_)))
        );
    }

    #[test]
    fn the_tag_is_set_and_links_deleted_by_index() {
        let alias = [nla(20, b"netdra:uid:req\0")].concat();
        let bytes = wire(set_alias(5, "netdra:uid:req"), 0);
        assert_eq!(&bytes[4..6], &19u16.to_ne_bytes(), "RTM_SETLINK");
        assert_eq!(&bytes[20..24], &5i32.to_ne_bytes());
        assert_eq!(&bytes[32..], alias.as_slice());
        let bytes = wire(del_link(5), 0);
        assert_eq!(&bytes[4..6], &17u16.to_ne_bytes(), "RTM_DELLINK");
        assert_eq!(bytes.len(), 32);
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        assert!(spec().validate("netdra:").is_ok());
        let cases = [
            (
                SubinterfaceSpec {
                    tag: "other:uid".into(),
                    ..spec()
                },
                "netdra:",
                "subinterface net1: tag: \"other:uid\" does not start with \"netdra:\"",
            ),
            (
                SubinterfaceSpec {
                    tag: format!("netdra:{}", "x".repeat(249)),
                    ..spec()
                },
                "netdra:",
                "subinterface net1: tag: 256 bytes long; an alias has at most 255",
            ),
            (spec(), "", "subinterface net1: tag: the tag prefix is empty"),
            (
                SubinterfaceSpec {
                    name_in_pod: "a-name-too-long0".into(),
                    ..spec()
                },
                "netdra:",
                "subinterface a-name-too-long0: nameInPod: \"a-name-too-long0\" is 16 bytes long; an interface \
                 name has at most 15",
            ),
            (
                SubinterfaceSpec {
                    parent: "eth/0".into(),
                    ..spec()
                },
                "netdra:",
                "subinterface net1: parent: \"eth/0\" contains '/', which an interface name cannot hold",
            ),
            (
                SubinterfaceSpec {
                    mac: Some(Mac([1, 0, 0x5e, 0, 0, 1])),
                    ..spec()
                },
                "netdra:",
                "subinterface net1: mac: 01:00:5e:00:00:01 is not a unicast address",
            ),
        ];
        for (spec, prefix, message) in cases {
            let err = spec.validate(prefix).expect_err(message);
            assert!(matches!(err, SubinterfaceError::InvalidSpec { .. }), "{err}");
            assert_eq!(err.to_string(), message);
        }
        let longest = SubinterfaceSpec {
            tag: format!("netdra:{}", "x".repeat(248)),
            ..spec()
        };
        assert!(longest.validate("netdra:").is_ok());
    }

    #[test]
    fn the_record_is_the_spec_and_the_namespace_and_round_trips() {
        let record = SubinterfaceRecord::new(&spec(), Path::new("/var/run/netns/pod"), 4026532000);
        let json = serde_json::to_value(&record).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "parent": "eth0",
                "nameInPod": "net1",
                "tag": "netdra:uid:req",
                "netns": "/var/run/netns/pod",
                "netnsInode": 4026532000u64,
                "macInPod": "02:aa:bb:cc:dd:01",
            })
        );
        assert_eq!(
            serde_json::from_value::<SubinterfaceRecord>(json).expect("deserialises"),
            record
        );
        let spec: SubinterfaceSpec =
            serde_json::from_str(r#"{"parent":"eth0","nameInPod":"net1","up":true,"tag":"netdra:a:b"}"#)
                .expect("a minimal spec");
        assert_eq!(spec.mode, MacvlanMode::Bridge);
        let passthru: MacvlanMode = serde_json::from_str("\"passthru\"").expect("a mode");
        assert_eq!(passthru, MacvlanMode::Passthru);
    }

    #[test]
    fn macvlans_and_loopbacks_cannot_be_parents() {
        let mut link = LinkMessage::default();
        link.header.link_layer_type = LinkLayerType::Ether;
        assert_eq!(parent_problem(&link), None);
        link.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::MacVlan)]));
        assert_eq!(parent_problem(&link).as_deref(), Some("it is itself a macvlan"));
        let mut lo = LinkMessage::default();
        lo.header.link_layer_type = LinkLayerType::Loopback;
        lo.header.flags = LinkFlags::Loopback;
        assert_eq!(parent_problem(&lo).as_deref(), Some("it is a loopback interface"));
    }

    #[test]
    fn the_tag_prefix_runs_to_the_first_colon() {
        assert_eq!(prefix_of("netdra:uid:req"), Some("netdra:"));
        assert_eq!(prefix_of("netdra:"), Some("netdra:"));
        assert_eq!(prefix_of("netdra"), None);
        assert_eq!(prefix_of(":x"), Some(":"));
    }
}
