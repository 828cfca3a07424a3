//! Policy routing rules, neighbour entries and routing tables (see the rules in [`super`]).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::record::LOCAL_TABLE;

use super::{ConfigError, IpFamily, Neighbour, NeighbourConfig, Rule, RuleConfig, parse_unicast_mac};

/// `RT_TABLE_UNSPEC`: no table.
const TABLE_UNSPEC: u32 = 0;
/// `RT_TABLE_DEFAULT`: the table of the kernel's last rule.
const TABLE_DEFAULT: u32 = 253;

/// Checks a routing table a route or rule names: not unspecified, `default` or `local`.
pub(super) fn check_table(field: &str, table: u32) -> Result<(), ConfigError> {
    let why = match table {
        TABLE_UNSPEC => "0 is no table (RT_TABLE_UNSPEC); leave `table` out for the main table",
        TABLE_DEFAULT => "253 is the kernel's reserved `default` table",
        LOCAL_TABLE => "255 is the kernel's `local` table, which it fills itself",
        _ => return Ok(()),
    };
    Err(ConfigError::new(
        field,
        format!("{why}; use 254 (main) or another table (1..=252, 256 and above)"),
    ))
}

/// A rule's `from` or `to`: a prefix in CIDR form with no host bits, or a bare IP.
fn parse_prefix(field: &str, text: &str) -> Result<IpNet, ConfigError> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            ConfigError::new(
                field,
                format!("{text:?} is neither a prefix in CIDR form (10.0.0.0/24) nor an IP address"),
            )
        })?,
    };
    if net.trunc() != net {
        return Err(ConfigError::new(
            field,
            format!("{net} has host bits set; the network is {}", net.trunc()),
        ));
    }
    Ok(net)
}

fn validate_rule(i: usize, rule: &RuleConfig) -> Result<Rule, ConfigError> {
    let field = |name: &str| format!("rules[{i}].{name}");
    let from = rule
        .from
        .as_deref()
        .map(|t| parse_prefix(&field("from"), t))
        .transpose()?;
    let to = rule.to.as_deref().map(|t| parse_prefix(&field("to"), t)).transpose()?;
    let family_of = |net: IpNet| IpFamily::of(net.addr());
    if let (Some(from), Some(to)) = (from, to)
        && family_of(from) != family_of(to)
    {
        return Err(ConfigError::new(
            field("to"),
            format!(
                "{to} is an {} prefix but `from` ({from}) is {}",
                family_of(to),
                family_of(from)
            ),
        ));
    }
    let given = match rule.ip_family.as_deref() {
        None => None,
        Some("IPv4") => Some(IpFamily::V4),
        Some("IPv6") => Some(IpFamily::V6),
        Some(other) => {
            return Err(ConfigError::new(
                field("ipFamily"),
                format!("{other:?} is not one of \"IPv4\", \"IPv6\""),
            ));
        }
    };
    let family = match (from.or(to).map(family_of), given) {
        (Some(selected), Some(given)) if selected != given => {
            return Err(ConfigError::new(
                field("ipFamily"),
                format!("{given} does not match `from`/`to`, which are {selected}"),
            ));
        }
        (Some(family), _) | (None, Some(family)) => family,
        (None, None) => {
            return Err(ConfigError::new(
                field("ipFamily"),
                "needed when neither `from` nor `to` is given, to tell IPv4 from IPv6",
            ));
        }
    };
    let table = rule
        .table
        .ok_or_else(|| ConfigError::new(field("table"), "missing: a rule needs the table it looks up"))?;
    check_table(&field("table"), table)?;
    if rule.priority == Some(0) {
        return Err(ConfigError::new(
            field("priority"),
            "0 is the kernel's rule that looks up the local table; a rule there would hide local delivery",
        ));
    }
    Ok(Rule {
        priority: rule.priority,
        family,
        from,
        to,
        table,
    })
}

/// Validates `rules`, in order; the first broken rule is the error.
pub(super) fn validate_rules(rules: &[RuleConfig]) -> Result<Vec<Rule>, ConfigError> {
    let mut valid: Vec<Rule> = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let rule = validate_rule(i, rule)?;
        if let Some(first) = valid.iter().position(|r| *r == rule) {
            return Err(ConfigError::new(
                format!("rules[{i}]"),
                format!("the same rule (priority, from, to, table and family) is already given (rules[{first}])"),
            ));
        }
        valid.push(rule);
    }
    Ok(valid)
}

/// Validates `neighbours` against the interface's `addresses`; the first broken entry is the error.
pub(super) fn validate_neighbours(
    neighbours: &[NeighbourConfig],
    addresses: &[IpNet],
) -> Result<Vec<Neighbour>, ConfigError> {
    let mut valid: Vec<Neighbour> = Vec::with_capacity(neighbours.len());
    for (i, neighbour) in neighbours.iter().enumerate() {
        let field = format!("neighbours[{i}].address");
        let text = &neighbour.address;
        let address: IpAddr = text
            .parse()
            .map_err(|_| ConfigError::new(&field, format!("{text:?} is not an IP address")))?;
        let broadcast = matches!(address, IpAddr::V4(v4) if v4.is_broadcast());
        if address.is_unspecified() || address.is_loopback() || address.is_multicast() || broadcast {
            return Err(ConfigError::new(
                &field,
                format!("{address} is an unspecified, loopback, multicast or broadcast address"),
            ));
        }
        if let Some(own) = addresses.iter().position(|a| a.addr() == address) {
            return Err(ConfigError::new(
                &field,
                format!("{address} is the interface's own address (addresses[{own}])"),
            ));
        }
        if let Some(first) = valid.iter().position(|n| n.address == address) {
            return Err(ConfigError::new(
                &field,
                format!("{address} is already given (neighbours[{first}])"),
            ));
        }
        let hardware_address = parse_unicast_mac(
            &format!("neighbours[{i}].hardwareAddress"),
            &neighbour.hardware_address,
            "a neighbour",
        )?;
        valid.push(Neighbour {
            address,
            hardware_address,
        });
    }
    Ok(valid)
}
