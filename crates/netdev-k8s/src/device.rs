//! The inventory's model of one network interface, and how it is built from the netlink
//! snapshot plus sysfs. Building is a plain function: tests feed it hand-written netlink facts
//! and a fixture sysfs tree.

use std::collections::{BTreeMap, BTreeSet};

use netdev::{LinkFacts, NetlinkSnapshot, PciFacts, Sysfs, SysfsFacts};

use crate::names::{NameSource, device_names};

/// What kind of interface it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// Backed by a device (a PCI NIC, a virtio NIC…), not an SR-IOV VF.
    Physical,
    /// An SR-IOV virtual function.
    SriovVf,
    /// One end of a veth pair.
    Veth,
    /// Any other software interface (bridge, VLAN, tunnel, loopback…).
    Virtual,
}

impl Kind {
    /// The value of the `kind` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Physical => "physical",
            Kind::SriovVf => "sriov-vf",
            Kind::Veth => "veth",
            Kind::Virtual => "virtual",
        }
    }
}

/// Why the default filter does not publish an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exclusion {
    /// The loopback interface.
    Loopback,
    /// A default route leaves through it: moving it would cut the node off.
    Uplink,
    /// It carries an uplink: a port of an uplink bond or bridge, or the lower link of an
    /// uplink VLAN.
    UplinkMember {
        /// The uplink it belongs to.
        uplink: String,
    },
    /// It belongs to the cluster's pod networking (veth host ends, bridges, CNI devices).
    PodNetworking {
        /// What gave it away.
        why: String,
    },
    /// A software interface, backed by no device (`ifb`, a VLAN, a tunnel…): moving one into a
    /// pod is rarely meant and can conflict with its parent. A CEL filter can still publish it.
    Software {
        /// Its link type, when the kernel gives one.
        link_type: Option<String>,
    },
}

impl std::fmt::Display for Exclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exclusion::Loopback => write!(f, "loopback"),
            Exclusion::Uplink => write!(f, "carries a default route (the node's uplink)"),
            Exclusion::UplinkMember { uplink } => write!(f, "carries the uplink {uplink}"),
            Exclusion::PodNetworking { why } => write!(f, "pod networking: {why}"),
            Exclusion::Software { link_type: Some(t) } => write!(f, "software interface ({t}), backed by no device"),
            Exclusion::Software { link_type: None } => write!(f, "software interface, backed by no device"),
        }
    }
}

/// One interface of the node, with everything the inventory knows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetDevice {
    /// The DRA device name.
    ///
    /// DRA device names for interfaces: valid DNS labels, unique on the node, and stable across
    /// reboots where the hardware allows.
    ///
    /// The rule, in order:
    /// 1. An interface on a PCI function is named after the function: `pci-0000-3b-00-0`. PCI
    ///    addresses do not change across reboots, while interface names can (udev renames, driver
    ///    load order). When several interfaces share one function (multi-port cards, switchdev
    ///    representors), each gets a suffix from its `phys_port_name` or else its `dev_port`:
    ///    `pci-0000-3b-00-0-p1`.
    /// 2. Any other interface whose name is a DNS label keeps its name (`veth0`, `ib0`).
    /// 3. Any other name (`eth_0`, `Uplink`, `bond.100`) becomes a DNS label: lower case, every run
    ///    of other characters replaced by `-`, then `-` and eight hex digits of the name's CRC-32,
    ///    so two names that clean up alike (`eth_0`, `eth.0`) stay apart: `eth-0-1a2b3c4d`.
    /// 4. A name still used twice (an interface literally named like another's derived name) gets
    ///    `-` and the interface index appended on all but the lowest index.
    pub name: String,
    /// The interface name.
    pub if_name: String,
    /// The interface index.
    pub if_index: u32,
    /// What kind of interface it is.
    pub kind: Kind,
    /// The kernel's link kind (`IFLA_INFO_KIND`), for software interfaces.
    pub link_type: Option<String>,
    /// The hardware address.
    pub mac: Option<String>,
    /// The MTU.
    pub mtu: Option<u32>,
    /// The operational state (`up`, `down`, `unknown`…).
    pub state: String,
    /// The interface alias.
    pub alias: Option<String>,
    /// The kernel driver of the device behind it.
    pub kernel_driver: Option<String>,
    /// The PCI function behind it.
    pub pci: Option<PciFacts>,
    /// The link speed in Mbit/s.
    pub speed_mbps: Option<u32>,
    /// IPv4 addresses, CIDR form, in kernel order.
    pub ipv4: Vec<String>,
    /// IPv6 addresses, CIDR form, in kernel order.
    pub ipv6: Vec<String>,
    /// Why the default filter leaves it out, if it does.
    pub default_exclusion: Option<Exclusion>,
}

