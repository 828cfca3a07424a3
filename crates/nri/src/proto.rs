//! Generated protobuf types: the NRI API (`nri.pkg.api.v1alpha1`, NRI v0.12 field set) and the
//! ttrpc envelope.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The NRI API, package `nri.pkg.api.v1alpha1`.
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/nri.pkg.api.v1alpha1.rs"));
}

/// The ttrpc request/response envelope, package `ttrpc`: the transport's, not a plugin's.
// Generated: the envelope's messages this transport does not use are kept as generated.
#[allow(dead_code)]
pub(crate) mod ttrpc {
    include!(concat!(env!("OUT_DIR"), "/ttrpc.rs"));
}

/// `google.rpc`, as the generated ttrpc module refers to it.
pub(crate) mod google {
    /// `google.rpc.Status`, as carried in ttrpc responses.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

pub(crate) use google::rpc;

/// The encoded `FileDescriptorSet` of the protos above, for the wire-compatibility tests.
#[doc(hidden)]
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nri_descriptors.bin"));
