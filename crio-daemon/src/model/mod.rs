//! The daemon's domain records, free of protocol and of services: what a pod and a container
//! are, as validated from requests and written to the state directory.

mod container;
mod pod;

pub use container::*;
pub use pod::*;
