//! Reading the routing netlink state of the current namespace: links, addresses, default routes.
//!
//! Dumps go through `rtnetlink`'s raw request so the header flags stay visible: neither
//! `rtnetlink` nor `netlink-proto` looks at `NLM_F_DUMP_INTR`, which the kernel sets when the
//! table changed while it was being dumped (the dump may then miss or repeat entries). An
//! interrupted dump is repeated, with growing pauses, a bounded number of times. Under a storm
//! of changes that outlasts them, the last dump is used with duplicates removed and the
//! snapshot is marked inconsistent, so the caller scans again soon: failing outright would
//! leave the published devices stale for as long as the storm lasts.

use std::net::IpAddr;

use futures::StreamExt;
use netlink_packet_core::{NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage},
    route::{RouteAttribute, RouteMessage, RouteType},
};
use rtnetlink::Handle;

use crate::link::{AddressFacts, LinkFacts, NetlinkSnapshot};

/// How often one dump is attempted before an interrupted result is an error.
const DUMP_ATTEMPTS: usize = 6;
/// The pause before the first repeat of an interrupted dump; it doubles with each repeat, so
/// a burst of changes (a pod start, a CNI setting up links) can pass.
const FIRST_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);
/// The kernel's `local` routing table, whose routes are not the node's uplinks.
const RT_TABLE_LOCAL: u32 = 255;

/// Reading the netlink state failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a routing netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel answered a dump with an error.
    #[error("{what} dump failed: {message}")]
    Dump {
        /// Which table: `link`, `address`, `route`.
        what: &'static str,
        /// The kernel's or the transport's error.
        message: String,
    },
}

/// Opens a routing netlink connection in the caller's namespace and drives it on the runtime.
pub fn connect() -> Result<Handle, NetlinkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Dumps links, addresses and default routes.
pub async fn snapshot(handle: &Handle) -> Result<NetlinkSnapshot, NetlinkError> {
    let mut retried = Retries::default();
    // Statistics are a large part of each link message and unused here.
    let mut get_links = LinkMessage::default();
    get_links
        .attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let links = dump(
        handle,
        "link",
        RouteNetlinkMessage::GetLink(get_links),
        &mut retried,
        |m| match m {
            RouteNetlinkMessage::NewLink(link) => Some(link_facts(&link)),
            _ => None,
        },
    )
    .await?;
    let addresses = dump(
        handle,
        "address",
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        &mut retried,
        |m| match m {
            RouteNetlinkMessage::NewAddress(address) => address_facts(&address),
            _ => None,
        },
    )
    .await?;
    let default_route_interfaces = dump(
        handle,
        "route",
        RouteNetlinkMessage::GetRoute(RouteMessage::default()),
        &mut retried,
        |m| match m {
            RouteNetlinkMessage::NewRoute(route) => Some(default_route_oifs(&route)),
            _ => None,
        },
    )
    .await?
    .into_iter()
    .flatten()
    .collect();
    // An inconsistent dump may list a link twice; the later entry is the newer state.
    let links: Vec<LinkFacts> = links
        .into_iter()
        .map(|l: LinkFacts| (l.index, l))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_values()
        .collect();
    let mut addresses: Vec<AddressFacts> = addresses;
    addresses.dedup();
    Ok(NetlinkSnapshot {
        links,
        addresses,
        default_route_interfaces,
        retried_dumps: retried.repeated,
        consistent: retried.gave_up == 0,
    })
}

/// One dump, repeated while the kernel flags it as interrupted. Each message is reduced by
/// `keep` as it arrives, so a dump of 1,000 links never holds 1,000 parsed messages.
async fn dump<T>(
    handle: &Handle,
    what: &'static str,
    request: RouteNetlinkMessage,
    retried: &mut Retries,
    keep: impl Fn(RouteNetlinkMessage) -> Option<T>,
) -> Result<Vec<T>, NetlinkError> {
    let send = || {
        let mut message = NetlinkMessage::from(request.clone());
        message.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        handle.clone().request(message).map_err(|e| NetlinkError::Dump {
            what,
            message: e.to_string(),
        })
    };
    collect_dump(send, what, retried, keep).await
}

/// How the dumps of one snapshot went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Retries {
    /// Dumps repeated after an interruption.
    repeated: u32,
    /// Dumps still interrupted after every attempt, used as they were.
    gave_up: u32,
}

/// The retry loop of [`dump`], over any source of response streams (a fake one in tests).
async fn collect_dump<T, S>(
    mut send: impl FnMut() -> Result<S, NetlinkError>,
    what: &'static str,
    retried: &mut Retries,
    keep: impl Fn(RouteNetlinkMessage) -> Option<T>,
) -> Result<Vec<T>, NetlinkError>
where
    S: futures::Stream<Item = NetlinkMessage<RouteNetlinkMessage>> + Unpin,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut responses = send()?;
        let mut interrupted = false;
        let mut out = Vec::new();
        while let Some(response) = responses.next().await {
            interrupted |= response.header.flags & NLM_F_DUMP_INTR != 0;
            match response.payload {
                NetlinkPayload::InnerMessage(m) => out.extend(keep(m)),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(NetlinkError::Dump {
                        what,
                        message: e.to_string(),
                    });
                }
                _ => {}
            }
        }
        if !interrupted {
            return Ok(out);
        }
        if attempt == DUMP_ATTEMPTS {
            retried.gave_up += 1;
            tracing::warn!(
                what,
                attempts = DUMP_ATTEMPTS,
                "netlink dump still interrupted by concurrent changes; using it and scanning again soon"
            );
            return Ok(out);
        }
        retried.repeated += 1;
        tracing::debug!(what, attempt, "netlink dump interrupted; dumping again");
        tokio::time::sleep(FIRST_RETRY_PAUSE * (1 << (attempt - 1))).await;
    }
}

