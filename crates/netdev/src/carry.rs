//! Which of the host's policy routing rules and neighbour entries go into a pod with an
//! interface, read before it moves: plain data ([`CarryRead`]) the caller records with the
//! interface and applies in the pod.
//!
//! The selection, after dranet (kubernetes-sigs/dranet, `pkg/driver/dra_hooks.go`:
//! `getRuleInfo`, `getRouteInfo` and the neighbour loop of `prepareResourceClaim`):
//! - **Rules** go by routing table. The interface's tables are those of its recorded routes
//!   ([`HostInterface::routes`]: the routes through it that are not the kernel's, an RA's or
//!   in the local table), less `RT_TABLE_UNSPEC` (0), main (254) and local (255). A host rule
//!   goes with the interface when it looks up one of those tables (`FR_ACT_TO_TBL`); rules of
//!   every family are read, and the table alone decides. dranet groups all rules by table,
//!   drops main and local, and hands each table's rules to the first device of a claim whose
//!   routes use it; so here, with several interfaces moving into one pod, a rule goes with the
//!   first of them (in request order) whose tables hold its table, and only once.
//! - Where this is stricter than dranet: dranet keeps only a rule's priority, prefixes and
//!   table and drops anything else that selects packets (`fwmark`, `iif`, `oif`, `tos`,
//!   `not`, …), so `from all fwmark 0x1 lookup 100` would arrive in the pod as `from all lookup
//!   100`, a wider rule. Such a rule is left behind here and reported ([`LeftRule`]), as are
//!   the kernel's own rules (`FRA_PROTOCOL` kernel: `lookup default` in table 253 is in every
//!   IPv4 namespace already, the pod's too).
//! - A carried rule keeps its priority, so that its order against the pod's other rules is the
//!   host's.
//! - **Neighbours**: the interface's entries whose state is exactly `NUD_PERMANENT` and that
//!   have an IP and a MAC address, both families, as dranet keeps them
//!   ([`crate::neighbours`]).
//!
//! What the kernel does when the interface moves, and so what a detach must restore: a rule
//! names no interface by index, so the host's rules stay where they are (they are copied into
//! the pod, not moved); the interface's neighbour entries are flushed with it, in either
//! direction, so the recorded ones are added again on the host when it comes back.
//!
//! Whether to carry at all is the caller's: dranet copies the rules and neighbours into every
//! pod, configured or not; they belong with the routes whose tables they look up, which netdra
//! carries when a configuration gives no addresses.

use std::collections::BTreeSet;
use std::fmt;

use netlink_packet_route::rule::RuleAction;

use crate::config::{Neighbour, Rule};
use crate::neighbours::permanent_neighbours;
use crate::record::{HostInterface, HostRoute, LOCAL_TABLE, MAIN_TABLE};
use crate::rtnl::{Rtnl, RtnlError};
use crate::rules::{HostRule, RTPROT_KERNEL, dump_rules};

/// A host rule that looks up one of an interface's tables but does not go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeftRule {
    /// The rule.
    pub(crate) rule: HostRule,
    /// Why it stays behind.
    pub(crate) reason: LeftReason,
}

/// Why a rule of an interface's table stays behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeftReason {
    /// The kernel made it, in every namespace.
    KernelMade,
    /// Something other than its prefixes selects its packets: carried without it, it would
    /// be a wider rule.
    OtherSelectors,
}

impl fmt::Display for LeftRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            LeftReason::KernelMade => write!(f, "rule {} is the kernel's own", self.rule),
            LeftReason::OtherSelectors => write!(
                f,
                "rule {} selects by {}, which a pod rule cannot hold",
                self.rule,
                self.rule.other_selectors.join(", ")
            ),
        }
    }
}

/// The rules chosen for one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RuleSelection {
    /// The rules to add in the pod.
    pub(crate) carried: Vec<Rule>,
    /// The rules of its tables that stay behind.
    pub(crate) left: Vec<LeftRule>,
}

/// The tables of `routes` that rules can carry: neither unspecified, main nor local.
pub(crate) fn route_tables(routes: &[HostRoute]) -> BTreeSet<u32> {
    routes
        .iter()
        .map(|r| r.table)
        .filter(|t| ![0, MAIN_TABLE, LOCAL_TABLE].contains(t))
        .collect()
}

