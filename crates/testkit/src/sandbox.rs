//! What a CRI runtime says of a pod sandbox, read the way the tests need it.

/// Where a runtime's sandbox network namespaces are mounted.
const NETNS_DIR: &str = "/var/run/netns/";

/// The name (under `/var/run/netns`) of the network namespace a CRI runtime's verbose
/// `PodSandboxStatus` names in its `info` values (containerd writes the sandbox's OCI spec
/// there, with the namespace's path); `None` when none names one.
pub fn sandbox_netns<'a>(info: impl IntoIterator<Item = &'a String>) -> Option<String> {
    info.into_iter().find_map(|value| {
        let at = value.find(NETNS_DIR)? + NETNS_DIR.len();
        let name: String = value[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        (!name.is_empty()).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_path_in_the_sandbox_info() {
        let info = [
            r#"{"pid": 42}"#.to_owned(),
            r#"{"runtimeSpec": {"linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/cni-1f2e-3d4c"}]}}}"#
                .to_owned(),
        ];
        assert_eq!(sandbox_netns(&info).as_deref(), Some("cni-1f2e-3d4c"));
        assert_eq!(sandbox_netns(&info[..1]), None);
        assert_eq!(sandbox_netns(&[r#""/var/run/netns/""#.to_owned()]), None);
    }
}
