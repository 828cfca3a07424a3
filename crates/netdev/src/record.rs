//! What an attach must restore, recorded before it changes anything: plain data the caller
//! persists (serde) and hands back to [`detach`](crate::detach()).
//!
//! The kernel flushes a link's addresses, and the routes through it, when the link changes
//! namespace, so they are read from the host first. Routes the kernel makes by itself (the
//! prefix route of an address, IPv6 link-local routes) and router-advertised ones come back on
//! their own and are not recorded; neither are IPv6 link-local addresses, which the kernel
//! generates again when the link comes up.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::IpNet;
use netlink_packet_core::Parseable;
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{InfoKind, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
};
use serde::{Deserialize, Serialize};

use crate::config::Mac;
use crate::health::OperState;
use crate::netlink::{RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE};
use crate::rtnl::{Rtnl, RtnlError};
use crate::rules::RTPROT_KERNEL;
use crate::settings::HostSettings;
use crate::subinterface::MacvlanMode;

/// `RT_TABLE_MAIN`.
pub(crate) const MAIN_TABLE: u32 = 254;
/// `RT_TABLE_LOCAL`: the kernel's own routes for local addresses.
pub(crate) const LOCAL_TABLE: u32 = 255;

/// Everything needed to bring an interface back from a pod as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRecord {
    /// The interface as it was on the host.
    pub host: HostInterface,
    /// The namespace it was moved into, as given.
    pub netns: PathBuf,
    /// That namespace's identity (the inode of its nsfs file): how it is found again when its
    /// path is gone, or names another namespace, after a crash ([`crate::Netns::open_expecting`]).
    /// Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_inode: Option<u64>,
    /// Its name inside the pod.
    pub name_in_pod: String,
    /// Its MAC address inside the pod (the configured one, or its own). For a subinterface,
    /// the configured one only: the kernel picks the MAC when it creates the link, after the
    /// record is written.
    pub mac_in_pod: Option<Mac>,
    /// The subinterface created for the pod, when the host interface ([`Self::host`], its
    /// parent) did not move: what a detach deletes instead of returning anything. Absent for an
    /// interface that moved, and in records written before subinterfaces existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subinterface: Option<Subinterface>,
}

/// A subinterface created for the pod: what a detach deletes instead of returning anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subinterface {
    /// Its macvlan mode.
    pub mode: MacvlanMode,
    /// Its tag (alias), by which it is found and deleted; never the parent's.
    pub tag: String,
}

/// An interface's host-side state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostInterface {
    /// Its name.
    pub name: String,
    /// Its index when recorded (the kernel may give it another on return).
    pub index: u32,
    /// Its MTU.
    pub mtu: u32,
    /// Its MAC address.
    pub mac: Option<Mac>,
    /// Its permanent (burnt-in) MAC address, when the driver reports one.
    pub permanent_mac: Option<Mac>,
    /// The PCI function behind it, when there is one.
    pub pci_address: Option<String>,
    /// Its alias.
    pub alias: Option<String>,
    /// Whether it was administratively up.
    pub up: bool,
    /// Its addresses (IPv6 link-local ones excepted).
    pub addresses: Vec<HostAddress>,
    /// The routes through it that the kernel does not make by itself.
    pub routes: Vec<HostRoute>,
    /// The host's values of the other settings the attach changes (see [`HostSettings`]).
    #[serde(default, skip_serializing_if = "HostSettings::is_empty")]
    pub settings: HostSettings,
}

/// One recorded address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostAddress {
    /// The address and prefix.
    pub address: IpNet,
    /// The IPv4 broadcast address, when one was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<Ipv4Addr>,
    /// The address scope (`RT_SCOPE_*`: 0 global, 253 link, 254 host).
    pub scope: u8,
}