/// Interface names the cluster's own pod networking creates (CNI plugins, kube-proxy, Docker).
/// A trailing `*` matches any rest.
pub const POD_NETWORKING_NAMES: &[&str] = &[
    "cni0",
    "cni-*",
    "docker0",
    "cilium_*",
    "lxc*",
    "flannel.*",
    "flannel-*",
    "cali*",
    "vxlan.calico",
    "vxlan-v6.calico",
    "tunl0",
    "kube-ipvs0",
    "kube-bridge",
    "nodelocaldns",
    "weave",
    "vethwe*",
    "datapath",
    "genev_sys_*",
    "antrea-*",
    "ovn-k8s-*",
    "br-int",
    "ovs-system",
];

/// Link kinds that only pod networking creates on a node.
pub const POD_NETWORKING_KINDS: &[&str] = &["veth", "bridge", "openvswitch", "netkit"];

fn matches_pattern(name: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// Builds the inventory: one [`NetDevice`] per interface of the snapshot, named, with sysfs
/// facts and the default filter's verdict.
pub fn build(snapshot: &NetlinkSnapshot, sysfs: &Sysfs) -> Vec<NetDevice> {
    let facts: Vec<SysfsFacts> = snapshot.links.iter().map(|l| sysfs.interface(&l.name)).collect();
    let names = device_names(
        &snapshot
            .links
            .iter()
            .zip(&facts)
            .map(|(l, f)| NameSource {
                if_index: l.index,
                if_name: &l.name,
                pci_address: f.pci.as_ref().map(|p| p.address.as_str()),
                phys_port_name: f.phys_port_name.as_deref(),
                dev_port: f.dev_port,
            })
            .collect::<Vec<_>>(),
    );
    let exclusions = default_exclusions(snapshot);
    let mut addresses: BTreeMap<u32, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for a in &snapshot.addresses {
        let entry = addresses.entry(a.index).or_default();
        if a.ipv6 { &mut entry.1 } else { &mut entry.0 }.push(a.cidr.clone());
    }
    snapshot
        .links
        .iter()
        .zip(facts)
        .zip(names)
        .map(|((link, facts), name)| {
            let kind = kind_of(link, &facts);
            let default_exclusion = exclusions.get(&link.index).cloned().or_else(|| {
                (kind == Kind::Virtual).then(|| Exclusion::Software {
                    link_type: link.info_kind.clone(),
                })
            });
            let (ipv4, ipv6) = addresses.remove(&link.index).unwrap_or_default();
            NetDevice {
                name,
                if_name: link.name.clone(),
                if_index: link.index,
                kind,
                link_type: link.info_kind.clone(),
                mac: link.mac.clone(),
                mtu: link.mtu,
                state: link.oper_state.clone(),
                alias: link.alias.clone(),
                kernel_driver: facts.kernel_driver,
                pci: facts.pci,
                speed_mbps: facts.speed_mbps,
                ipv4,
                ipv6,
                default_exclusion,
            }
        })
        .collect()
}

fn kind_of(link: &LinkFacts, facts: &SysfsFacts) -> Kind {
    if facts.pci.as_ref().is_some_and(|p| p.physfn.is_some()) {
        Kind::SriovVf
    } else if link.info_kind.as_deref() == Some("veth") {
        Kind::Veth
    } else if facts.has_device && !link.loopback {
        Kind::Physical
    } else {
        Kind::Virtual
    }
}

/// The default filter's verdicts, by interface index.
fn default_exclusions(snapshot: &NetlinkSnapshot) -> BTreeMap<u32, Exclusion> {
    let by_index: BTreeMap<u32, &LinkFacts> = snapshot.links.iter().map(|l| (l.index, l)).collect();
    let name_of = |i: u32| by_index.get(&i).map_or_else(|| format!("#{i}"), |l| l.name.clone());
    let mut out = BTreeMap::new();

    // The uplinks, then everything below them: ports of an uplink bond/bridge and lower links
    // of an uplink VLAN, transitively (a VLAN on a bond of two NICs excludes all four).
    let uplinks: BTreeSet<u32> = snapshot.default_route_interfaces.clone();
    let mut below: BTreeMap<u32, u32> = BTreeMap::new();
    let mut frontier: Vec<(u32, u32)> = uplinks.iter().map(|&u| (u, u)).collect();
    while let Some((index, uplink)) = frontier.pop() {
        let lower = by_index.get(&index).and_then(|l| l.lower);
        let ports = snapshot
            .links
            .iter()
            .filter(|l| l.controller == Some(index))
            .map(|l| l.index);
        for next in lower.into_iter().chain(ports) {
            if !uplinks.contains(&next) && !below.contains_key(&next) {
                below.insert(next, uplink);
                frontier.push((next, uplink));
            }
        }
    }

    for link in &snapshot.links {
        let verdict = if link.loopback {
            Some(Exclusion::Loopback)
        } else if uplinks.contains(&link.index) {
            Some(Exclusion::Uplink)
        } else if let Some(uplink) = below.get(&link.index) {
            Some(Exclusion::UplinkMember {
                uplink: name_of(*uplink),
            })
        } else {
            pod_networking(link, &by_index).map(|why| Exclusion::PodNetworking { why })
        };
        if let Some(v) = verdict {
            out.insert(link.index, v);
        }
    }
    out
}

fn pod_networking(link: &LinkFacts, by_index: &BTreeMap<u32, &LinkFacts>) -> Option<String> {
    if let Some(kind) = link.info_kind.as_deref().filter(|k| POD_NETWORKING_KINDS.contains(k)) {
        return Some(format!("a {kind} interface"));
    }
    if let Some(pattern) = POD_NETWORKING_NAMES.iter().find(|p| matches_pattern(&link.name, p)) {
        return Some(format!("name matches {pattern}"));
    }
    let controller = link.controller.and_then(|c| by_index.get(&c))?;
    let controller_kind = controller.info_kind.as_deref()?;
    POD_NETWORKING_KINDS
        .contains(&controller_kind)
        .then(|| format!("a port of the {controller_kind} {}", controller.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> LinkFacts {
        LinkFacts {
            index,
            name: name.into(),
            oper_state: "up".into(),
            ..LinkFacts::default()
        }
    }

    #[test]
    fn default_filter_excludes_loopback_uplinks_their_members_and_pod_networking() {
        let snapshot = NetlinkSnapshot {
            links: vec![
                LinkFacts {
                    loopback: true,
                    ..link(1, "lo")
                },
                LinkFacts {
                    controller: Some(4),
                    ..link(2, "eth0")
                },
                LinkFacts {
                    controller: Some(4),
                    ..link(3, "eth1")
                },
                LinkFacts {
                    info_kind: Some("bond".into()),
                    ..link(4, "bond0")
                },
                LinkFacts {
                    info_kind: Some("vlan".into()),
                    lower: Some(4),
                    ..link(5, "bond0.100")
                },
                link(6, "eth2"),
                LinkFacts {
                    info_kind: Some("veth".into()),
                    ..link(7, "veth1234")
                },
                LinkFacts {
                    info_kind: Some("vxlan".into()),
                    ..link(8, "flannel.1")
                },
                LinkFacts {
                    info_kind: Some("bridge".into()),
                    ..link(9, "cni0")
                },
                LinkFacts {
                    controller: Some(9),
                    ..link(10, "tap0")
                },
            ],
            addresses: vec![],
            default_route_interfaces: [5].into(),
            ..NetlinkSnapshot::default()
        };
        let ex = default_exclusions(&snapshot);
        assert_eq!(ex.get(&1), Some(&Exclusion::Loopback));
        assert_eq!(ex.get(&5), Some(&Exclusion::Uplink));
        for member in [2, 3, 4] {
            assert_eq!(
                ex.get(&member),
                Some(&Exclusion::UplinkMember {
                    uplink: "bond0.100".into()
                }),
                "{member}"
            );
        }
        assert_eq!(ex.get(&6), None, "an unrelated NIC is published");
        for pod in [7, 8, 9, 10] {
            assert!(
                matches!(ex.get(&pod), Some(Exclusion::PodNetworking { .. })),
                "{pod}: {ex:?}"
            );
        }
    }

    #[test]
    fn patterns_match_prefixes_and_exact_names() {
        assert!(matches_pattern("cilium_host", "cilium_*"));
        assert!(matches_pattern("docker0", "docker0"));
        assert!(!matches_pattern("docker01", "docker0"));
    }
}
