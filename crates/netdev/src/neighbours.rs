//! Permanent neighbour (ARP / NDP) entries: the messages that add and delete one, and a
//! reader of an interface's.
//!
//! The rules (`include/uapi/linux/neighbour.h`):
//! - An entry is `RTM_NEWNEIGH` / `RTM_DELNEIGH` with a `struct ndmsg` of the address's family,
//!   the interface's index and state `NUD_PERMANENT`, then `NDA_DST` (the IP address) and, to
//!   add, `NDA_LLADDR` (the MAC address): byte for byte what `ip neigh add ADDRESS lladdr MAC dev
//!   X nud permanent` and `ip neigh del ADDRESS dev X` send. An add goes with
//!   `NLM_F_CREATE | NLM_F_EXCL` (an existing entry is `EEXIST`), or `NLM_F_CREATE |
//!   NLM_F_REPLACE` to overwrite.
//! - Reading: one `RTM_GETNEIGH` dump of both families that the kernel filters by interface:
//!   with strict checking (on for every [`Rtnl`] socket) the header must be all zero but for
//!   the family, and the interface goes in `NDA_IFINDEX`. The state cannot be filtered in the
//!   kernel, so entries are kept here: state exactly `NUD_PERMANENT` (as dranet keeps them),
//!   an IPv4 or IPv6 address, and a 6-byte MAC address. Entries with another link-layer
//!   address (IPoIB's are 20 bytes) cannot be held by a [`Neighbour`] and are left out.
//! - The kernel flushes an interface's neighbour entries, permanent ones too, when the
//!   interface changes namespace: entries to keep must be read before it moves.

use std::net::IpAddr;

use netlink_packet_core::{DecodeError, Parseable};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
};

use crate::config::{Mac, Neighbour};
use crate::rtnl::{Rtnl, RtnlError};

/// `RTM_NEWNEIGH`: each entry of a dump.
const RTM_NEWNEIGH: u16 = 28;

/// The `RTM_NEWNEIGH` adding `neighbour` as a permanent entry on interface `index`.
pub(crate) fn add_neighbour(index: u32, neighbour: &Neighbour) -> RouteNetlinkMessage {
    let mut message = entry(index, neighbour.address);
    message.attributes.push(NeighbourAttribute::LinkLayerAddress(
        neighbour.hardware_address.0.to_vec(),
    ));
    RouteNetlinkMessage::NewNeighbour(message)
}

// Only the kernel tests delete: a detach leaves the pod's rules to die with its namespace.
#[cfg(test)]
/// The `RTM_DELNEIGH` removing the entry for `address` on interface `index`.
pub(crate) fn delete_neighbour(index: u32, address: IpAddr) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelNeighbour(entry(index, address))
}

fn entry(index: u32, address: IpAddr) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    message.header.ifindex = index;
    message.header.state = NeighbourState::Permanent;
    message
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(address)));
    message
}

/// One message of a neighbour dump: the entry as a [`Neighbour`], if it is a permanent one on
/// interface `index` with an IP and a 6-byte MAC address.
pub(crate) fn parse_permanent(payload: &[u8], index: u32) -> Result<Option<Neighbour>, DecodeError> {
    let message = NeighbourMessage::parse(payload)?;
    let header = &message.header;
    // Proxy entries are answers the host gives for others, not neighbours.
    if header.ifindex != index
        || header.state != NeighbourState::Permanent
        || header.flags.contains(NeighbourFlags::Proxy)
    {
        return Ok(None);
    }
    let mut address = None;
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => address = Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => address = Some(IpAddr::V6(*v6)),
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = Mac::from_bytes(bytes),
            _ => {}
        }
    }
    Ok(address.zip(mac).map(|(address, hardware_address)| Neighbour {
        address,
        hardware_address,
    }))
}

/// The `RTM_GETNEIGH` dump request for interface `index`'s entries, both families.
fn dump_request(index: u32) -> RouteNetlinkMessage {
    let mut request = NeighbourMessage::default();
    request.attributes.push(NeighbourAttribute::IfIndex(index));
    RouteNetlinkMessage::GetNeighbour(request)
}