/// One recorded route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRoute {
    /// The destination; prefix length 0 for a default route.
    pub destination: IpNet,
    /// The next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// The preferred source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// The metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    /// The routing table.
    pub table: u32,
    /// The scope (`RT_SCOPE_*`).
    pub scope: u8,
    /// Who made it (`RTPROT_*`: 3 boot, 4 static, 16 dhcp…).
    pub protocol: u8,
}

impl RestoreRecord {
    /// Whether `link` is this record's interface, by the strongest identity recorded: its PCI
    /// function (when the caller could read the link's, which sysfs shows for the host's
    /// namespace only), else its permanent MAC, else the MAC it had on the host or in the pod.
    ///
    /// A subinterface is identified by its tag alone: its parent (the recorded host interface)
    /// never carries it, so the parent is never taken for it.
    pub(crate) fn identifies(&self, link: &LinkView, pci_address: Option<&str>) -> bool {
        if let Some(subinterface) = &self.subinterface {
            return link.alias.as_deref() == Some(subinterface.tag.as_str());
        }
        if let (Some(recorded), Some(seen)) = (&self.host.pci_address, pci_address) {
            return recorded == seen;
        }
        if let Some(permanent) = self.host.permanent_mac {
            return link.permanent_mac == Some(permanent);
        }
        link.mac.is_some() && (link.mac == self.mac_in_pod || link.mac == self.host.mac)
    }
}

/// One link as netlink shows it: what recording and finding an interface need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkView {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) mtu: u32,
    pub(crate) mac: Option<Mac>,
    pub(crate) permanent_mac: Option<Mac>,
    pub(crate) alias: Option<String>,
    pub(crate) up: bool,
    /// `IFF_LOWER_UP`.
    pub(crate) carrier: bool,
    /// `IFLA_OPERSTATE`.
    pub(crate) oper: OperState,
    /// Whether its kind (`IFLA_INFO_KIND`) is `macvlan`.
    pub(crate) macvlan: bool,
}

impl LinkView {
    pub(crate) fn from_message(link: &LinkMessage) -> Self {
        let mut view = Self {
            index: link.header.index,
            name: String::new(),
            mtu: 0,
            mac: None,
            permanent_mac: None,
            alias: None,
            up: link.header.flags.contains(LinkFlags::Up),
            carrier: link.header.flags.contains(LinkFlags::LowerUp),
            // Absent from the message: the kernel did not say.
            oper: OperState::Unknown,
            macvlan: false,
        };
        for attribute in &link.attributes {
            match attribute {
                LinkAttribute::IfName(name) => view.name.clone_from(name),
                LinkAttribute::Mtu(mtu) => view.mtu = *mtu,
                LinkAttribute::Address(bytes) => view.mac = Mac::from_bytes(bytes),
                // Drivers without a burnt-in address report zeros.
                LinkAttribute::PermAddress(bytes) => {
                    view.permanent_mac = Mac::from_bytes(bytes).filter(|m| m.0 != [0; 6]);
                }
                LinkAttribute::IfAlias(alias) if !alias.is_empty() => view.alias = Some(alias.clone()),
                LinkAttribute::OperState(state) => view.oper = OperState::from(*state),
                LinkAttribute::LinkInfo(infos) => {
                    view.macvlan = infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::MacVlan)));
                }
                _ => {}
            }
        }
        view
    }
}

/// How a link is asked for.
pub(crate) enum LinkSelector<'a> {
    Name(&'a str),
    Index(u32),
}

/// Asks for one link; `None` when there is no such link.
pub(crate) fn get_link(rtnl: &mut Rtnl, selector: LinkSelector<'_>) -> Result<Option<LinkView>, RtnlError> {
    let mut request = LinkMessage::default();
    request
        .attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    match selector {
        LinkSelector::Name(name) => request.attributes.push(LinkAttribute::IfName(name.to_owned())),
        LinkSelector::Index(index) => request.header.index = index,
    }
    match rtnl.get(RouteNetlinkMessage::GetLink(request))? {
        None => Ok(None),
        Some(RouteNetlinkMessage::NewLink(link)) => Ok(Some(LinkView::from_message(&link))),
        Some(other) => Err(RtnlError::Decode(format!(
            "a link was asked for, the kernel sent {}",
            other.message_type()
        ))),
    }
}

