//! The configuration of one interface inside a pod, and the pure rules that validate it.
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

mod link;
mod policy;
mod sysctl;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Longest interface name the kernel accepts (`IFNAMSIZ` less the terminating NUL).
pub const MAX_INTERFACE_NAME: usize = 15;
/// Smallest MTU accepted: IPv4's minimum.
pub const MIN_MTU: u32 = 68;
/// Smallest MTU of a link that carries IPv6.
pub const MIN_IPV6_MTU: u32 = 1280;
/// Largest MTU accepted.
pub const MAX_MTU: u32 = 65535;

/// An interface's configuration inside a pod, as written by a user. Every field is optional:
/// an empty configuration moves the interface and brings it up under its own name.
///
/// Not `#[non_exhaustive]`, nor are its parts: they are the versioned wire format (a field is
/// added only with a new `apiVersion`), and a literal written with `..Default::default()`
/// survives the addition.
///
/// # Rules
///
/// The configuration of one interface inside a pod, and the pure rules that validate it.
///
/// [`InterfaceConfig`] is what a user writes (strings, as in JSON or on a command line);
/// [`InterfaceConfig::validate`] turns it into a [`ValidConfig`] of typed values, or names the
/// first field that is wrong: `routes[1].gateway: 10.30.0.1 is not inside any address's subnet`.
/// Nothing here touches the kernel, so every rule is checked before anything changes.
///
/// The rules:
/// - `name`: what the kernel accepts as an interface name: 1–15 bytes, not `.` or `..`, no `/`,
///   `:` or whitespace.
/// - `mtu`: 68 (IPv4's minimum) to 65535; at least 1280 when an IPv6 address, route,
///   neighbour or `ipv6.*` sysctl is given, since the kernel turns IPv6 off on a link below
///   that (and the interface's `ipv6` sysctl directory goes with it). IPv6 rules are fine: they
///   belong to the namespace.
/// - `hardwareAddress`: six hex octets separated by `:`, unicast (the low bit of the first octet
///   clear) and not all zero.
/// - `addresses`: CIDR form (`10.10.0.2/24`, `fd00::2/64`); not multicast, loopback or
///   unspecified; each IP at most once.
/// - `routes`: `destination` is `default` or a CIDR whose host bits are zero; the gateway, when
///   given, is of the destination's family and inside the subnet of a configured address of
///   that family (an IPv6 link-local gateway, `fe80::/10`, needs no subnet: it is on-link by
///   definition); `source` is one of the configured addresses; `scope` is `global`, `link` or
///   `host` (`host` takes no gateway).
/// - `routes[].table`: the routing table the route goes to; the main table (254) when absent.
///   0 (`RT_TABLE_UNSPEC`), 253 (`default`) and 255 (`local`) are refused: the kernel fills
///   `local` itself, 0 means "unspecified", and `default` is the last resort of the kernel's own
///   rules. No two routes share destination, metric and table.
/// - `up: false` with routes or neighbours is refused: the kernel drops a link's routes and
///   neighbour entries when it goes down.
///
/// Since `netdra.dev/v1alpha2` (every field below is optional):
/// - `rules`: policy routing rules, `{priority, from, to, table, ipFamily}`. `from` and `to` are
///   prefixes in CIDR form with the host bits zero, or a bare IP (a /32 or /128), both of one
///   family; `ipFamily` (`IPv4` or `IPv6`) is needed only when neither is given and must agree
///   with them when both are; `table` is required, with the reserved tables of routes refused
///   (254, the main table, is fine); `priority` 0 is refused (the kernel's own rule that looks up
///   the local table; a rule before it hides local delivery); no rule is given twice (same
///   priority, from, to, table and family). Rules are not tied to the interface: they apply to the
///   whole pod namespace.
/// - `neighbours`: permanent ARP/NDP entries `{address, hardwareAddress}` on the interface. The
///   address is unicast (not unspecified, loopback, multicast or `255.255.255.255`), not one of
///   the interface's own addresses, and given once; the MAC follows the rules of
///   `hardwareAddress`. An address of a family the interface has no address of is accepted: the
///   kernel keeps the entry, it is only used if a route sends traffic that way.
/// - `sysctls`: `{"ipv4.arp_ignore": 1, "ipv6.accept_ra": 0}`, per-interface settings under
///   `/proc/sys/net/{ipv4,ipv6}/conf/<interface>/`, each from the allow-list
///   (its names and ranges are in `config/sysctl.rs`) and inside its range (the ranges of `Documentation/networking/ip-sysctl.rst`,
///   which the kernel itself mostly does not enforce). Everything else is refused: keys of
///   `conf/all`, `conf/default` and outside `conf/` act on the whole namespace, not this
///   interface; some per-interface keys are security-relevant (`route_localnet` exposes
///   services bound to 127.0.0.0/8 to the link, `accept_source_route` obeys source routing,
///   `disable_policy`/`disable_xfrm` bypass IPsec policy, `stable_secret` is a secret and no
///   integer); others would undo what netdra configures (`ipv6.mtu` beside `mtu`,
///   `keep_addr_on_down`). `ipv6.disable_ipv6: 1` is refused when the configuration gives IPv6
///   addresses, routes or neighbours (the kernel deletes them and refuses new ones).
/// - `ethtool.features`: `{"tx-checksum-ip-generic": false, "rx-gro-list": true}`, by the
///   kernel's feature names (`netdev_features_strings`, what the ethtool netlink API and the
///   indented lines of `ethtool -k` show). Only the syntax is checked: 1–31 bytes
///   (`ETH_GSTRING_LEN` less the NUL) of lowercase letters, digits, `-` and `_`; whether the device
///   can change a feature is the kernel's answer at attach. The legacy names of the `ethtool`
///   command (`generic-receive-offload`, `tx-checksumming`) are refused with the kernel's name(s)
///   they stand for. Private flags (`ethtool --show-priv-flags`) are not supported.
/// - `gsoMaxSize`, `groMaxSize`, `gsoIPv4MaxSize`, `groIPv4MaxSize`: 1 to 524280 bytes, the
///   kernel's `GSO_MAX_SIZE` and `GRO_MAX_SIZE` (`8 * GSO_MAX_SEGS`, `8 * 65535`, in
///   `include/linux/netdevice.h`; TCP's smallest MSS is 8 and the segment count is 16 bits). The
///   device's own limit on the GSO sizes (`tso_max_size`, 65536 without BIG TCP) is checked at
///   attach, on the host before the move.
/// - `txQueueLen`: 1 to 2³²−1 (`IFLA_TXQLEN` is a u32; `ip link set txqueuelen` refuses only
///   what is no u32). The kernel takes 0 on the link, but the default queueing discipline
///   refuses a zero-length queue (`pfifo_fast_init` answers `EINVAL`) and `pfifo`, sized by it,
///   holds no packet: 0 is refused rather than leave the link without a working queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InterfaceConfig {
    /// The interface's name inside the pod; its host name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The MTU; left as it is when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The MAC address, `aa:bb:cc:dd:ee:ff`; left as it is when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_address: Option<String>,
    /// Addresses in CIDR form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Routes through the interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Whether to bring the link up (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<bool>,
    /// Policy routing rules to add in the pod (`netdra.dev/v1alpha2`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleConfig>,
    /// Permanent neighbour (ARP/NDP) entries on the interface (`netdra.dev/v1alpha2`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<NeighbourConfig>,
    /// Per-interface sysctls, `"ipv4.arp_ignore": 1`, from the allow-list
    /// (listed in [`InterfaceConfig`]'s rules) (`netdra.dev/v1alpha2`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, i64>,
    /// Ethtool settings (`netdra.dev/v1alpha2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethtool: Option<EthtoolConfig>,
    /// The largest segmentation offload packet (`IFLA_GSO_MAX_SIZE`) (`netdra.dev/v1alpha2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gso_max_size: Option<u32>,
    /// The largest receive offload packet (`IFLA_GRO_MAX_SIZE`) (`netdra.dev/v1alpha2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gro_max_size: Option<u32>,
    /// The largest IPv4 segmentation offload packet (`IFLA_GSO_IPV4_MAX_SIZE`)
    /// (`netdra.dev/v1alpha2`).
    #[serde(default, rename = "gsoIPv4MaxSize", skip_serializing_if = "Option::is_none")]
    pub gso_ipv4_max_size: Option<u32>,
    /// The largest IPv4 receive offload packet (`IFLA_GRO_IPV4_MAX_SIZE`)
    /// (`netdra.dev/v1alpha2`).
    #[serde(default, rename = "groIPv4MaxSize", skip_serializing_if = "Option::is_none")]
    pub gro_ipv4_max_size: Option<u32>,
    /// The transmit queue length (`IFLA_TXQLEN`) (`netdra.dev/v1alpha2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_queue_len: Option<u32>,
}

