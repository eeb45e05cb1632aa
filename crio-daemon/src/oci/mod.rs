//! OCI runtimes (runc, crun): a typed client for their command line.

mod features;
mod runtime;
mod start;

pub use features::Features;
pub(crate) use runtime::read_capped;
pub use runtime::{ContainerState, CreateOptions, DEFAULT_TIMEOUT, ExecOutput, OciError, OciRuntime, Status};
