//! Generated bindings for the kubelet's gRPC APIs (from `proto/`, see `build.rs`).
//!
//! Module paths mirror the proto packages, which form the on-wire service paths.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Plugin registration (`/pluginregistration.Registration/...`).
pub mod pluginregistration {
    tonic::include_proto!("pluginregistration");
}

/// DRA node service, v1 (`/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/...`) and v1beta1.
pub mod dra {
    /// Announced as `v1.DRAPlugin`.
    pub mod v1 {
        tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1");
    }
    /// Announced as `v1beta1.DRAPlugin`.
    pub mod v1beta1 {
        tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1beta1");
    }
}

/// DRA device health (`/v1.DRAResourceHealth/NodeWatchResources`, and the alpha's
/// `/v1alpha1.DRAResourceHealth/...`): bare packages on the wire.
pub mod health {
    /// Package `v1`: announced as `v1.DRAResourceHealth`, preferred by the 1.37 kubelet.
    pub mod v1 {
        tonic::include_proto!("v1");
    }
    /// Package `v1alpha1`: what the 1.34–1.36 kubelets open on every plugin.
    pub mod v1alpha1 {
        tonic::include_proto!("v1alpha1");
    }
}

/// The encoded `FileDescriptorSet` of every proto above, for wire-compatibility checks.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kubelet_descriptors.bin"));