/// One policy routing rule, as written by a user: traffic from `from` to `to` looks up `table`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConfig {
    /// The rule's priority (`ip rule ... pref`); the kernel picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// The source prefix, CIDR or a bare IP; any source when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The destination prefix, CIDR or a bare IP; any destination when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The routing table to look up; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// `IPv4` or `IPv6`: needed only when neither `from` nor `to` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family: Option<String>,
}

/// One permanent neighbour entry, as written by a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NeighbourConfig {
    /// The neighbour's IP address.
    pub address: String,
    /// Its MAC address, `aa:bb:cc:dd:ee:ff`.
    pub hardware_address: String,
}

/// Ethtool settings, as written by a user. Private flags are not supported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EthtoolConfig {
    /// Features to turn on (`true`) or off (`false`), by the kernel's name
    /// (`tx-checksum-ip-generic`, `rx-gro-list`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, bool>,
}

/// One route, as written by a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    /// `default`, or a destination in CIDR form.
    pub destination: String,
    /// The next hop; a directly connected route when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The preferred source address: one of the interface's addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `global`, `link` or `host`; `global` with a gateway and `link` without when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The route's metric (priority); the kernel's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    /// The routing table; the main table when absent (`netdra.dev/v1alpha2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
}

/// A configuration that passed every rule, in typed form. Plain data: a caller may persist it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ValidConfig {
    /// The name inside the pod; the host name when absent.
    pub name: Option<String>,
    /// The MTU to set.
    pub mtu: Option<u32>,
    /// The MAC address to set.
    pub hardware_address: Option<Mac>,
    /// The addresses to add, in the order given.
    pub addresses: Vec<IpNet>,
    /// The routes to add, in the order given.
    pub routes: Vec<Route>,
    /// Whether the link is brought up.
    pub up: bool,
    /// Policy routing rules to add in the pod, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Permanent neighbour (ARP/NDP) entries to add on the interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<Neighbour>,
    /// Per-interface sysctls to set, from the allow-list, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysctls: Vec<Sysctl>,
    /// Ethtool features to turn on (`true`) or off (`false`), by the kernel's feature name
    /// (`tx-checksum-ip-generic`, `rx-gro-list`), as `ethtool -k` lists them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, bool>,
    /// Link settings beyond the MTU: segmentation offload sizes and the transmit queue length.
    #[serde(default, skip_serializing_if = "LinkTuning::is_empty")]
    pub tuning: LinkTuning,
}

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4 (`AF_INET`).
    #[serde(rename = "IPv4")]
    V4,
    /// IPv6 (`AF_INET6`).
    #[serde(rename = "IPv6")]
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// The family's directory under `/proc/sys/net`: `ipv4` or `ipv6`.
    pub fn sysctl_dir(self) -> &'static str {
        match self {
            Self::V4 => "ipv4",
            Self::V6 => "ipv6",
        }
    }
}

impl fmt::Display for IpFamily {
    /// `IPv4` or `IPv6`, as a configuration spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// A validated policy routing rule: traffic matching `from` and `to` looks up `table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Rule {
    /// The rule's priority; the kernel picks one when absent.
    pub priority: Option<u32>,
    /// The family the rule applies to: that of `from` and `to`, or the one given.
    pub family: IpFamily,
    /// The source prefix to match; all sources when absent.
    pub from: Option<IpNet>,
    /// The destination prefix to match; all destinations when absent.
    pub to: Option<IpNet>,
    /// The routing table to look up.
    pub table: u32,
}

impl fmt::Display for Rule {
    /// Close to the way `ip rule` prints it: `1000: from 10.1.0.0/24 lookup 100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(priority) = self.priority {
            write!(f, "{priority}: ")?;
        }
        match self.from {
            Some(from) => write!(f, "from {from}")?,
            None => f.write_str("from all")?,
        }
        if let Some(to) = self.to {
            write!(f, " to {to}")?;
        }
        write!(f, " lookup {}", self.table)
    }
}

/// A validated permanent neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Neighbour {
    /// The neighbour's IP address.
    pub address: IpAddr,
    /// Its MAC address.
    pub hardware_address: Mac,
}

impl fmt::Display for Neighbour {
    /// As `ip neigh` prints it: `10.1.0.9 lladdr 02:00:00:00:00:09`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} lladdr {}", self.address, self.hardware_address)
    }
}

/// A validated per-interface sysctl: `/proc/sys/net/{ipv4,ipv6}/conf/<interface>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sysctl {
    /// `ipv4` or `ipv6`: the directory under `/proc/sys/net`.
    pub family: IpFamily,
    /// The setting's name, one of the allow-list.
    pub name: String,
    /// The value to write.
    pub value: i64,
}

/// Validated link settings beyond the MTU; each is left as it is when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkTuning {
    /// `IFLA_GSO_MAX_SIZE`: the largest IPv6 (and, without the IPv4 one, IPv4) segmentation
    /// offload packet; above 65536 is BIG TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gso_max_size: Option<u32>,
    /// `IFLA_GRO_MAX_SIZE`: the largest IPv6 receive offload packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gro_max_size: Option<u32>,
    /// `IFLA_GSO_IPV4_MAX_SIZE`: the largest IPv4 segmentation offload packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gso_ipv4_max_size: Option<u32>,
    /// `IFLA_GRO_IPV4_MAX_SIZE`: the largest IPv4 receive offload packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gro_ipv4_max_size: Option<u32>,
    /// `IFLA_TXQLEN`: the transmit queue length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txqueuelen: Option<u32>,
}

impl LinkTuning {
    /// Whether no setting is given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A validated route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The destination; `0.0.0.0/0` or `::/0` for a default route.
    pub destination: IpNet,
    /// The next hop.
    pub gateway: Option<IpAddr>,
    /// The preferred source address.
    pub source: Option<IpAddr>,
    /// The route's scope.
    pub scope: RouteScope,
    /// The metric.
    pub metric: Option<u32>,
    /// The routing table; the main table when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
}

