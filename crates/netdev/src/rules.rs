//! Policy routing rules (`ip rule`) and routes in tables of their own: the messages that add
//! and delete them, and a reader of the rules a namespace has.
//!
//! The rules (`include/uapi/linux/fib_rules.h`):
//! - A rule is `RTM_NEWRULE` / `RTM_DELRULE` with a `struct fib_rule_hdr` of the rule's family,
//!   action `FR_ACT_TO_TBL` (look up a table), and the prefix lengths of its source and
//!   destination in `src_len` / `dst_len`; the prefixes themselves go in `FRA_SRC` / `FRA_DST`.
//!   A prefix of length 0 matches every address, which is what an absent one means, so it is
//!   sent as none (the kernel keeps no address for it either).
//! - The table goes in the header when it fits a byte (below 256), else the header says
//!   `RT_TABLE_UNSPEC` and `FRA_TABLE` carries it: what `ip rule` sends.
//! - The priority, when given, is `FRA_PRIORITY`; without it the kernel picks one just below
//!   the first rule after priority 0.
//! - Attributes go in the order priority, source, destination, table, so that the bytes equal
//!   `ip rule add priority P from S to D lookup T`. The one difference from `ip`: a delete
//!   names the action too, so it only removes a rule that looks up a table.
//!
//! Reading: one `RTM_GETRULE` dump of every family; the IPv4 and IPv6 rules are kept
//! ([`HostRule`]), multicast routing's rules (families `RTNL_FAMILY_IPMR`/`IP6MR`) are not. A
//! rule records everything a [`Rule`] can hold, and names whatever else selects its packets
//! (`fwmark`, `iif`, `not`…), so that nothing is carried as a wider rule than it was.
//!
//! A route in table N (`Route::table`) is the route message [`crate::attach`] builds with the
//! table in the header when below 256 and always in `RTA_TABLE` ([`route_in_table`]).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{DecodeError, Parseable};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteProtocol, RouteScope as KernelScope},
    rule::{RuleAction, RuleAttribute, RuleFlags, RuleHeader, RuleMessage},
};

use crate::config::{IpFamily, Route, RouteScope, Rule};
use crate::record::{HostRoute, MAIN_TABLE};
use crate::rtnl::{Rtnl, RtnlError};

/// `RTM_NEWRULE`: each rule of a dump.
const RTM_NEWRULE: u16 = 32;
/// `RTPROT_KERNEL`: routes the kernel makes for an address, and the rules it makes in every
/// namespace (`lookup local`, `main`, `default`).
pub(crate) const RTPROT_KERNEL: u8 = 2;

/// The `RTM_NEWRULE` adding `rule` (send it with `NLM_F_CREATE | NLM_F_EXCL`: the kernel
/// otherwise adds a second copy of an existing rule).
pub(crate) fn add_rule(rule: &Rule) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewRule(rule_message(rule))
}

/// The `RTM_DELRULE` removing `rule` (a failed attach's rollback; a detach leaves the pod's
/// rules to die with its namespace): the kernel removes the first rule that matches every
/// field given (without a priority, the first of any priority).
pub(crate) fn delete_rule(rule: &Rule) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelRule(rule_message(rule))
}

fn rule_message(rule: &Rule) -> RuleMessage {
    let mut message = RuleMessage::default();
    message.header = RuleHeader {
        family: match rule.family {
            IpFamily::V4 => AddressFamily::Inet,
            IpFamily::V6 => AddressFamily::Inet6,
        },
        action: RuleAction::ToTable,
        ..RuleHeader::default()
    };
    if let Some(priority) = rule.priority {
        message.attributes.push(RuleAttribute::Priority(priority));
    }
    if let Some(from) = rule.from.filter(|p| p.prefix_len() > 0) {
        message.header.src_len = from.prefix_len();
        message.attributes.push(RuleAttribute::Source(from.addr()));
    }
    if let Some(to) = rule.to.filter(|p| p.prefix_len() > 0) {
        message.header.dst_len = to.prefix_len();
        message.attributes.push(RuleAttribute::Destination(to.addr()));
    }
    match u8::try_from(rule.table) {
        Ok(table) => message.header.table = table,
        // RT_TABLE_UNSPEC in the header, the table in the attribute.
        Err(_) => message.attributes.push(RuleAttribute::Table(rule.table)),
    }
    message
}

