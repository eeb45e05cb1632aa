//! High-performance runtime hooks (CRI-O's high-performance handler, done symmetrically):
//! planning is pure code over CPU sets and topologies; applying writes files under roots that
//! are parameters, so tests run on temp trees. This first part is the CPU set type every plan
//! is made of, in the kernel's list and mask formats.
#![deny(unsafe_code)]

pub mod cpuset;

pub use cpuset::{CpuSet, CpuSetError};
