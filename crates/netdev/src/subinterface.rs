//! Shared NICs: a `macvlan` subinterface of a host interface (the parent), created directly in
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

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
use crate::config::{Mac, check_interface_name};
use crate::netns::{Netns, NetnsError};
use crate::record::{LinkSelector, LinkView, dump_links, get_link};
use crate::rtnl::{Rtnl, RtnlError};

/// The longest tag: `IFALIASZ` less the terminating NUL.
pub(crate) const MAX_TAG: usize = 255;

/// How a macvlan reaches its siblings and the outside (`IFLA_MACVLAN_MODE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum MacvlanMode {
    /// Siblings on the same parent talk to each other directly (`MACVLAN_MODE_BRIDGE`).
    #[default]
    Bridge,
    /// No traffic between siblings (`MACVLAN_MODE_PRIVATE`).
    Private,
    /// Traffic between siblings goes through the external switch (`MACVLAN_MODE_VEPA`).
    Vepa,
    /// The one subinterface takes over the parent (`MACVLAN_MODE_PASSTHRU`). Refused by
    /// [`SubinterfaceSpec::validate`]: it changes the parent (promiscuity, MAC) and allows one
    /// subinterface per parent; kept so that a record or request naming it still parses.
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
    /// Its MAC address; derived from the tag when absent ([`SubinterfaceSpec::mac_in_pod`]).
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
    /// Its MAC in the pod: the spec's, else a locally administered unicast one derived from the
    /// tag (stable: the same tag always gives the same MAC).
    pub fn mac_in_pod(&self) -> Mac {
        self.mac.unwrap_or_else(|| derived_mac(&self.tag))
    }

    /// Checks what can be checked without the kernel: the names are interface names, the mode
    /// is not `passthru`, the MAC is a unicast address, the tag fits an alias and starts with
    /// `tag_prefix` (non-empty).
    pub fn validate(&self, tag_prefix: &str) -> Result<(), SubinterfaceError> {
        let invalid = |field: &'static str, reason: String| SubinterfaceError::InvalidSpec {
            name: self.name_in_pod.clone(),
            field,
            reason,
        };
        check_interface_name(&self.parent).map_err(|r| invalid("parent", r))?;
        check_interface_name(&self.name_in_pod).map_err(|r| invalid("nameInPod", r))?;
        if self.mode == MacvlanMode::Passthru {
            return Err(invalid(
                "mode",
                "passthru is not supported: it changes the parent (promiscuity, MAC) and allows one \
                 subinterface per parent"
                    .into(),
            ));
        }
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
    /// Its MAC address in the pod: the spec's, else the one derived from the tag.
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
            mac_in_pod: Some(spec.mac_in_pod()),
        }
    }
}

/// A subinterface [`create`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreatedSubinterface {
    /// Its index in the pod's namespace.
    pub index: u32,
    /// Its MAC address, as the kernel shows it (the spec's [`SubinterfaceSpec::mac_in_pod`]).
    pub mac: Option<Mac>,
}

/// What [`delete`] or [`delete_on_host`] found.
///
/// Exhaustive on purpose: every caller must handle each outcome, so a new one should
/// fail their build rather than fall into a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The tagged link was there and is deleted.
    Deleted,
    /// No tagged link: its namespace is gone (and it with it), or it is not there.
    AlreadyGone,
}

/// A link on the host carrying a tag with the caller's prefix (see [`create`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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