/// A configured route in the form the kernel takes, in its table (the main one when none is
/// given); [`crate::attach`]'s route message puts the table in `RTA_TABLE`.
pub(crate) fn route_in_table(route: &Route) -> HostRoute {
    HostRoute {
        destination: route.destination,
        gateway: route.gateway,
        source: route.source,
        metric: route.metric,
        table: route.table.unwrap_or(MAIN_TABLE),
        scope: match route.scope {
            RouteScope::Global => u8::from(KernelScope::Universe),
            RouteScope::Link => u8::from(KernelScope::Link),
            RouteScope::Host => u8::from(KernelScope::Host),
        },
        protocol: u8::from(RouteProtocol::Static),
    }
}

/// One IPv4 or IPv6 rule as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostRule {
    /// Its family.
    pub(crate) family: IpFamily,
    /// Its priority (0 is the kernel's `lookup local` rule, which the kernel sends without
    /// the attribute).
    pub(crate) priority: u32,
    /// The source prefix it matches; all sources when absent.
    pub(crate) from: Option<IpNet>,
    /// The destination prefix it matches; all destinations when absent.
    pub(crate) to: Option<IpNet>,
    /// The table it looks up (`FRA_TABLE`, else the header's); 0 for other actions.
    pub(crate) table: u32,
    /// `FR_ACT_*`: 1 looks up a table; others jump, do nothing or drop.
    pub(crate) action: RuleAction,
    /// Who made it (`FRA_PROTOCOL`, `RTPROT_*`): 2 for the kernel's own rules.
    pub(crate) protocol: u8,
    /// The interfaces it matches on, by name (`iif`, `oif`).
    pub(crate) iif: Option<String>,
    /// See `iif`.
    pub(crate) oif: Option<String>,
    /// What else selects its packets, that a [`Rule`] cannot hold: `fwmark`, `tos`, `not`,
    /// `iif`, `oif`, `attribute 25`…, in the order met. Empty for a rule a [`Rule`] is exactly.
    pub(crate) other_selectors: Vec<String>,
}

impl HostRule {
    /// The rule as a [`Rule`], when it is exactly one: it looks up a table and nothing but its
    /// prefixes selects its packets.
    pub(crate) fn as_rule(&self) -> Option<Rule> {
        (self.action == RuleAction::ToTable && self.other_selectors.is_empty() && self.table != 0).then_some(Rule {
            priority: Some(self.priority),
            family: self.family,
            from: self.from,
            to: self.to,
            table: self.table,
        })
    }
}

impl fmt::Display for HostRule {
    /// Close to `ip rule`: `1000: from 10.1.0.0/24 to all lookup 100 [fwmark]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = |p: &Option<IpNet>| p.map_or_else(|| "all".to_owned(), |p| p.to_string());
        write!(
            f,
            "{}: from {} to {}",
            self.priority,
            prefix(&self.from),
            prefix(&self.to)
        )?;
        match self.action {
            RuleAction::ToTable => write!(f, " lookup {}", self.table)?,
            other => write!(f, " action {}", u8::from(other))?,
        }
        if !self.other_selectors.is_empty() {
            write!(f, " [{}]", self.other_selectors.join(", "))?;
        }
        Ok(())
    }
}

