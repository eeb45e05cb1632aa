//! PortForward's dialing: a TCP connection to a port on the pod's loopback, made from inside
//! the pod's network namespace (the node's for host-network pods). The socket is created on a
//! short-lived thread in the namespace (a socket stays in the namespace it was made in), then
//! connected from the async runtime.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::{AddressFamily, SocketFlags, SocketType};

use super::{PodError, PodService};
use crate::model::PodState;
use crate::network::netns::NetNs;

/// How long a connection to a pod's port may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

impl PodService {
    /// Connects to `port` in pod `id`: on 127.0.0.1, else on ::1.
    pub async fn dial(&self, id: &str, port: u16) -> Result<tokio::net::TcpStream, PodError> {
        if port == 0 {
            return Err(PodError::InvalidArgument { field: "port", why: "must be within 1..65535".into() });
        }
        let pod = self.pod(id)?;
        if pod.state != PodState::Ready {
            return Err(PodError::NotReady { id: pod.id });
        }
        let netns = if pod.spec.host_network { None } else { pod.netns.clone().map(|path| NetNs { path }) };
        let dial_err = |source| PodError::Dial { id: pod.id.clone(), port, source };
        let mut last = None;
        for ip in [SocketAddr::from((Ipv4Addr::LOCALHOST, port)), SocketAddr::from((Ipv6Addr::LOCALHOST, port))] {
            let family = if ip.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
            let fd = match &netns {
                Some(ns) => {
                    let ns = ns.clone();
                    tokio::task::spawn_blocking(move || ns.run(move || new_socket(family))).await??
                }
                None => new_socket(family),
            }
            .map_err(dial_err)?;
            let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
            match tokio::time::timeout(DIAL_TIMEOUT, socket.connect(ip)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(std::io::Error::from(std::io::ErrorKind::TimedOut)),
            }
        }
        Err(dial_err(last.expect("two addresses were tried")))
    }
}

fn new_socket(family: AddressFamily) -> std::io::Result<OwnedFd> {
    rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK, None).map_err(Into::into)
}
