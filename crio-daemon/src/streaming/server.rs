//! The streaming server's HTTP side: a TCP listener (TLS when configured), one hyper HTTP/1
//! connection per client, and the upgrade handshake. A URL's token is taken on first use
//! (used, unknown or expired: 404); the protocol version is negotiated over every
//! `X-Stream-Protocol-Version` line the client sent (none acceptable: 403 with the list).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::remotecommand::Version;
use super::tokens::Pending;
use super::{DEFAULT_IDLE_TIMEOUT, PORT_FORWARD_PROTOCOL};
use crate::config::{Api, GoDuration};
use crate::services::Services;

pub const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";
/// How long a client may take to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("binding the streaming server to {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path} for the streaming server's TLS")]
    TlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the streaming server's TLS configuration: {why}")]
    Tls { why: String },
}

pub struct StreamServer {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    base_url: String,
    idle: Duration,
}

/// Binds the streaming server as `[crio.api]` says (port 0: any free port).
pub async fn bind(api: &Api) -> Result<StreamServer, StreamError> {
    let addr = format!("{}:{}", bracketed(&api.stream_address), api.stream_port);
    let listener = TcpListener::bind(&addr).await.map_err(|source| StreamError::Bind { addr: addr.clone(), source })?;
    let local = listener.local_addr().map_err(|source| StreamError::Bind { addr, source })?;
    let tls = if api.stream_enable_tls { Some(super::server::tls_acceptor(api)?) } else { None };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let idle = GoDuration::parse(&api.stream_idle_timeout).map(|d| d.0).ok().filter(|d| !d.is_zero()).unwrap_or(DEFAULT_IDLE_TIMEOUT);
    Ok(StreamServer { listener, tls, base_url: format!("{scheme}://{local}"), idle })
}

fn bracketed(ip: &str) -> String {
    if ip.contains(':') && !ip.starts_with('[') { format!("[{ip}]") } else { ip.to_string() }
}

impl StreamServer {
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the process ends.
    pub async fn serve(self, services: Services) {
        let ctx = Arc::new(Ctx { services, idle: self.idle });
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, most likely: wait instead of spinning.
                    tracing::warn!(error = %e, "streaming server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (ctx, tls) = (ctx.clone(), self.tls.clone());
            tokio::spawn(async move {
                match tls {
                    Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_connection(stream, ctx).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "streaming server: TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "streaming server: TLS handshake timed out"),
                    },
                    None => serve_connection(tcp, ctx).await,
                }
            });
        }
    }
}

struct Ctx {
    services: Services,
    idle: Duration,
}

async fn serve_connection<IO>(io: IO, ctx: Arc<Ctx>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |req| handle(req, ctx.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "streaming server: connection ended with an error");
    }
}

