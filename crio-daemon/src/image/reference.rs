//! Image references as the docker/distribution grammar defines them:
//! `[registry[:port]/]path[:tag][@algo:hex]`. A name with no registry is a short name; turning it
//! into a fully qualified one is registries.conf's job (`registries`), never a guess here.

use std::fmt;

use crate::storage::digest::Digest;

/// docker.io's repositories without a namespace live under `library/`.
pub const DOCKER_HUB: &str = "docker.io";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReferenceError {
    #[error("invalid image reference {input:?}: {why}")]
    Invalid { input: String, why: &'static str },
}

/// A fully qualified reference: registry, repository and a tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// What a user typed: either qualified, or a short name awaiting resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageName {
    Qualified(Reference),
    Short { path: String, tag: Option<String>, digest: Option<Digest> },
}

impl Reference {
    /// `registry/repository`, the name tags and digests hang off.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag or digest the registry is asked for; the digest wins when both are set.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// `registry/repository:tag` when the reference carries a tag (or none at all: `latest`).
    pub fn tagged(&self) -> Option<String> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(format!("{}:{t}", self.name())),
            (None, None) => Some(format!("{}:latest", self.name())),
            (None, Some(_)) => None,
        }
    }

    pub fn with_tag_default(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".into());
        }
        self
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl ImageName {
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let invalid = |why| ReferenceError::Invalid { input: input.to_string(), why };
        let s = input.strip_prefix("docker://").unwrap_or(input);
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if s.len() > 4096 {
            return Err(invalid("longer than 4096 bytes"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(Digest::parse(d).map_err(|_| invalid("malformed digest"))?)),
            None => (s, None),
        };
        // A tag follows the last ':' only if that ':' comes after the last '/' (else it is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(invalid("malformed tag (want [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"));
        }
        let tag = tag.map(str::to_string);
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => (Some(first), path),
            _ => (None, name),
        };
        if let Some(r) = registry
            && !valid_registry(r)
        {
            return Err(invalid("malformed registry host"));
        }
        if path.split('/').any(|c| !valid_path_component(c)) {
            return Err(invalid("repository must be lowercase [a-z0-9] components separated by '/', '.', '_', '__' or '-'"));
        }
        if name.len() > 255 {
            return Err(invalid("repository name longer than 255 bytes"));
        }
        Ok(match registry {
            Some(r) => {
                let r = if r == "index.docker.io" { DOCKER_HUB } else { r };
                let repository = if r == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_string() };
                ImageName::Qualified(Reference { registry: r.to_string(), repository, tag, digest })
            }
            None => ImageName::Short { path: path.to_string(), tag, digest },
        })
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || r.starts_with('[') => (h, Some(p)),
        _ => (r, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    if host.starts_with('[') {
        return host.ends_with(']') && host[1..host.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Reference {
        match ImageName::parse(s).unwrap() {
            ImageName::Qualified(r) => r,
            other => panic!("{s} parsed as {other:?}"),
        }
    }

    #[test]
    fn qualified_forms() {
        let r = q("127.0.0.1:5000/team/app:v1");
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("127.0.0.1:5000", "team/app", Some("v1")));
        let r = q("localhost/app");
        assert_eq!((r.registry.as_str(), r.tag), ("localhost", None));
        let r = q("docker.io/busybox");
        assert_eq!(r.repository, "library/busybox");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = q(&format!("quay.io/x/y:t@{d}"));
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(r.to_string(), format!("quay.io/x/y:t@{d}"));
        assert_eq!(q("docker://example.com/a").name(), "example.com/a");
    }

    #[test]
    fn short_names_stay_short() {
        assert_eq!(
            ImageName::parse("busybox:1.36").unwrap(),
            ImageName::Short { path: "busybox".into(), tag: Some("1.36".into()), digest: None }
        );
        assert!(matches!(ImageName::parse("library/busybox").unwrap(), ImageName::Short { .. }));
    }

    #[test]
    fn malformed_references_are_rejected() {
        for bad in ["", "UPPER/case", "a//b", "a:", "a:-tag", "host:port:/x", "x@sha256:abc", "a/b/", "-a", "a..b", "re po"] {
            assert!(ImageName::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = ImageName::parse(&s);
        }

        #[test]
        fn display_round_trips(repo in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}", tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}") {
            let text = format!("registry.example:5000/{repo}:{tag}");
            let r = q(&text);
            prop_assert_eq!(r.to_string(), text);
        }
    }
}