/// Creates `spec`'s macvlan in `netns` (see [`create`]): its index and MAC in
/// the pod. Nothing is left when the spec is invalid (`tag_prefix` as in
/// [`SubinterfaceSpec::validate`]), the parent is missing or unusable, or the name is taken.
///
/// Shared NICs: a `macvlan` subinterface of a host interface (the parent), created directly in
/// a pod's network namespace, for a claim that shares its parent with others instead of taking
/// the whole NIC.
///
/// The rules:
/// - The parent never moves. [`create`] sends one `RTM_NEWLINK` on a host socket with
///   `NLM_F_CREATE | NLM_F_EXCL`, the parent's index (`IFLA_LINK`) and the pod's namespace
///   (`IFLA_NET_NS_FD`): the kernel creates the link in the pod's namespace, so it never
///   appears on the host, and destroys it with that namespace (a macvlan is not returned to
///   the host as a physical interface is). MTU, MAC and mode come in that message. The parent
///   is neither changed nor brought up: a subinterface has carrier only while its parent is up
///   with carrier (siblings in bridge mode cannot talk otherwise).
/// - It is created **down under a temporary name** ([`temporary_name`]: `nd` and 12 hex digits
///   of a stable hash of the tag), then renamed: before Linux 6.15 the kernel checks a new
///   link's name in the socket's namespace (the host's), not the target's, so a pod name equal
///   to a host interface's (the parent's own, by default) would fail with `EEXIST`. One
///   `RTM_SETLINK` inside the pod then sets the final name, the tag and `IFF_UP` (the kernel
///   renames before it changes flags, and renames only a link that is down, which it is). The
///   alias cannot come with the creation: the kernel ignores it in `RTM_NEWLINK`. If that
///   `RTM_SETLINK` fails the link is deleted again.
/// - Every subinterface carries a tag, its alias (`IFLA_IFALIAS`): `<prefix><claim>:<request>`
///   (`netdra:<claim uid>:<request>`).
/// - Its MAC is known before the kernel acts: the spec's, else one derived from the tag
///   ([`SubinterfaceSpec::mac_in_pod`]: locally administered, unicast), so the record holds it.
/// - Nothing is deleted unless it is ours: [`delete`] finds the link in the pod by its recorded
///   name and tag (else by the tag alone, in case the pod renamed it, else a `macvlan` untagged
///   under the tag's temporary name, what a crash between creation and rename leaves), and
///   [`delete_on_host`] checks the kind (`macvlan`) and the tag of the index it is given.
/// - The record ([`SubinterfaceRecord::new`]) is computed from the spec and the namespace's
///   path and inode alone, so the caller journals it before the kernel acts.
/// - `passthru` mode is refused: it changes the parent (promiscuity, MAC) and allows one
///   subinterface per parent.
///
/// Where a subinterface can be, and who finds it: in its pod's namespace ([`delete`]); in that
/// namespace after the pod died while a bind mount or a process still holds it ([`delete`]
/// opens the namespace by its recorded inode, wherever held); on the host only if someone moved
/// it there (`ip link set … netns 1`), which [`leftovers`] lists for a sweep: only `macvlan`
/// links whose alias has the exact tag shape (`is_tag`), so an operator's alias that merely
/// starts with the prefix is never taken for one. A crash can leave none on the host: creation
/// happens in the pod's namespace.
///
/// Like [`attach_all`](crate::attach_all), this blocks and runs in the host namespace.
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

    let temporary = temporary_name(&spec.tag);
    let message = new_macvlan(parent_index, netns.raw_fd(), &temporary, spec);
    single(host.execute(vec![(message, NLM_F_CREATE | NLM_F_EXCL)]))
        .map_err(kernel(format!("create it on {} in {ns}", spec.parent)))?;

    let link = get_link(&mut pod, LinkSelector::Name(&temporary))
        .and_then(|link| {
            link.ok_or(RtnlError::Kernel(crate::rtnl::KernelError {
                errno: Errno::ENODEV,
                message: None,
            }))
        })
        .map_err(kernel(format!("find it as {temporary} in {ns} after creating it")))?;
    if let Err(e) = single(pod.execute(vec![(finish(link.index, spec), 0)])) {
        let undo = match single(pod.execute(vec![(del_link(link.index), 0)])) {
            Ok(()) => "it was deleted again".to_owned(),
            Err(undo) => format!("deleting it failed too ({undo}); it goes with the namespace"),
        };
        if e.errno() == Some(Errno::EEXIST) {
            tracing::debug!(name = %name, netns = %ns, "{undo}");
            return Err(SubinterfaceError::NameTaken {
                parent: spec.parent.clone(),
                name: name.clone(),
                netns: netns.path().to_owned(),
            });
        }
        return Err(kernel(format!(
            "rename it from {temporary}, tag it {:?} in {ns}; {undo}",
            spec.tag
        ))(e));
    }
    Ok(CreatedSubinterface {
        index: link.index,
        mac: get_link(&mut pod, LinkSelector::Index(link.index))
            .map_err(kernel(format!("read it in {ns}")))?
            .and_then(|l| l.mac),
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

/// [`delete`] on a socket in the pod's namespace (at `netns`, for the errors): the link
/// [`find_in_pod`] finds; [`DeleteOutcome::AlreadyGone`] when none.
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
    let found = find_in_pod(pod, name, tag).map_err(kernel(format!("look in {ns}")))?;
    let Some(link) = found else {
        return Ok(DeleteOutcome::AlreadyGone);
    };
    remove(pod, link.index).map_err(kernel(format!("delete {} in {ns}", link.name)))
}

/// The subinterface tagged `tag` in the pod (on `pod`, a socket there): under `name` if it
/// carries the tag, else whichever link carries it (the pod renamed it, or the name is another
/// link's), else an untagged `macvlan` under the tag's [`temporary_name`] (a crash came between
/// its creation and its rename).
pub(crate) fn find_in_pod(pod: &mut Rtnl, name: &str, tag: &str) -> Result<Option<LinkView>, RtnlError> {
    let tagged = |link: &LinkView| link.alias.as_deref() == Some(tag);
    if let Some(link) = get_link(pod, LinkSelector::Name(name))?
        && tagged(&link)
    {
        return Ok(Some(link));
    }
    if let Some(link) = dump_links(pod)?.into_iter().find(tagged) {
        return Ok(Some(link));
    }
    Ok(get_link(pod, LinkSelector::Name(&temporary_name(tag)))?.filter(|link| link.macvlan && link.alias.is_none()))
}

/// The prefix of `tag` that [`SubinterfaceSpec::validate`] checks when the caller gives none of
/// its own: up to and including its first `:` (`netdra:` of `netdra:<claim>:<request>`);
/// `None` when it has no `:`.
pub(crate) fn prefix_of(tag: &str) -> Option<&str> {
    tag.find(':').map(|end| &tag[..=end])
}

/// The host's `macvlan` links whose alias is a tag of `tag_prefix` (non-empty) by `is_tag`:
/// subinterfaces someone moved to the host (see [`create`]), for a sweep with
/// [`delete_on_host`]. No other link is listed, whatever its alias.
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
    Ok(dump_macvlans(&mut host)
        .map_err(kernel)?
        .into_iter()
        .filter_map(|link| {
            let tag = link.alias.filter(|a| is_tag(a, tag_prefix))?;
            Some(Leftover {
                index: link.index,
                name: link.name,
                tag,
            })
        })
        .collect())
}

