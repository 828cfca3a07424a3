//! A [`NetDevice`] as a `resource.k8s.io/v1` `Device`, within the API's per-device limits.
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{Device, DeviceAttribute};

use crate::device::NetDevice;

/// Most attributes and capacities of one device.
pub const MAX_ATTRIBUTES_AND_CAPACITIES: usize = 32;
/// Longest attribute or capacity name (without its domain).
pub const MAX_NAME: usize = 32;
/// Longest domain prefix of an attribute or capacity name.
pub const MAX_DOMAIN: usize = 63;
/// Longest string or version value.
pub const MAX_VALUE: usize = 64;
/// The standard PCIe root attribute (`pci<domain>:<bus>`).
pub const PCIE_ROOT: &str = "resource.kubernetes.io/pcieRoot";
/// The standard PCI bus id attribute (`dddd:bb:dd.f`).
pub const PCI_BUS_ID: &str = "resource.kubernetes.io/pciBusID";

/// The attributes netdra publishes, most important first: when a device has more than the API
/// allows (a driver added its own), the last ones go first.
pub const ATTRIBUTE_ORDER: &[&str] = &[
    "ifName",
    "kind",
    "mac",
    "mtu",
    "state",
    "virtual",
    "linkType",
    "pciAddress",
    "pciVendor",
    "pciDevice",
    "kernelDriver",
    "numaNode",
    PCIE_ROOT,
    PCI_BUS_ID,
    "sriov",
    "sriovTotalVfs",
    "sriovNumVfs",
    "sriovVf",
    "sriovPfPciAddress",
    "sriovPfName",
    "rdma",
    "rdmaDevice",
    "speedMbps",
    "ipv4",
    "ipv6",
    "alias",
];

fn string(s: impl Into<String>) -> DeviceAttribute {
    DeviceAttribute {
        string: Some(s.into()),
        ..Default::default()
    }
}

fn int(i: impl Into<i64>) -> DeviceAttribute {
    DeviceAttribute {
        int: Some(i.into()),
        ..Default::default()
    }
}

fn boolean(b: bool) -> DeviceAttribute {
    DeviceAttribute {
        bool: Some(b),
        ..Default::default()
    }
}