/// Every link of the socket's namespace.
pub(crate) fn dump_links(rtnl: &mut Rtnl) -> Result<Vec<LinkView>, RtnlError> {
    let mut request = LinkMessage::default();
    request
        .attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    rtnl.dump("link", RouteNetlinkMessage::GetLink(request), |kind, payload| {
        if kind != RTM_NEWLINK {
            return Ok(None);
        }
        let link = LinkMessage::parse(payload)?;
        Ok(Some(LinkView::from_message(&link)))
    })
}

/// Reads the host-side state of each of `links` (with its PCI address): its addresses, and
/// the routes through it.
///
/// Routes are the expensive part on a node with a large routing table: the kernel walks every
/// table for a dump, whatever the filter (about 1 µs per route here). Each interface's routes
/// come from a dump the kernel filters by output interface: one unfiltered dump shared by
/// several interfaces was measured slower, as every route then crosses into user space.
pub(crate) fn record_hosts(
    rtnl: &mut Rtnl,
    links: Vec<(LinkView, Option<String>)>,
) -> Result<Vec<HostInterface>, RtnlError> {
    let mut recorded = Vec::with_capacity(links.len());
    for (link, pci_address) in links {
        let index = link.index;
        let mut request = RouteMessage::default();
        // With strict checking on, the kernel returns only routes through this interface.
        request.attributes.push(RouteAttribute::Oif(index));
        let routes = rtnl.dump("route", RouteNetlinkMessage::GetRoute(request), |kind, payload| {
            if kind != RTM_NEWROUTE || !may_be_recorded(payload) {
                return Ok(None);
            }
            Ok(host_route(&RouteMessage::parse(payload)?, index))
        })?;
        let mut request = AddressMessage::default();
        // Likewise, only this interface's addresses.
        request.header.index = index;
        let addresses = rtnl.dump("address", RouteNetlinkMessage::GetAddress(request), |kind, payload| {
            if kind != RTM_NEWADDR {
                return Ok(None);
            }
            Ok(host_address(&AddressMessage::parse(payload)?, index))
        })?;
        recorded.push(HostInterface {
            name: link.name,
            index,
            mtu: link.mtu,
            mac: link.mac,
            permanent_mac: link.permanent_mac,
            pci_address,
            alias: link.alias,
            up: link.up,
            addresses,
            routes,
            settings: HostSettings::default(),
        });
    }
    Ok(recorded)
}

/// `RTPROT_RA`: routes from router advertisements.
const RTPROT_RA: u8 = 9;
/// `RTN_UNICAST`.
const RTN_UNICAST: u8 = 1;

/// From a route message's fixed header (`struct rtmsg`): whether it may be one to record, that
/// is a unicast route, not in the local table, made by neither the kernel nor an RA.
fn may_be_recorded(payload: &[u8]) -> bool {
    let [_family, _dst_len, _src_len, _tos, table, protocol, _scope, kind, ..] = payload else {
        return false;
    };
    *kind == RTN_UNICAST && u32::from(*table) != LOCAL_TABLE && *protocol != RTPROT_KERNEL && *protocol != RTPROT_RA
}

fn host_address(message: &AddressMessage, index: u32) -> Option<HostAddress> {
    if message.header.index != index {
        return None;
    }
    let mut local = None;
    let mut address = None;
    let mut broadcast = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Broadcast(ip) => broadcast = Some(*ip),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's on point-to-point links.
    let ip = local.or(address)?;
    if let IpAddr::V6(v6) = ip
        && v6.segments()[0] & 0xffc0 == 0xfe80
    {
        return None;
    }
    Some(HostAddress {
        address: IpNet::new(ip, message.header.prefix_len).ok()?,
        broadcast,
        scope: u8::from(message.header.scope),
    })
}