fn reply(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Body::from(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn handle(mut req: Request<Incoming>, ctx: Arc<Ctx>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    let (kind, token) = path.split_once('/').unwrap_or((&path, ""));
    if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() || token.contains('/') {
        return Ok(reply(StatusCode::NOT_FOUND, "404 page not found\n"));
    }
    if req.method() != Method::GET && req.method() != Method::POST {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "only GET and POST upgrade\n"));
    }
    let Some(pending) = ctx.services.streams.take(kind, token) else {
        return Ok(reply(StatusCode::NOT_FOUND, "the streaming token is unknown, used or expired\n"));
    };
    if super::websocket::is_upgrade(req.headers()) {
        return Ok(super::websocket::upgrade(&mut req, pending, ctx.services.clone(), ctx.idle));
    }
    if !is_spdy_upgrade(req.headers()) {
        return Ok(reply(StatusCode::BAD_REQUEST, "unable to upgrade: missing upgrade headers in request (SPDY/3.1 or websocket)\n"));
    }
    let offered = offered(req.headers(), PROTOCOL_HEADER);
    if offered.is_empty() {
        return Ok(reply(StatusCode::BAD_REQUEST, format!("unable to upgrade: {PROTOCOL_HEADER} is required\n")));
    }
    let supported: Vec<&str> = match pending {
        Pending::PortForward { .. } => vec![PORT_FORWARD_PROTOCOL],
        _ => Version::ALL.iter().map(|(name, _)| *name).collect(),
    };
    let Some(chosen) = negotiate(&offered, &supported) else {
        let mut r = reply(
            StatusCode::FORBIDDEN,
            format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}\n"),
        );
        for s in &supported {
            r.headers_mut().append(ACCEPTED_HEADER, HeaderValue::from_static(s));
        }
        return Ok(r);
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let (services, idle) = (ctx.services.clone(), ctx.idle);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "streaming server: upgrade failed");
                return;
            }
        };
        match pending {
            Pending::PortForward { pod_id } => super::spdy::portforward(io, services, pod_id, idle).await,
            other => {
                let version = Version::ALL.iter().find(|(n, _)| *n == chosen).map(|(_, v)| *v).expect("negotiated from the list");
                super::spdy::remotecommand(io, services, other, version, idle).await
            }
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(PROTOCOL_HEADER, HeaderValue::from_static(chosen));
    Ok(r)
}

fn is_spdy_upgrade(h: &HeaderMap) -> bool {
    let connection_upgrade = offered(h, header::CONNECTION.as_str()).iter().any(|t| t.eq_ignore_ascii_case("upgrade"));
    connection_upgrade && offered(h, header::UPGRADE.as_str()).iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1"))
}

/// Every value of `name` over all its lines, comma-separated lists split.
pub fn offered(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The client's most preferred protocol that we speak.
pub fn negotiate(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    offered.iter().find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
}

/// TLS for the streaming server: its certificate and key, and with `stream_tls_ca` client
/// certificates that must chain to that CA.
pub(super) fn tls_acceptor(api: &Api) -> Result<tokio_rustls::TlsAcceptor, StreamError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &PathBuf| std::fs::read(path).map_err(|source| StreamError::TlsFile { path: path.clone(), source });
    let pem_err = |path: &PathBuf| {
        let path = path.clone();
        move |e: rustls_pki_types::pem::Error| StreamError::Tls { why: format!("{}: {e}", path.display()) }
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&api.stream_tls_cert)?).collect::<Result<_, _>>().map_err(pem_err(&api.stream_tls_cert))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&api.stream_tls_key)?).map_err(pem_err(&api.stream_tls_key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StreamError::Tls { why: e.to_string() })?;
    let builder = if api.stream_tls_ca.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&read(&api.stream_tls_ca)?) {
            roots.add(c.map_err(pem_err(&api.stream_tls_ca))?).map_err(|e| StreamError::Tls { why: e.to_string() })?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| StreamError::Tls { why: e.to_string() })?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| StreamError::Tls { why: e.to_string() })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_takes_the_clients_first_choice_over_all_its_lines() {
        let mut h = HeaderMap::new();
        h.append(PROTOCOL_HEADER, HeaderValue::from_static("v9.channel.k8s.io"));
        h.append(PROTOCOL_HEADER, HeaderValue::from_static("v4.channel.k8s.io, v3.channel.k8s.io"));
        h.append(PROTOCOL_HEADER, HeaderValue::from_static("channel.k8s.io"));
        let o = offered(&h, PROTOCOL_HEADER);
        assert_eq!(o, ["v9.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"]);
        let all: Vec<&str> = Version::ALL.iter().map(|(n, _)| *n).collect();
        assert_eq!(negotiate(&o, &all), Some("v4.channel.k8s.io"));
        assert_eq!(negotiate(&o, &[PORT_FORWARD_PROTOCOL]), None);
    }

    #[test]
    fn spdy_upgrades_are_recognised_in_any_case() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("spdy/3.1"));
        assert!(is_spdy_upgrade(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_spdy_upgrade(&h));
    }
}