/// The permanent neighbour entries of interface `index` in the socket's namespace, IPv4 then
/// IPv6.
pub(crate) fn permanent_neighbours(rtnl: &mut Rtnl, index: u32) -> Result<Vec<Neighbour>, RtnlError> {
    rtnl.dump("neighbour", dump_request(index), |kind, payload| {
        if kind != RTM_NEWNEIGH {
            return Ok(None);
        }
        parse_permanent(payload, index)
    })
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage};

    use super::*;

    fn wire(message: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
        let mut message = NetlinkMessage::from(message);
        message.header.flags = NLM_F_REQUEST | flags;
        message.header.sequence_number = 1;
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    fn neighbour(address: &str, last: u8) -> Neighbour {
        Neighbour {
            address: address.parse().expect("ip"),
            hardware_address: Mac([2, 0, 0, 0, 0, last]),
        }
    }

    const CREATE: u16 = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;

    #[test]
    fn an_ipv4_entry_is_the_message_ip_neigh_add_sends() {
        // `ip neigh add 10.77.0.9 lladdr 02:00:00:00:00:09 dev X nud permanent`, X index 3.
        #[rustfmt::skip]
        let expected: &[u8] = &[
            // nlmsghdr: length 48, RTM_NEWNEIGH, REQUEST|ACK|EXCL|CREATE, seq 1, port 0
            48, 0, 0, 0, 28, 0, 0x05, 0x06, 1, 0, 0, 0, 0, 0, 0, 0,
            // ndmsg: AF_INET, pad, pad, ifindex 3, NUD_PERMANENT, flags 0, type 0
            2, 0, 0, 0, 3, 0, 0, 0, 0x80, 0, 0, 0,
            // NDA_DST 10.77.0.9
            8, 0, 1, 0, 10, 77, 0, 9,
            // NDA_LLADDR 02:00:00:00:00:09, padded
            10, 0, 2, 0, 2, 0, 0, 0, 0, 9, 0, 0,
        ];
        assert_eq!(wire(add_neighbour(3, &neighbour("10.77.0.9", 9)), CREATE), expected);
    }

    #[test]
    fn an_ipv6_entry_is_the_message_ip_neigh_add_sends() {
        // `ip neigh add fd00::9 lladdr 02:00:00:00:00:0a dev X nud permanent`.
        #[rustfmt::skip]
        let expected: &[u8] = &[
            60, 0, 0, 0, 28, 0, 0x05, 0x06, 1, 0, 0, 0, 0, 0, 0, 0,
            10, 0, 0, 0, 3, 0, 0, 0, 0x80, 0, 0, 0,
            20, 0, 1, 0, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9,
            10, 0, 2, 0, 2, 0, 0, 0, 0, 0x0a, 0, 0,
        ];
        assert_eq!(wire(add_neighbour(3, &neighbour("fd00::9", 10)), CREATE), expected);
    }

    #[test]
    fn a_delete_names_the_address_and_interface_as_ip_neigh_del_does() {
        // `ip neigh del 10.77.0.9 dev X`.
        #[rustfmt::skip]
        let expected: &[u8] = &[
            36, 0, 0, 0, 29, 0, 0x05, 0, 1, 0, 0, 0, 0, 0, 0, 0,
            2, 0, 0, 0, 3, 0, 0, 0, 0x80, 0, 0, 0,
            8, 0, 1, 0, 10, 77, 0, 9,
        ];
        assert_eq!(
            wire(delete_neighbour(3, "10.77.0.9".parse().expect("ip")), NLM_F_ACK),
            expected
        );
    }

    #[test]
    fn the_dump_request_filters_by_interface_in_an_attribute() {
        #[rustfmt::skip]
        let expected: &[u8] = &[
            36, 0, 0, 0, 30, 0, 0x01, 0x03, 1, 0, 0, 0, 0, 0, 0, 0,
            // AF_UNSPEC, and zeros where strict checking wants them
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            // NDA_IFINDEX 7
            8, 0, 8, 0, 7, 0, 0, 0,
        ];
        assert_eq!(wire(dump_request(7), NLM_F_DUMP), expected);
    }

    /// An entry as the kernel reports one in a dump.
    fn dumped(family: u8, index: u32, state: u16, flags: u8, attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut bytes = vec![family, 0, 0, 0];
        bytes.extend_from_slice(&index.to_ne_bytes());
        bytes.extend_from_slice(&state.to_ne_bytes());
        bytes.extend_from_slice(&[flags, 1]);
        for (kind, value) in attributes {
            bytes.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            bytes.extend_from_slice(&kind.to_ne_bytes());
            bytes.extend_from_slice(value);
            bytes.resize(bytes.len().next_multiple_of(4), 0);
        }
        bytes
    }

    const MAC: &[u8] = &[2, 0, 0, 0, 0, 9];

    #[test]
    fn only_permanent_entries_of_the_interface_with_a_mac_are_kept() {
        let dst: &[u8] = &[10, 77, 0, 9];
        let kept = parse_permanent(&dumped(2, 3, 0x80, 0, &[(1, dst), (2, MAC)]), 3).expect("decodes");
        assert_eq!(kept, Some(neighbour("10.77.0.9", 9)));
        // Reachable, another interface, a proxy entry, no MAC, a 20-byte (IPoIB) MAC.
        for payload in [
            dumped(2, 3, 0x02, 0, &[(1, dst), (2, MAC)]),
            dumped(2, 4, 0x80, 0, &[(1, dst), (2, MAC)]),
            dumped(2, 3, 0x80, 0x08, &[(1, dst), (2, MAC)]),
            dumped(2, 3, 0x80, 0, &[(1, dst)]),
            dumped(2, 3, 0x80, 0, &[(1, dst), (2, &[7; 20])]),
        ] {
            assert_eq!(parse_permanent(&payload, 3).expect("decodes"), None);
        }
        let v6: &[u8] = &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        let kept = parse_permanent(&dumped(10, 3, 0x80, 0x80, &[(1, v6), (2, MAC)]), 3).expect("decodes");
        assert_eq!(kept, Some(neighbour("fd00::9", 9)));
    }

    proptest::proptest! {
        /// Any bytes read as an entry, or as nothing, or fail: never a panic.
        #[test]
        fn arbitrary_neighbour_messages_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_permanent(&bytes, 3);
        }

        /// A well-formed header with arbitrary attributes never panics either.
        #[test]
        fn arbitrary_neighbour_attributes_never_panic(
            family in proptest::sample::select(vec![2u8, 10, 7]),
            attributes in proptest::collection::vec((0u16..20, proptest::collection::vec(proptest::num::u8::ANY, 0..24)), 0..8),
        ) {
            let attributes: Vec<(u16, &[u8])> = attributes.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            let _ = parse_permanent(&dumped(family, 3, 0x80, 0, &attributes), 3);
        }
    }
}
