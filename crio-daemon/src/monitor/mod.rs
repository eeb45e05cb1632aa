//! The per-pod container monitor (`crio-monitor`): subreaper of the pod's containers, holder of
//! their stdio, writer of their CRI logs and exit records, outliving the daemon. `server` is
//! the process; `client` is how the daemon starts and talks to it.

mod attach;
pub mod client;
pub mod console;
pub mod log_format;
mod logs;
pub mod protocol;
mod reaper;
pub mod server;
