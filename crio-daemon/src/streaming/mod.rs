//! The CRI streaming server: Exec, Attach and PortForward answer with a URL (`tokens`), and the
//! client (crictl, or the kubelet proxying kubectl) connects there and upgrades the HTTP
//! connection (`server`) to SPDY/3.1 (`spdy`) or WebSocket (`websocket`). The session then runs
//! the kubelet's protocols: remotecommand for exec and attach, port pairs for port-forward.
//!
//! Protocol at the edge, as `cri/`: what a session does inside a container goes through the
//! container and pod services (`exec_session`, `attach`, `dial`).

pub mod channel;
mod portforward;
pub mod remotecommand;
mod server;
pub mod spdy;
mod tokens;
pub mod websocket;

pub use server::{StreamError, StreamServer, bind};
pub use tokens::{MAX_IN_FLIGHT, Pending, TOKEN_TTL, TokenError, Tokens};

/// The kubelet's default idle timeout, which CRI-O keeps when `stream_idle_timeout` is empty.
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4 * 3600);

/// The port-forward protocol over SPDY, and its name over WebSocket.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
