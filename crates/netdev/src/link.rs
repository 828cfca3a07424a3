//! What the kernel's routing netlink says about the host's interfaces, as plain data: the
//! input of the inventory, filled by [`crate::netlink`] on a node and by hand in tests.

use std::collections::BTreeSet;

/// One interface of a link dump (`RTM_NEWLINK`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkFacts {
    /// The interface index.
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// The hardware address, `aa:bb:cc:dd:ee:ff`, when the link has one.
    pub mac: Option<String>,
    /// The MTU.
    pub mtu: Option<u32>,
    /// The operational state: one of `up`, `down`, `dormant`, `lowerlayerdown`, `notpresent`,
    /// `testing`, `unknown` (the kernel's `IF_OPER_*` names).
    pub oper_state: String,
    /// The link kind from `IFLA_INFO_KIND` (`veth`, `bridge`, `vlan`…); physical NICs have none.
    pub info_kind: Option<String>,
    /// `IFF_LOOPBACK` is set.
    pub loopback: bool,
    /// The index of the controller (bridge, bond) this interface is a port of.
    pub controller: Option<u32>,
    /// The index of the lower link in this namespace (`IFLA_LINK`, e.g. a VLAN's parent), when
    /// it is a different interface of the same namespace.
    pub lower: Option<u32>,
    /// The interface alias (`ip link set DEV alias …`).
    pub alias: Option<String>,
}

/// One address of an address dump (`RTM_NEWADDR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressFacts {
    /// The interface index it is on.
    pub index: u32,
    /// The address in CIDR form, e.g. `192.0.2.5/24` or `2001:db8::5/64`.
    pub cidr: String,
    /// An IPv6 address (else IPv4).
    pub ipv6: bool,
}

/// The routing netlink state the inventory is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkSnapshot {
    /// Every interface of the namespace.
    pub links: Vec<LinkFacts>,
    /// Every address of the namespace.
    pub addresses: Vec<AddressFacts>,
    /// The interfaces a default route (IPv4 or IPv6, any table but `local`) leaves through.
    pub default_route_interfaces: BTreeSet<u32>,
    /// Dumps that were repeated because the kernel flagged them interrupted by a change.
    pub retried_dumps: u32,
    /// Every dump completed uninterrupted (at some attempt). When false, a storm of changes
    /// outlasted the retries and the snapshot may miss a change: scan again soon.
    pub consistent: bool,
}

impl Default for NetlinkSnapshot {
    fn default() -> Self {
        Self {
            links: Vec::new(),
            addresses: Vec::new(),
            default_route_interfaces: BTreeSet::new(),
            retried_dumps: 0,
            consistent: true,
        }
    }
}
