//! DRA device names for interfaces: valid DNS labels, unique on the node, and stable across
//! reboots where the hardware allows.
//!
//! The rule is documented on `NetDevice::name`, where users read it.

use std::collections::BTreeMap;

pub use k8snames::{MAX_DNS_LABEL, is_dns_label};

/// What naming needs to know of one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameSource<'a> {
    /// The interface index (the last tie-breaker).
    pub if_index: u32,
    /// The interface name.
    pub if_name: &'a str,
    /// The PCI address of the interface's function, if any.
    pub pci_address: Option<&'a str>,
    /// `phys_port_name`, if the driver reports one.
    pub phys_port_name: Option<&'a str>,
    /// `dev_port`, if the driver reports one.
    pub dev_port: Option<u32>,
}

/// Lower case, runs of anything but `[a-z0-9]` replaced by one `-`, no `-` at either end.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// `base` and `suffix` joined with `-`, `base` shortened so the whole fits a DNS label.
fn with_suffix(base: &str, suffix: &str) -> String {
    let keep = MAX_DNS_LABEL.saturating_sub(suffix.len() + 1).min(base.len());
    let base = base[..keep].trim_end_matches('-');
    if base.is_empty() {
        suffix.to_owned()
    } else {
        format!("{base}-{suffix}")
    }
}

fn pci_name(address: &str) -> String {
    format!("pci-{}", clean(address))
}

fn derived_name(if_name: &str) -> String {
    if is_dns_label(if_name) {
        return if_name.to_owned();
    }
    let hash = format!("{:08x}", crc32fast::hash(if_name.as_bytes()));
    let cleaned = clean(if_name);
    // A name that cleans to nothing (`___`) or to something not starting with a letter keeps
    // a readable prefix.
    let base = if cleaned.is_empty() { "if".to_owned() } else { cleaned };
    with_suffix(&base, &hash)
}

/// The device names of `sources`, in the same order.
pub fn device_names(sources: &[NameSource<'_>]) -> Vec<String> {
    let mut per_function: BTreeMap<&str, usize> = BTreeMap::new();
    for pci in sources.iter().filter_map(|s| s.pci_address) {
        *per_function.entry(pci).or_default() += 1;
    }
    let mut names: Vec<String> = sources
        .iter()
        .map(|s| match s.pci_address {
            Some(pci) if per_function.get(pci).copied().unwrap_or(0) > 1 => {
                let port = s
                    .phys_port_name
                    .map(clean)
                    .filter(|p| !p.is_empty())
                    .or_else(|| s.dev_port.map(|p| format!("port{p}")))
                    .or_else(|| Some(clean(s.if_name)).filter(|n| !n.is_empty()))
                    .unwrap_or_else(|| s.if_index.to_string());
                with_suffix(&pci_name(pci), &port)
            }
            Some(pci) => pci_name(pci),
            None => derived_name(s.if_name),
        })
        .collect();

    // Rule 4: whatever still collides keeps its name only on the lowest interface index.
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| sources[i].if_index);
    let mut taken = std::collections::BTreeSet::new();
    for i in order {
        if taken.contains(&names[i]) {
            let base = names[i].clone();
            let index = sources[i].if_index;
            names[i] = (0..)
                .map(|n| {
                    with_suffix(
                        &base,
                        &if n == 0 {
                            index.to_string()
                        } else {
                            format!("{index}-{n}")
                        },
                    )
                })
                .find(|candidate| !taken.contains(candidate))
                .unwrap_or(base);
        }
        taken.insert(names[i].clone());
    }
    names
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn source(if_index: u32, if_name: &str) -> NameSource<'_> {
        NameSource {
            if_index,
            if_name,
            ..NameSource::default()
        }
    }

    #[test]
    fn pci_functions_name_their_interfaces() {
        let names = device_names(&[NameSource {
            pci_address: Some("0000:3b:00.0"),
            ..source(4, "enp59s0f0")
        }]);
        assert_eq!(names, ["pci-0000-3b-00-0"]);
    }

    #[test]
    fn interfaces_sharing_a_function_get_their_port() {
        let names = device_names(&[
            NameSource {
                pci_address: Some("0000:3b:00.0"),
                phys_port_name: Some("p0"),
                ..source(4, "enp59s0f0np0")
            },
            NameSource {
                pci_address: Some("0000:3b:00.0"),
                dev_port: Some(1),
                ..source(5, "enp59s0d1")
            },
        ]);
        assert_eq!(names, ["pci-0000-3b-00-0-p0", "pci-0000-3b-00-0-port1"]);
    }

    #[test]
    fn dns_labels_are_kept_and_other_names_are_cleaned_with_a_hash() {
        let names = device_names(&[
            source(1, "veth0"),
            source(2, "eth_0"),
            source(3, "eth.0"),
            source(4, "Uplink"),
        ]);
        assert_eq!(names[0], "veth0");
        assert!(
            names[1].starts_with("eth-0-") && names[1].len() == "eth-0-".len() + 8,
            "{}",
            names[1]
        );
        assert!(names[2].starts_with("eth-0-"));
        assert_ne!(names[1], names[2]);
        assert!(names[3].starts_with("uplink-"));
        // Stable: the same name always maps to the same device name.
        assert_eq!(device_names(&[source(9, "eth_0")])[0], names[1]);
    }

    #[test]
    fn a_literal_name_equal_to_a_derived_one_is_told_apart_by_index() {
        let derived = device_names(&[source(2, "X")])[0].clone();
        let names = device_names(&[source(2, "X"), source(7, &derived)]);
        assert_eq!(names[0], derived);
        assert_eq!(names[1], format!("{derived}-7"));
    }

    proptest! {
        /// Whatever the interface names (any UTF-8 up to 15 bytes, as the kernel allows) and
        /// PCI layout, the names are DNS labels and unique.
        #[test]
        fn names_are_unique_dns_labels(
            ifs in proptest::collection::vec(("[^/\\s]{1,15}", proptest::option::of(0u8..4), proptest::option::of("[a-z0-9]{1,4}")), 0..40)
        ) {
            let pcis: Vec<Option<String>> = ifs.iter().map(|(_, p, _)| p.map(|p| format!("0000:3b:00.{p}"))).collect();
            let sources: Vec<NameSource<'_>> = ifs
                .iter()
                .zip(&pcis)
                .enumerate()
                .map(|(i, ((name, _, port), pci))| NameSource {
                    if_index: i as u32 + 1,
                    if_name: name,
                    pci_address: pci.as_deref(),
                    phys_port_name: port.as_deref(),
                    dev_port: None,
                })
                .collect();
            let names = device_names(&sources);
            let unique: std::collections::BTreeSet<&String> = names.iter().collect();
            prop_assert_eq!(unique.len(), names.len(), "{:?}", names);
            for n in &names {
                prop_assert!(is_dns_label(n), "{n:?}");
            }
        }
    }
}