impl fmt::Display for Route {
    /// The way `ip route` prints it: `10.20.0.0/16 via 10.10.0.1`, `default via fd00::1`,
    /// `10.30.0.0/16 via 10.10.0.1 table 100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.destination.prefix_len() == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}", self.destination)?;
        }
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        if let Some(source) = self.source {
            write!(f, " src {source}")?;
        }
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        if let Some(table) = self.table {
            write!(f, " table {table}")?;
        }
        Ok(())
    }
}

/// The scope of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteScope {
    /// Reached through a gateway (`RT_SCOPE_UNIVERSE`).
    Global,
    /// Directly on the link (`RT_SCOPE_LINK`).
    Link,
    /// This host only (`RT_SCOPE_HOST`).
    Host,
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    /// Lower case, colon separated, as the kernel and `ip` print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Text that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (six hex octets separated by ':')")]
pub struct MacParseError(pub String);

impl std::str::FromStr for Mac {
    type Err = MacParseError;

    /// Six hex octets separated by `:`, any case.
    fn from_str(s: &str) -> Result<Self, MacParseError> {
        let malformed = || MacParseError(s.to_owned());
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().filter(|p| p.len() == 2).ok_or_else(malformed)?;
            *octet = u8::from_str_radix(part, 16).map_err(|_| malformed())?;
        }
        if parts.next().is_some() {
            return Err(malformed());
        }
        Ok(Self(octets))
    }
}

impl Mac {
    /// The kernel's bytes, when they are a 6-byte address.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A rule a configuration broke, naming the field: `routes[1].gateway: …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The field, as a path into the configuration: `mtu`, `addresses[0]`, `routes[1].gateway`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Checks an interface name against the kernel's rule (`dev_valid_name`); the problem, if any.
pub(crate) fn check_interface_name(name: &str) -> Result<(), String> {
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

/// Refuses an MTU below [`MIN_IPV6_MTU`] when the configuration uses IPv6 on the link other
/// than by an address (checked with the MTU's range): the kernel turns IPv6 off on such a link
/// (no `inet6_dev`), so an IPv6 route or neighbour on it is refused and its `ipv6` sysctls have
/// no directory, all after the move. Rules belong to the namespace and are not affected.
fn check_mtu_keeps_ipv6(
    mtu: Option<u32>,
    routes: &[Route],
    neighbours: &[Neighbour],
    sysctls: &[Sysctl],
) -> Result<(), ConfigError> {
    let Some(mtu) = mtu.filter(|mtu| *mtu < MIN_IPV6_MTU) else {
        return Ok(());
    };
    let user = if let Some((i, route)) = routes
        .iter()
        .enumerate()
        .find(|(_, r)| matches!(r.destination, IpNet::V6(_)))
    {
        format!("an IPv6 route (routes[{i}], {})", route.destination)
    } else if let Some((i, neighbour)) = neighbours.iter().enumerate().find(|(_, n)| n.address.is_ipv6()) {
        format!("an IPv6 neighbour (neighbours[{i}], {})", neighbour.address)
    } else if let Some(sysctl) = sysctls.iter().find(|s| s.family == IpFamily::V6) {
        format!("an IPv6 sysctl (ipv6.{})", sysctl.name)
    } else {
        return Ok(());
    };
    Err(ConfigError::new(
        "mtu",
        format!(
            "{mtu} is below {MIN_IPV6_MTU}, the least a link with {user} needs: the kernel turns IPv6 off below it"
        ),
    ))
}

impl InterfaceConfig {
    /// Applies every rule (see [`InterfaceConfig`]); the first broken one is the error.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        if let Some(name) = &self.name {
            check_interface_name(name).map_err(|m| ConfigError::new("name", m))?;
        }
        let hardware_address = self
            .hardware_address
            .as_deref()
            .map(|text| parse_unicast_mac("hardwareAddress", text, "an interface"))
            .transpose()?;
        let addresses = self.validate_addresses()?;
        if let Some(mtu) = self.mtu {
            if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
                return Err(ConfigError::new(
                    "mtu",
                    format!("{mtu} is outside {MIN_MTU}..={MAX_MTU}"),
                ));
            }
            if mtu < MIN_IPV6_MTU
                && let Some(v6) = addresses.iter().find(|a| matches!(a, IpNet::V6(_)))
            {
                return Err(ConfigError::new(
                    "mtu",
                    format!("{mtu} is below {MIN_IPV6_MTU}, the least a link with an IPv6 address ({v6}) needs"),
                ));
            }
        }
        let up = self.up.unwrap_or(true);
        if !up && !self.routes.is_empty() {
            return Err(ConfigError::new(
                "routes",
                "a link configured to stay down cannot carry routes (the kernel drops them)",
            ));
        }
        if !up && !self.neighbours.is_empty() {
            return Err(ConfigError::new(
                "neighbours",
                "a link configured to stay down cannot carry neighbour entries (the kernel drops them)",
            ));
        }
        let routes = self
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| validate_route(i, route, &addresses))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, route) in routes.iter().enumerate() {
            if let Some(first) = routes[..i]
                .iter()
                .position(|r| r.destination == route.destination && r.metric == route.metric && r.table == route.table)
            {
                return Err(ConfigError::new(
                    format!("routes[{i}].destination"),
                    format!(
                        "a route to {} with this metric and table is already given (routes[{first}])",
                        route.destination
                    ),
                ));
            }
        }
        let rules = policy::validate_rules(&self.rules)?;
        let neighbours = policy::validate_neighbours(&self.neighbours, &addresses)?;
        let sysctls = sysctl::validate_sysctls(&self.sysctls)?;
        let ipv6_in_use = addresses.iter().any(|a| matches!(a, IpNet::V6(_)))
            || routes.iter().any(|r| matches!(r.destination, IpNet::V6(_)))
            || neighbours.iter().any(|n| n.address.is_ipv6());
        sysctl::check_ipv6_kept(&sysctls, ipv6_in_use)?;
        check_mtu_keeps_ipv6(self.mtu, &routes, &neighbours, &sysctls)?;
        let features = link::validate_features(self.ethtool.as_ref())?;
        let tuning = link::validate_tuning(self)?;
        Ok(ValidConfig {
            name: self.name.clone(),
            mtu: self.mtu,
            hardware_address,
            addresses,
            routes,
            up,
            rules,
            neighbours,
            sysctls,
            features,
            tuning,
        })
    }

    fn validate_addresses(&self) -> Result<Vec<IpNet>, ConfigError> {
        let mut addresses: Vec<IpNet> = Vec::with_capacity(self.addresses.len());
        for (i, text) in self.addresses.iter().enumerate() {
            let field = || format!("addresses[{i}]");
            let net: IpNet = text.parse().map_err(|_| {
                ConfigError::new(
                    field(),
                    format!("{text:?} is not an address in CIDR form (10.0.0.2/24, fd00::2/64)"),
                )
            })?;
            let ip = net.addr();
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                return Err(ConfigError::new(
                    field(),
                    format!("{ip} is an unspecified, loopback or multicast address"),
                ));
            }
            if let Some(first) = addresses.iter().position(|a| a.addr() == ip) {
                return Err(ConfigError::new(
                    field(),
                    format!("{ip} is already given (addresses[{first}])"),
                ));
            }
            addresses.push(net);
        }
        Ok(addresses)
    }
}