fn link_facts(link: &LinkMessage) -> LinkFacts {
    let mut facts = LinkFacts {
        index: link.header.index,
        loopback: link.header.flags.contains(LinkFlags::Loopback),
        ..LinkFacts::default()
    };
    let mut link_netns = false;
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::IfName(name) => facts.name.clone_from(name),
            LinkAttribute::Address(mac) if mac.len() == 6 => facts.mac = Some(format_mac(mac)),
            LinkAttribute::Mtu(mtu) => facts.mtu = Some(*mtu),
            LinkAttribute::OperState(state) => facts.oper_state = format!("{state:?}").to_ascii_lowercase(),
            LinkAttribute::Controller(index) => facts.controller = Some(*index),
            LinkAttribute::Link(index) if *index != link.header.index && *index != 0 => facts.lower = Some(*index),
            LinkAttribute::LinkNetNsId(_) => link_netns = true,
            LinkAttribute::IfAlias(alias) if !alias.is_empty() => facts.alias = Some(alias.clone()),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        facts.info_kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    // IFLA_LINK of a link whose peer lives in another namespace indexes that namespace.
    if link_netns {
        facts.lower = None;
    }
    facts
}

fn format_mac(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn address_facts(address: &AddressMessage) -> Option<AddressFacts> {
    let ip = address.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })?;
    Some(AddressFacts {
        index: address.header.index,
        cidr: format!("{ip}/{}", address.header.prefix_len),
        ipv6: matches!(ip, IpAddr::V6(_)),
    })
}

/// The output interfaces of a default route (several for a multipath route).
fn default_route_oifs(route: &RouteMessage) -> Vec<u32> {
    let family_ok = matches!(route.header.address_family, AddressFamily::Inet | AddressFamily::Inet6);
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    if !family_ok
        || route.header.destination_prefix_length != 0
        || route.header.kind != RouteType::Unicast
        || table == RT_TABLE_LOCAL
    {
        return Vec::new();
    }
    let mut oifs = Vec::new();
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Oif(index) => oifs.push(*index),
            RouteAttribute::MultiPath(hops) => oifs.extend(hops.iter().map(|h| h.interface_index)),
            _ => {}
        }
    }
    oifs
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::route::RouteNextHop;

    use super::*;

    #[test]
    fn default_routes_name_their_interfaces_and_others_do_not() {
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.kind = RouteType::Unicast;
        route.header.table = 254;
        route.attributes.push(RouteAttribute::Oif(4));
        assert_eq!(default_route_oifs(&route), vec![4]);

        let mut multipath = route.clone();
        let hop = |interface_index| {
            let mut hop = RouteNextHop::default();
            hop.interface_index = interface_index;
            hop
        };
        multipath.attributes = vec![RouteAttribute::MultiPath(vec![hop(7), hop(8)])];
        assert_eq!(default_route_oifs(&multipath), vec![7, 8]);

        let mut subnet = route.clone();
        subnet.header.destination_prefix_length = 24;
        assert!(default_route_oifs(&subnet).is_empty());

        let mut local = route.clone();
        local.header.table = 255;
        assert!(default_route_oifs(&local).is_empty());
    }

    fn link_message(index: u32, name: &str, flags: u16) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes.push(LinkAttribute::IfName(name.into()));
        let mut message = NetlinkMessage::from(RouteNetlinkMessage::NewLink(link));
        message.header.flags = flags;
        message
    }

    fn names(m: RouteNetlinkMessage) -> Option<String> {
        match m {
            RouteNetlinkMessage::NewLink(l) => Some(link_facts(&l).name),
            _ => None,
        }
    }

    #[tokio::test]
    async fn an_interrupted_dump_is_repeated_and_only_the_clean_one_counts() {
        let mut attempts = 0;
        let send = || {
            attempts += 1;
            let flag = if attempts == 1 { NLM_F_DUMP_INTR } else { 0 };
            // The first dump saw eth1 twice while it was renamed; the kernel flagged it.
            let messages = if attempts == 1 {
                vec![
                    link_message(1, "eth0", 0),
                    link_message(2, "eth1", flag),
                    link_message(2, "lan1", flag),
                ]
            } else {
                vec![link_message(1, "eth0", 0), link_message(2, "lan1", 0)]
            };
            Ok::<_, NetlinkError>(futures::stream::iter(messages))
        };
        let mut retried = Retries::default();
        let out = collect_dump(send, "link", &mut retried, names)
            .await
            .expect("second dump is clean");
        assert_eq!(out, ["eth0", "lan1"]);
        assert_eq!(
            retried,
            Retries {
                repeated: 1,
                gave_up: 0
            }
        );
    }

    #[tokio::test]
    async fn a_dump_interrupted_every_time_is_used_and_flagged() {
        let send = || Ok::<_, NetlinkError>(futures::stream::iter(vec![link_message(1, "eth0", NLM_F_DUMP_INTR)]));
        let mut retried = Retries::default();
        let out = collect_dump(send, "link", &mut retried, names)
            .await
            .expect("the last dump is used");
        assert_eq!(out, ["eth0"]);
        assert_eq!(
            retried,
            Retries {
                repeated: DUMP_ATTEMPTS as u32 - 1,
                gave_up: 1
            }
        );
    }

    #[test]
    fn macs_are_lower_case_colon_separated() {
        assert_eq!(format_mac(&[0x02, 0xFC, 0, 0, 0, 1]), "02:fc:00:00:00:01");
    }
}