/// The longest prefix of `items` that, joined with `,`, fits in [`MAX_VALUE`] characters:
/// an address list keeps whole addresses only.
pub fn join_within(items: &[String]) -> String {
    let mut out = String::new();
    for item in items {
        let extra = if out.is_empty() { item.len() } else { item.len() + 1 };
        if out.len() + extra > MAX_VALUE {
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(item);
    }
    out
}

/// The `Device` netdra publishes for `device`, within the limits, and what keeping within
/// them changed (the caller decides how loudly to say so; a rescan renders the same device
/// again).
pub fn render(device: &NetDevice) -> (Device, Vec<LimitAction>) {
    let mut a: BTreeMap<String, DeviceAttribute> = BTreeMap::new();
    let mut put = |name: &str, value: DeviceAttribute| {
        a.insert(name.to_owned(), value);
    };
    put("ifName", string(&device.if_name));
    put("kind", string(device.kind.as_str()));
    if let Some(mac) = &device.mac {
        put("mac", string(mac));
    }
    if let Some(mtu) = device.mtu {
        put("mtu", int(mtu));
    }
    put("state", string(&device.state));
    put(
        "virtual",
        boolean(matches!(device.kind, crate::Kind::Veth | crate::Kind::Virtual)),
    );
    if let Some(t) = &device.link_type {
        put("linkType", string(t));
    }
    if let Some(driver) = &device.kernel_driver {
        put("kernelDriver", string(driver));
    }
    if let Some(pci) = &device.pci {
        put("pciAddress", string(&pci.address));
        put(PCI_BUS_ID, string(&pci.address));
        if let Some(v) = &pci.vendor {
            put("pciVendor", string(v));
        }
        if let Some(d) = &pci.device {
            put("pciDevice", string(d));
        }
        if let Some(n) = pci.numa_node {
            put("numaNode", int(n));
        }
        if let Some(root) = &pci.pcie_root {
            put(PCIE_ROOT, string(root));
        }
        if let Some(total) = pci.sriov_total_vfs.filter(|t| *t > 0) {
            put("sriov", boolean(true));
            put("sriovTotalVfs", int(total));
            put("sriovNumVfs", int(pci.sriov_num_vfs.unwrap_or(0)));
        }
        if let Some(pf) = &pci.physfn {
            put("sriovVf", boolean(true));
            put("sriovPfPciAddress", string(pf));
            if let Some(pf_name) = &pci.physfn_interface {
                put("sriovPfName", string(pf_name));
            }
        }
        put("rdma", boolean(pci.rdma_device.is_some()));
        if let Some(rdma) = &pci.rdma_device {
            put("rdmaDevice", string(rdma));
        }
    }
    if let Some(speed) = device.speed_mbps {
        put("speedMbps", int(speed));
    }
    if !device.ipv4.is_empty() {
        put("ipv4", string(join_within(&device.ipv4)));
    }
    if !device.ipv6.is_empty() {
        put("ipv6", string(join_within(&device.ipv6)));
    }
    if let Some(alias) = &device.alias {
        put("alias", string(alias));
    }
    let mut rendered = Device {
        name: device.name.clone(),
        attributes: Some(a),
        ..Default::default()
    };
    let actions = enforce_limits(&mut rendered);
    (rendered, actions)
}

/// What keeping a device within the API's limits changed (see [`Scan::limited`](crate::Scan::limited)).
///
/// A [`NetDevice`] as a `resource.k8s.io/v1` `Device`, within the API's per-device limits.
///
/// Attribute names without a domain belong to the driver's own domain (the driver name), as
/// the API defines; topology uses the standard `resource.kubernetes.io/` names so claims can
/// align a NIC with GPUs of other drivers.
///
/// Limits (`resource.k8s.io/v1`) and what `enforce_limits` does when a device breaks one:
/// - an attribute or capacity name must be a C identifier of at most 32 characters, with an
///   optional DNS-subdomain prefix of at most 63: a name that is not is **dropped** (a name
///   cannot be shortened without changing what a selector matches);
/// - a string value is at most 64 characters: it is **cut** to 64 (at a character boundary);
///   a version value over 64 is **dropped** (a cut semantic version is not one). The address
///   lists are cut earlier, at a whole address (see `join_within`);
/// - at most 32 attributes and capacities together: attributes are **dropped** from the end of
///   `ATTRIBUTE_ORDER` (identity first, addresses and alias last), attributes not in that
///   list before those in it, by name from Z to A; capacities are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitAction {
    /// An attribute or capacity with an invalid name was dropped.
    InvalidName {
        /// The name.
        name: String,
    },
    /// A string value was cut to the API's 64 characters.
    Cut {
        /// The attribute.
        name: String,
        /// Its length before.
        length: usize,
    },
    /// A version value above the API's 64 characters was dropped.
    LongVersion {
        /// The attribute.
        name: String,
    },
    /// An attribute was dropped to stay within the API's 32 attributes and capacities.
    TooMany {
        /// The attribute.
        name: String,
    },
}

impl std::fmt::Display for LimitAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitAction::InvalidName { name } => write!(
                f,
                "attribute {name:?} dropped: not a C identifier of at most {MAX_NAME} characters with an optional DNS subdomain prefix"
            ),
            LimitAction::Cut { name, length } => {
                write!(f, "attribute {name} cut from {length} to {MAX_VALUE} characters")
            }
            LimitAction::LongVersion { name } => {
                write!(
                    f,
                    "attribute {name} dropped: a version of more than {MAX_VALUE} characters"
                )
            }
            LimitAction::TooMany { name } => write!(
                f,
                "attribute {name} dropped: a device has at most {MAX_ATTRIBUTES_AND_CAPACITIES} attributes and capacities"
            ),
        }
    }
}

fn is_c_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn is_dns_subdomain(s: &str) -> bool {
    k8snames::dns_subdomain_problem(s, MAX_DOMAIN).is_none()
}

/// A valid attribute or capacity name: `[domain/]identifier`.
pub fn is_valid_name(name: &str) -> bool {
    match name.split_once('/') {
        Some((domain, id)) => is_dns_subdomain(domain) && is_c_identifier(id),
        None => is_c_identifier(name),
    }
}

