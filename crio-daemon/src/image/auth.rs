//! Registry credentials: from the request's AuthConfig, else from a containers auth.json
//! (`{"auths": {"host[:port][/namespace]": {"auth": base64("user:pass")}}}`), most specific key first.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("failed to read auth file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid auth file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid credentials for {key:?} in {origin}: the auth field must be base64 of \"user:password\"")]
    BadAuth { key: String, origin: String },
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// A registry token used as is (`Authorization: Bearer`).
    Bearer(String),
    /// An OAuth2 refresh token exchanged at the token endpoint.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log secrets.
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => write!(f, "Bearer(***)"),
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(***)"),
        }
    }
}

/// The request's AuthConfig fields, protocol-free.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RequestAuth {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl RequestAuth {
    pub fn credentials(&self) -> Result<Option<Credentials>, AuthError> {
        if !self.registry_token.is_empty() {
            return Ok(Some(Credentials::Bearer(self.registry_token.clone())));
        }
        if !self.identity_token.is_empty() {
            return Ok(Some(Credentials::IdentityToken(self.identity_token.clone())));
        }
        if !self.username.is_empty() {
            return Ok(Some(Credentials::Basic { username: self.username.clone(), password: self.password.clone() }));
        }
        if !self.auth.is_empty() {
            return decode_basic(&self.auth, "request", "AuthConfig.auth").map(Some);
        }
        Ok(None)
    }
}

#[derive(Debug, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    identitytoken: String,
}

#[derive(Debug, Clone, Default)]
pub struct AuthStore {
    entries: BTreeMap<String, Credentials>,
}

impl AuthStore {
    /// An empty path or a missing file means no stored credentials.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        if path.as_os_str().is_empty() {
            return Ok(Self::default());
        }
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(AuthError::Read { path: path.into(), source }),
        };
        let file: AuthFile = serde_json::from_slice(&bytes).map_err(|source| AuthError::Parse { path: path.into(), source })?;
        let origin = path.display().to_string();
        let mut entries = BTreeMap::new();
        for (key, e) in file.auths {
            let key = normalize_key(&key);
            let creds = if !e.identitytoken.is_empty() {
                Credentials::IdentityToken(e.identitytoken)
            } else {
                decode_basic(&e.auth, &origin, &key)?
            };
            entries.insert(key, creds);
        }
        Ok(Self { entries })
    }

    /// Credentials for `registry/repository`: the longest key that is a path prefix of it.
    pub fn lookup(&self, registry: &str, repository: &str) -> Option<Credentials> {
        let mut scope = format!("{registry}/{repository}");
        loop {
            if let Some(c) = self.entries.get(&scope) {
                return Some(c.clone());
            }
            match scope.rfind('/') {
                Some(i) => scope.truncate(i),
                None => return None,
            }
        }
    }
}

/// Docker's legacy key for Docker Hub, and URLs with schemes, reduce to a host.
fn normalize_key(key: &str) -> String {
    let k = key.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    if k == "index.docker.io/v1" || k == "index.docker.io" || k == "registry-1.docker.io" {
        return "docker.io".into();
    }
    k.to_string()
}

fn decode_basic(auth: &str, origin: &str, key: &str) -> Result<Credentials, AuthError> {
    let bad = || AuthError::BadAuth { key: key.into(), origin: origin.into() };
    let bytes = STANDARD.decode(auth.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (username, password) = text.split_once(':').ok_or_else(bad)?;
    Ok(Credentials::Basic { username: username.into(), password: password.into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn most_specific_key_wins() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let a = STANDARD.encode("host:one");
        let b = STANDARD.encode("ns:two");
        write!(f, r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{a}"}}, "127.0.0.1:5000/team": {{"auth": "{b}"}}, "https://index.docker.io/v1/": {{"auth": "{a}"}}}}}}"#).unwrap();
        let s = AuthStore::load(f.path()).unwrap();
        assert_eq!(s.lookup("127.0.0.1:5000", "team/app"), Some(Credentials::Basic { username: "ns".into(), password: "two".into() }));
        assert_eq!(s.lookup("127.0.0.1:5000", "other/app"), Some(Credentials::Basic { username: "host".into(), password: "one".into() }));
        assert!(s.lookup("docker.io", "library/busybox").is_some());
        assert_eq!(s.lookup("127.0.0.2:5000", "x"), None);
    }

    #[test]
    fn bad_auth_field_names_key() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        write!(f, r#"{{"auths": {{"r.example": {{"auth": "%%%"}}}}}}"#).unwrap();
        let err = AuthStore::load(f.path()).unwrap_err().to_string();
        assert!(err.contains("r.example"), "{err}");
    }

    #[test]
    fn request_auth_precedence() {
        let r = RequestAuth { username: "u".into(), password: "p".into(), auth: STANDARD.encode("x:y"), ..Default::default() };
        assert_eq!(r.credentials().unwrap(), Some(Credentials::Basic { username: "u".into(), password: "p".into() }));
        let r = RequestAuth { auth: STANDARD.encode("x:y"), ..Default::default() };
        assert_eq!(r.credentials().unwrap(), Some(Credentials::Basic { username: "x".into(), password: "y".into() }));
        assert_eq!(RequestAuth::default().credentials().unwrap(), None);
    }
}
