//! Reading the routing netlink state of the current namespace: links, addresses, default routes.
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::net::IpAddr;

use netlink_packet_core::{
    DecodeError, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkMessage,
    NlasIterator, Parseable, ParseableParametrized,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkExtentMask, LinkFlags, LinkHeader, LinkInfo, LinkMessage, State},
    route::{RouteAttribute, RouteMessage, RouteType},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::config::Mac;
use crate::link::{AddressFacts, LinkFacts, NetlinkSnapshot};
use crate::record::LOCAL_TABLE;

/// How often one dump is attempted before an interrupted result is used as it is.
const DUMP_ATTEMPTS: usize = 6;
/// The pause before the first repeat of an interrupted dump; it doubles with each repeat, so
/// a burst of changes (a pod start, a CNI setting up links) can pass.
const FIRST_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);
/// Room for one dump datagram: the kernel fills at most 32 KiB per datagram.
pub(crate) const RECEIVE_BUFFER: usize = 64 * 1024;

// Routing netlink message types and link attribute numbers (linux/rtnetlink.h, if_link.h):
// kernel ABI, not exported by netlink-packet-route.
pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_NEWADDR: u16 = 20;
pub(crate) const RTM_NEWROUTE: u16 = 24;
const LINK_HEADER_LEN: usize = 16;
const ROUTE_HEADER_LEN: usize = 12;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_LINK_NETNSID: u16 = 37;
/// The link attributes the inventory reads; the others (statistics, per-family settings) are
/// skipped unparsed.
const WANTED_LINK_ATTRIBUTES: &[u16] = &[
    IFLA_ADDRESS,
    IFLA_IFNAME,
    IFLA_MTU,
    IFLA_LINK,
    IFLA_MASTER,
    IFLA_OPERSTATE,
    IFLA_LINKINFO,
    IFLA_IFALIAS,
    IFLA_LINK_NETNSID,
];

/// Reading the netlink state failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// The netlink socket could not be opened or used.
    #[error("routing netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel answered a dump with an error.
    #[error("{what} dump failed: {}", errno.desc())]
    Kernel {
        /// Which table: `link`, `address`, `route`.
        what: &'static str,
        /// The kernel's errno.
        errno: nix::errno::Errno,
    },
    /// The kernel sent what does not decode.
    #[error("{what} dump failed: {message}")]
    Decode {
        /// Which table: `link`, `address`, `route`.
        what: &'static str,
        /// The decoding problem.
        message: String,
    },
    /// The blocking task that scans panicked or was cancelled.
    #[error("the scan task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Why one datagram of a dump could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DatagramError {
    /// The kernel's answer was an error.
    Kernel(nix::errno::Errno),
    /// What does not decode, and why.
    Decode(String),
}

impl DatagramError {
    fn of(self, what: &'static str) -> NetlinkError {
        match self {
            Self::Kernel(errno) => NetlinkError::Kernel { what, errno },
            Self::Decode(message) => NetlinkError::Decode { what, message },
        }
    }
}

