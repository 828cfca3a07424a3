//! Parsing Kubernetes API request paths into what they address.

use crate::resources::{ALL, ResourceType};

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub resource: ResourceType,
    /// `None` for cluster-scoped types, and for a namespaced type listed across all namespaces.
    pub namespace: Option<String>,
    /// `None` for the collection.
    pub name: Option<String>,
    /// The request is for the `status` subresource.
    pub status: bool,
}

/// Parses `/api/v1/...` and `/apis/GROUP/VERSION/...` paths; `None` for anything not served.
pub(crate) fn parse(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, status) = match rest {
        [plural] => (*plural, None, false),
        [plural, name] => (*plural, Some((*name).to_string()), false),
        [plural, name, "status"] => (*plural, Some((*name).to_string()), true),
        _ => return None,
    };
    let resource = *ALL
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)?;
    if namespace.is_some() && !resource.namespaced {
        return None;
    }
    // A namespaced object is always addressed inside its namespace.
    if resource.namespaced && name.is_some() && namespace.is_none() {
        return None;
    }
    Some(Target {
        resource,
        namespace,
        name,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{NODES, RESOURCE_CLAIMS, RESOURCE_SLICES};

    #[test]
    fn parses_namespaced_item_and_status() {
        let t = parse("/apis/resource.k8s.io/v1/namespaces/ns1/resourceclaims/c1/status").unwrap();
        assert_eq!(t.resource, RESOURCE_CLAIMS);
        assert_eq!(t.namespace.as_deref(), Some("ns1"));
        assert_eq!(t.name.as_deref(), Some("c1"));
        assert!(t.status);
    }

    #[test]
    fn parses_cluster_collections() {
        let t = parse("/apis/resource.k8s.io/v1/resourceslices").unwrap();
        assert_eq!(t.resource, RESOURCE_SLICES);
        assert_eq!(t.name, None);
        let t = parse("/api/v1/nodes/n1").unwrap();
        assert_eq!(t.resource, NODES);
        assert_eq!(t.name.as_deref(), Some("n1"));
        // All-namespaces list of a namespaced type.
        let t = parse("/apis/resource.k8s.io/v1/resourceclaims").unwrap();
        assert_eq!(t.namespace, None);
    }

    #[test]
    fn rejects_what_is_not_served() {
        assert_eq!(parse("/apis/apps/v1/deployments"), None);
        assert_eq!(parse("/apis/resource.k8s.io/v1/resourceclaims/c1"), None);
        assert_eq!(parse("/apis/resource.k8s.io/v1/namespaces/x/resourceslices"), None);
        assert_eq!(parse("/healthz"), None);
    }
}
