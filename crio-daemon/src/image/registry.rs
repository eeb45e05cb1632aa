//! A client for the OCI distribution API: manifests and blobs over HTTPS (or plain HTTP for
//! registries configured insecure), with anonymous, basic and bearer-token auth. Every byte is
//! checked against its digest and size; a stream that stalls longer than the progress timeout
//! is cancelled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Client, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::auth::Credentials;
use super::manifest::ACCEPT as MANIFEST_ACCEPT;
use super::reference::DOCKER_HUB;
use crate::storage::digest::Digest;

/// Manifests are small; anything larger is hostile.
const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// Without a progress timeout, a connection that never answers still gives up eventually.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a registry's scheme is trusted without asking again: re-pulls (the kubelet's
/// `Always` policy pulls on every pod start) skip the `/v2/` check, and a registry that
/// changes scheme is found again within this time.
const SCHEME_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {registry} is unreachable")]
    Unreachable {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("registry {registry} refused the credentials for {repository} (HTTP {status})")]
    Unauthorized { registry: String, repository: String, status: u16 },
    #[error("{what} not found in registry {registry}")]
    NotFound { registry: String, what: String },
    #[error("registry {registry} answered HTTP {status} for {what}: {body}")]
    Status { registry: String, what: String, status: u16, body: String },
    #[error("registry {registry} failed while sending {what}")]
    Transfer {
        registry: String,
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what} from {registry} has digest {actual}, expected {expected}")]
    DigestMismatch { registry: String, what: String, expected: String, actual: String },
    #[error("{what} from {registry} is {actual} bytes, expected {expected}")]
    SizeMismatch { registry: String, what: String, expected: u64, actual: u64 },
    #[error("{what} from {registry} made no progress for {timeout:?}; pull cancelled")]
    Stalled { registry: String, what: String, timeout: Duration },
    #[error("failed to write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TLS material {path}")]
    Tls {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to set up an HTTP client for {registry}")]
    Client {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Shared HTTP clients, one per (host, insecure) because trust roots are per host, and the
/// base URL (scheme and host) each answered on.
pub struct Clients {
    certs_dir: PathBuf,
    cache: Mutex<HashMap<(String, bool), Client>>,
    bases: Mutex<HashMap<(String, bool), (String, Instant)>>,
}

impl Clients {
    pub fn new(certs_dir: PathBuf) -> Self {
        Self { certs_dir, cache: Mutex::new(HashMap::new()), bases: Mutex::new(HashMap::new()) }
    }

    /// The base URL `registry` answered on less than `SCHEME_TTL` ago.
    fn base(&self, registry: &str, insecure: bool) -> Option<String> {
        let bases = self.bases.lock().expect("base cache poisoned");
        bases.get(&(registry.to_string(), insecure)).filter(|(_, at)| at.elapsed() < SCHEME_TTL).map(|(b, _)| b.clone())
    }

    fn remember_base(&self, registry: &str, insecure: bool, base: &str) {
        self.bases.lock().expect("base cache poisoned").insert((registry.to_string(), insecure), (base.to_string(), Instant::now()));
    }

    fn get(&self, registry: &str, insecure: bool) -> Result<Client, RegistryError> {
        let key = (registry.to_string(), insecure);
        if let Some(c) = self.cache.lock().expect("client cache poisoned").get(&key) {
            return Ok(c.clone());
        }
        let mut builder = Client::builder().connect_timeout(CONNECT_TIMEOUT).danger_accept_invalid_certs(insecure);
        // containers/image's layout: certs.d/<host[:port]>/*.crt are extra roots for that host.
        let dir = self.certs_dir.join(registry);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for path in entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "crt")) {
                let pem = std::fs::read(&path).map_err(|source| RegistryError::Io { path: path.clone(), source })?;
                let cert = reqwest::Certificate::from_pem(&pem).map_err(|source| RegistryError::Tls { path: path.clone(), source })?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|source| RegistryError::Client { registry: registry.into(), source })?;
        self.cache.lock().expect("client cache poisoned").insert(key, client.clone());
        Ok(client)
    }
}

/// One repository on one registry, with the auth state its requests have earned.
pub struct Session {
    client: Client,
    registry: String,
    repository: String,
    base: String,
    creds: Option<Credentials>,
    token: tokio::sync::Mutex<Option<String>>,
    stall_timeout: Option<Duration>,
}

