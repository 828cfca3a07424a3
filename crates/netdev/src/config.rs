//! The configuration of one interface inside a pod, and the pure rules that validate it.
//!
//! [`InterfaceConfig`] is what a user writes (strings, as in JSON or on a command line);
//! [`InterfaceConfig::validate`] turns it into a [`ValidConfig`] of typed values, or names the
//! first field that is wrong: `routes[1].gateway: 10.30.0.1 is not inside any address's subnet`.
//! Nothing here touches the kernel, so every rule is checked before anything changes.
//!
//! The rules:
//! - `name`: what the kernel accepts as an interface name: 1–15 bytes, not `.` or `..`, no `/`,
//!   `:` or whitespace.
//! - `mtu`: 68 (IPv4's minimum) to 65535; at least 1280 when an IPv6 address is given, since
//!   the kernel turns IPv6 off on a link below that.
//! - `hardwareAddress`: six hex octets separated by `:`, unicast (the low bit of the first octet
//!   clear) and not all zero.
//! - `addresses`: CIDR form (`10.10.0.2/24`, `fd00::2/64`); not multicast, loopback or
//!   unspecified; each IP at most once.
//! - `routes`: `destination` is `default` or a CIDR whose host bits are zero; the gateway, when
//!   given, is of the destination's family and inside the subnet of a configured address of
//!   that family (an IPv6 link-local gateway, `fe80::/10`, needs no subnet: it is on-link by
//!   definition); `source` is one of the configured addresses; `scope` is `global`, `link` or
//!   `host` (`host` takes no gateway); no two routes share destination and metric.
//! - `up: false` with routes is refused: the kernel drops a link's routes when it goes down.

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
}

/// A configuration that passed every rule, in typed form. Plain data: a caller may persist it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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

/// A validated policy routing rule: traffic matching `from` and `to` looks up `table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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

/// A validated permanent neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Neighbour {
    /// The neighbour's IP address.
    pub address: IpAddr,
    /// Its MAC address.
    pub hardware_address: Mac,
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
    /// The way `ip route` prints it: `10.20.0.0/16 via 10.10.0.1`, `default via fd00::1`.
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

impl InterfaceConfig {
    /// Applies every rule (see the module documentation); the first broken one is the error.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        if let Some(name) = &self.name {
            check_interface_name(name).map_err(|m| ConfigError::new("name", m))?;
        }
        let hardware_address = match &self.hardware_address {
            None => None,
            Some(text) => {
                let mac: Mac = text
                    .parse()
                    .map_err(|e: MacParseError| ConfigError::new("hardwareAddress", e.to_string()))?;
                if mac.0[0] & 1 == 1 {
                    return Err(ConfigError::new(
                        "hardwareAddress",
                        format!("{mac} is a multicast address; an interface needs a unicast one"),
                    ));
                }
                if mac.0 == [0; 6] {
                    return Err(ConfigError::new("hardwareAddress", "00:00:00:00:00:00 is not usable"));
                }
                Some(mac)
            }
        };
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
        let routes = self
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| validate_route(i, route, &addresses))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, route) in routes.iter().enumerate() {
            if let Some(first) = routes[..i]
                .iter()
                .position(|r| r.destination == route.destination && r.metric == route.metric)
            {
                return Err(ConfigError::new(
                    format!("routes[{i}].destination"),
                    format!(
                        "a route to {} with this metric is already given (routes[{first}])",
                        route.destination
                    ),
                ));
            }
        }
        Ok(ValidConfig {
            name: self.name.clone(),
            mtu: self.mtu,
            hardware_address,
            addresses,
            routes,
            up,
            rules: Vec::new(),
            neighbours: Vec::new(),
            sysctls: Vec::new(),
            features: BTreeMap::new(),
            tuning: LinkTuning::default(),
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
    Ok(Route {
        destination,
        gateway,
        source,
        scope,
        metric: route.metric,
        table: None,
    })
}

#[cfg(test)]
mod tests {
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
            up: None,
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
                    .map(|(destination, gateway, source, scope, metric)| RouteConfig { destination, gateway, source, scope, metric })
                    .collect(),
                up,
            };
            if let Err(err) = config.validate() {
                proptest::prop_assert!(!err.field.is_empty() && !err.message.is_empty());
            }
        }
    }
}