/// For each interface, given by its recorded routes in request order, the host `rules` that
/// go with it (see the module documentation). Each rule is chosen at most once.
pub(crate) fn select_rules(rules: &[HostRule], interfaces: &[&[HostRoute]]) -> Vec<RuleSelection> {
    let tables: Vec<BTreeSet<u32>> = interfaces.iter().map(|routes| route_tables(routes)).collect();
    let mut selections = vec![RuleSelection::default(); interfaces.len()];
    for rule in rules.iter().filter(|r| r.action == RuleAction::ToTable) {
        let Some(owner) = tables.iter().position(|t| t.contains(&rule.table)) else {
            continue;
        };
        let selection = &mut selections[owner];
        let left = |reason| LeftRule {
            rule: rule.clone(),
            reason,
        };
        if rule.protocol == RTPROT_KERNEL {
            selection.left.push(left(LeftReason::KernelMade));
        } else if let Some(carried) = rule.as_rule() {
            selection.carried.push(carried);
        } else {
            selection.left.push(left(LeftReason::OtherSelectors));
        }
    }
    selections
}

/// Reading what goes with an interface failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CarryError {
    /// The rule dump failed.
    #[error("read the policy routing rules: {0}")]
    Rules(#[source] RtnlError),
    /// An interface's neighbour dump failed.
    #[error("read the permanent neighbours of {interface}: {source}")]
    Neighbours {
        /// The interface.
        interface: String,
        /// What failed.
        #[source]
        source: RtnlError,
    },
}

impl CarryError {
    /// The step that failed, for an attach's error, and the netlink error.
    pub(crate) fn into_step(self) -> (String, RtnlError) {
        match self {
            Self::Rules(source) => ("read the policy routing rules".into(), source),
            Self::Neighbours { interface, source } => (format!("read the permanent neighbours of {interface}"), source),
        }
    }
}

/// What goes with one interface, and what of its tables' rules stays behind (to log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CarryRead {
    /// The host's rules that look up a table of the interface's routes, in priority order.
    pub(crate) rules: Vec<Rule>,
    /// The interface's permanent neighbour entries.
    pub(crate) neighbours: Vec<Neighbour>,
    /// Rules of its tables that stay behind.
    pub(crate) left: Vec<LeftRule>,
}

