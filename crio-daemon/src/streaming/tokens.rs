//! Requests waiting for their client: the Exec, Attach and PortForward RPCs store the request
//! under a random single-use token and answer with a URL that names it; the streaming server
//! takes it back when the client connects. Tokens expire after a minute, and only so many
//! may wait at once (the kubelet's own server keeps the same bounds).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a URL stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Requests waiting at once.
pub const MAX_IN_FLIGHT: usize = 1000;

/// A validated streaming request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    Exec { container_id: String, cmd: Vec<String>, tty: bool, stdin: bool, stdout: bool, stderr: bool },
    Attach { container_id: String, tty: bool, stdin: bool, stdout: bool, stderr: bool },
    PortForward { pod_id: String },
}

impl Pending {
    pub fn path(&self) -> &'static str {
        match self {
            Pending::Exec { .. } => "exec",
            Pending::Attach { .. } => "attach",
            Pending::PortForward { .. } => "portforward",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("{MAX_IN_FLIGHT} streaming requests are already waiting for their clients")]
    TooMany,
    #[error("the streaming server is not serving yet")]
    NotServing,
}

#[derive(Default)]
pub struct Tokens {
    /// `http://host:port`, set once the server is bound.
    base: OnceLock<String>,
    waiting: Mutex<HashMap<String, (Pending, Instant)>>,
}

impl Tokens {
    /// Set once, when the streaming server is listening.
    pub fn set_base_url(&self, base: String) {
        let _ = self.base.set(base);
    }

    pub fn base_url(&self) -> Option<&str> {
        self.base.get().map(String::as_str)
    }

    /// Stores `req` and returns the absolute URL its client must use.
    pub fn insert(&self, req: Pending) -> Result<String, TokenError> {
        let base = self.base.get().ok_or(TokenError::NotServing)?;
        let path = req.path();
        let token = new_token();
        let now = Instant::now();
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.len() >= MAX_IN_FLIGHT {
            waiting.retain(|_, (_, at)| now.duration_since(*at) < TOKEN_TTL);
            if waiting.len() >= MAX_IN_FLIGHT {
                return Err(TokenError::TooMany);
            }
        }
        waiting.insert(token.clone(), (req, now));
        Ok(format!("{base}/{path}/{token}"))
    }

    /// Takes the request stored under `token` for `path`: once, and only before it expired.
    pub fn take(&self, path: &str, token: &str) -> Option<Pending> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let (req, at) = waiting.remove(token)?;
        // A token is spent even when used on the wrong path.
        (at.elapsed() < TOKEN_TTL && req.path() == path).then_some(req)
    }

    pub fn waiting(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// 16 random bytes, URL-safe.
fn new_token() -> String {
    let mut raw = [0u8; 16];
    rustix::rand::getrandom(&mut raw, rustix::rand::GetRandomFlags::empty()).expect("the kernel's random source");
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> Pending {
        Pending::Exec { container_id: "c".into(), cmd: vec!["true".into()], tty: false, stdin: false, stdout: true, stderr: true }
    }

    #[test]
    fn a_token_is_single_use_and_path_bound() {
        let t = Tokens::default();
        assert_eq!(t.insert(exec()), Err(TokenError::NotServing));
        t.set_base_url("http://127.0.0.1:1234".into());
        let url = t.insert(exec()).unwrap();
        let token = url.strip_prefix("http://127.0.0.1:1234/exec/").expect("absolute URL");
        assert_eq!(t.take("exec", token), Some(exec()));
        assert_eq!(t.take("exec", token), None, "used");
        let url = t.insert(exec()).unwrap();
        let token = url.rsplit('/').next().unwrap();
        assert_eq!(t.take("attach", token), None, "wrong path");
        assert_eq!(t.take("exec", token), None, "and spent");
    }

    #[test]
    fn only_so_many_wait() {
        let t = Tokens::default();
        t.set_base_url("http://h:1".into());
        for _ in 0..MAX_IN_FLIGHT {
            t.insert(exec()).unwrap();
        }
        assert_eq!(t.insert(exec()), Err(TokenError::TooMany));
        assert_eq!(t.waiting(), MAX_IN_FLIGHT);
    }
}
