//! Pod networking: pinned network namespaces and CNI plugins.

pub mod cni;
pub mod netns;
pub mod stats;