/// Dumps links, addresses and default routes of the calling thread's network namespace.
///
/// Reading the routing netlink state of the current namespace: links, addresses, default routes.
///
/// Written on a plain blocking `netlink-sys` socket with the `netlink-packet-*` types rather
/// than through `rtnetlink`, for two reasons measured on 1,000 interfaces: `rtnetlink`'s
/// connection parses every attribute of every message into a queue before the caller sees the
/// first one (16 MiB of heap at the peak of one link dump, against well under 1 MiB here, where
/// each datagram is reduced to the few attributes the inventory uses as it arrives), and it
/// hides `NLM_F_DUMP_INTR`, which the kernel sets when the table changed while it was being
/// dumped (the dump may then miss or repeat entries). An interrupted dump is repeated, with
/// growing pauses, a bounded number of times. Under a storm of changes that outlasts them, the
/// last dump is used with duplicates removed and the snapshot is marked inconsistent, so the
/// caller scans again soon: failing outright would leave the published devices stale for as
/// long as the storm lasts.
///
/// Everything here blocks; the inventory calls it on a blocking thread.
pub fn snapshot() -> Result<NetlinkSnapshot, NetlinkError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
    socket.bind_auto().map_err(NetlinkError::Socket)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(NetlinkError::Socket)?;
    let mut retries = Retries::default();
    let mut buffer = Vec::with_capacity(RECEIVE_BUFFER);
    let mut sequence = 0;

    // Statistics are a large part of each link message and unused here.
    let mut get_links = LinkMessage::default();
    get_links
        .attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let links = dump_with_retries("link", &mut retries, || {
        sequence += 1;
        dump(
            &socket,
            &mut buffer,
            "link",
            RouteNetlinkMessage::GetLink(get_links.clone()),
            sequence,
            |kind, payload| (kind == RTM_NEWLINK).then(|| link_facts_from(payload)).transpose(),
        )
    })?;
    let addresses = dump_with_retries("address", &mut retries, || {
        sequence += 1;
        dump(
            &socket,
            &mut buffer,
            "address",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            sequence,
            |kind, payload| match kind {
                RTM_NEWADDR => Ok(address_facts(&AddressMessage::parse(payload)?)),
                _ => Ok(None),
            },
        )
    })?;
    let routes = dump_with_retries("route", &mut retries, || {
        sequence += 1;
        dump(
            &socket,
            &mut buffer,
            "route",
            RouteNetlinkMessage::GetRoute(RouteMessage::default()),
            sequence,
            |kind, payload| match kind {
                // A full routing table can hold many routes: look at the header first and
                // decode default routes only.
                RTM_NEWROUTE if may_be_default_route(payload) => {
                    Ok(Some(default_route_oifs(&RouteMessage::parse(payload)?)))
                }
                _ => Ok(None),
            },
        )
    })?;

    // An inconsistent dump may list a link twice; the later entry is the newer state.
    let links: Vec<LinkFacts> = links
        .into_iter()
        .map(|l| (l.index, l))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_values()
        .collect();
    let mut addresses = addresses;
    addresses.dedup();
    Ok(NetlinkSnapshot {
        links,
        addresses,
        default_route_interfaces: routes.into_iter().flatten().collect(),
        retried_dumps: retries.repeated,
        consistent: retries.gave_up == 0,
    })
}

/// How the dumps of one snapshot went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retries {
    /// Dumps repeated after an interruption.
    repeated: u32,
    /// Dumps still interrupted after every attempt, used as they were.
    gave_up: u32,
}

/// One dump's result: what was kept, and whether the kernel flagged it interrupted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Dumped<T> {
    items: Vec<T>,
    interrupted: bool,
}

/// Repeats `attempt` while its dump comes back interrupted, at most [`DUMP_ATTEMPTS`] times.
pub(crate) fn dump_with_retries<T>(
    what: &'static str,
    retries: &mut Retries,
    mut attempt: impl FnMut() -> Result<Dumped<T>, NetlinkError>,
) -> Result<Vec<T>, NetlinkError> {
    let mut number = 0;
    loop {
        number += 1;
        let dumped = attempt()?;
        if !dumped.interrupted {
            return Ok(dumped.items);
        }
        if number == DUMP_ATTEMPTS {
            retries.gave_up += 1;
            tracing::warn!(
                what,
                attempts = DUMP_ATTEMPTS,
                "netlink dump still interrupted by concurrent changes; using it and scanning again soon"
            );
            return Ok(dumped.items);
        }
        retries.repeated += 1;
        tracing::debug!(what, attempt = number, "netlink dump interrupted; dumping again");
        std::thread::sleep(FIRST_RETRY_PAUSE * (1 << (number - 1)));
    }
}

