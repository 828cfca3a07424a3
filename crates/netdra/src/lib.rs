//! netdra: the framework for Kubernetes DRA network drivers.
//!
//! A DRA network driver runs on every node. It publishes the node's interfaces as
//! `ResourceSlice`s, answers the kubelet's Prepare and Unprepare for the claims the scheduler
//! allocated, and, through the container runtime's NRI hooks, moves each allocated interface
//! into its pod's network namespace, configures it, returns it when the pod stops, and
//! reports what it did on the claim's status.
//!
//! A driver author implements [`NetworkDriver`] (which devices to publish, how a claim's
//! configuration becomes an interface's) and calls [`start`]; [`HostDevice`] is the reference
//! driver (whole host interfaces moved into pods).
//!
//! The flow, and where each piece lives:
//! - Prepare ([`plan`], [`opaque`]): the claim's results for this driver, its class and claim
//!   configuration merged and validated, the pod from `status.reservedFor`; the plan is
//!   persisted ([`state`]) before the kubelet gets its answer, and the devices stay published
//!   while they are in a pod. Refused while the runtime's hook is not connected.
//! - RunPodSandbox: the plan is looked up by pod UID (no API request) and attached, all or
//!   none. A missed hook is caught at CreateContainer and at Synchronize.
//! - StopPodSandbox: the interfaces go back to the host, best effort, never failing the
//!   runtime. RemovePodSandbox and Unprepare forget.
//! - Every outcome is written on the claim ([`status`]): `networkData` and a `Ready`
//!   condition per device, by a merge patch with preconditions, from a queue that never blocks a hook.
//!
//! Everything blocking (netlink, namespaces, the state file) runs on blocking threads.

// Errors carry the claim (namespace, name, UID) so that every message names it; they are built
// once per refused claim, off the hot path, so their size does not matter.
#![allow(clippy::result_large_err)]

mod agent;
mod core;
mod driver;
mod kubelet;
pub mod metrics;
pub mod opaque;
pub mod plan;
mod runtime;
pub mod state;
pub mod status;

pub use agent::{Agent, AgentError, AgentOptions, Readiness, start};
pub use driver::{HostDevice, InterfacePlan, InterfaceRequest, NetworkDriver};
pub use kubelet::PrepareError;
pub use metrics::Metrics;
pub use plan::{ClaimPlan, DevicePlan, PlanError, PodRef};