fn validate_route(i: usize, route: &RouteConfig, addresses: &[IpNet]) -> Result<Route, ConfigError> {
    let field = |name: &str| format!("routes[{i}].{name}");
    let destination: IpNet = match route.destination.as_str() {
        // `default` is made concrete below, once the family is known.
        "default" => IpNet::V4(ipnet::Ipv4Net::default()),
        text => {
            let net: IpNet = text.parse().map_err(|_| {
                ConfigError::new(
                    field("destination"),
                    format!("{text:?} is neither \"default\" nor a destination in CIDR form"),
                )
            })?;
            if net.trunc() != net {
                return Err(ConfigError::new(
                    field("destination"),
                    format!("{net} has host bits set; the network is {}", net.trunc()),
                ));
            }
            net
        }
    };
    let parse_ip = |name: &str, text: &str| -> Result<IpAddr, ConfigError> {
        text.parse()
            .map_err(|_| ConfigError::new(field(name), format!("{text:?} is not an IP address")))
    };
    let gateway = route.gateway.as_deref().map(|g| parse_ip("gateway", g)).transpose()?;
    let source = route.source.as_deref().map(|s| parse_ip("source", s)).transpose()?;

    // The family of a route: its destination's, or for `default` its gateway's or source's.
    let is_default = route.destination == "default";
    let family_v6 = if is_default {
        match gateway.or(source) {
            Some(ip) => ip.is_ipv6(),
            None => {
                return Err(ConfigError::new(
                    field("destination"),
                    "a default route needs a gateway or a source to tell IPv4 from IPv6",
                ));
            }
        }
    } else {
        matches!(destination, IpNet::V6(_))
    };
    let destination = if is_default && family_v6 {
        IpNet::V6(ipnet::Ipv6Net::default())
    } else {
        destination
    };
    let family = if family_v6 { "IPv6" } else { "IPv4" };

    if let Some(gateway) = gateway {
        if gateway.is_ipv6() != family_v6 {
            return Err(ConfigError::new(
                field("gateway"),
                format!("{gateway} is not an {family} address, as the route's destination {destination} is"),
            ));
        }
        let link_local = matches!(gateway, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if !link_local && !addresses.iter().any(|a| a.contains(&gateway)) {
            return Err(ConfigError::new(
                field("gateway"),
                format!("{gateway} is not inside any address's subnet"),
            ));
        }
    }
    if let Some(source) = source {
        if source.is_ipv6() != family_v6 {
            return Err(ConfigError::new(
                field("source"),
                format!("{source} is not an {family} address, as the route's destination {destination} is"),
            ));
        }
        if !addresses.iter().any(|a| a.addr() == source) {
            return Err(ConfigError::new(
                field("source"),
                format!("{source} is not one of the interface's addresses"),
            ));
        }
    }
    let scope = match route.scope.as_deref() {
        None if gateway.is_some() => RouteScope::Global,
        None => RouteScope::Link,
        Some("global") => RouteScope::Global,
        Some("link") => RouteScope::Link,
        Some("host") if gateway.is_some() => {
            return Err(ConfigError::new(
                field("scope"),
                "a host-scope route cannot have a gateway",
            ));
        }
        Some("host") => RouteScope::Host,
        Some(other) => {
            return Err(ConfigError::new(
                field("scope"),
                format!("{other:?} is not one of \"global\", \"link\", \"host\""),
            ));
        }
    };
    if let Some(table) = route.table {
        policy::check_table(&field("table"), table)?;
    }
    Ok(Route {
        destination,
        gateway,
        source,
        scope,
        metric: route.metric,
        table: route.table,
    })
}

/// A MAC address that `who` (an interface, a neighbour) can have: unicast and not all zero.
fn parse_unicast_mac(field: &str, text: &str, who: &str) -> Result<Mac, ConfigError> {
    let mac: Mac = text
        .parse()
        .map_err(|e: MacParseError| ConfigError::new(field, e.to_string()))?;
    if mac.0[0] & 1 == 1 {
        return Err(ConfigError::new(
            field,
            format!("{mac} is a multicast address; {who} needs a unicast one"),
        ));
    }
    if mac.0 == [0; 6] {
        return Err(ConfigError::new(field, "00:00:00:00:00:00 is not usable"));
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::link::MAX_GSO_SIZE;
    use super::sysctl::SYSCTL_ALLOW_LIST;
    use super::*;

    fn route(destination: &str, gateway: Option<&str>) -> RouteConfig {
        RouteConfig {
            destination: destination.into(),
            gateway: gateway.map(Into::into),
            ..RouteConfig::default()
        }
    }

    fn good() -> InterfaceConfig {
        InterfaceConfig {
            name: Some("net1".into()),
            mtu: Some(1400),
            hardware_address: Some("02:AA:bb:cc:dd:01".into()),
            addresses: vec!["10.10.0.2/24".into(), "fd00::2/64".into()],
            routes: vec![
                route("10.20.0.0/16", Some("10.10.0.1")),
                route("default", Some("fd00::1")),
            ],
            ..InterfaceConfig::default()
        }
    }

    #[test]
    fn a_full_configuration_is_typed() {
        let valid = good().validate().expect("valid");
        assert_eq!(valid.name.as_deref(), Some("net1"));
        assert_eq!(
            valid.hardware_address.map(|m| m.to_string()).as_deref(),
            Some("02:aa:bb:cc:dd:01")
        );
        assert!(valid.up);
        assert_eq!(valid.routes[0].to_string(), "10.20.0.0/16 via 10.10.0.1");
        assert_eq!(valid.routes[0].scope, RouteScope::Global);
        assert_eq!(valid.routes[1].destination.to_string(), "::/0");
        assert_eq!(valid.routes[1].to_string(), "default via fd00::1");
    }

    /// One row per rule: the configuration change, the field named, a piece of the message.
    #[test]
    fn every_rule_names_its_field() {
        type Change = fn(&mut InterfaceConfig);
        let table: &[(&str, Change, &str, &str)] = &[
            (
                "empty name",
                |c| c.name = Some(String::new()),
                "name",
                "cannot be empty",
            ),
            (
                "long name",
                |c| c.name = Some("a-very-long-name0".into()),
                "name",
                "at most 15",
            ),
            ("slash", |c| c.name = Some("net/1".into()), "name", "'/'"),
            ("space", |c| c.name = Some("net 1".into()), "name", "' '"),
            ("colon", |c| c.name = Some("net:1".into()), "name", "':'"),
            ("dot", |c| c.name = Some(".".into()), "name", "not a usable"),
            ("dotdot", |c| c.name = Some("..".into()), "name", "not a usable"),
            ("mtu low", |c| c.mtu = Some(67), "mtu", "outside 68..=65535"),
            ("mtu high", |c| c.mtu = Some(65536), "mtu", "outside"),
            ("mtu v6", |c| c.mtu = Some(1200), "mtu", "below 1280"),
            (
                "mac short",
                |c| c.hardware_address = Some("02:aa:bb:cc:dd".into()),
                "hardwareAddress",
                "not a MAC",
            ),
            (
                "mac long",
                |c| c.hardware_address = Some("02:aa:bb:cc:dd:ee:ff".into()),
                "hardwareAddress",
                "not a MAC",
            ),
            (
                "mac hex",
                |c| c.hardware_address = Some("02:aa:bb:cc:dd:zz".into()),
                "hardwareAddress",
                "not a MAC",
            ),
            (
                "mac dashes",
                |c| c.hardware_address = Some("02-aa-bb-cc-dd-ee".into()),
                "hardwareAddress",
                "not a MAC",
            ),
            (
                "mac multicast",
                |c| c.hardware_address = Some("01:00:5e:00:00:01".into()),
                "hardwareAddress",
                "multicast",
            ),
            (
                "mac zero",
                |c| c.hardware_address = Some("00:00:00:00:00:00".into()),
                "hardwareAddress",
                "not usable",
            ),
            (
                "bad cidr",
                |c| c.addresses[0] = "10.10.0.300/24".into(),
                "addresses[0]",
                "CIDR",
            ),
            (
                "bare ip",
                |c| c.addresses[0] = "10.10.0.2".into(),
                "addresses[0]",
                "CIDR",
            ),
            (
                "prefix too long",
                |c| c.addresses[0] = "10.10.0.2/33".into(),
                "addresses[0]",
                "CIDR",
            ),
            (
                "multicast address",
                |c| c.addresses[0] = "224.0.0.1/4".into(),
                "addresses[0]",
                "multicast",
            ),
            (
                "duplicate address",
                |c| c.addresses.push("10.10.0.2/16".into()),
                "addresses[2]",
                "already given (addresses[0])",
            ),
            (
                "gateway outside",
                |c| c.routes[0].gateway = Some("10.30.0.1".into()),
                "routes[0].gateway",
                "10.30.0.1 is not inside any address's subnet",
            ),
            (
                "family mismatch",
                |c| c.routes[0].gateway = Some("fd00::1".into()),
                "routes[0].gateway",
                "not an IPv4 address",
            ),
            (
                "bad gateway",
                |c| c.routes[0].gateway = Some("10.10.0".into()),
                "routes[0].gateway",
                "not an IP address",
            ),
            (
                "bad destination",
                |c| c.routes[1].destination = "everywhere".into(),
                "routes[1].destination",
                "neither",
            ),
            (
                "host bits",
                |c| c.routes[0].destination = "10.20.0.1/16".into(),
                "routes[0].destination",
                "host bits",
            ),
            (
                "default without family",
                |c| c.routes[1].gateway = None,
                "routes[1].destination",
                "gateway or a source",
            ),
            (
                "duplicate route",
                |c| c.routes.push(route("10.20.0.0/16", Some("10.10.0.3"))),
                "routes[2].destination",
                "already given (routes[0])",
            ),
            (
                "source not ours",
                |c| c.routes[0].source = Some("10.10.0.9".into()),
                "routes[0].source",
                "not one of the interface's addresses",
            ),
            (
                "source family",
                |c| c.routes[0].source = Some("fd00::2".into()),
                "routes[0].source",
                "not an IPv4",
            ),
            (
                "bad scope",
                |c| c.routes[0].scope = Some("site".into()),
                "routes[0].scope",
                "not one of",
            ),
            (
                "host scope gateway",
                |c| c.routes[0].scope = Some("host".into()),
                "routes[0].scope",
                "cannot have a gateway",
            ),
            ("down with routes", |c| c.up = Some(false), "routes", "stay down"),
        ];
        for (case, change, field, message) in table {
            let mut config = good();
            change(&mut config);
            let err = config.validate().expect_err(case);
            assert_eq!(&err.field, field, "{case}: {err}");
            assert!(err.message.contains(message), "{case}: {err}");
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{case}: {err}");
        }
    }

    #[test]
    fn link_local_gateways_and_connected_routes_need_no_subnet() {
        let mut config = good();
        config.routes = vec![route("default", Some("fe80::1")), route("192.0.2.0/24", None)];
        let valid = config.validate().expect("valid");
        assert_eq!(valid.routes[1].scope, RouteScope::Link);
    }

    #[test]
    fn an_empty_configuration_is_valid_and_up() {
        let valid = InterfaceConfig::default().validate().expect("valid");
        assert!(valid.up && valid.addresses.is_empty() && valid.name.is_none());
    }

    #[test]
    fn unknown_fields_are_rejected_and_names_are_camel_case() {
        let err = serde_json::from_str::<InterfaceConfig>(r#"{"name":"net1","mtuu":1400}"#).expect_err("unknown");
        assert!(err.to_string().contains("unknown field `mtuu`"), "{err}");
        let config: InterfaceConfig = serde_json::from_str(
            r#"{"hardwareAddress":"02:00:00:00:00:01","routes":[{"destination":"default","gateway":"10.0.0.1"}]}"#,
        )
        .expect("parses");
        assert_eq!(config.routes[0].gateway.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn a_valid_config_round_trips_through_serde() {
        let valid = good().validate().expect("valid");
        let json = serde_json::to_string(&valid).expect("serialises");
        assert_eq!(serde_json::from_str::<ValidConfig>(&json).expect("parses"), valid);
    }

    fn map<V: Copy>(pairs: &[(&str, V)]) -> BTreeMap<String, V> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    /// `good()` with every field of `netdra.dev/v1alpha2`.
    fn good_v2() -> InterfaceConfig {
        let mut config = good();
        config.routes[0].table = Some(100);
        config.rules = vec![
            RuleConfig {
                priority: Some(100),
                from: Some("10.10.0.0/24".into()),
                table: Some(100),
                ..RuleConfig::default()
            },
            RuleConfig {
                to: Some("fd00:1::/64".into()),
                table: Some(254),
                ..RuleConfig::default()
            },
            RuleConfig {
                priority: Some(300),
                table: Some(200),
                ip_family: Some("IPv6".into()),
                ..RuleConfig::default()
            },
        ];
        config.neighbours = vec![
            NeighbourConfig {
                address: "10.10.0.1".into(),
                hardware_address: "02:00:00:00:00:01".into(),
            },
            NeighbourConfig {
                address: "fd00::1".into(),
                hardware_address: "02:00:00:00:00:02".into(),
            },
        ];
        config.sysctls = map(&[("ipv4.arp_ignore", 8), ("ipv6.accept_ra", 0), ("ipv6.use_tempaddr", -1)]);
        config.ethtool = Some(EthtoolConfig {
            features: map(&[
                ("tx-checksum-ip-generic", false),
                ("rx-gro-list", true),
                ("tx-udp_tnl-segmentation", true),
            ]),
        });
        config.gso_max_size = Some(MAX_GSO_SIZE);
        config.gro_max_size = Some(65536);
        config.gso_ipv4_max_size = Some(65536);
        config.gro_ipv4_max_size = Some(1);
        config.tx_queue_len = Some(1000);
        config
    }

    #[test]
    fn a_full_v1alpha2_configuration_is_typed() {
        let valid = good_v2().validate().expect("valid");
        assert_eq!(valid.routes[0].table, Some(100));
        assert_eq!(valid.routes[0].to_string(), "10.20.0.0/16 via 10.10.0.1 table 100");
        assert_eq!(valid.routes[1].table, None);
        assert_eq!(
            valid.rules,
            [
                Rule {
                    priority: Some(100),
                    family: IpFamily::V4,
                    from: Some("10.10.0.0/24".parse().unwrap()),
                    to: None,
                    table: 100,
                },
                Rule {
                    priority: None,
                    family: IpFamily::V6,
                    from: None,
                    to: Some("fd00:1::/64".parse().unwrap()),
                    table: 254,
                },
                Rule {
                    priority: Some(300),
                    family: IpFamily::V6,
                    from: None,
                    to: None,
                    table: 200,
                },
            ]
        );
        assert_eq!(valid.neighbours[1].address.to_string(), "fd00::1");
        assert_eq!(valid.neighbours[1].hardware_address.to_string(), "02:00:00:00:00:02");
        let sysctls: Vec<_> = valid
            .sysctls
            .iter()
            .map(|s| (s.family.sysctl_dir(), s.name.as_str(), s.value))
            .collect();
        assert_eq!(
            sysctls,
            [
                ("ipv4", "arp_ignore", 8),
                ("ipv6", "accept_ra", 0),
                ("ipv6", "use_tempaddr", -1)
            ]
        );
        assert_eq!(valid.features.get("tx-checksum-ip-generic"), Some(&false));
        assert_eq!(valid.features.len(), 3);
        assert_eq!(
            valid.tuning,
            LinkTuning {
                gso_max_size: Some(524_280),
                gro_max_size: Some(65536),
                gso_ipv4_max_size: Some(65536),
                gro_ipv4_max_size: Some(1),
                txqueuelen: Some(1000),
            }
        );
    }

    /// One row per rule of `netdra.dev/v1alpha2`: the change, the field named, a piece of the
    /// message.
    #[test]
    fn every_v1alpha2_rule_names_its_field() {
        type Change = fn(&mut InterfaceConfig);
        let table: &[(&str, Change, &str, &str)] = &[
            (
                "table 0",
                |c| c.routes[0].table = Some(0),
                "routes[0].table",
                "RT_TABLE_UNSPEC",
            ),
            (
                "table 253",
                |c| c.routes[0].table = Some(253),
                "routes[0].table",
                "`default`",
            ),
            (
                "table 255",
                |c| c.routes[1].table = Some(255),
                "routes[1].table",
                "`local`",
            ),
            (
                "duplicate route in a table",
                |c| {
                    let mut again = route("10.20.0.0/16", Some("10.10.0.3"));
                    again.table = Some(100);
                    c.routes.push(again);
                },
                "routes[2].destination",
                "already given (routes[0])",
            ),
            (
                "rule host bits",
                |c| c.rules[0].from = Some("10.10.0.1/24".into()),
                "rules[0].from",
                "host bits",
            ),
            (
                "rule from text",
                |c| c.rules[0].from = Some("anywhere".into()),
                "rules[0].from",
                "neither a prefix",
            ),
            (
                "rule to text",
                |c| c.rules[1].to = Some("fd00:1::/129".into()),
                "rules[1].to",
                "neither a prefix",
            ),
            (
                "rule families differ",
                |c| c.rules[0].to = Some("fd00::/64".into()),
                "rules[0].to",
                "fd00::/64 is an IPv6 prefix but `from` (10.10.0.0/24) is IPv4",
            ),
            (
                "rule family spelling",
                |c| c.rules[2].ip_family = Some("ipv6".into()),
                "rules[2].ipFamily",
                "not one of \"IPv4\", \"IPv6\"",
            ),
            (
                "rule family disagrees",
                |c| c.rules[0].ip_family = Some("IPv6".into()),
                "rules[0].ipFamily",
                "IPv6 does not match `from`/`to`, which are IPv4",
            ),
            (
                "rule family needed",
                |c| c.rules[2].ip_family = None,
                "rules[2].ipFamily",
                "needed when neither",
            ),
            (
                "rule table missing",
                |c| c.rules[0].table = None,
                "rules[0].table",
                "missing",
            ),
            (
                "rule table local",
                |c| c.rules[1].table = Some(255),
                "rules[1].table",
                "`local`",
            ),
            (
                "rule priority 0",
                |c| c.rules[0].priority = Some(0),
                "rules[0].priority",
                "local table",
            ),
            (
                "duplicate rule",
                |c| c.rules.push(c.rules[1].clone()),
                "rules[3]",
                "already given (rules[1])",
            ),
            (
                "neighbour not an ip",
                |c| c.neighbours[0].address = "10.10.0".into(),
                "neighbours[0].address",
                "not an IP address",
            ),
            (
                "neighbour cidr",
                |c| c.neighbours[0].address = "10.10.0.1/24".into(),
                "neighbours[0].address",
                "not an IP address",
            ),
            (
                "neighbour multicast",
                |c| c.neighbours[1].address = "ff02::1".into(),
                "neighbours[1].address",
                "multicast",
            ),
            (
                "neighbour broadcast",
                |c| c.neighbours[0].address = "255.255.255.255".into(),
                "neighbours[0].address",
                "broadcast",
            ),
            (
                "neighbour unspecified",
                |c| c.neighbours[1].address = "::".into(),
                "neighbours[1].address",
                "unspecified",
            ),
            (
                "neighbour loopback",
                |c| c.neighbours[0].address = "127.0.0.1".into(),
                "neighbours[0].address",
                "loopback",
            ),
            (
                "neighbour is us",
                |c| c.neighbours[1].address = "fd00::2".into(),
                "neighbours[1].address",
                "own address (addresses[1])",
            ),
            (
                "duplicate neighbour",
                |c| c.neighbours.push(c.neighbours[0].clone()),
                "neighbours[2].address",
                "already given (neighbours[0])",
            ),
            (
                "neighbour mac text",
                |c| c.neighbours[0].hardware_address = "02:00:00:00:00".into(),
                "neighbours[0].hardwareAddress",
                "not a MAC",
            ),
            (
                "neighbour mac multicast",
                |c| c.neighbours[1].hardware_address = "33:33:00:00:00:01".into(),
                "neighbours[1].hardwareAddress",
                "a neighbour needs a unicast one",
            ),
            (
                "neighbour mac zero",
                |c| c.neighbours[1].hardware_address = "00:00:00:00:00:00".into(),
                "neighbours[1].hardwareAddress",
                "not usable",
            ),
            (
                "down with neighbours",
                |c| {
                    c.routes.clear();
                    c.up = Some(false);
                },
                "neighbours",
                "stay down",
            ),
            (
                "sysctl reserved value",
                |c| {
                    c.sysctls.insert("ipv4.arp_ignore".into(), 5);
                },
                "sysctls[\"ipv4.arp_ignore\"]",
                "5 is not one of 0..=3, 8",
            ),
            (
                "sysctl negative",
                |c| {
                    c.sysctls.insert("ipv6.accept_dad".into(), -1);
                },
                "sysctls[\"ipv6.accept_dad\"]",
                "not one of 0..=2",
            ),
            (
                "sysctl too large",
                |c| {
                    c.sysctls.insert("ipv6.use_tempaddr".into(), 3);
                },
                "sysctls[\"ipv6.use_tempaddr\"]",
                "not one of -1..=2",
            ),
            (
                "sysctl security",
                |c| {
                    c.sysctls.insert("ipv4.route_localnet".into(), 1);
                },
                "sysctls[\"ipv4.route_localnet\"]",
                "not a per-interface ipv4 setting netdra may set (allowed: arp_ignore,",
            ),
            (
                "sysctl ipv6 mtu",
                |c| {
                    c.sysctls.insert("ipv6.mtu".into(), 1500);
                },
                "sysctls[\"ipv6.mtu\"]",
                "not a per-interface ipv6 setting",
            ),
            (
                "sysctl node-wide",
                |c| {
                    c.sysctls.insert("ipv4.conf.all.arp_ignore".into(), 1);
                },
                "sysctls[\"ipv4.conf.all.arp_ignore\"]",
                "not a per-interface",
            ),
            (
                "sysctl full path",
                |c| {
                    c.sysctls.insert("net.ipv4.conf.eth0.arp_ignore".into(), 1);
                },
                "sysctls[\"net.ipv4.conf.eth0.arp_ignore\"]",
                "is not \"ipv4.<name>\" or \"ipv6.<name>\"",
            ),
            (
                "sysctl no family",
                |c| {
                    c.sysctls.insert("arp_ignore".into(), 1);
                },
                "sysctls[\"arp_ignore\"]",
                "is not \"ipv4.<name>\"",
            ),
            (
                "ipv6 disabled with ipv6 given",
                |c| {
                    c.sysctls.insert("ipv6.disable_ipv6".into(), 1);
                },
                "sysctls[\"ipv6.disable_ipv6\"]",
                "cannot be disabled",
            ),
            (
                "feature empty",
                |c| {
                    c.ethtool.as_mut().unwrap().features.insert(String::new(), true);
                },
                "ethtool.features[\"\"]",
                "1 to 31 bytes",
            ),
            (
                "feature too long",
                |c| {
                    c.ethtool.as_mut().unwrap().features.insert("x".repeat(32), true);
                },
                "ethtool.features[\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"]",
                "this one is 32",
            ),
            (
                "feature upper case",
                |c| {
                    c.ethtool.as_mut().unwrap().features.insert("TX-foo".into(), true);
                },
                "ethtool.features[\"TX-foo\"]",
                "'T'",
            ),
            (
                "feature space",
                |c| {
                    c.ethtool.as_mut().unwrap().features.insert("tx foo".into(), true);
                },
                "ethtool.features[\"tx foo\"]",
                "' '",
            ),
            (
                "feature ethtool alias",
                |c| {
                    c.ethtool
                        .as_mut()
                        .unwrap()
                        .features
                        .insert("generic-receive-offload".into(), false);
                },
                "ethtool.features[\"generic-receive-offload\"]",
                "the kernel's: rx-gro",
            ),
            (
                "gso 0",
                |c| c.gso_max_size = Some(0),
                "gsoMaxSize",
                "outside 1..=524280",
            ),
            (
                "gso big",
                |c| c.gso_max_size = Some(524_281),
                "gsoMaxSize",
                "outside 1..=524280",
            ),
            ("gro 0", |c| c.gro_max_size = Some(0), "groMaxSize", "outside"),
            ("gro big", |c| c.gro_max_size = Some(u32::MAX), "groMaxSize", "outside"),
            (
                "gso v4 big",
                |c| c.gso_ipv4_max_size = Some(600_000),
                "gsoIPv4MaxSize",
                "outside",
            ),
            (
                "gro v4 0",
                |c| c.gro_ipv4_max_size = Some(0),
                "groIPv4MaxSize",
                "outside",
            ),
            (
                "txqueuelen 0",
                |c| c.tx_queue_len = Some(0),
                "txQueueLen",
                "without a working queue",
            ),
        ];
        for (case, change, field, message) in table {
            let mut config = good_v2();
            change(&mut config);
            let err = config.validate().expect_err(case);
            assert_eq!(&err.field, field, "{case}: {err}");
            assert!(err.message.contains(message), "{case}: {err}");
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{case}: {err}");
        }
    }

    #[test]
    fn rules_take_bare_ips_and_routes_may_repeat_in_other_tables() {
        let mut config = good();
        config.rules = vec![RuleConfig {
            from: Some("10.10.0.2".into()),
            to: Some("192.0.2.0/24".into()),
            ip_family: Some("IPv4".into()),
            table: Some(1000),
            ..RuleConfig::default()
        }];
        let mut other_table = route("10.20.0.0/16", Some("10.10.0.1"));
        other_table.table = Some(1000);
        config.routes.push(other_table);
        let valid = config.validate().expect("valid");
        assert_eq!(valid.rules[0].from, Some("10.10.0.2/32".parse().unwrap()));
        assert_eq!(valid.rules[0].family, IpFamily::V4);
        assert_eq!(valid.routes[2].table, Some(1000));
    }

    #[test]
    fn a_neighbour_of_a_family_without_addresses_and_ipv6_disabled_without_ipv6_are_fine() {
        let config = InterfaceConfig {
            addresses: vec!["10.10.0.2/24".into()],
            neighbours: vec![NeighbourConfig {
                address: "fe80::1".into(),
                hardware_address: "02:00:00:00:00:09".into(),
            }],
            ..InterfaceConfig::default()
        };
        assert!(config.validate().is_ok());
        let config = InterfaceConfig {
            addresses: vec!["10.10.0.2/24".into()],
            sysctls: map(&[("ipv6.disable_ipv6", 1)]),
            ..InterfaceConfig::default()
        };
        assert_eq!(config.validate().expect("valid").sysctls[0].name, "disable_ipv6");
    }

    #[test]
    fn an_mtu_below_1280_is_refused_with_any_ipv6_on_the_link_but_rules() {
        let base = || InterfaceConfig {
            mtu: Some(1200),
            addresses: vec!["10.10.0.2/24".into()],
            ..InterfaceConfig::default()
        };
        let refused: [(&str, InterfaceConfig, &str); 3] = [
            (
                "route",
                InterfaceConfig {
                    routes: vec![route("fd00:1::/64", Some("fe80::1"))],
                    ..base()
                },
                "an IPv6 route (routes[0], fd00:1::/64)",
            ),
            (
                "neighbour",
                InterfaceConfig {
                    neighbours: vec![NeighbourConfig {
                        address: "fd00::9".into(),
                        hardware_address: "02:00:00:00:00:09".into(),
                    }],
                    ..base()
                },
                "an IPv6 neighbour (neighbours[0], fd00::9)",
            ),
            (
                "sysctl",
                InterfaceConfig {
                    sysctls: map(&[("ipv6.accept_ra", 0)]),
                    ..base()
                },
                "an IPv6 sysctl (ipv6.accept_ra)",
            ),
        ];
        for (what, config, needle) in refused {
            let error = config.validate().expect_err(what);
            assert_eq!(error.field, "mtu", "{what}");
            assert!(error.to_string().contains(needle), "{what}: {error}");
            assert!(error.to_string().contains("1200 is below 1280"), "{what}: {error}");
            // From 1280 on it is fine.
            let config = InterfaceConfig {
                mtu: Some(MIN_IPV6_MTU),
                ..config
            };
            assert!(config.validate().is_ok(), "{what} at 1280");
        }
        // An IPv6 rule belongs to the namespace, an IPv4 sysctl to the IPv4 side: both fine.
        let config = InterfaceConfig {
            rules: vec![RuleConfig {
                from: Some("fd00::/64".into()),
                table: Some(7),
                ..RuleConfig::default()
            }],
            sysctls: map(&[("ipv4.arp_ignore", 1)]),
            ..base()
        };
        assert!(config.validate().is_ok());
    }

    #[test]
    fn addr_gen_mode_stable_privacy_is_refused() {
        for (value, ok) in [(0, true), (1, true), (2, false), (3, true)] {
            let config = InterfaceConfig {
                sysctls: map(&[("ipv6.addr_gen_mode", value)]),
                ..InterfaceConfig::default()
            };
            assert_eq!(config.validate().is_ok(), ok, "addr_gen_mode {value}");
        }
    }

    #[test]
    fn every_allowed_sysctl_takes_its_bounds_and_no_key_is_listed_twice() {
        for (i, allowed) in SYSCTL_ALLOW_LIST.iter().enumerate() {
            assert!(
                !SYSCTL_ALLOW_LIST[..i]
                    .iter()
                    .any(|a| a.family == allowed.family && a.name == allowed.name),
                "{} listed twice",
                allowed.name
            );
            let key = format!("{}.{}", allowed.family.sysctl_dir(), allowed.name);
            for range in allowed.values {
                assert!(!range.is_empty(), "{key}");
                for value in [*range.start(), *range.end()] {
                    let config = InterfaceConfig {
                        sysctls: map(&[(key.as_str(), value)]),
                        ..InterfaceConfig::default()
                    };
                    assert!(config.validate().is_ok(), "{key} = {value}");
                }
            }
        }
    }

    #[test]
    fn new_fields_are_camel_case_and_reject_unknown_keys() {
        let config: InterfaceConfig = serde_json::from_str(
            r#"{"gsoMaxSize":1,"groMaxSize":2,"gsoIPv4MaxSize":3,"groIPv4MaxSize":4,"txQueueLen":5,
                "rules":[{"priority":1,"from":"10.0.0.0/8","to":"10.1.0.0/16","table":7,"ipFamily":"IPv4"}],
                "neighbours":[{"address":"10.0.0.1","hardwareAddress":"02:00:00:00:00:01"}],
                "sysctls":{"ipv4.arp_ignore":1},"ethtool":{"features":{"rx-gro":false}},
                "routes":[{"destination":"10.2.0.0/16","table":7}]}"#,
        )
        .expect("parses");
        assert_eq!(
            (
                config.gso_max_size,
                config.gro_max_size,
                config.gso_ipv4_max_size,
                config.gro_ipv4_max_size,
                config.tx_queue_len
            ),
            (Some(1), Some(2), Some(3), Some(4), Some(5))
        );
        assert_eq!(config.rules[0].ip_family.as_deref(), Some("IPv4"));
        assert_eq!(config.routes[0].table, Some(7));
        let json = serde_json::to_value(&config).expect("serialises");
        assert_eq!(serde_json::from_value::<InterfaceConfig>(json).expect("parses"), config);
        for bad in [
            r#"{"rules":[{"table":1,"src":"10.0.0.0/8"}]}"#,
            r#"{"neighbours":[{"address":"10.0.0.1","mac":"02:00:00:00:00:01"}]}"#,
            r#"{"ethtool":{"privateFlags":{"x":true}}}"#,
        ] {
            let err = serde_json::from_str::<InterfaceConfig>(bad).expect_err(bad);
            assert!(err.to_string().contains("unknown field"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_v1alpha2_valid_config_round_trips_through_serde() {
        let valid = good_v2().validate().expect("valid");
        let json = serde_json::to_string(&valid).expect("serialises");
        assert_eq!(serde_json::from_str::<ValidConfig>(&json).expect("parses"), valid);
    }

    /// The journal persists `ValidConfig`: what the previous version wrote (no rules,
    /// neighbours, sysctls, features, tuning or route tables) still decodes, as empty.
    #[test]
    fn a_valid_config_written_by_the_previous_version_still_decodes() {
        let old = r#"{"name":"net1","mtu":1400,"hardwareAddress":"02:aa:bb:cc:dd:01",
            "addresses":["10.10.0.2/24","fd00::2/64"],
            "routes":[{"destination":"10.20.0.0/16","gateway":"10.10.0.1","source":null,"scope":"global","metric":null},
                      {"destination":"::/0","gateway":"fd00::1","source":null,"scope":"global","metric":null}],
            "up":true}"#;
        let decoded: ValidConfig = serde_json::from_str(old).expect("decodes");
        assert_eq!(decoded, good().validate().expect("valid"));
        assert!(decoded.rules.is_empty() && decoded.tuning.is_empty() && decoded.routes[0].table.is_none());
        // And a configuration without the new fields is written as the previous version wrote it.
        let written = serde_json::to_value(&decoded).expect("serialises");
        assert_eq!(written, serde_json::from_str::<serde_json::Value>(old).expect("json"));
    }

    proptest::proptest! {
        /// Validation answers for any strings and integers in the fields of v1alpha2; never panics.
        #[test]
        fn v1alpha2_validation_never_panics(
            rules in proptest::collection::vec(
                (proptest::option::of(proptest::num::u32::ANY),
                 proptest::option::of("[0-9a-f.:/]{0,20}|.{0,8}"),
                 proptest::option::of("[0-9a-f.:/]{0,20}|.{0,8}"),
                 proptest::option::of(proptest::num::u32::ANY),
                 proptest::option::of("IPv4|IPv6|.{0,5}")),
                0..4),
            neighbours in proptest::collection::vec(("[0-9a-f.:]{0,20}|.{0,8}", "[0-9a-fA-F:]{0,20}|.{0,8}"), 0..4),
            sysctls in proptest::collection::btree_map("(ipv4|ipv6)\\.[a-z_]{0,16}|.{0,12}", proptest::num::i64::ANY, 0..4),
            features in proptest::collection::btree_map(".{0,40}", proptest::bool::ANY, 0..4),
            sizes in proptest::collection::vec(proptest::option::of(proptest::num::u32::ANY), 5),
            tables in proptest::collection::vec(proptest::option::of(proptest::num::u32::ANY), 2),
        ) {
            let mut config = good();
            for (route, table) in config.routes.iter_mut().zip(tables) {
                route.table = table;
            }
            config.rules = rules
                .into_iter()
                .map(|(priority, from, to, table, ip_family)| RuleConfig { priority, from, to, table, ip_family })
                .collect();
            config.neighbours = neighbours
                .into_iter()
                .map(|(address, hardware_address)| NeighbourConfig { address, hardware_address })
                .collect();
            config.sysctls = sysctls;
            config.ethtool = Some(EthtoolConfig { features });
            config.gso_max_size = sizes[0];
            config.gro_max_size = sizes[1];
            config.gso_ipv4_max_size = sizes[2];
            config.gro_ipv4_max_size = sizes[3];
            config.tx_queue_len = sizes[4];
            match config.validate() {
                Ok(valid) => {
                    let json = serde_json::to_string(&valid).expect("serialises");
                    proptest::prop_assert_eq!(serde_json::from_str::<ValidConfig>(&json).expect("parses"), valid);
                }
                Err(err) => proptest::prop_assert!(!err.field.is_empty() && !err.message.is_empty()),
            }
        }
    }

    proptest::proptest! {
        /// Validation answers (valid or an error naming a field) for any strings, never panics.
        #[test]
        fn validation_never_panics(
            name in proptest::option::of(".{0,20}"),
            mtu in proptest::option::of(proptest::num::u32::ANY),
            mac in proptest::option::of(".{0,20}"),
            addresses in proptest::collection::vec("[0-9a-f.:/]{0,24}|.{0,10}", 0..4),
            routes in proptest::collection::vec(
                ("default|[0-9a-f.:/]{0,20}|.{0,8}", proptest::option::of("[0-9a-f.:]{0,20}"),
                 proptest::option::of("[0-9a-f.:]{0,20}"), proptest::option::of("global|link|host|.{0,5}"),
                 proptest::option::of(proptest::num::u32::ANY)),
                0..4),
            up in proptest::option::of(proptest::bool::ANY),
        ) {
            let config = InterfaceConfig {
                name,
                mtu,
                hardware_address: mac,
                addresses,
                routes: routes
                    .into_iter()
                    .map(|(destination, gateway, source, scope, metric)| RouteConfig { destination, gateway, source, scope, metric, table: None })
                    .collect(),
                up,
                ..InterfaceConfig::default()
            };
            if let Err(err) = config.validate() {
                proptest::prop_assert!(!err.field.is_empty() && !err.message.is_empty());
            }
        }
    }
}