/// Sends one dump request and reads its answer, reducing each message with `keep`.
pub(crate) fn dump<T>(
    socket: &Socket,
    buffer: &mut Vec<u8>,
    what: &'static str,
    request: RouteNetlinkMessage,
    sequence: u32,
    mut keep: impl FnMut(u16, &[u8]) -> Result<Option<T>, DecodeError>,
) -> Result<Dumped<T>, NetlinkError> {
    let mut message = NetlinkMessage::from(request);
    message.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.header.sequence_number = sequence;
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    socket.send(&bytes, 0).map_err(NetlinkError::Socket)?;

    let mut dumped = Dumped {
        items: Vec::new(),
        interrupted: false,
    };
    loop {
        receive(socket, buffer).map_err(NetlinkError::Socket)?;
        let done = read_datagram(buffer, sequence, &mut dumped, &mut keep).map_err(|e| e.of(what))?;
        if done {
            return Ok(dumped);
        }
    }
}

/// `MSG_TRUNC` (`sys/socket.h`): `recv` then returns a datagram's real length, even when it did
/// not fit the buffer.
const MSG_TRUNC: i32 = 0x20;

/// Receives one datagram into `buffer` (cleared first, filled up to its capacity). A datagram
/// larger than that is an error (`InvalidData`) rather than silently cut.
pub(crate) fn receive(socket: &Socket, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    buffer.clear();
    let length = socket.recv(buffer, MSG_TRUNC)?;
    if length > buffer.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {length}-byte datagram was cut to the {}-byte buffer", buffer.len()),
        ));
    }
    Ok(())
}

/// Reads the messages of one datagram of a dump answer into `dumped`; true once the dump is
/// complete. Messages of other sequence numbers (a late answer to an earlier request) are
/// skipped.
fn read_datagram<T>(
    datagram: &[u8],
    sequence: u32,
    dumped: &mut Dumped<T>,
    keep: &mut impl FnMut(u16, &[u8]) -> Result<Option<T>, DecodeError>,
) -> Result<bool, DatagramError> {
    let mut rest = datagram;
    while !rest.is_empty() {
        let message =
            NetlinkBuffer::new_checked(rest).map_err(|e| DatagramError::Decode(format!("bad netlink header: {e}")))?;
        let length = message.length() as usize;
        // Messages are 4-byte aligned; the last one may end without padding.
        rest = rest.get(length.next_multiple_of(4)..).unwrap_or_default();
        if message.sequence_number() != sequence {
            continue;
        }
        dumped.interrupted |= message.flags() & NLM_F_DUMP_INTR != 0;
        let payload = message.payload();
        match message.message_type() {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(|| DatagramError::Decode("truncated error message".into()))?;
                if code == 0 {
                    return Ok(true);
                }
                return Err(DatagramError::Kernel(nix::errno::Errno::from_raw(
                    code.saturating_neg(),
                )));
            }
            kind => {
                if let Some(item) = keep(kind, payload)
                    .map_err(|e| DatagramError::Decode(format!("cannot decode message type {kind}: {e}")))?
                {
                    dumped.items.push(item);
                }
            }
        }
    }
    Ok(false)
}

/// A link message reduced to the attributes the inventory reads.
fn link_facts_from(payload: &[u8]) -> Result<LinkFacts, DecodeError> {
    let mut link = LinkMessage::default();
    link.header = LinkHeader::parse(payload)?;
    let family = link.header.interface_family;
    for nla in NlasIterator::new(payload.get(LINK_HEADER_LEN..).unwrap_or_default()) {
        let nla = nla?;
        if WANTED_LINK_ATTRIBUTES.contains(&nla.kind()) {
            link.attributes.push(LinkAttribute::parse_with_param(&nla, family)?);
        }
    }
    Ok(link_facts(&link))
}