/// The route, if it goes through interface `index` and is one to record.
fn host_route(message: &RouteMessage, index: u32) -> Option<HostRoute> {
    let header = &message.header;
    let protocol = u8::from(header.protocol);
    if header.kind != RouteType::Unicast || protocol == RTPROT_KERNEL || protocol == RTPROT_RA {
        return None;
    }
    let mut route = HostRoute {
        destination: match header.address_family {
            AddressFamily::Inet => IpNet::new(Ipv4Addr::UNSPECIFIED.into(), 0).ok()?,
            AddressFamily::Inet6 => IpNet::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 0).ok()?,
            _ => return None,
        },
        gateway: None,
        source: None,
        metric: None,
        table: u32::from(header.table),
        scope: u8::from(header.scope),
        protocol,
    };
    let mut oif = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(address) => {
                route.destination = IpNet::new(route_ip(address)?, header.destination_prefix_length).ok()?;
            }
            RouteAttribute::Gateway(address) => route.gateway = route_ip(address),
            RouteAttribute::PrefSource(address) => route.source = route_ip(address),
            RouteAttribute::Priority(metric) => route.metric = Some(*metric),
            RouteAttribute::Table(table) => route.table = *table,
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    (oif == Some(index) && route.table != LOCAL_TABLE).then_some(route)
}

