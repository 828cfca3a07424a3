//! A Kubernetes DRA kubelet-plugin SDK.
//!
//! It does what every DRA driver's node component needs and nothing specific to one driver:
//! registers with the kubelet (whose `:authority` quirk a stock tonic server rejects: every
//! connection passes through a normaliser, `src/authority.rs` says why), serves the DRA `v1` and
//! `v1beta1` node services on one socket, resolves the claims the kubelet names (from a cache of
//! the claims its node's pods reference, `src/node_claims.rs`), serialises and deduplicates calls
//! per claim, keeps the prepared claims durable, and manages the socket files whose presence is
//! the registration. A driver with device health to tell feeds the kubelet's health stream
//! through a [`HealthReporter`] (`src/health.rs` gives the protocol).
//!
//! # Guarantees
//!
//! - Every claim of a kubelet batch gets its own answer; one failing claim never fails the
//!   others.
//! - Calls for one claim are serialised; a claim already prepared in this boot is answered
//!   without the driver, and unpreparing an unknown claim succeeds without it. Claims
//!   prepared in another boot are prepared again.
//! - One durable write per kubelet batch (prepare and unprepare alike), made before the
//!   kubelet gets its answer; a batch that changes nothing writes nothing. If the write fails,
//!   the batch's new preparations are undone with the driver's `unprepare` and each of those
//!   claims gets an error, so the kubelet retries.
//! - The store is replaceable: [`start`] keeps the claims in a versioned checkpoint file
//!   ([`FileCheckpoint`]); [`start_with_store`] takes any [`PreparedStore`], so a driver with a
//!   journal of its own writes its state and the prepared claims in one write.
//!
//! A driver implements [`DraDriver`] and calls [`start`]:
//!
//! ```no_run
//! use kubeletplugin::{DraDriver, DriverError, Preparation, PreparedClaim, PluginOptions, ResolvedClaim};
//!
//! struct MyDriver;
//!
//! impl DraDriver for MyDriver {
//!     async fn prepare(&self, claim: &ResolvedClaim) -> Result<Preparation, DriverError> {
//!         Ok(Preparation::of_allocation(claim))
//!     }
//!     async fn unprepare(&self, _claim: &PreparedClaim) -> Result<(), DriverError> {
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // --kubeconfig, else KUBECONFIG, else in-cluster: the order every netdra program uses.
//! let client = kubeletplugin::api_client(None).await?;
//! let plugin = kubeletplugin::start(PluginOptions::new("net.example.com"), MyDriver, client).await?;
//! kubeletplugin::shutdown_signal().await?;
//! plugin.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! See `examples/minimal_driver.rs` for a complete program.

mod authority;
mod checkpoint;
mod claims;
mod client;
mod driver;
mod health;
mod metadata;
mod node_claims;
mod normalized_stream;
mod plugin;
mod preparer;
/// The kubelet's gRPC protos, for tests that play the kubelet; a driver never needs them.
#[doc(hidden)]
pub mod proto;
mod publisher;
mod services;
mod slices;
mod sockets;
mod store;

pub use checkpoint::{CheckpointError, FileCheckpoint};
pub use claims::{ClaimCacheMode, ClaimError, resolve_for_driver};
pub use client::{ClientError, api_client};
pub use driver::{
    AllocatedDevice, ClaimRef, ConfigSource, DeviceConfig, DraDriver, DriverError, Preparation, PreparedClaim,
    PreparedDevice, ResolvedClaim,
};
pub use health::{
    DeviceHealth, HEALTH_SERVICES, HealthFeed, HealthOptions, HealthReporter, HealthStatus, health_channel,
};
pub use metadata::{ClaimMeta, MetadataDevice, MetadataError, MetadataWriter, RequestDevices};
pub use plugin::{
    ClaimCacheReader, DEFAULT_PLUGINS_DIR, DEFAULT_REGISTRY_DIR, PluginError, PluginHandle, PluginOptions,
    current_boot_id, shutdown_signal, start, start_with_store, validate_driver_name,
};
pub use publisher::{PublishError, PublishStatus, Published, SlicePublisher};
pub use services::{DRA_PLUGIN_TYPE, RegistrationState, SUPPORTED_VERSIONS};
pub use slices::{PoolSpec, SliceOp, plan as plan_slices};
pub use sockets::SocketError;
pub use store::{PreparedChange, PreparedStore};