/// Whether a route message's fixed header says "default unicast route" (prefix length 0).
fn may_be_default_route(payload: &[u8]) -> bool {
    const RTN_UNICAST: u8 = 1;
    payload.len() >= ROUTE_HEADER_LEN && payload[1] == 0 && payload[7] == RTN_UNICAST
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
            LinkAttribute::Address(mac) => facts.mac = Mac::from_bytes(mac).map(|m| m.to_string()),
            LinkAttribute::Mtu(mtu) => facts.mtu = Some(*mtu),
            LinkAttribute::OperState(state) => facts.oper_state = oper_state_name(*state).to_owned(),
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

/// The operational state as the published `state` attribute spells it: one of `up`, `down`,
/// `dormant`, `lowerlayerdown`, `notpresent`, `testing`, `unknown` (RFC 2863's names, lower
/// case, as `ip` prints them). A value the kernel may add later is `unknown`.
pub fn oper_state_name(state: State) -> &'static str {
    match state {
        State::Up => "up",
        State::Down => "down",
        State::Dormant => "dormant",
        State::LowerLayerDown => "lowerlayerdown",
        State::NotPresent => "notpresent",
        State::Testing => "testing",
        State::Unknown | State::Other(_) => "unknown",
        // `State` is non-exhaustive: whatever else it grows is not one of the documented names.
        _ => "unknown",
    }
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
        || table == LOCAL_TABLE
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

    fn link_message(index: u32, name: &str, flags: u16, sequence: u32) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes.push(LinkAttribute::IfName(name.into()));
        link.attributes.push(LinkAttribute::Mtu(1500));
        // An attribute the inventory skips unparsed.
        link.attributes.push(LinkAttribute::TxQueueLen(1000));
        let mut message = NetlinkMessage::from(RouteNetlinkMessage::NewLink(link));
        message.header.flags = flags;
        message.header.sequence_number = sequence;
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    fn done(sequence: u32, flags: u16) -> Vec<u8> {
        // struct nlmsghdr { len 20, type NLMSG_DONE, flags, seq, pid } + int 0
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&20u32.to_ne_bytes());
        bytes.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        bytes.extend_from_slice(&(flags | 2).to_ne_bytes());
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&0i32.to_ne_bytes());
        bytes
    }

    fn keep_links(kind: u16, payload: &[u8]) -> Result<Option<LinkFacts>, DecodeError> {
        (kind == RTM_NEWLINK).then(|| link_facts_from(payload)).transpose()
    }

    #[test]
    fn a_dump_is_read_across_datagrams_and_ends_at_done() {
        let mut dumped = Dumped {
            items: Vec::new(),
            interrupted: false,
        };
        let first = [link_message(1, "lo", 2, 7), link_message(2, "eth0", 2, 7)].concat();
        assert_eq!(read_datagram(&first, 7, &mut dumped, &mut keep_links), Ok(false));
        // A late answer to another request is skipped.
        let second = [
            link_message(9, "stale", 2, 6),
            link_message(3, "eth1", 2, 7),
            done(7, 0),
        ]
        .concat();
        assert_eq!(read_datagram(&second, 7, &mut dumped, &mut keep_links), Ok(true));
        let names: Vec<&str> = dumped.items.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["lo", "eth0", "eth1"]);
        assert_eq!(dumped.items[1].mtu, Some(1500));
        assert!(!dumped.interrupted);
    }

    #[test]
    fn the_interrupted_flag_is_seen_on_data_and_on_done() {
        for datagram in [
            [link_message(1, "lo", 2 | NLM_F_DUMP_INTR, 1), done(1, 0)].concat(),
            [link_message(1, "lo", 2, 1), done(1, NLM_F_DUMP_INTR)].concat(),
        ] {
            let mut dumped = Dumped {
                items: Vec::new(),
                interrupted: false,
            };
            assert_eq!(read_datagram(&datagram, 1, &mut dumped, &mut keep_links), Ok(true));
            assert!(dumped.interrupted);
        }
    }

    #[test]
    fn a_kernel_error_is_reported_with_its_errno() {
        let mut error = done(4, 0);
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error[16..20].copy_from_slice(&(-95i32).to_ne_bytes());
        let mut dumped = Dumped {
            items: Vec::new(),
            interrupted: false,
        };
        let err = read_datagram(&error, 4, &mut dumped, &mut keep_links).expect_err("EOPNOTSUPP");
        assert_eq!(err, DatagramError::Kernel(nix::errno::Errno::EOPNOTSUPP));
        assert_eq!(
            err.of("link").to_string(),
            "link dump failed: Operation not supported on transport endpoint"
        );
    }

    proptest::proptest! {
        /// Whatever a datagram holds, reading it returns (an error or progress) without panicking.
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512), seq in 0u32..3) {
            let mut dumped = Dumped { items: Vec::new(), interrupted: false };
            let _ = read_datagram(&bytes, seq, &mut dumped, &mut keep_links);
        }

        /// Valid link messages with arbitrary names and indexes come back as they went in.
        #[test]
        fn link_messages_round_trip(links in proptest::collection::vec((1u32..10_000, "[a-z0-9_.-]{1,15}"), 0..20)) {
            let datagram: Vec<u8> = links
                .iter()
                .flat_map(|(i, n)| link_message(*i, n, 2, 3))
                .chain(done(3, 0))
                .collect();
            let mut dumped = Dumped { items: Vec::new(), interrupted: false };
            proptest::prop_assert_eq!(read_datagram(&datagram, 3, &mut dumped, &mut keep_links), Ok(true));
            let got: Vec<(u32, String)> = dumped.items.into_iter().map(|l| (l.index, l.name)).collect();
            proptest::prop_assert_eq!(got, links);
        }
    }

    #[test]
    fn an_interrupted_dump_is_repeated_and_only_the_clean_one_counts() {
        let mut attempts = 0;
        let mut retries = Retries::default();
        let out = dump_with_retries("link", &mut retries, || {
            attempts += 1;
            Ok(Dumped {
                items: vec![attempts],
                interrupted: attempts == 1,
            })
        })
        .expect("second dump is clean");
        assert_eq!(out, [2]);
        assert_eq!(
            retries,
            Retries {
                repeated: 1,
                gave_up: 0
            }
        );
    }

    #[test]
    fn a_dump_interrupted_every_time_is_used_and_flagged() {
        let mut retries = Retries::default();
        let out = dump_with_retries("link", &mut retries, || {
            Ok(Dumped {
                items: vec!["eth0"],
                interrupted: true,
            })
        })
        .expect("the last dump is used");
        assert_eq!(out, ["eth0"]);
        assert_eq!(
            retries,
            Retries {
                repeated: DUMP_ATTEMPTS as u32 - 1,
                gave_up: 1
            }
        );
    }

    #[test]
    fn a_real_snapshot_of_this_namespace_has_loopback() {
        let snapshot = snapshot().expect("netlink works for any user");
        let lo = snapshot.links.iter().find(|l| l.name == "lo").expect("lo");
        assert!(lo.loopback);
        assert!(
            snapshot
                .addresses
                .iter()
                .any(|a| a.index == lo.index && a.cidr == "127.0.0.1/8")
        );
    }

    #[test]
    fn a_datagram_larger_than_the_buffer_is_an_error() {
        let mut socket = Socket::new(NETLINK_ROUTE).expect("socket");
        socket.bind_auto().expect("bind");
        socket.connect(&SocketAddr::new(0, 0)).expect("connect");
        let mut message = NetlinkMessage::from(RouteNetlinkMessage::GetLink(LinkMessage::default()));
        message.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        message.header.sequence_number = 1;
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        socket.send(&bytes, 0).expect("send");
        // Every link message is larger than 32 bytes.
        let mut small = Vec::with_capacity(32);
        let err = receive(&socket, &mut small).expect_err("truncated");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("was cut to the 32-byte buffer"), "{err}");
    }

    #[test]
    fn operational_states_have_their_documented_names() {
        let names: Vec<&str> = [
            State::Up,
            State::Down,
            State::Dormant,
            State::LowerLayerDown,
            State::NotPresent,
            State::Testing,
            State::Unknown,
            State::Other(42),
        ]
        .into_iter()
        .map(oper_state_name)
        .collect();
        assert_eq!(
            names,
            [
                "up",
                "down",
                "dormant",
                "lowerlayerdown",
                "notpresent",
                "testing",
                "unknown",
                "unknown"
            ]
        );
    }

    #[test]
    fn macs_are_lower_case_colon_separated() {
        assert_eq!(
            Mac::from_bytes(&[0x02, 0xFC, 0, 0, 0, 1])
                .map(|m| m.to_string())
                .as_deref(),
            Some("02:fc:00:00:00:01")
        );
    }
}