fn route_ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some((*v4).into()),
        RouteAddress::Inet6(v6) => Some((*v6).into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RestoreRecord {
        RestoreRecord {
            host: HostInterface {
                name: "eth1".into(),
                index: 7,
                mtu: 9000,
                mac: Some(Mac([2, 0, 0, 0, 0, 7])),
                permanent_mac: None,
                pci_address: Some("0000:3b:00.0".into()),
                alias: Some("uplink b".into()),
                up: true,
                addresses: vec![HostAddress {
                    address: "192.0.2.5/24".parse().expect("cidr"),
                    broadcast: Some("192.0.2.255".parse().expect("ip")),
                    scope: 0,
                }],
                routes: vec![HostRoute {
                    destination: "198.51.100.0/24".parse().expect("cidr"),
                    gateway: Some("192.0.2.1".parse().expect("ip")),
                    source: None,
                    metric: Some(100),
                    table: MAIN_TABLE,
                    scope: 0,
                    protocol: 4,
                }],
                settings: HostSettings::default(),
            },
            netns: "/var/run/netns/cni-1234".into(),
            netns_inode: Some(4_026_532_177),
            name_in_pod: "net1".into(),
            mac_in_pod: Some(Mac([2, 0xaa, 0, 0, 0, 1])),
            subinterface: None,
        }
    }

    fn view(mac: [u8; 6], permanent: Option<[u8; 6]>) -> LinkView {
        LinkView {
            index: 30,
            name: "dev7".into(),
            mtu: 1500,
            mac: Some(Mac(mac)),
            permanent_mac: permanent.map(Mac),
            alias: None,
            up: false,
            carrier: false,
            oper: OperState::Unknown,
            macvlan: false,
        }
    }

    #[test]
    fn identity_is_the_pci_function_then_the_permanent_mac_then_a_known_mac() {
        let mut record = sample();
        // PCI decides when both sides know it, whatever the MACs say.
        assert!(record.identifies(&view([9; 6], None), Some("0000:3b:00.0")));
        assert!(!record.identifies(&view([2, 0xaa, 0, 0, 0, 1], None), Some("0000:3b:00.1")));
        // Without a PCI address to compare (inside a pod): the MAC it had in the pod or on the host.
        assert!(record.identifies(&view([2, 0xaa, 0, 0, 0, 1], None), None));
        assert!(record.identifies(&view([2, 0, 0, 0, 0, 7], None), None));
        assert!(!record.identifies(&view([2, 0, 0, 0, 0, 8], None), None));
        // A recorded permanent MAC outranks the changeable one.
        record.host.permanent_mac = Some(Mac([0x3c, 0, 0, 0, 0, 1]));
        assert!(record.identifies(&view([9; 6], Some([0x3c, 0, 0, 0, 0, 1])), None));
        assert!(!record.identifies(&view([2, 0xaa, 0, 0, 0, 1], None), None));
    }

    #[test]
    fn the_record_round_trips_through_serde() {
        let record = sample();
        let json = serde_json::to_string(&record).expect("serialises");
        assert!(json.contains(r#""macInPod":"02:aa:00:00:00:01""#), "{json}");
        assert!(json.contains(r#""address":"192.0.2.5/24""#), "{json}");
        assert!(json.contains(r#""netnsInode":4026532177"#), "{json}");
        assert_eq!(serde_json::from_str::<RestoreRecord>(&json).expect("parses"), record);
    }

    #[test]
    fn a_record_written_before_the_inode_was_recorded_still_parses() {
        // What an earlier version persisted: no `netnsInode`.
        let old = r#"{"host":{"name":"eth1","index":7,"mtu":1500,"mac":"02:00:00:00:00:07",
            "permanentMac":null,"pciAddress":null,"alias":null,"up":true,"addresses":[],"routes":[]},
            "netns":"/var/run/netns/cni-1","nameInPod":"net1","macInPod":null}"#;
        let record: RestoreRecord = serde_json::from_str(old).expect("parses");
        assert_eq!(record.netns_inode, None);
        assert_eq!(record.netns, PathBuf::from("/var/run/netns/cni-1"));
        // And without an inode, none is written.
        let json = serde_json::to_string(&record).expect("serialises");
        assert!(!json.contains("netnsInode"), "{json}");
    }

    #[test]
    fn a_record_written_before_subinterfaces_still_parses_and_writes_none() {
        // What the previous version persisted: an inode, no `subinterface`.
        let old = r#"{"host":{"name":"eth1","index":7,"mtu":1500,"mac":"02:00:00:00:00:07",
            "permanentMac":null,"pciAddress":"0000:3b:00.0","alias":null,"up":true,
            "addresses":[{"address":"192.0.2.5/24","scope":0}],"routes":[]},
            "netns":"/var/run/netns/cni-1","netnsInode":4026532177,"nameInPod":"net1",
            "macInPod":"02:aa:00:00:00:01"}"#;
        let record: RestoreRecord = serde_json::from_str(old).expect("parses");
        assert_eq!(record.subinterface, None);
        assert_eq!(record.netns_inode, Some(4_026_532_177));
        assert_eq!(record.host.addresses.len(), 1);
        let json = serde_json::to_string(&record).expect("serialises");
        assert!(!json.contains("subinterface"), "{json}");
    }

    #[test]
    fn a_subinterface_record_has_golden_bytes_and_is_identified_by_its_tag_alone() {
        let record = RestoreRecord {
            subinterface: Some(Subinterface {
                mode: MacvlanMode::Bridge,
                tag: "netdra:uid:req".into(),
            }),
            ..sample()
        };
        let json = serde_json::to_string(&record).expect("serialises");
        assert!(
            json.ends_with(r#","subinterface":{"mode":"bridge","tag":"netdra:uid:req"}}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<RestoreRecord>(&json).expect("parses"), record);

        // The parent's own MAC or PCI function is not the subinterface; only the tag is.
        assert!(!record.identifies(&view([2, 0, 0, 0, 0, 7], None), Some("0000:3b:00.0")));
        assert!(!record.identifies(&view([2, 0xaa, 0, 0, 0, 1], None), None));
        let tagged = LinkView {
            alias: Some("netdra:uid:req".into()),
            ..view([9; 6], None)
        };
        assert!(record.identifies(&tagged, None));
        let other = LinkView {
            alias: Some("netdra:uid:other".into()),
            ..view([2, 0xaa, 0, 0, 0, 1], None)
        };
        assert!(!record.identifies(&other, None));
    }
}
