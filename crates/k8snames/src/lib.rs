//! Kubernetes naming rules, in one place for every crate of the workspace: RFC 1123 DNS
//! labels and DNS subdomains (driver names, device names, attribute domains).
//!
//! A crate of its own because its users must not depend on each other: the kubelet-plugin SDK
//! checks driver names with it and knows nothing of netlink, the network-device crate names
//! devices with it and knows nothing of the kubelet. No maintained crate exposes these checks
//! (kube-rs and k8s-openapi leave validation to the API server).

/// Longest DNS label.
pub const MAX_DNS_LABEL: usize = 63;
/// Longest DNS subdomain.
pub const MAX_DNS_SUBDOMAIN: usize = 253;

/// What makes `s` not a DNS label (1–63 of `[a-z0-9-]`, starting and ending alphanumeric),
/// or `None` when it is one.
pub fn dns_label_problem(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Some("a DNS label cannot be empty");
    }
    if b.len() > MAX_DNS_LABEL {
        return Some("a DNS label has at most 63 characters");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return Some("a DNS label may contain only lowercase letters, digits and '-'");
    }
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Some("a DNS label starts and ends with a letter or digit");
    }
    None
}

/// `s` is an RFC 1123 DNS label.
pub fn is_dns_label(s: &str) -> bool {
    dns_label_problem(s).is_none()
}

/// What makes `s` not a DNS subdomain of at most `max_len` characters (DNS labels joined by
/// `.`), or `None` when it is one. `max_len` is the API field's own limit, at most
/// [`MAX_DNS_SUBDOMAIN`] (a DRA driver name allows 63).
pub fn dns_subdomain_problem(s: &str, max_len: usize) -> Option<&'static str> {
    if s.is_empty() {
        return Some("a DNS subdomain cannot be empty");
    }
    if s.len() > max_len.min(MAX_DNS_SUBDOMAIN) {
        return Some("too long");
    }
    s.split('.').find_map(dns_label_problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for good in ["a", "eth0", "pci-0000-3b-00-0", &"a".repeat(63)] {
            assert!(is_dns_label(good), "{good}");
        }
        for (bad, problem) in [
            ("", "cannot be empty"),
            (&"a".repeat(64) as &str, "at most 63"),
            ("Eth0", "only lowercase"),
            ("eth_0", "only lowercase"),
            ("-eth", "starts and ends"),
            ("eth-", "starts and ends"),
        ] {
            assert!(dns_label_problem(bad).is_some_and(|p| p.contains(problem)), "{bad}");
        }
    }

    #[test]
    fn subdomains() {
        assert_eq!(dns_subdomain_problem("net.example.com", 63), None);
        assert_eq!(
            dns_subdomain_problem("net..com", 63),
            Some("a DNS label cannot be empty")
        );
        assert_eq!(dns_subdomain_problem(&"a.".repeat(40), 63), Some("too long"));
        assert!(dns_subdomain_problem("Net.example.com", 63).is_some());
    }

    proptest::proptest! {
        /// Any string gets an answer, and a label is a one-label subdomain.
        #[test]
        fn never_panics_and_agrees(s in ".{0,80}") {
            proptest::prop_assert_eq!(is_dns_label(&s) && !s.is_empty(), dns_subdomain_problem(&s, 63).is_none() && !s.contains('.'));
        }
    }
}