impl Session {
    /// Pings `/v2/` to learn the scheme (HTTPS first; an insecure registry may answer plain
    /// HTTP) before any real request, unless the registry answered lately.
    pub async fn open(
        clients: &Clients,
        registry: &str,
        repository: &str,
        insecure: bool,
        creds: Option<Credentials>,
        stall_timeout: Option<Duration>,
    ) -> Result<Arc<Self>, RegistryError> {
        let client = clients.get(registry, insecure)?;
        let host = if registry == DOCKER_HUB { "registry-1.docker.io" } else { registry };
        let wait = stall_timeout.unwrap_or(CONNECT_TIMEOUT);
        let ping = |base: String| {
            let req = client.get(format!("{base}/v2/")).send();
            async move {
                match tokio::time::timeout(wait, req).await {
                    Err(_) => {
                        Err(RegistryError::Stalled { registry: registry.into(), what: "the API version check".into(), timeout: wait })
                    }
                    Ok(Err(source)) => Err(RegistryError::Unreachable { registry: registry.into(), source }),
                    Ok(Ok(_)) => Ok(base),
                }
            }
        };
        let base = match clients.base(registry, insecure) {
            Some(base) => base,
            None => {
                let base = match ping(format!("https://{host}")).await {
                    Ok(base) => base,
                    // An insecure registry may speak plain HTTP; a stalled one gets no second chance.
                    Err(RegistryError::Unreachable { .. }) if insecure => ping(format!("http://{host}")).await?,
                    Err(e) => return Err(e),
                };
                clients.remember_base(registry, insecure, &base);
                base
            }
        };
        let token = match &creds {
            Some(Credentials::Bearer(t)) => Some(t.clone()),
            _ => None,
        };
        Ok(Arc::new(Self {
            client,
            registry: registry.into(),
            repository: repository.into(),
            base,
            creds,
            token: tokio::sync::Mutex::new(token),
            stall_timeout,
        }))
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Fetches a manifest by tag or digest; returns its bytes, content type and digest.
    pub async fn manifest(&self, reference: &str) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let what = format!("manifest {}:{reference}", self.repository);
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.repository);
        let resp = self.get(&url, Some(MANIFEST_ACCEPT), &what).await?;
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let header_digest = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = self.read_limited(resp, MAX_MANIFEST, &what).await?;
        let digest = Digest::of(&bytes);
        // By digest, the content must hash to it; by tag, the registry's own claim must agree.
        let expected =
            if reference.starts_with("sha256:") { Some(reference.to_string()) } else { header_digest.filter(|d| d.starts_with("sha256:")) };
        if let Some(expected) = expected
            && expected != digest.to_string()
        {
            return Err(self.mismatch(&what, expected, digest.to_string()));
        }
        Ok((bytes, content_type, digest))
    }

    /// A small blob (an image config) into memory, verified.
    pub async fn blob_bytes(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, RegistryError> {
        let what = format!("blob {digest}");
        let resp = self.get(&self.blob_url(digest), None, &what).await?;
        let bytes = self.read_limited(resp, size.min(MAX_MANIFEST as u64 * 4) as usize, &what).await?;
        if bytes.len() as u64 != size {
            return Err(RegistryError::SizeMismatch { registry: self.registry.clone(), what, expected: size, actual: bytes.len() as u64 });
        }
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(self.mismatch(&what, digest.to_string(), actual.to_string()));
        }
        Ok(bytes)
    }

    /// Streams a blob into `dest`, hashing as it goes. `progress` counts bytes for the pull's log.
    pub async fn blob_to_file(&self, digest: &Digest, size: u64, dest: &Path, progress: &AtomicU64) -> Result<(), RegistryError> {
        let what = format!("blob {digest}");
        let resp = self.get(&self.blob_url(digest), None, &what).await?;
        let io_err = |source| RegistryError::Io { path: dest.to_path_buf(), source };
        let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::create(dest).await.map_err(io_err)?);
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = self.next_chunk(&mut stream, &what).await? {
            written += chunk.len() as u64;
            if written > size {
                return Err(RegistryError::SizeMismatch { registry: self.registry.clone(), what, expected: size, actual: written });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io_err)?;
            progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        file.flush().await.map_err(io_err)?;
        if written != size {
            return Err(RegistryError::SizeMismatch { registry: self.registry.clone(), what, expected: size, actual: written });
        }
        let actual = Digest::from_hasher(hasher);
        if &actual != digest {
            return Err(self.mismatch(&what, digest.to_string(), actual.to_string()));
        }
        Ok(())
    }

    fn blob_url(&self, digest: &Digest) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.repository)
    }

    fn mismatch(&self, what: &str, expected: String, actual: String) -> RegistryError {
        RegistryError::DigestMismatch { registry: self.registry.clone(), what: what.into(), expected, actual }
    }

    async fn next_chunk(
        &self,
        stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
        what: &str,
    ) -> Result<Option<bytes::Bytes>, RegistryError> {
        let next = match self.stall_timeout {
            Some(t) => tokio::time::timeout(t, stream.next()).await.map_err(|_| RegistryError::Stalled {
                registry: self.registry.clone(),
                what: what.into(),
                timeout: t,
            })?,
            None => stream.next().await,
        };
        next.transpose().map_err(|source| RegistryError::Transfer { registry: self.registry.clone(), what: what.into(), source })
    }

    async fn read_limited(&self, resp: Response, limit: usize, what: &str) -> Result<Vec<u8>, RegistryError> {
        let mut out = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = self.next_chunk(&mut stream, what).await? {
            if out.len() + chunk.len() > limit {
                return Err(RegistryError::SizeMismatch {
                    registry: self.registry.clone(),
                    what: what.into(),
                    expected: limit as u64,
                    actual: (out.len() + chunk.len()) as u64,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// GET with auth: anonymous (or a token we hold) first, then whatever the 401 challenge asks.
    async fn get(&self, url: &str, accept: Option<&str>, what: &str) -> Result<Response, RegistryError> {
        let mut resp = self.send(url, accept, what).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(Challenge::parse);
            match challenge {
                Some(Challenge::Bearer { realm, service }) => {
                    let token = self.fetch_token(&realm, service.as_deref()).await?;
                    *self.token.lock().await = Some(token);
                }
                Some(Challenge::Basic) if matches!(self.creds, Some(Credentials::Basic { .. })) => {
                    *self.token.lock().await = None;
                }
                _ => return Err(self.unauthorized(401)),
            }
            resp = self.send_authed(url, accept, what).await?;
        }
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.unauthorized(status.as_u16()));
        }
        if status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound { registry: self.registry.clone(), what: what.into() });
        }
        let body = resp.text().await.unwrap_or_default().chars().take(512).collect();
        Err(RegistryError::Status { registry: self.registry.clone(), what: what.into(), status: status.as_u16(), body })
    }

    fn unauthorized(&self, status: u16) -> RegistryError {
        RegistryError::Unauthorized { registry: self.registry.clone(), repository: self.repository.clone(), status }
    }

    async fn send(&self, url: &str, accept: Option<&str>, what: &str) -> Result<Response, RegistryError> {
        if self.token.lock().await.is_some() {
            return self.send_authed(url, accept, what).await;
        }
        self.request(url, accept, None, what).await
    }

    async fn send_authed(&self, url: &str, accept: Option<&str>, what: &str) -> Result<Response, RegistryError> {
        let header = match (&*self.token.lock().await, &self.creds) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, Some(Credentials::Basic { username, password })) => Some(basic_header(username, password)),
            (None, _) => None,
        };
        self.request(url, accept, header, what).await
    }

    async fn request(&self, url: &str, accept: Option<&str>, auth: Option<String>, what: &str) -> Result<Response, RegistryError> {
        let mut req = self.client.get(url);
        if let Some(a) = accept {
            req = req.header(ACCEPT, a);
        }
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        let send = req.send();
        let resp = match self.stall_timeout {
            Some(t) => tokio::time::timeout(t, send).await.map_err(|_| RegistryError::Stalled {
                registry: self.registry.clone(),
                what: what.into(),
                timeout: t,
            })?,
            None => send.await,
        };
        resp.map_err(|source| {
            if source.is_connect() {
                RegistryError::Unreachable { registry: self.registry.clone(), source }
            } else {
                RegistryError::Transfer { registry: self.registry.clone(), what: what.into(), source }
            }
        })
    }

    /// The token endpoint (distribution's token auth spec): GET with basic auth when we have
    /// credentials, POST of a refresh token for identity tokens.
    async fn fetch_token(&self, realm: &str, service: Option<&str>) -> Result<String, RegistryError> {
        let scope = format!("repository:{}:pull", self.repository);
        let mut params = vec![("scope", scope.as_str())];
        if let Some(s) = service {
            params.push(("service", s));
        }
        let req = match &self.creds {
            Some(Credentials::IdentityToken(refresh)) => {
                let mut form = params.clone();
                form.extend([("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", "crio")]);
                self.client.post(realm).form(&form)
            }
            Some(Credentials::Basic { username, password }) => self.client.get(realm).query(&params).basic_auth(username, Some(password)),
            _ => self.client.get(realm).query(&params),
        };
        let resp = req.send().await.map_err(|source| RegistryError::Unreachable { registry: self.registry.clone(), source })?;
        if !resp.status().is_success() {
            return Err(self.unauthorized(resp.status().as_u16()));
        }
        let what = format!("token from {realm}");
        let body = self.read_limited(resp, 1024 * 1024, &what).await?;
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let t: Token = serde_json::from_slice(&body).map_err(|_| self.unauthorized(200))?;
        Ok(if t.token.is_empty() { t.access_token } else { t.token })
    }
}

fn basic_header(username: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")))
}

#[derive(Debug, PartialEq)]
enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String> },
    Other,
}

impl Challenge {
    fn parse(header: &str) -> Challenge {
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Challenge::Basic;
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Challenge::Other;
        }
        let mut realm = None;
        let mut service = None;
        for (k, v) in auth_params(rest) {
            match k.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v),
                "service" => service = Some(v),
                _ => {}
            }
        }
        match realm {
            Some(realm) => Challenge::Bearer { realm, service },
            None => Challenge::Other,
        }
    }
}

/// `k="v", k2=v2` pairs; quoted values may contain commas.
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        rest = &rest[eq + 1..];
        let value;
        if let Some(stripped) = rest.strip_prefix('"') {
            let end = stripped.find('"').unwrap_or(stripped.len());
            value = stripped[..end].to_string();
            rest = stripped.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push((key, value));
        rest = rest.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = Challenge::parse(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a,b:pull""#);
        assert_eq!(c, Challenge::Bearer { realm: "https://auth.example/token".into(), service: Some("registry.example".into()) });
        assert_eq!(Challenge::parse(r#"Basic realm="Registry Realm""#), Challenge::Basic);
        assert_eq!(Challenge::parse("Negotiate"), Challenge::Other);
    }
}
