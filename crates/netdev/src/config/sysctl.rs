//! The per-interface sysctls a configuration may set, and their ranges (see the rules in
//! [`super`]).
//!
//! The ranges are those `Documentation/networking/ip-sysctl.rst` gives each setting's meaning
//! for; the kernel stores most of them unchecked, so a typo would otherwise take effect as an
//! undefined mode.
//!
//! Narrower than the documentation where a value cannot work in a pod: `ipv6.addr_gen_mode`
//! 2 (stable privacy) needs the interface's `stable_secret`, which neither a new namespace
//! (its `conf/default/stable_secret` is unset) nor a moved interface (the kernel makes its
//! `conf` directory anew in the pod) has, so the kernel refuses it after the move.
//! Since `stable_secret` itself is refused (a secret, no integer), only 0 (EUI-64), 1 (none)
//! and 3 (random) are allowed.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use super::{ConfigError, IpFamily, Sysctl};

/// One setting of the allow-list: `/proc/sys/net/<family>/conf/<interface>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedSysctl {
    /// The family directory (`ipv4` or `ipv6`).
    pub family: IpFamily,
    /// The setting's name.
    pub name: &'static str,
    /// The values with a meaning, as inclusive ranges.
    pub values: &'static [RangeInclusive<i64>],
}

const fn allow(family: IpFamily, name: &'static str, values: &'static [RangeInclusive<i64>]) -> AllowedSysctl {
    AllowedSysctl { family, name, values }
}

const BOOLEAN: &[RangeInclusive<i64>] = &[0..=1];
const V4: IpFamily = IpFamily::V4;
const V6: IpFamily = IpFamily::V6;

/// Every per-interface sysctl a configuration may set, with its values.
pub const SYSCTL_ALLOW_LIST: &[AllowedSysctl] = &[
    // ARP replies: 0–3 are modes, 4–7 are reserved, 8 answers nothing.
    allow(V4, "arp_ignore", &[0..=3, 8..=8]),
    allow(V4, "arp_announce", &[0..=2]),
    allow(V4, "arp_filter", BOOLEAN),
    // 2 (only from a subnet of the interface) since Linux 6.1; older kernels read it as 1.
    allow(V4, "arp_accept", &[0..=2]),
    allow(V4, "arp_notify", BOOLEAN),
    allow(V4, "rp_filter", &[0..=2]),
    allow(V4, "proxy_arp", BOOLEAN),
    allow(V4, "accept_local", BOOLEAN),
    allow(V4, "accept_redirects", BOOLEAN),
    allow(V4, "send_redirects", BOOLEAN),
    allow(V4, "forwarding", BOOLEAN),
    allow(V4, "log_martians", BOOLEAN),
    allow(V6, "accept_ra", &[0..=2]),
    // 0 off, 1 on, 2 on and IPv6 off on a duplicate link-local address.
    allow(V6, "accept_dad", &[0..=2]),
    allow(V6, "autoconf", BOOLEAN),
    // 1 is refused when the configuration gives IPv6 (`check_ipv6_kept`).
    allow(V6, "disable_ipv6", BOOLEAN),
    allow(V6, "forwarding", BOOLEAN),
    allow(V6, "accept_redirects", BOOLEAN),
    // EUI-64, none, random; not 2, stable privacy (see the module documentation).
    allow(V6, "addr_gen_mode", &[0..=1, 3..=3]),
    // Every value up to 0 means off, 1 on, from 2 on preferred: -1..=2 spans them all.
    allow(V6, "use_tempaddr", &[-1..=2]),
];

/// The values, as `0..=3, 8`.
fn describe(values: &[RangeInclusive<i64>]) -> String {
    values
        .iter()
        .map(|r| {
            if r.start() == r.end() {
                r.start().to_string()
            } else {
                format!("{}..={}", r.start(), r.end())
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn allowed_names(family: IpFamily) -> String {
    SYSCTL_ALLOW_LIST
        .iter()
        .filter(|a| a.family == family)
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Validates `sysctls`, in key order; the first broken one is the error.
pub(super) fn validate_sysctls(sysctls: &BTreeMap<String, i64>) -> Result<Vec<Sysctl>, ConfigError> {
    sysctls
        .iter()
        .map(|(key, &value)| {
            let field = format!("sysctls[{key:?}]");
            let parsed = key.split_once('.').and_then(|(dir, name)| {
                [IpFamily::V4, IpFamily::V6]
                    .into_iter()
                    .find(|f| f.sysctl_dir() == dir)
                    .map(|family| (family, name))
            });
            let (family, name) = match parsed {
                Some(parsed) => parsed,
                None => {
                    return Err(ConfigError::new(
                        field,
                        format!("{key:?} is not \"ipv4.<name>\" or \"ipv6.<name>\""),
                    ));
                }
            };
            let Some(allowed) = SYSCTL_ALLOW_LIST.iter().find(|a| a.family == family && a.name == name) else {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "{name:?} is not a per-interface {} setting netdra may set (allowed: {})",
                        family.sysctl_dir(),
                        allowed_names(family)
                    ),
                ));
            };
            if !allowed.values.iter().any(|r| r.contains(&value)) {
                return Err(ConfigError::new(
                    field,
                    format!("{value} is not one of {}", describe(allowed.values)),
                ));
            }
            Ok(Sysctl {
                family,
                name: allowed.name.to_owned(),
                value,
            })
        })
        .collect()
}

/// Refuses `ipv6.disable_ipv6: 1` when the configuration gives IPv6 addresses, routes or
/// neighbours: the kernel deletes them and refuses new ones on that interface. (Rules belong to
/// the namespace, not the interface, and stay.)
pub(super) fn check_ipv6_kept(sysctls: &[Sysctl], ipv6_in_use: bool) -> Result<(), ConfigError> {
    let disables = sysctls
        .iter()
        .any(|s| s.family == IpFamily::V6 && s.name == "disable_ipv6" && s.value != 0);
    if disables && ipv6_in_use {
        return Err(ConfigError::new(
            "sysctls[\"ipv6.disable_ipv6\"]",
            "IPv6 cannot be disabled on an interface this configuration gives IPv6 addresses, routes or neighbours",
        ));
    }
    Ok(())
}
