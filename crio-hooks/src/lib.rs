//! High-performance runtime hooks (CRI-O's high-performance handler, done symmetrically):
//! planning is pure code over CPU sets and topologies; applying writes files under roots that
//! are parameters, so tests run on temp trees. So far: the CPU set type every plan is made
//! of (`cpuset`), the annotations and who may use them (`annotations`), IRQ steering with
//! its symmetric restore (`irq`), C-states and governors (`power`), all as file changes that
//! apply atomically and restore in reverse (`files`).
#![deny(unsafe_code)]

pub mod annotations;
pub mod cgroup;
pub mod cpuset;
pub mod files;
pub mod irq;
pub mod kubelet;
pub mod placement;
pub mod power;
pub mod topology;

pub use cpuset::{CpuSet, CpuSetError};