/// Brings a device within the API's per-device limits (see the module's rules); returns what
/// it changed.
pub fn enforce_limits(device: &mut Device) -> Vec<LimitAction> {
    let mut actions = Vec::new();
    let attributes = device.attributes.get_or_insert_with(BTreeMap::new);
    attributes.retain(|name, _| {
        let ok = is_valid_name(name);
        if !ok {
            actions.push(LimitAction::InvalidName { name: name.clone() });
        }
        ok
    });
    if let Some(capacity) = device.capacity.as_mut() {
        capacity.retain(|name, _| {
            let ok = is_valid_name(name);
            if !ok {
                actions.push(LimitAction::InvalidName { name: name.clone() });
            }
            ok
        });
    }
    attributes.retain(|name, value| {
        if value.version.as_ref().is_some_and(|v| v.chars().count() > MAX_VALUE) {
            actions.push(LimitAction::LongVersion { name: name.clone() });
            return false;
        }
        if let Some(s) = value.string.as_mut() {
            let length = s.chars().count();
            if length > MAX_VALUE {
                *s = s.chars().take(MAX_VALUE).collect();
                actions.push(LimitAction::Cut {
                    name: name.clone(),
                    length,
                });
            }
        }
        true
    });
    let capacities = device.capacity.as_ref().map_or(0, BTreeMap::len);
    let room = MAX_ATTRIBUTES_AND_CAPACITIES.saturating_sub(capacities);
    if attributes.len() > room {
        let rank = |name: &str| ATTRIBUTE_ORDER.iter().position(|n| *n == name).unwrap_or(usize::MAX);
        let mut names: Vec<String> = attributes.keys().cloned().collect();
        // Most important first: listed ones by their rank, then unlisted ones by name.
        names.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
        for name in names.into_iter().skip(room) {
            attributes.remove(&name);
            actions.push(LimitAction::TooMany { name });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_api_rules() {
        assert!(is_valid_name("ifName"));
        assert!(is_valid_name("resource.kubernetes.io/pcieRoot"));
        assert!(is_valid_name("_x1"));
        assert!(!is_valid_name("1abc"));
        assert!(!is_valid_name("if-name"));
        assert!(!is_valid_name(&"a".repeat(33)));
        assert!(is_valid_name(&"a".repeat(32)));
        assert!(!is_valid_name("Example.com/x"));
        assert!(!is_valid_name("/x"));
    }

    #[test]
    fn address_lists_keep_whole_addresses() {
        let v6: Vec<String> = (0..5)
            .map(|i| format!("2001:db8:aaaa:bbbb:cccc:dddd:eeee:{i:04x}/64"))
            .collect();
        let joined = join_within(&v6);
        assert_eq!(joined, v6[0]);
        let v4: Vec<String> = vec!["10.0.0.1/24".into(), "192.168.100.200/32".into()];
        assert_eq!(join_within(&v4), "10.0.0.1/24,192.168.100.200/32");
    }

    #[test]
    fn limits_cut_long_strings_drop_bad_names_and_trim_the_count() {
        let mut attributes: BTreeMap<String, DeviceAttribute> = BTreeMap::new();
        attributes.insert("ifName".into(), string("eth0"));
        attributes.insert("alias".into(), string("x".repeat(100)));
        attributes.insert("bad-name".into(), string("x"));
        attributes.insert(
            "fw".into(),
            DeviceAttribute {
                version: Some(format!("1.0.0-{}", "a".repeat(70))),
                ..Default::default()
            },
        );
        for i in 0..40 {
            attributes.insert(format!("extra{i:02}"), int(i));
        }
        let mut device = Device {
            name: "eth0".into(),
            attributes: Some(attributes),
            ..Default::default()
        };
        let actions = enforce_limits(&mut device);
        let a = device.attributes.as_ref().expect("attributes");
        assert_eq!(a.len(), MAX_ATTRIBUTES_AND_CAPACITIES);
        assert!(
            a.contains_key("ifName") && a.contains_key("alias"),
            "listed attributes are kept first"
        );
        assert_eq!(a["alias"].string.as_ref().map(String::len), Some(MAX_VALUE));
        assert!(!a.contains_key("bad-name") && !a.contains_key("fw"));
        assert!(
            a.contains_key("extra00") && !a.contains_key("extra39"),
            "unlisted go by name"
        );
        assert!(actions.contains(&LimitAction::InvalidName {
            name: "bad-name".into()
        }));
        assert!(actions.contains(&LimitAction::LongVersion { name: "fw".into() }));
        assert!(actions.contains(&LimitAction::Cut {
            name: "alias".into(),
            length: 100
        }));
        assert_eq!(
            actions
                .iter()
                .filter(|a| matches!(a, LimitAction::TooMany { .. }))
                .count(),
            10
        );
    }
}