/// Deletes the host link at `index` if it is a `macvlan` carrying exactly `tag`;
/// [`DeleteOutcome::AlreadyGone`] when there is no such link or the index now names another
/// (of another kind, untagged or otherwise tagged).
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
        Some(link) if link.macvlan && link.alias.as_deref() == Some(tag) => {
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

/// A link's kind (`IFLA_INFO_KIND`), when it has one.
fn kind_of(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
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
    match kind_of(link) {
        Some(kind @ (InfoKind::MacVlan | InfoKind::MacVtap)) => Some(format!("it is itself a {kind}")),
        _ => None,
    }
}

/// The one `RTM_NEWLINK` that creates `spec`'s macvlan, down, as `temporary` on parent
/// `parent_index` in the namespace `netns_fd`. The tag is not in it: the kernel ignores an
/// alias at creation.
fn new_macvlan(parent_index: u32, netns_fd: RawFd, temporary: &str, spec: &SubinterfaceSpec) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.attributes.push(LinkAttribute::Link(parent_index));
    link.attributes.push(LinkAttribute::NetNsFd(netns_fd));
    link.attributes.push(LinkAttribute::IfName(temporary.to_owned()));
    if let Some(mtu) = spec.mtu {
        link.attributes.push(LinkAttribute::Mtu(mtu));
    }
    link.attributes
        .push(LinkAttribute::Address(spec.mac_in_pod().0.to_vec()));
    link.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::MacVlan),
        LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(spec.mode.into())])),
    ]));
    RouteNetlinkMessage::NewLink(link)
}

/// The `RTM_SETLINK` that finishes link `index` as `spec` says: its name in the pod, its tag,
/// and up if asked (the kernel renames before it changes the flags).
fn finish(index: u32, spec: &SubinterfaceSpec) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    if spec.up {
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
    }
    link.attributes.push(LinkAttribute::IfName(spec.name_in_pod.clone()));
    link.attributes.push(LinkAttribute::IfAlias(spec.tag.clone()));
    RouteNetlinkMessage::SetLink(link)
}

/// `RTM_DELLINK` of link `index`.
fn del_link(index: u32) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    RouteNetlinkMessage::DelLink(link)
}

