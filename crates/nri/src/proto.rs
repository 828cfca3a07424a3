//! Generated protobuf types: the NRI API (`nri.pkg.api.v1alpha1`, NRI v0.12 field set) and the
//! ttrpc envelope.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The NRI API, package `nri.pkg.api.v1alpha1`.
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/nri.pkg.api.v1alpha1.rs"));
}

/// The ttrpc request/response envelope, package `ttrpc`.
pub mod ttrpc {
    include!(concat!(env!("OUT_DIR"), "/ttrpc.rs"));
}

/// `google.rpc`, as the generated ttrpc module refers to it.
pub mod google {
    /// `google.rpc.Status`, as carried in ttrpc responses.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

pub use google::rpc;

/// The encoded `FileDescriptorSet` of the protos above, for wire-compatibility checks.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nri_descriptors.bin"));
