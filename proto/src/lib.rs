//! quire's gRPC contract, `quire.v1`, and the tonic code generated from it.
//!
//! The `.proto` files under `proto/quire/v1/` are the public API; this crate only compiles them.

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

/// Messages and services of package `quire.v1`.
pub mod v1 {
    tonic::include_proto!("quire.v1");
}

/// Encoded `FileDescriptorSet` of every quire proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("quire_descriptor");