/// One message of a rule dump: the rule, if it is an IPv4 or IPv6 one.
pub(crate) fn parse_rule(payload: &[u8]) -> Result<Option<HostRule>, DecodeError> {
    let message = RuleMessage::parse(payload)?;
    let family = match message.header.family {
        AddressFamily::Inet => IpFamily::V4,
        AddressFamily::Inet6 => IpFamily::V6,
        _ => return Ok(None),
    };
    let header = &message.header;
    let mut rule = HostRule {
        family,
        priority: 0,
        from: None,
        to: None,
        table: u32::from(header.table),
        action: header.action,
        protocol: 0,
        iif: None,
        oif: None,
        other_selectors: Vec::new(),
    };
    if header.tos != 0 {
        rule.other_selectors.push("tos".into());
    }
    if header.flags.contains(RuleFlags::Invert) {
        rule.other_selectors.push("not".into());
    }
    let prefix = |ip: &IpAddr, len: u8| {
        IpNet::new(*ip, len).map_err(|_| DecodeError::from(format!("prefix length {len} too long for {ip}")))
    };
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Priority(priority) => rule.priority = *priority,
            RuleAttribute::Source(ip) if header.src_len > 0 => rule.from = Some(prefix(ip, header.src_len)?),
            RuleAttribute::Destination(ip) if header.dst_len > 0 => rule.to = Some(prefix(ip, header.dst_len)?),
            RuleAttribute::Source(_) | RuleAttribute::Destination(_) => {}
            RuleAttribute::Table(table) => rule.table = *table,
            RuleAttribute::Protocol(protocol) => rule.protocol = u8::from(*protocol),
            RuleAttribute::Iifname(name) => {
                rule.iif = Some(name.clone());
                rule.other_selectors.push(format!("iif {name}"));
            }
            RuleAttribute::Oifname(name) => {
                rule.oif = Some(name.clone());
                rule.other_selectors.push(format!("oif {name}"));
            }
            RuleAttribute::FwMark(_) | RuleAttribute::FwMask(_) => {
                if !rule.other_selectors.iter().any(|s| s == "fwmark") {
                    rule.other_selectors.push("fwmark".into());
                }
            }
            RuleAttribute::Goto(_) => {}
            RuleAttribute::Realm(_) => rule.other_selectors.push("realms".into()),
            RuleAttribute::TunId(_) => rule.other_selectors.push("tun_id".into()),
            // The kernel sends both always, -1 meaning unset.
            RuleAttribute::SuppressIfGroup(group) if *group != u32::MAX => {
                rule.other_selectors.push("suppress_ifgroup".into());
            }
            RuleAttribute::SuppressPrefixLen(length) if *length != u32::MAX => {
                rule.other_selectors.push("suppress_prefixlength".into());
            }
            RuleAttribute::SuppressIfGroup(_) | RuleAttribute::SuppressPrefixLen(_) => {}
            RuleAttribute::L3MDev(_) => rule.other_selectors.push("l3mdev".into()),
            RuleAttribute::UidRange(_) => rule.other_selectors.push("uidrange".into()),
            RuleAttribute::IpProtocol(_) => rule.other_selectors.push("ipproto".into()),
            RuleAttribute::SourcePortRange(_) => rule.other_selectors.push("sport".into()),
            RuleAttribute::DestinationPortRange(_) => rule.other_selectors.push("dport".into()),
            // Newer selectors (DSCP, flow label, port masks) and whatever comes next: unknown
            // here, so never dropped silently.
            other => rule
                .other_selectors
                .push(format!("attribute {}", netlink_packet_core::Nla::kind(other))),
        }
    }
    Ok(Some(rule))
}

