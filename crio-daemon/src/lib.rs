//! `crio`: a CRI runtime for latency-sensitive Kubernetes nodes.
//!
//! `config` reads CRI-O style configuration; `cri` is the gRPC edge (the only module that sees
//! protobuf types); `image` pulls and resolves images into `storage`; `http` is the status API
//! on the same socket; `server` binds the socket and serves both.
#![deny(unsafe_code)]

pub mod api;
pub mod capabilities;
pub mod cdi;
pub mod cgroups;
pub mod config;
pub mod container;
pub mod cri;
pub mod durable;
pub mod exec;
pub mod http;
pub mod image;
pub mod kernel;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod namespace;
pub mod network;
pub mod node;
pub mod oci;
pub mod pty;
pub mod rootfs;
pub mod sandbox;
pub mod seccomp;
pub mod secret_files;
pub mod server;
pub mod services;
pub mod socket_path;
pub mod state;
pub mod storage;
pub mod streaming;
mod sys;
pub mod tuning;

use std::error::Error;
use std::fmt::Write as _;

/// Runs short blocking host I/O on this thread, the runtime thread's other tasks handed to
/// another (`block_in_place`), where the caller waits for it anyway: a step on a request's
/// path that takes tens of microseconds would wait longer for a blocking-pool thread to wake
/// (0.2-0.3 ms each way on a VM with idle vCPUs) than it works. Inside `tokio::join!` it runs
/// its branch to the end before the next is polled: long or parallel work belongs on the pool.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// An error and its sources as one line, `outer: inner: root`. Messages never print their own
/// source, so this is where the chain is shown, once, at the edge.
pub fn error_chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        // `#[error(transparent)]` wrappers repeat their inner message.
        if !out.ends_with(&text) {
            let _ = write!(out, ": {text}");
        }
        cur = s.source();
    }
    out
}
