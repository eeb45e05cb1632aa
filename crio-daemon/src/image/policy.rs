//! Signature policy (`policy.json`, containers-policy.json(5)): which images may be pulled.
//! Scopes for the `docker` transport are tried from most to least specific (name with tag or
//! digest, repository, each parent namespace, host, `*.domain` wildcards, the transport's `""`),
//! then `default`. Every requirement in the chosen list must hold. Signature checks are not
//! implemented, so a policy that asks for one fails the pull and says so: it is never skipped.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reference::Reference;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("failed to read signature policy {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid signature policy {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {reference} rejected by signature policy {path} (scope {scope:?}: reject)")]
    Rejected { reference: String, path: String, scope: String },
    #[error(
        "signature policy {path} requires {kind} for {reference} (scope {scope:?}); signature verification is not implemented, so the pull is refused"
    )]
    Unsupported { reference: String, path: String, scope: String, kind: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Requirement {
    InsecureAcceptAnything,
    Reject,
    SignedBy {},
    SigstoreSigned {},
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Deserialize)]
struct File {
    default: Vec<Requirement>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    file: File,
    /// Shown in errors: the file, or the built-in default.
    origin: String,
}

impl Policy {
    /// Loads `path`; a missing file gives the built-in accept-anything default, which the caller
    /// logs (`is_default`).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        match fs::read(path) {
            Ok(bytes) => Self::parse(&bytes, &path.display().to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::accept_anything()),
            Err(source) => Err(PolicyError::Read { path: path.into(), source }),
        }
    }

    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, PolicyError> {
        let file = serde_json::from_slice(bytes).map_err(|source| PolicyError::Parse { path: origin.into(), source })?;
        Ok(Self { file, origin: origin.into() })
    }

    pub fn accept_anything() -> Self {
        let file = File { default: vec![Requirement::InsecureAcceptAnything], transports: BTreeMap::new() };
        Self { file, origin: "built-in default (insecureAcceptAnything)".into() }
    }

    pub fn is_default(&self) -> bool {
        self.origin.starts_with("built-in")
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn check(&self, reference: &Reference) -> Result<(), PolicyError> {
        let (scope, reqs) = self.requirements(reference);
        for req in reqs {
            let unsupported = |kind: &str| PolicyError::Unsupported {
                reference: reference.to_string(),
                path: self.origin.clone(),
                scope: scope.clone(),
                kind: kind.into(),
            };
            match req {
                Requirement::InsecureAcceptAnything => {}
                Requirement::Reject => {
                    return Err(PolicyError::Rejected { reference: reference.to_string(), path: self.origin.clone(), scope });
                }
                Requirement::SignedBy {} => return Err(unsupported("signedBy")),
                Requirement::SigstoreSigned {} => return Err(unsupported("sigstoreSigned")),
                Requirement::Unknown => return Err(unsupported("an unknown requirement type")),
            }
        }
        Ok(())
    }

    fn requirements(&self, r: &Reference) -> (String, &[Requirement]) {
        if let Some(scopes) = self.file.transports.get("docker") {
            for scope in scopes_for(r) {
                if let Some(reqs) = scopes.get(&scope) {
                    return (scope, reqs);
                }
            }
            if let Some(reqs) = scopes.get("") {
                return ("docker transport default".into(), reqs);
            }
        }
        ("default".into(), &self.file.default)
    }
}

fn scopes_for(r: &Reference) -> Vec<String> {
    let mut out = Vec::new();
    let name = r.name();
    if let Some(d) = &r.digest {
        out.push(format!("{name}@{d}"));
    } else if let Some(t) = &r.tag {
        out.push(format!("{name}:{t}"));
    }
    let mut scope = name.as_str();
    loop {
        out.push(scope.to_string());
        match scope.rfind('/') {
            Some(i) => scope = &scope[..i],
            None => break,
        }
    }
    let host = r.registry.split(':').next().unwrap_or(&r.registry);
    let mut rest = host;
    while let Some(i) = rest.find('.') {
        rest = &rest[i + 1..];
        out.push(format!("*.{rest}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reference::ImageName;

    fn r(s: &str) -> Reference {
        match ImageName::parse(s).unwrap() {
            ImageName::Qualified(r) => r.with_tag_default(),
            _ => unreachable!(),
        }
    }

    const POLICY: &str = r#"{
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                "allowed.example": [{"type": "insecureAcceptAnything"}],
                "allowed.example/team/bad": [{"type": "reject"}],
                "*.signed.example": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k"}],
                "127.0.0.1:5000": [{"type": "insecureAcceptAnything"}]
            }
        }
    }"#;

    #[test]
    fn most_specific_scope_wins() {
        let p = Policy::parse(POLICY.as_bytes(), "policy.json").unwrap();
        p.check(&r("allowed.example/team/good:1")).unwrap();
        let err = p.check(&r("allowed.example/team/bad:1")).unwrap_err().to_string();
        assert!(err.contains("allowed.example/team/bad") && err.contains("reject"), "{err}");
        p.check(&r("127.0.0.1:5000/x:1")).unwrap();
    }

    #[test]
    fn default_applies_when_no_scope_matches() {
        let p = Policy::parse(POLICY.as_bytes(), "policy.json").unwrap();
        let err = p.check(&r("other.example/x")).unwrap_err();
        assert!(matches!(err, PolicyError::Rejected { ref scope, .. } if scope == "default"), "{err}");
    }

    #[test]
    fn signature_requirements_are_refused_not_skipped() {
        let p = Policy::parse(POLICY.as_bytes(), "policy.json").unwrap();
        let err = p.check(&r("reg.signed.example/x:1")).unwrap_err().to_string();
        assert!(err.contains("signedBy") && err.contains("not implemented"), "{err}");
    }

    #[test]
    fn missing_file_accepts_anything_and_says_so() {
        let p = Policy::load(Path::new("/nonexistent/policy.json")).unwrap();
        assert!(p.is_default());
        p.check(&r("any.example/x")).unwrap();
    }
}