/// Every IPv4 and IPv6 rule of the socket's namespace, in the kernel's order (by priority).
pub(crate) fn dump_rules(rtnl: &mut Rtnl) -> Result<Vec<HostRule>, RtnlError> {
    // An all-zero header: with strict checking, the only dump request the kernel takes.
    let request = RuleMessage::default();
    rtnl.dump("rule", RouteNetlinkMessage::GetRule(request), |kind, payload| {
        if kind != RTM_NEWRULE {
            return Ok(None);
        }
        parse_rule(payload)
    })
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage};

    use super::*;

    /// The request as sent, with sequence number 1 and port 0.
    fn wire(message: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
        let mut message = NetlinkMessage::from(message);
        message.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        message.header.sequence_number = 1;
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    fn rule(priority: Option<u32>, from: Option<&str>, to: Option<&str>, table: u32) -> Rule {
        let from: Option<IpNet> = from.map(|p| p.parse().expect("cidr"));
        let to: Option<IpNet> = to.map(|p| p.parse().expect("cidr"));
        let v6 = matches!(from.or(to), Some(IpNet::V6(_)));
        Rule {
            priority,
            family: if v6 { IpFamily::V6 } else { IpFamily::V4 },
            from,
            to,
            table,
        }
    }

    const CREATE: u16 = NLM_F_CREATE | NLM_F_EXCL;

    #[test]
    fn an_ipv4_rule_is_the_message_ip_rule_add_sends() {
        // `ip rule add priority 1000 from 10.77.0.0/24 lookup 100`, as strace shows it.
        #[rustfmt::skip]
        let expected: &[u8] = &[
            // nlmsghdr: length 44, RTM_NEWRULE, REQUEST|ACK|EXCL|CREATE, seq 1, port 0
            44, 0, 0, 0, 32, 0, 0x05, 0x06, 1, 0, 0, 0, 0, 0, 0, 0,
            // fib_rule_hdr: AF_INET, dst_len 0, src_len 24, tos 0, table 100, res, res,
            // FR_ACT_TO_TBL, flags 0
            2, 0, 24, 0, 100, 0, 0, 1, 0, 0, 0, 0,
            // FRA_PRIORITY 1000
            8, 0, 6, 0, 0xe8, 0x03, 0, 0,
            // FRA_SRC 10.77.0.0
            8, 0, 2, 0, 10, 77, 0, 0,
        ];
        assert_eq!(
            wire(add_rule(&rule(Some(1000), Some("10.77.0.0/24"), None, 100)), CREATE),
            expected
        );
    }

    #[test]
    fn an_ipv6_rule_without_priority_is_the_message_ip_sends() {
        // `ip -6 rule add to fd00::/64 lookup 100`.
        #[rustfmt::skip]
        let expected: &[u8] = &[
            48, 0, 0, 0, 32, 0, 0x05, 0x06, 1, 0, 0, 0, 0, 0, 0, 0,
            // AF_INET6, dst_len 64, src_len 0, tos 0, table 100, FR_ACT_TO_TBL
            10, 64, 0, 0, 100, 0, 0, 1, 0, 0, 0, 0,
            // FRA_DST fd00::
            20, 0, 1, 0, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(
            wire(add_rule(&rule(None, None, Some("fd00::/64"), 100)), CREATE),
            expected
        );
    }

    #[test]
    fn a_table_above_255_goes_in_fra_table_with_unspec_in_the_header() {
        // `ip rule add priority 1001 from 10.77.0.0/24 lookup 1000`.
        #[rustfmt::skip]
        let expected: &[u8] = &[
            52, 0, 0, 0, 32, 0, 0x05, 0x06, 1, 0, 0, 0, 0, 0, 0, 0,
            // table RT_TABLE_UNSPEC in the header
            2, 0, 24, 0, 0, 0, 0, 1, 0, 0, 0, 0,
            8, 0, 6, 0, 0xe9, 0x03, 0, 0,
            8, 0, 2, 0, 10, 77, 0, 0,
            // FRA_TABLE 1000
            8, 0, 15, 0, 0xe8, 0x03, 0, 0,
        ];
        assert_eq!(
            wire(add_rule(&rule(Some(1001), Some("10.77.0.0/24"), None, 1000)), CREATE),
            expected
        );
    }

    #[test]
    fn a_delete_is_the_add_under_rtm_delrule() {
        // `ip rule del priority 1000 from 10.77.0.0/24 lookup 100` sends the same but for the
        // type, the flags and the action (FR_ACT_UNSPEC: any); this one names FR_ACT_TO_TBL.
        #[rustfmt::skip]
        let expected: &[u8] = &[
            44, 0, 0, 0, 33, 0, 0x05, 0, 1, 0, 0, 0, 0, 0, 0, 0,
            2, 0, 24, 0, 100, 0, 0, 1, 0, 0, 0, 0,
            8, 0, 6, 0, 0xe8, 0x03, 0, 0,
            8, 0, 2, 0, 10, 77, 0, 0,
        ];
        assert_eq!(
            wire(delete_rule(&rule(Some(1000), Some("10.77.0.0/24"), None, 100)), 0),
            expected
        );
    }

    #[test]
    fn a_zero_length_prefix_is_sent_as_none() {
        let RouteNetlinkMessage::NewRule(message) = add_rule(&rule(Some(5), Some("0.0.0.0/0"), None, 7)) else {
            panic!("a rule message");
        };
        assert_eq!(message.header.src_len, 0);
        assert_eq!(message.attributes, [RuleAttribute::Priority(5)]);
    }

    #[test]
    fn routes_in_a_table_carry_it_in_the_header_and_rta_table() {
        let route = |table| Route {
            destination: "10.88.0.0/24".parse().expect("cidr"),
            gateway: Some("10.77.0.2".parse().expect("ip")),
            source: None,
            scope: RouteScope::Global,
            metric: None,
            table,
        };
        // `ip route add 10.88.0.0/24 via 10.77.0.2 dev X table 100 proto static` sends the
        // same header, the table only in it; RTA_TABLE as well is what the kernel prefers.
        #[rustfmt::skip]
        let expected: &[u8] = &[
            60, 0, 0, 0, 24, 0, 0x05, 0x06, 1, 0, 0, 0, 0, 0, 0, 0,
            // rtmsg: AF_INET, dst_len 24, src_len 0, tos 0, table 100, RTPROT_STATIC,
            // RT_SCOPE_UNIVERSE, RTN_UNICAST, flags 0
            2, 24, 0, 0, 100, 4, 0, 1, 0, 0, 0, 0,
            // RTA_TABLE 100
            8, 0, 15, 0, 100, 0, 0, 0,
            // RTA_DST 10.88.0.0
            8, 0, 1, 0, 10, 88, 0, 0,
            // RTA_GATEWAY 10.77.0.2
            8, 0, 5, 0, 10, 77, 0, 2,
            // RTA_OIF 3
            8, 0, 4, 0, 3, 0, 0, 0,
        ];
        assert_eq!(
            wire(crate::attach::add_route(3, &route_in_table(&route(Some(100)))), CREATE),
            expected
        );
        let in_1000 = wire(crate::attach::add_route(3, &route_in_table(&route(Some(1000)))), CREATE);
        // Table RT_TABLE_UNSPEC in the header, 1000 in RTA_TABLE.
        assert_eq!(in_1000[16 + 4], 0);
        assert_eq!(in_1000[28..36], [8, 0, 15, 0, 0xe8, 0x03, 0, 0]);
        assert_eq!(route_in_table(&route(None)).table, MAIN_TABLE);
    }

    /// A rule message as the kernel sends one in a dump.
    fn dumped(header: [u8; 12], attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut bytes = header.to_vec();
        for (kind, value) in attributes {
            bytes.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            bytes.extend_from_slice(&kind.to_ne_bytes());
            bytes.extend_from_slice(value);
            bytes.resize(bytes.len().next_multiple_of(4), 0);
        }
        bytes
    }

    #[test]
    fn dumped_rules_read_with_fra_table_over_the_header() {
        // 1001: from 10.77.0.0/24 lookup 1000, as the kernel reports it: RT_TABLE_COMPAT (252)
        // in the header, FRA_TABLE, FRA_PROTOCOL.
        let payload = dumped(
            [2, 0, 24, 0, 252, 0, 0, 1, 0, 0, 0, 0],
            &[
                (15, &1000u32.to_ne_bytes()),
                (21, &[0]),
                // Unset: -1.
                (13, &u32::MAX.to_ne_bytes()),
                (14, &u32::MAX.to_ne_bytes()),
                (6, &1001u32.to_ne_bytes()),
                (2, &[10, 77, 0, 0]),
            ],
        );
        let read = parse_rule(&payload).expect("decodes").expect("an IPv4 rule");
        assert_eq!(read.as_rule(), Some(rule(Some(1001), Some("10.77.0.0/24"), None, 1000)));
        assert_eq!(read.to_string(), "1001: from 10.77.0.0/24 to all lookup 1000");
    }

    #[test]
    fn selectors_a_rule_cannot_hold_are_named() {
        // 1002: not from all fwmark 0x1 iif eth1 lookup 100
        let payload = dumped(
            [2, 0, 0, 0, 100, 0, 0, 1, 2, 0, 0, 0],
            &[
                (15, &100u32.to_ne_bytes()),
                (6, &1002u32.to_ne_bytes()),
                (10, &1u32.to_ne_bytes()),
                (16, &u32::MAX.to_ne_bytes()),
                (3, b"eth1\0"),
                (25, &[8]),
            ],
        );
        let read = parse_rule(&payload).expect("decodes").expect("an IPv4 rule");
        assert_eq!(read.other_selectors, ["not", "fwmark", "iif eth1", "attribute 25"]);
        assert_eq!(read.iif.as_deref(), Some("eth1"));
        assert_eq!(read.as_rule(), None);
    }

    #[test]
    fn multicast_routing_rules_are_not_read() {
        // RTNL_FAMILY_IPMR.
        let payload = dumped([128, 0, 0, 0, 253, 0, 0, 1, 0, 0, 0, 0], &[(15, &253u32.to_ne_bytes())]);
        assert_eq!(parse_rule(&payload).expect("decodes"), None);
    }

    #[test]
    fn other_actions_are_not_rules() {
        // 1003: from all blackhole
        let payload = dumped([2, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0], &[(6, &1003u32.to_ne_bytes())]);
        let read = parse_rule(&payload).expect("decodes").expect("an IPv4 rule");
        assert_eq!(read.action, RuleAction::Blackhole);
        assert_eq!(read.as_rule(), None);
    }

    proptest::proptest! {
        /// Any bytes read as a rule, or as nothing, or fail: never a panic.
        #[test]
        fn arbitrary_rule_messages_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_rule(&bytes);
        }

        /// A well-formed header with arbitrary attributes never panics either.
        #[test]
        fn arbitrary_rule_attributes_never_panic(
            family in proptest::sample::select(vec![2u8, 10, 128]),
            lengths in (0u8..=255, 0u8..=255),
            attributes in proptest::collection::vec((0u16..32, proptest::collection::vec(proptest::num::u8::ANY, 0..20)), 0..8),
        ) {
            let attributes: Vec<(u16, &[u8])> = attributes.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            let payload = dumped([family, lengths.0, lengths.1, 0, 100, 0, 0, 1, 0, 0, 0, 0], &attributes);
            let _ = parse_rule(&payload);
        }
    }
}
