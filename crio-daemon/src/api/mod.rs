//! Our own gRPC APIs (proto/), served on the CRI socket. Like `cri`, this is an edge: the
//! only other module that sees protobuf types.

pub mod kernel;

/// Generated from proto/crio/kernel/v1/kernel.proto.
#[allow(clippy::all, clippy::pedantic, missing_docs, reason = "generated code")]
pub mod kernel_v1 {
    tonic::include_proto!("crio.kernel.v1");
}
