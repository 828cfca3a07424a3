//! Test support for netdra.
//!
//! The centre piece is [`FakeApiServer`]: an in-process Kubernetes API server that speaks real
//! HTTP on a loopback port, so a `kube::Client` talks to it exactly as to a cluster. It starts in
//! microseconds and can be cut or failed at will; the real API server runs in one test
//! (`crates/driver/tests/cluster.rs`), and what it showed is kept here. The fake keeps the
//! semantics the driver depends on (resourceVersion, 404/409, watch streams, the status subresource,
//! server-side-apply patches, and for a ResourceClaim's `status.devices` the list-map and
//! per-manager ownership of server-side apply, `src/claim_status.rs`) and logs every request so
//! tests can count API traffic.
//!
//! Beside it, what the tests of several crates and the demo share: a gRPC channel over a
//! Unix socket ([`unix_channel`]), the kubelet's side of plugin registration
//! ([`register_plugin`]) and the `ip` command ([`ip`], [`try_ip`]).

mod claim_status;
mod fake_apiserver;
mod harness;
mod host_snapshot;
mod ip;
mod path;
mod registration;
mod resources;
mod sandbox;
mod store;
mod uds;

pub use fake_apiserver::{FakeApiServer, InjectedFailure, RecordedRequest};
pub use harness::{
    available_or_skip, command_output, example_binary, flavor_tag, is_root, newer_containerd_flavors, percentile,
};
pub use host_snapshot::HostSnapshot;
pub use ip::{IpError, ip, try_ip};
pub use registration::{RegistrationError, register_plugin};
pub use resources::{NODES, PODS, RESOURCE_CLAIMS, RESOURCE_SLICES, ResourceType};
pub use sandbox::sandbox_netns;
pub use uds::{UnixChannelError, unix_channel};
pub mod wire;