/// FNV-1a (64 bits) of `domain` then `tag`: stable across versions and machines, as the
/// temporary name and the MAC must be (both are computed again from a journaled tag).
fn stable_hash(domain: &[u8], tag: &str) -> u64 {
    domain
        .iter()
        .chain(tag.as_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The name a subinterface tagged `tag` is created under, before its rename in the pod: `nd`
/// and 12 hex digits (48 bits) of a stable hash of the tag, 14 bytes, unlikely to be any
/// host link's name (see [`create`]).
pub fn temporary_name(tag: &str) -> String {
    format!("nd{:012x}", stable_hash(b"name\0", tag) & 0xffff_ffff_ffff)
}

/// The MAC of a subinterface tagged `tag` when its spec gives none: 46 bits of a stable hash
/// of the tag, locally administered (bit 1 of the first octet set) and unicast (bit 0 clear).
pub(crate) fn derived_mac(tag: &str) -> Mac {
    let hash = stable_hash(b"mac\0", tag).to_be_bytes();
    let mut mac = [0; 6];
    mac.copy_from_slice(&hash[..6]);
    mac[0] = (mac[0] & 0xfc) | 0x02;
    Mac(mac)
}

/// Whether `alias` has the exact shape of a tag of `tag_prefix`: the prefix, a non-empty claim
/// UID of `[0-9a-f-]`, `:`, and a request name that is a DNS label (at most 63 lower-case
/// letters, digits and `-`, starting and ending with a letter or digit).
pub fn is_tag(alias: &str, tag_prefix: &str) -> bool {
    let Some(rest) = alias.strip_prefix(tag_prefix).filter(|_| !tag_prefix.is_empty()) else {
        return false;
    };
    let Some((claim, request)) = rest.split_once(':') else {
        return false;
    };
    let label_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !claim.is_empty()
        && claim
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-')
        && (1..=63).contains(&request.len())
        && request.chars().all(|c| label_char(c) || c == '-')
        && request.starts_with(label_char)
        && request.ends_with(label_char)
}

/// Every `macvlan` of the socket's namespace.
pub(crate) fn dump_macvlans(rtnl: &mut Rtnl) -> Result<Vec<LinkView>, RtnlError> {
    Ok(dump_links(rtnl)?.into_iter().filter(|l| l.macvlan).collect())
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
        // NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE.
        const FLAGS: u16 = 0x1 | 0x4 | 0x200 | 0x400;

        let mut attributes = Vec::new();
        attributes.extend(nla(IFLA_LINK, &7u32.to_ne_bytes()));
        attributes.extend(nla(IFLA_NET_NS_FD, &9u32.to_ne_bytes()));
        attributes.extend(nla(IFLA_IFNAME, b"nd0123456789ab\0"));
        attributes.extend(nla(IFLA_MTU, &1400u32.to_ne_bytes()));
        attributes.extend(nla(IFLA_ADDRESS, &[0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01]));
        let data = nla(IFLA_MACVLAN_MODE, &MACVLAN_MODE_BRIDGE.to_ne_bytes());
        // The kind goes with its NUL, like every string attribute; the kernel takes either.
        let info = [nla(IFLA_INFO_KIND, b"macvlan\0"), nla(IFLA_INFO_DATA, &data)].concat();
        attributes.extend(nla(IFLA_LINKINFO, &info));

        // struct ifinfomsg: family, pad, type, index, flags, change: created down.
        let mut body = vec![0u8, 0];
        body.extend_from_slice(&0u16.to_ne_bytes());
        body.extend_from_slice(&0i32.to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend(attributes);
        // struct nlmsghdr: length, type, flags, sequence, port.
        let mut expected = Vec::new();
        expected.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes());
        expected.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        expected.extend_from_slice(&FLAGS.to_ne_bytes());
        expected.extend_from_slice(&1u32.to_ne_bytes());
        expected.extend_from_slice(&0u32.to_ne_bytes());
        expected.extend(body);

        assert_eq!(expected.len(), 116);
        assert_eq!(
            wire(new_macvlan(7, 9, "nd0123456789ab", &spec()), NLM_F_CREATE | NLM_F_EXCL),
            expected
        );
    }

    #[test]
    fn every_mode_is_the_kernels_number_and_the_mac_is_always_given() {
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
        let RouteNetlinkMessage::NewLink(link) = new_macvlan(7, 9, "nd0", &down) else {
            panic!("a new-link message");
        };
        assert!(link.header.flags.is_empty() && link.header.change_mask.is_empty());
        assert!(!link.attributes.iter().any(|a| matches!(a, LinkAttribute::Mtu(_))));
        let derived = derived_mac("netdra:uid:req").0.to_vec();
        assert!(link.attributes.contains(&LinkAttribute::Address(derived)));
    }

    #[test]
    fn one_setlink_names_tags_and_raises_it_and_links_are_deleted_by_index() {
        // IFLA_IFNAME 3, IFLA_IFALIAS 20; IFF_UP 1 in flags and change.
        let attributes = [nla(3, b"net1\0"), nla(20, b"netdra:uid:req\0")].concat();
        let bytes = wire(finish(5, &spec()), 0);
        assert_eq!(&bytes[4..6], &19u16.to_ne_bytes(), "RTM_SETLINK");
        assert_eq!(&bytes[20..24], &5i32.to_ne_bytes());
        assert_eq!(&bytes[24..28], &1u32.to_ne_bytes());
        assert_eq!(&bytes[28..32], &1u32.to_ne_bytes());
        assert_eq!(&bytes[32..], attributes.as_slice());
        let down = wire(finish(5, &SubinterfaceSpec { up: false, ..spec() }), 0);
        assert_eq!(&down[24..32], &[0; 8]);
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
            (
                SubinterfaceSpec {
                    mode: MacvlanMode::Passthru,
                    ..spec()
                },
                "netdra:",
                "subinterface net1: mode: passthru is not supported: it changes the parent (promiscuity, \
                 MAC) and allows one subinterface per parent",
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
        // Without a MAC in the spec, the record holds the one derived from the tag.
        let record = SubinterfaceRecord::new(&SubinterfaceSpec { mac: None, ..spec }, Path::new("/x"), 1);
        assert_eq!(record.mac_in_pod, Some(derived_mac("netdra:a:b")));
    }

    #[test]
    fn the_temporary_name_and_the_mac_are_stable_functions_of_the_tag() {
        // Golden: journaled tags are hashed again after an upgrade; these must never change.
        // FNV-1a 64 as published (the empty string is the offset basis).
        assert_eq!(stable_hash(b"", ""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"", "a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(temporary_name("netdra:uid:req"), TEMPORARY);
        assert_eq!(derived_mac("netdra:uid:req").to_string(), MAC);
        assert_ne!(temporary_name("netdra:uid:req2"), TEMPORARY);
    }

    const TEMPORARY: &str = "nde42e6b017854";
    const MAC: &str = "e2:bd:e8:70:cd:bc";

    proptest::proptest! {
        #[test]
        fn temporary_names_are_valid_and_macs_local_unicast(tag in ".{0,255}") {
            let name = temporary_name(&tag);
            proptest::prop_assert_eq!(name.len(), 14);
            proptest::prop_assert!(check_interface_name(&name).is_ok());
            let mac = derived_mac(&tag);
            proptest::prop_assert_eq!(mac.0[0] & 0x03, 0x02);
        }

        #[test]
        fn any_alias_is_judged_without_panicking(alias in "\\PC{0,80}") {
            let _ = is_tag(&alias, "netdra:");
        }

        #[test]
        fn every_well_formed_tag_is_one(claim in "[0-9a-f-]{1,36}", request in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            let tag = format!("netdra:{claim}:{request}");
            proptest::prop_assert!(is_tag(&tag, "netdra:"));
        }
    }

    #[test]
    fn only_the_exact_tag_shape_is_a_tag() {
        let claim = "0f4c7e12-3a4b-4c5d-8e9f-0123456789ab";
        assert!(is_tag(&format!("netdra:{claim}:net-1"), "netdra:"));
        for alias in [
            "netdra:fast".to_owned(),
            "netdra::req".to_owned(),
            format!("netdra:{claim}:"),
            format!("netdra:{claim}:Net1"),
            format!("netdra:{claim}:-net"),
            format!("netdra:{claim}:net-"),
            format!("netdra:{claim}:a:b"),
            format!("netdra:{claim}:{}", "a".repeat(64)),
            "netdra:claim-a:req".to_owned(),
            format!("other:{claim}:net1"),
        ] {
            assert!(!is_tag(&alias, "netdra:"), "{alias}");
        }
        assert!(!is_tag(&format!("{claim}:net1"), ""));
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
