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
//! - Prepare (`plan`, `opaque`: the [`CONFIG_KIND`] configuration): the claim's results for this driver, its class and claim
//!   configuration merged and validated, the pod from `status.reservedFor`. Refused while the
//!   runtime's hook is not connected.
//! - A claim's life on the node is a state machine (`lifecycle`: prepared → attaching →
//!   attached → detaching → detached / stranded → released), a pure function from phase and
//!   event to the next phase and the effects to run; `node` runs them: the intent durable in
//!   the write-ahead `journal` before the kernel acts (through the [`Kernel`] seam), the
//!   outcome after. Every interleaving of hooks, crashes and failures is a row of its tests.
//! - The runtime's hooks (`runtime`) and the kubelet's calls (`kubelet`) translate into
//!   events and answer; a batch of Prepares (or Unprepares) is one journal write, the kubelet
//!   plugin's records included.
//! - At start-up (`reconcile`) every journaled interface is found (in its pod's namespace by
//!   inode, on the host by identity, or gone) and its claim converged, before any hook runs.
//! - Every claim's status (`status`) is derived from its phase and converged to the API server
//!   by a loop that retries until it holds: `networkData` and a `Ready` condition per device.
//! - Every published device's health (`health`: its link on the host or in its pod) goes to
//!   the kubelet's health stream, which shows it in the pods' status.

// Errors carry the claim (namespace, name, UID) so that every message names it; they are built
// once per refused claim, off the hot path, so their size does not matter.
#![allow(clippy::result_large_err)]

mod agent;
mod api;
mod driver;
mod health;
mod journal;
mod kernel;
mod kubelet;
mod lifecycle;
mod locks;
mod metadata;
mod metrics;
mod node;
mod opaque;
mod plan;
mod reconcile;
mod runtime;
mod status;

pub use agent::{
    Agent, AgentError, AgentOptions, DEFAULT_HEALTH_EVERY, Readiness, ReadinessProbe, SHUTDOWN_WAIT, start,
    start_with_kernel,
};
pub use driver::{HostDevice, InterfacePlan, InterfaceRequest, NetworkDriver, SLOTS, SharedNic};
pub use journal::JournalError;
pub use kernel::{AttachSpec, Kernel, KernelError, Location, Netdev};
pub use kubelet::{PrepareError, StoreError};
pub use lifecycle::{NetnsRef, Refusal};
pub use metrics::Metrics;
pub use node::{NodeError, OpError};
pub use opaque::{API_VERSION as CONFIG_API_VERSION, KIND as CONFIG_KIND, OpaqueError};
pub use plan::{ClaimPlan, DevicePlan, PlanError, PodRef};
pub use runtime::HookError;

/// The message of a caught panic.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The message of a task that ended by a panic or was cancelled.
pub(crate) fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(panic) => panic_text(&*panic),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
