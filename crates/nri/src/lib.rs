//! An NRI (Node Resource Interface) plugin SDK.
//!
//! NRI lets a plugin hook into a container runtime's pod and container lifecycle. The runtime
//! and the plugin share one unix-socket connection that carries a multiplexer; on logical
//! connection 1 the runtime calls the plugin's `Plugin` service, on connection 2 the plugin
//! calls the runtime's `Runtime` service, both over ttrpc. This crate implements all of it
//! (the frame codec and the endpoint, both private), the NRI protos ([`proto`]), and a
//! [`Plugin`] trait with a default for every event; [`connect`] connects, registers, serves and
//! reconnects, and the [`Stub`] it returns owns all of it.
//!
//! ```no_run
//! use nri::{EventSet, HandlerError, Plugin, StubOptions, proto::api::PodSandbox};
//!
//! struct Logger;
//!
//! impl Plugin for Logger {
//!     fn events(&self) -> EventSet {
//!         EventSet::pod_lifecycle()
//!     }
//!     async fn run_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
//!         println!("pod {}/{} netns {:?}", pod.namespace, pod.name, nri::pod_netns_path(pod));
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let plugin = nri::connect(StubOptions::new("logger", "10"), Logger)?;
//! plugin.wait_connected(1, std::time::Duration::from_secs(5)).await.ok();
//! # Ok(()) }
//! ```
//!
//! It knows nothing of Kubernetes or netlink. See `examples/nri_logger.rs`.

mod endpoint;
mod events;
mod frame;
mod plugin;
pub mod proto;
#[cfg(feature = "runtime")]
pub mod runtime;
mod service;
mod stub;

pub use endpoint::{Code, Status};
pub use events::{EventSet, valid_events};
pub use plugin::{HandlerError, Plugin, RuntimeInfo, pod_netns_path};
pub use service::{PLUGIN_SERVICE, RUNTIME_SERVICE};
pub use stub::{ConfigError, ConnectionState, DEFAULT_SOCKET, NRI_VERSION, Stub, StubOptions, connect};

/// The multiplexed ttrpc transport, for the round-trip benchmark's transport floor; not an API.
#[doc(hidden)]
pub mod transport {
    pub use crate::endpoint::{Endpoint, IncomingRequest, RequestHandler};
    pub use crate::frame::{PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN};
}
