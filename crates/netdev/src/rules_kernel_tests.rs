//! Real-kernel tests of [`crate::rules`], [`crate::neighbours`] and [`crate::carry`], in
//! network namespaces of their own: the messages are sent through [`Rtnl`] from a thread
//! inside the namespace, read back with the readers, and compared with what `ip` shows there.
//! They need root and iproute2: skipped with the reason otherwise, failing under `CI=true`.
//! (Here rather than under `tests/`: the API is the crate's own.)

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsFd;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use nix::sched::CloneFlags;

use crate::attach::{LinkChange, add_address, add_route, set_link, single};
use crate::carry::{LeftReason, read_carried};
use crate::config::{IpFamily, Mac, Neighbour, Route, RouteScope, Rule};
use crate::neighbours::{add_neighbour, delete_neighbour, permanent_neighbours};
use crate::record::{LinkSelector, get_link, record_hosts};
use crate::rtnl::Rtnl;
use crate::rules::{HostRule, RTPROT_KERNEL, add_rule, delete_rule, dump_rules, route_in_table};

const CREATE: u16 = NLM_F_CREATE | NLM_F_EXCL;

/// Runs `body` on a thread that has entered namespace `name`.
fn in_netns<T: Send>(name: &str, body: impl FnOnce() -> T + Send) -> T {
    let file = File::open(common::netns_path(name)).unwrap();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
                body()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Sends `requests` in one datagram; every one must succeed.
fn execute_all(rtnl: &mut Rtnl, requests: Vec<(RouteNetlinkMessage, u16)>) {
    let what: Vec<String> = requests.iter().map(|(r, _)| format!("{r:?}")).collect();
    for (answer, what) in rtnl.execute(requests).unwrap().into_iter().zip(what) {
        if let Err(e) = answer {
            panic!("{what}: {e}");
        }
    }
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn rule(priority: Option<u32>, family: IpFamily, from: Option<&str>, to: Option<&str>, table: u32) -> Rule {
    Rule {
        priority,
        family,
        from: from.map(net),
        to: to.map(net),
        table,
    }
}

fn table_route(destination: &str, gateway: &str, table: u32) -> Route {
    Route {
        destination: net(destination),
        gateway: Some(ip(gateway)),
        source: None,
        scope: RouteScope::Global,
        metric: None,
        table: Some(table),
    }
}

/// A rule as `ip -j rule` prints it, in the form [`rule_line`] gives ours.
fn ip_rule_line(rule: &serde_json::Value) -> String {
    let prefix = |address: &str, length: &str| match rule[address].as_str() {
        None | Some("all") => "all".to_owned(),
        Some(a) => format!("{a}/{}", rule[length]),
    };
    format!(
        "{}: from {} to {} lookup {}",
        rule["priority"],
        prefix("src", "srclen"),
        prefix("dst", "dstlen"),
        rule["table"].as_str().unwrap()
    )
}

fn rule_line(rule: &HostRule) -> String {
    let table = match rule.table {
        255 => "local".to_owned(),
        254 => "main".to_owned(),
        253 => "default".to_owned(),
        n => n.to_string(),
    };
    let prefix = |p: &Option<IpNet>| p.map_or_else(|| "all".to_owned(), |p| p.to_string());
    format!(
        "{}: from {} to {} lookup {table}",
        rule.priority,
        prefix(&rule.from),
        prefix(&rule.to)
    )
}

/// Every IPv4 and IPv6 rule of namespace `ns`, as `ip` shows them.
fn ip_rules(ns: &str) -> BTreeSet<String> {
    ["-4", "-6"]
        .iter()
        .flat_map(|family| {
            common::ip_json(&["-n", ns, family, "rule", "show"])
                .as_array()
                .cloned()
                .unwrap()
        })
        .map(|r| ip_rule_line(&r))
        .collect()
}

/// The permanent neighbour entries of `dev` in namespace `ns`, as `ip` shows them.
fn ip_neighbours(ns: &str, dev: &str) -> BTreeSet<String> {
    common::ip_json(&["-n", ns, "neigh", "show", "dev", dev, "nud", "permanent"])
        .as_array()
        .cloned()
        .unwrap()
        .iter()
        .map(|n| format!("{} {}", n["dst"].as_str().unwrap(), n["lladdr"].as_str().unwrap()))
        .collect()
}

fn neighbour_lines(neighbours: &[Neighbour]) -> BTreeSet<String> {
    neighbours
        .iter()
        .map(|n| format!("{} {}", n.address, n.hardware_address))
        .collect()
}

#[test]
fn rules_table_routes_and_neighbours_round_trip_through_the_kernel() {
    if !common::privileged("rules and neighbours in a namespace") {
        return;
    }
    let tag = common::prefix("rr");
    let ns = format!("{tag}ns");
    let (host_end, dev) = (format!("{tag}h"), format!("{tag}p"));
    let mut created = common::Created::default();
    created.netns(&ns);
    created.veth(&host_end, &dev, Some(&ns));
    common::ip(&["link", "set", &host_end, "up"]);

    let rules = [
        rule(Some(1000), IpFamily::V4, Some("10.66.0.0/24"), None, 100),
        rule(None, IpFamily::V6, None, Some("fd00::/64"), 100),
        // A table above 255: FRA_TABLE.
        rule(Some(1001), IpFamily::V4, None, Some("10.68.0.0/24"), 1000),
    ];
    let neighbours = [
        Neighbour {
            address: ip("10.66.0.9"),
            hardware_address: Mac([2, 0, 0, 0, 0, 9]),
        },
        Neighbour {
            address: ip("fd66::9"),
            hardware_address: Mac([2, 0, 0, 0, 0, 0x0a]),
        },
    ];
    let routes = [
        table_route("10.67.0.0/24", "10.66.0.2", 100),
        table_route("fd00::/64", "fd66::2", 100),
        table_route("10.68.0.0/24", "10.66.0.2", 1000),
    ];

    let (index, read_rules, read_neighbours, recorded_routes) = in_netns(&ns, || {
        let mut rtnl = Rtnl::new().unwrap();
        let index = get_link(&mut rtnl, LinkSelector::Name(&dev)).unwrap().unwrap().index;
        single(rtnl.execute(vec![(
            set_link(&LinkChange {
                index,
                netns_fd: None,
                name: None,
                mtu: None,
                mac: None,
                up: Some(true),
            }),
            0,
        )]))
        .unwrap();
        let mut requests = vec![
            (add_address(index, net("10.66.0.1/24"), None, 0), CREATE),
            (add_address(index, net("fd66::1/64"), None, 0), CREATE),
        ];
        requests.extend(routes.iter().map(|r| (add_route(index, &route_in_table(r)), CREATE)));
        requests.extend(rules.iter().map(|r| (add_rule(r), CREATE)));
        requests.extend(neighbours.iter().map(|n| (add_neighbour(index, n), CREATE)));
        execute_all(&mut rtnl, requests);

        let read_rules = dump_rules(&mut rtnl).unwrap();
        let read_neighbours = permanent_neighbours(&mut rtnl, index).unwrap();
        let link = get_link(&mut rtnl, LinkSelector::Index(index)).unwrap().unwrap();
        let recorded = record_hosts(&mut rtnl, vec![(link, None)]).unwrap().remove(0).routes;
        (index, read_rules, read_neighbours, recorded)
    });

    // The rules, as read and as `ip` shows them: the kernel's three IPv4 and two IPv6, and ours.
    let ours: Vec<&HostRule> = read_rules.iter().filter(|r| r.protocol != RTPROT_KERNEL).collect();
    assert_eq!(read_rules.len() - ours.len(), 5, "{read_rules:#?}");
    let v6_priority = ours.iter().find(|r| r.family == IpFamily::V6).unwrap().priority;
    // The kernel picked the IPv6 rule's priority: just below main's.
    assert_eq!(v6_priority, 32765);
    let mut expected_rules = rules.to_vec();
    expected_rules[1].priority = Some(v6_priority);
    let as_rules: Vec<Rule> = ours
        .iter()
        .map(|r| r.as_rule().unwrap_or_else(|| panic!("{r:?}")))
        .collect();
    assert_eq!(as_rules.len(), 3);
    for rule in &expected_rules {
        assert!(as_rules.contains(rule), "{rule:?} not in {as_rules:?}");
    }
    assert_eq!(read_rules.iter().map(rule_line).collect::<BTreeSet<_>>(), ip_rules(&ns));

    // The neighbours.
    assert_eq!(neighbour_lines(&read_neighbours), neighbour_lines(&neighbours));
    assert_eq!(ip_neighbours(&ns, &dev), neighbour_lines(&neighbours));

    // The routes in their tables, as recorded and as `ip` shows them.
    let recorded: BTreeSet<(String, u32)> = recorded_routes
        .iter()
        .map(|r| (r.destination.to_string(), r.table))
        .collect();
    let expected: BTreeSet<(String, u32)> = routes
        .iter()
        .map(|r| (r.destination.to_string(), r.table.unwrap()))
        .collect();
    assert_eq!(recorded, expected);
    for table in ["100", "1000"] {
        // `ip -6` fails on a table that has no IPv6 route.
        let families: BTreeSet<&str> = routes
            .iter()
            .filter(|r| r.table.unwrap().to_string() == table)
            .map(|r| if r.destination.addr().is_ipv4() { "-4" } else { "-6" })
            .collect();
        let shown: BTreeSet<String> = families
            .iter()
            .flat_map(|f| {
                common::ip_json(&["-n", &ns, f, "route", "show", "table", table])
                    .as_array()
                    .cloned()
                    .unwrap()
            })
            .map(|r| format!("{} via {}", r["dst"].as_str().unwrap(), r["gateway"].as_str().unwrap()))
            .collect();
        let wanted: BTreeSet<String> = routes
            .iter()
            .filter(|r| r.table.unwrap().to_string() == table)
            .map(|r| format!("{} via {}", r.destination, r.gateway.unwrap()))
            .collect();
        assert_eq!(shown, wanted, "table {table}");
    }

    // Deleted again with the delete messages.
    let (rules_left, neighbours_left) = in_netns(&ns, || {
        let mut rtnl = Rtnl::new().unwrap();
        let mut requests: Vec<_> = expected_rules.iter().map(|r| (delete_rule(r), 0)).collect();
        requests.extend(neighbours.iter().map(|n| (delete_neighbour(index, n.address), 0)));
        execute_all(&mut rtnl, requests);
        // A second delete finds nothing.
        let again = rtnl.execute(vec![(delete_rule(&expected_rules[0]), 0)]).unwrap();
        assert_eq!(again[0].as_ref().unwrap_err().errno, nix::errno::Errno::ENOENT);
        (
            dump_rules(&mut rtnl).unwrap(),
            permanent_neighbours(&mut rtnl, index).unwrap(),
        )
    });
    assert!(
        rules_left.iter().all(|r| r.protocol == RTPROT_KERNEL),
        "{rules_left:#?}"
    );
    assert_eq!(rules_left.len(), 5);
    assert_eq!(rules_left.iter().map(rule_line).collect::<BTreeSet<_>>(), ip_rules(&ns));
    assert!(neighbours_left.is_empty());
    assert!(ip_neighbours(&ns, &dev).is_empty());
}

#[test]
fn carry_over_picks_the_rules_of_the_interfaces_tables_and_its_permanent_neighbours() {
    if !common::privileged("carry-over selection in a namespace") {
        return;
    }
    let tag = common::prefix("rc");
    let (ns, pod) = (format!("{tag}ns"), format!("{tag}pd"));
    let (x, xp, y, yp) = (
        format!("{tag}x"),
        format!("{tag}xp"),
        format!("{tag}y"),
        format!("{tag}yp"),
    );
    let mut created = common::Created::default();
    created.netns(&ns);
    created.netns(&pod);
    // Both veth pairs live in the "host" namespace and go with it.
    let n = |args: &str| {
        let mut full = vec!["-n", ns.as_str()];
        full.extend(args.split_whitespace());
        common::ip(&full);
    };
    n(&format!("link add {x} type veth peer name {xp}"));
    n(&format!("link add {y} type veth peer name {yp}"));
    for link in [&x, &xp, &y, &yp] {
        n(&format!("link set {link} up"));
    }
    n(&format!("addr add 10.70.0.1/24 dev {x}"));
    n(&format!("addr add fd70::1/64 dev {x} nodad"));
    n(&format!("addr add 10.72.0.1/24 dev {y}"));
    n(&format!("route add 10.71.0.0/24 via 10.70.0.2 dev {x} table 100"));
    n(&format!("route add fd71::/64 via fd70::2 dev {x} table 100"));
    n(&format!("route add default via 10.70.0.2 dev {x} table 101"));
    n(&format!("route add 10.74.0.0/24 via 10.70.0.2 dev {x}"));
    n(&format!("route add 10.73.0.0/24 via 10.72.0.2 dev {y} table 200"));
    // x's tables: 100, 101.
    n("rule add priority 1000 from 10.70.0.0/24 lookup 100");
    n("rule add priority 1001 to 10.75.0.0/24 lookup 101");
    n("-6 rule add priority 1002 from fd70::/64 lookup 100");
    n("rule add priority 1003 fwmark 0x1 lookup 100");
    n(&format!("rule add priority 1004 iif {x} lookup 101"));
    // y's table, nobody's table, the main table.
    n("rule add priority 1005 from 10.72.0.0/24 lookup 200");
    n("rule add priority 1006 from 10.76.0.0/24 lookup 300");
    n("rule add priority 1007 from 10.70.0.0/24 lookup main");
    n(&format!(
        "neigh add 10.70.0.9 lladdr 02:00:00:00:00:09 dev {x} nud permanent"
    ));
    n(&format!(
        "neigh add fd70::9 lladdr 02:00:00:00:00:0a dev {x} nud permanent"
    ));
    n(&format!(
        "neigh add 10.70.0.10 lladdr 02:00:00:00:00:0b dev {x} nud stale"
    ));
    n(&format!(
        "neigh add 10.70.0.11 lladdr 02:00:00:00:00:0c dev {x} nud noarp"
    ));
    n(&format!(
        "neigh add 10.72.0.9 lladdr 02:00:00:00:00:0d dev {y} nud permanent"
    ));

    let reads = in_netns(&ns, || {
        let mut rtnl = Rtnl::new().unwrap();
        let links = [&x, &y]
            .iter()
            .map(|name| (get_link(&mut rtnl, LinkSelector::Name(name)).unwrap().unwrap(), None))
            .collect();
        let hosts = record_hosts(&mut rtnl, links).unwrap();
        read_carried(&mut rtnl, &hosts).unwrap()
    });
    let priorities = |i: usize| -> Vec<u32> { reads[i].rules.iter().filter_map(|r| r.priority).collect() };
    assert_eq!(priorities(0), [1000, 1001, 1002]);
    assert_eq!(
        reads[0].rules[2],
        rule(Some(1002), IpFamily::V6, Some("fd70::/64"), None, 100)
    );
    assert_eq!(
        reads[0]
            .left
            .iter()
            .map(|l| (l.rule.priority, l.reason))
            .collect::<Vec<_>>(),
        [(1003, LeftReason::OtherSelectors), (1004, LeftReason::OtherSelectors)]
    );
    assert_eq!(priorities(1), [1005]);
    assert!(reads[1].left.is_empty());
    assert_eq!(
        neighbour_lines(&reads[0].neighbours),
        ["10.70.0.9 02:00:00:00:00:09", "fd70::9 02:00:00:00:00:0a"]
            .map(str::to_owned)
            .into()
    );
    assert_eq!(
        neighbour_lines(&reads[1].neighbours),
        ["10.72.0.9 02:00:00:00:00:0d"].map(str::to_owned).into()
    );

    // What the move does: the host's rules stay, the interface's neighbours go with neither.
    n(&format!("link set {x} netns {pod}"));
    assert!(ip_neighbours(&pod, &x).is_empty());
    let host_rules = ip_rules(&ns);
    assert!(
        host_rules.contains("1000: from 10.70.0.0/24 to all lookup 100"),
        "{host_rules:?}"
    );
    common::ip(&["-n", &pod, "link", "set", &x, "netns", &ns]);
    assert!(ip_neighbours(&ns, &x).is_empty());
    assert!(ip_rules(&ns).contains("1000: from 10.70.0.0/24 to all lookup 100"));
}
