//! The resource types the fake API server serves.

/// A resource type the fake API server knows: where it lives in the URL space and how it behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceType {
    /// API group; empty for the core group (`/api/v1`).
    pub group: &'static str,
    /// API version, e.g. `v1`.
    pub version: &'static str,
    /// Plural resource name as it appears in URLs.
    pub plural: &'static str,
    /// Kind of a single object.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the type has a `status` subresource: then the main resource ignores status
    /// changes and `/status` ignores everything else, as the real API server does.
    pub has_status: bool,
}

impl ResourceType {
    /// `apiVersion` as written in objects, e.g. `resource.k8s.io/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The qualified resource name used in error messages, e.g. `resourceclaims.resource.k8s.io`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// `resource.k8s.io/v1` ResourceClaims.
pub const RESOURCE_CLAIMS: ResourceType = ResourceType {
    group: "resource.k8s.io",
    version: "v1",
    plural: "resourceclaims",
    kind: "ResourceClaim",
    namespaced: true,
    has_status: true,
};

/// `resource.k8s.io/v1` ResourceSlices.
pub const RESOURCE_SLICES: ResourceType = ResourceType {
    group: "resource.k8s.io",
    version: "v1",
    plural: "resourceslices",
    kind: "ResourceSlice",
    namespaced: false,
    has_status: false,
};

/// Core `v1` Nodes (ResourceSlices are owned by their Node).
pub const NODES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "nodes",
    kind: "Node",
    namespaced: false,
    has_status: true,
};

/// Core `v1` Pods (a node agent watches those bound to its node).
pub const PODS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "pods",
    kind: "Pod",
    namespaced: true,
    has_status: true,
};

/// Every type the server routes.
pub(crate) const ALL: &[ResourceType] = &[RESOURCE_CLAIMS, RESOURCE_SLICES, NODES, PODS];