/// Reads what goes into the pod with each of `hosts` (recorded on the same socket's
/// namespace, in request order): one rule dump for all, one neighbour dump per interface, the
/// kernel filtering by interface.
pub(crate) fn read_carried(rtnl: &mut Rtnl, hosts: &[HostInterface]) -> Result<Vec<CarryRead>, CarryError> {
    let any_tables = hosts.iter().any(|h| !route_tables(&h.routes).is_empty());
    // Without a table of its own, no rule can go with any interface: spare the dump.
    let rules = if any_tables {
        dump_rules(rtnl).map_err(CarryError::Rules)?
    } else {
        Vec::new()
    };
    let routes: Vec<&[HostRoute]> = hosts.iter().map(|h| h.routes.as_slice()).collect();
    let selections = select_rules(&rules, &routes);
    hosts
        .iter()
        .zip(selections)
        .map(|(host, selection)| {
            let neighbours = permanent_neighbours(rtnl, host.index).map_err(|source| CarryError::Neighbours {
                interface: host.name.clone(),
                source,
            })?;
            Ok(CarryRead {
                rules: selection.carried,
                neighbours,
                left: selection.left,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ipnet::IpNet;

    use super::*;
    use crate::config::IpFamily;
    use crate::settings::HostSettings;

    fn route(destination: &str, table: u32) -> HostRoute {
        HostRoute {
            destination: destination.parse().expect("cidr"),
            gateway: None,
            source: None,
            metric: None,
            table,
            scope: 253,
            protocol: 4,
        }
    }

    fn host_rule(priority: u32, from: Option<&str>, table: u32) -> HostRule {
        let from: Option<IpNet> = from.map(|p| p.parse().expect("cidr"));
        HostRule {
            family: match from {
                Some(IpNet::V6(_)) => IpFamily::V6,
                _ => IpFamily::V4,
            },
            priority,
            from,
            to: None,
            table,
            action: RuleAction::ToTable,
            protocol: 0,
            iif: None,
            oif: None,
            other_selectors: Vec::new(),
        }
    }

    /// The kernel's rules of a new namespace.
    fn kernel_rules() -> Vec<HostRule> {
        [(0, 255), (32766, 254), (32767, 253)]
            .into_iter()
            .map(|(priority, table)| HostRule {
                protocol: RTPROT_KERNEL,
                ..host_rule(priority, None, table)
            })
            .collect()
    }

    #[test]
    fn rules_go_with_the_interface_whose_routes_use_their_table() {
        let mut rules = kernel_rules();
        rules.push(host_rule(1000, Some("10.1.0.0/24"), 100));
        rules.push(host_rule(1001, Some("fd00:1::/64"), 100));
        rules.push(host_rule(1002, Some("10.2.0.0/24"), 200));
        rules.push(host_rule(1003, Some("10.3.0.0/24"), 300));
        rules.push(HostRule {
            other_selectors: vec!["fwmark".into()],
            ..host_rule(1004, None, 100)
        });
        rules.push(HostRule {
            action: RuleAction::Blackhole,
            ..host_rule(1005, None, 0)
        });
        rules.push(host_rule(1006, None, 1000));
        let first = [
            route("10.1.0.0/24", 254),
            route("0.0.0.0/0", 100),
            route("10.9.0.0/16", 1000),
        ];
        let second = [route("10.2.0.0/24", 200), route("10.1.1.0/24", 100)];
        let selections = select_rules(&rules, &[&first, &second]);
        let priorities = |s: &RuleSelection| s.carried.iter().filter_map(|r| r.priority).collect::<Vec<_>>();
        // Table 100 is the first's: the second, which routes through it too, does not get
        // its rules again.
        assert_eq!(priorities(&selections[0]), [1000, 1001, 1006]);
        assert_eq!(priorities(&selections[1]), [1002]);
        assert_eq!(
            selections[0].carried[0],
            Rule {
                priority: Some(1000),
                family: IpFamily::V4,
                from: Some("10.1.0.0/24".parse().expect("cidr")),
                to: None,
                table: 100,
            }
        );
        assert_eq!(selections[0].left.len(), 1);
        assert_eq!(selections[0].left[0].reason, LeftReason::OtherSelectors);
        assert_eq!(
            selections[0].left[0].to_string(),
            "rule 1004: from all to all lookup 100 [fwmark] selects by fwmark, which a pod rule cannot hold"
        );
        assert!(selections[1].left.is_empty());
    }

    #[test]
    fn main_local_and_unspecified_tables_carry_no_rules() {
        let routes = [
            route("10.1.0.0/24", 254),
            route("10.1.0.1/32", 255),
            route("10.1.0.0/16", 0),
        ];
        assert!(route_tables(&routes).is_empty());
        let mut rules = kernel_rules();
        rules.push(host_rule(1000, None, 254));
        assert_eq!(select_rules(&rules, &[&routes]), [RuleSelection::default()]);
    }

    #[test]
    fn the_kernels_own_rules_stay_behind_even_for_a_table_in_use() {
        // A route in table 253 (`default`) makes the kernel's `32767: lookup default` a rule of
        // the interface's table; the pod has that rule already.
        let selections = select_rules(&kernel_rules(), &[&[route("0.0.0.0/0", 253)]]);
        assert!(selections[0].carried.is_empty());
        assert_eq!(selections[0].left.len(), 1);
        assert_eq!(selections[0].left[0].reason, LeftReason::KernelMade);
    }

    #[test]
    fn carried_state_is_plain_data_for_the_record() {
        // What is carried lives in the record's host settings.
        let carried = HostSettings {
            rules: vec![Rule {
                priority: Some(1000),
                family: IpFamily::V6,
                from: None,
                to: Some("fd00::/64".parse().expect("cidr")),
                table: 100,
            }],
            neighbours: vec![Neighbour {
                address: "10.1.0.9".parse().expect("ip"),
                hardware_address: crate::config::Mac([2, 0, 0, 0, 0, 9]),
            }],
            ..HostSettings::default()
        };
        let json = serde_json::to_string(&carried).expect("serialises");
        assert_eq!(
            json,
            r#"{"rules":[{"priority":1000,"family":"IPv6","from":null,"to":"fd00::/64","table":100}],"neighbours":[{"address":"10.1.0.9","hardwareAddress":"02:00:00:00:00:09"}]}"#
        );
        assert_eq!(
            serde_json::from_str::<HostSettings>(&json).expect("reads back"),
            carried
        );
        assert_eq!(
            serde_json::from_str::<HostSettings>("{}").expect("empty"),
            HostSettings::default()
        );
    }
}
