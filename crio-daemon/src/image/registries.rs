//! registries.conf v2: where a reference is pulled from (mirrors in order, then the location),
//! which registries are insecure or blocked, and how short names resolve (aliases first, then
//! the unqualified-search registries under the short-name mode). Drop-ins in `registries.conf.d`
//! apply in lexical order: search lists replace, `[[registry]]` entries replace by prefix, aliases merge.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reference::{DOCKER_HUB, ImageName, Reference};

#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    #[error("failed to read registries configuration {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid registries configuration {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid registries configuration {path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error(
        "short name {name:?} is ambiguous: short-name-mode is enforcing and it could be any of {candidates:?}; use a fully qualified name or add an alias"
    )]
    Ambiguous { name: String, candidates: Vec<String> },
    #[error("short name {name:?} cannot be resolved: no alias for it and no unqualified-search-registries configured")]
    NoSearchRegistries { name: String },
    #[error("registry {registry} is blocked in registries.conf (prefix {prefix:?})")]
    Blocked { registry: String, prefix: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShortNameMode {
    #[default]
    Enforcing,
    Permissive,
    Disabled,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    unqualified_search_registries: Option<Vec<String>>,
    short_name_mode: Option<ShortNameMode>,
    #[serde(default)]
    registry: Vec<RegistryEntry>,
    aliases: Option<BTreeMap<String, String>>,
    /// The v1 format, which we refuse by name rather than misread.
    registries: Option<toml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryEntry {
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub mirror_by_digest_only: bool,
    #[serde(default)]
    pub mirror: Vec<Mirror>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Mirror {
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
}

/// One place to try: the reference rewritten for that registry, and whether TLS may be skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub reference: Reference,
    pub insecure: bool,
    pub mirror: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Registries {
    pub search: Vec<String>,
    pub mode: ShortNameMode,
    entries: Vec<RegistryEntry>,
    aliases: BTreeMap<String, String>,
    /// crio.conf's `insecure_registries`, on top of registries.conf.
    extra_insecure: Vec<String>,
    pub files: Vec<PathBuf>,
}

impl Registries {
    /// Reads the main file and its drop-ins; a missing file means "nothing configured".
    pub fn load(main: &Path, dir: &Path, extra_insecure: &[String]) -> Result<Self, RegistriesError> {
        let mut sources = Vec::new();
        for path in std::iter::once(main.to_path_buf()).chain(drop_ins(dir)?) {
            match fs::read_to_string(&path) {
                Ok(text) => sources.push((path, text)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(RegistriesError::Read { path, source }),
            }
        }
        let mut r = Self::from_sources(&sources)?;
        r.extra_insecure = extra_insecure.to_vec();
        Ok(r)
    }

    pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<Self, RegistriesError> {
        let mut r = Registries::default();
        for (path, text) in sources {
            let file: File = toml::from_str(text).map_err(|source| RegistriesError::Parse { path: path.clone(), source })?;
            if file.registries.is_some() {
                let why = "the v1 [registries.*] format is not supported; use v2 (unqualified-search-registries, [[registry]])".into();
                return Err(RegistriesError::Invalid { path: path.clone(), why });
            }
            if let Some(s) = file.unqualified_search_registries {
                r.search = s;
            }
            if let Some(m) = file.short_name_mode {
                r.mode = m;
            }
            for mut entry in file.registry {
                if entry.prefix.is_empty() {
                    entry.prefix = entry.location.clone();
                }
                if entry.prefix.is_empty() {
                    return Err(RegistriesError::Invalid { path: path.clone(), why: "[[registry]] needs a prefix or a location".into() });
                }
                if entry.prefix.starts_with("*.") && !entry.location.is_empty() {
                    let why = format!("wildcard prefix {:?} cannot have a location", entry.prefix);
                    return Err(RegistriesError::Invalid { path: path.clone(), why });
                }
                r.entries.retain(|e| e.prefix != entry.prefix);
                r.entries.push(entry);
            }
            if let Some(a) = file.aliases {
                for (k, v) in a {
                    if !matches!(ImageName::parse(&v), Ok(ImageName::Qualified(_))) {
                        let why = format!("alias {k:?} must map to a fully qualified name, not {v:?}");
                        return Err(RegistriesError::Invalid { path: path.clone(), why });
                    }
                    r.aliases.insert(k, v);
                }
            }
            r.files.push(path.clone());
        }
        Ok(r)
    }

    /// Candidates for a name, in the order to try them. Enforcing mode refuses to guess between
    /// several search registries, as CRI-O does when it cannot prompt.
    pub fn resolve_for_pull(&self, name: &ImageName) -> Result<Vec<Reference>, RegistriesError> {
        let candidates = self.candidates(name)?;
        let ImageName::Short { path, .. } = name else { return Ok(candidates) };
        if candidates.len() > 1 && self.mode == ShortNameMode::Enforcing && !self.aliases.contains_key(path) {
            return Err(RegistriesError::Ambiguous { name: path.clone(), candidates: candidates.iter().map(|c| c.name()).collect() });
        }
        Ok(candidates)
    }

    /// Every qualified name a name may stand for, for lookups in the local store.
    pub fn candidates(&self, name: &ImageName) -> Result<Vec<Reference>, RegistriesError> {
        let (path, tag, digest) = match name {
            ImageName::Qualified(r) => return Ok(vec![r.clone().with_tag_default()]),
            ImageName::Short { path, tag, digest } => (path, tag, digest),
        };
        let with = |mut r: Reference| {
            r.tag = tag.clone();
            r.digest = digest.clone();
            r.with_tag_default()
        };
        if let Some(target) = self.aliases.get(path)
            && let Ok(ImageName::Qualified(r)) = ImageName::parse(target)
        {
            return Ok(vec![with(r)]);
        }
        if self.search.is_empty() {
            return Err(RegistriesError::NoSearchRegistries { name: path.clone() });
        }
        Ok(self
            .search
            .iter()
            .map(|registry| {
                let repository = if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.clone() };
                with(Reference { registry: registry.clone(), repository, tag: None, digest: None })
            })
            .collect())
    }

    /// Where to pull a qualified reference from: mirrors, then the (rewritten) location.
    pub fn endpoints(&self, reference: &Reference) -> Result<Vec<Endpoint>, RegistriesError> {
        let name = reference.name();
        let Some(entry) = self.matching(&name) else {
            return Ok(vec![Endpoint {
                reference: reference.clone(),
                insecure: self.is_extra_insecure(&reference.registry),
                mirror: false,
            }]);
        };
        if entry.blocked {
            return Err(RegistriesError::Blocked { registry: reference.registry.clone(), prefix: entry.prefix.clone() });
        }
        let rewrite = |location: &str| -> Reference {
            if location.is_empty() || entry.prefix.starts_with("*.") {
                return reference.clone();
            }
            let rewritten = format!("{location}{}", &name[entry.prefix.len()..]);
            let (registry, repository) = rewritten.split_once('/').unwrap_or((rewritten.as_str(), ""));
            Reference { registry: registry.into(), repository: repository.into(), ..reference.clone() }
        };
        let mut out = Vec::new();
        if !(entry.mirror_by_digest_only && reference.digest.is_none()) {
            for m in &entry.mirror {
                out.push(Endpoint { reference: rewrite(&m.location), insecure: m.insecure, mirror: true });
            }
        }
        let primary = rewrite(&entry.location);
        let insecure = entry.insecure || self.is_extra_insecure(&primary.registry);
        out.push(Endpoint { reference: primary, insecure, mirror: false });
        Ok(out)
    }

    fn is_extra_insecure(&self, registry: &str) -> bool {
        self.extra_insecure.iter().any(|r| r == registry)
    }

    /// The longest matching prefix wins; wildcards (`*.example.com`) match subdomains.
    fn matching(&self, name: &str) -> Option<&RegistryEntry> {
        let host = name.split('/').next().unwrap_or(name);
        self.entries
            .iter()
            .filter(|e| match e.prefix.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => name == e.prefix || (name.starts_with(&e.prefix) && name[e.prefix.len()..].starts_with('/')),
            })
            .max_by_key(|e| e.prefix.len())
    }
}

fn drop_ins(dir: &Path) -> Result<Vec<PathBuf>, RegistriesError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(RegistriesError::Read { path: dir.into(), source }),
    };
    let mut paths: Vec<PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "conf")).collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(text: &str) -> Registries {
        Registries::from_sources(&[("registries.conf".into(), text.into())]).unwrap()
    }

    fn name(s: &str) -> ImageName {
        ImageName::parse(s).unwrap()
    }

    fn qualified(s: &str) -> Reference {
        match name(s) {
            ImageName::Qualified(r) => r,
            _ => panic!("{s} is short"),
        }
    }

    #[test]
    fn single_search_registry_resolves() {
        let r = regs("unqualified-search-registries = [\"docker.io\"]\n");
        let c = r.resolve_for_pull(&name("busybox")).unwrap();
        assert_eq!(c[0].to_string(), "docker.io/library/busybox:latest");
    }

    #[test]
    fn ambiguous_short_name_is_an_error_in_enforcing_mode() {
        let r = regs("unqualified-search-registries = [\"a.example\", \"b.example\"]\n");
        let err = r.resolve_for_pull(&name("app:1")).unwrap_err();
        assert!(err.to_string().contains("ambiguous"), "{err}");
        let r = regs("unqualified-search-registries = [\"a.example\", \"b.example\"]\nshort-name-mode = \"permissive\"\n");
        assert_eq!(r.resolve_for_pull(&name("app:1")).unwrap().len(), 2);
    }

    #[test]
    fn alias_wins_and_keeps_tag() {
        let r = regs("unqualified-search-registries = [\"a.example\", \"b.example\"]\n[aliases]\n\"app\" = \"c.example/team/app\"\n");
        let c = r.resolve_for_pull(&name("app:2")).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].to_string(), "c.example/team/app:2");
    }

    #[test]
    fn no_search_registries_is_an_error() {
        assert!(matches!(regs("").resolve_for_pull(&name("app")), Err(RegistriesError::NoSearchRegistries { .. })));
    }

    #[test]
    fn mirrors_then_rewritten_location() {
        let r = regs(
            r#"
[[registry]]
prefix = "example.com/foo"
location = "internal.example.com/bar"
[[registry.mirror]]
location = "127.0.0.1:5000/mirror"
insecure = true
"#,
        );
        let eps = r.endpoints(&qualified("example.com/foo/app:1")).unwrap();
        let got: Vec<_> = eps.iter().map(|e| (e.reference.to_string(), e.insecure, e.mirror)).collect();
        assert_eq!(
            got,
            [("127.0.0.1:5000/mirror/app:1".to_string(), true, true), ("internal.example.com/bar/app:1".to_string(), false, false)]
        );
        // `example.com/foobar` is not under the prefix `example.com/foo`.
        assert_eq!(r.endpoints(&qualified("example.com/foobar:1")).unwrap()[0].reference.to_string(), "example.com/foobar:1");
    }

    #[test]
    fn digest_only_mirrors_skip_tags() {
        let r =
            regs("[[registry]]\nlocation = \"example.com\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.example\"\n");
        assert_eq!(r.endpoints(&qualified("example.com/a:1")).unwrap().len(), 1);
        let d = format!("example.com/a@sha256:{}", "0".repeat(64));
        assert_eq!(r.endpoints(&qualified(&d)).unwrap().len(), 2);
    }

    #[test]
    fn blocked_registry_names_the_rule() {
        let r = regs("[[registry]]\nprefix = \"*.evil.example\"\nblocked = true\n");
        let err = r.endpoints(&qualified("x.evil.example/a:1")).unwrap_err();
        assert!(err.to_string().contains("*.evil.example"), "{err}");
    }

    #[test]
    fn drop_ins_replace_by_prefix() {
        let r = Registries::from_sources(&[
            ("a.conf".into(), "[[registry]]\nlocation = \"example.com\"\ninsecure = false\n".into()),
            ("b.conf".into(), "[[registry]]\nlocation = \"example.com\"\ninsecure = true\n".into()),
        ])
        .unwrap();
        assert!(r.endpoints(&qualified("example.com/a:1")).unwrap()[0].insecure);
    }

    #[test]
    fn v1_format_is_refused_by_name() {
        let err = Registries::from_sources(&[("old.conf".into(), "[registries.search]\nregistries = []\n".into())]).unwrap_err();
        assert!(err.to_string().contains("v1"), "{err}");
    }
}
