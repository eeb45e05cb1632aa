//! Manifest and index documents, Docker schema 2 and OCI alike, and platform selection.

use serde::Deserialize;

use crate::storage::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// What we ask registries for, best first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {digest} is not valid JSON of a known kind")]
    Parse {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest {digest} has media type {media_type:?}, which is not supported (Docker schema 2 and OCI are)")]
    Unsupported { digest: Digest, media_type: String },
    #[error("index {digest} has no image for {os}/{arch}")]
    NoPlatform { digest: Digest, os: &'static str, arch: &'static str },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    schema_version: Option<u32>,
}

#[derive(Debug)]
pub enum Document {
    Index(Vec<Descriptor>),
    Image(Manifest),
}

/// Classifies by the document's own mediaType, else the response's Content-Type, else its shape.
pub fn parse(bytes: &[u8], content_type: &str, digest: &Digest) -> Result<Document, ManifestError> {
    let parse_err = |source| ManifestError::Parse { digest: digest.clone(), source };
    let probe: Probe = serde_json::from_slice(bytes).map_err(parse_err)?;
    let kind = if !probe.media_type.is_empty() { probe.media_type.as_str() } else { content_type.split(';').next().unwrap_or("").trim() };
    let is_index = match kind {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        DOCKER_SCHEMA1 => return Err(ManifestError::Unsupported { digest: digest.clone(), media_type: kind.into() }),
        _ if probe.schema_version == Some(1) => {
            return Err(ManifestError::Unsupported { digest: digest.clone(), media_type: "schema 1".into() });
        }
        _ => probe.manifests.is_some(),
    };
    if is_index {
        let index: Index = serde_json::from_slice(bytes).map_err(parse_err)?;
        Ok(Document::Index(index.manifests))
    } else {
        Ok(Document::Image(serde_json::from_slice(bytes).map_err(parse_err)?))
    }
}

/// Go's names for this host, as registries label platforms.
pub fn host_platform() -> (&'static str, &'static str, Option<&'static str>) {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    };
    ("linux", arch, variant)
}

/// The entry for this host: matching os and architecture, the host's variant preferred.
pub fn select_platform<'a>(entries: &'a [Descriptor], digest: &Digest) -> Result<&'a Descriptor, ManifestError> {
    let (os, arch, variant) = host_platform();
    let matching: Vec<&Descriptor> =
        entries.iter().filter(|d| d.platform.as_ref().is_some_and(|p| p.os == os && p.architecture == arch)).collect();
    matching
        .iter()
        .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_deref()) == variant)
        .or_else(|| matching.first())
        .copied()
        .ok_or(ManifestError::NoPlatform { digest: digest.clone(), os, arch })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Digest {
        Digest::of(b"x")
    }

    #[test]
    fn picks_host_platform_from_index() {
        let z = "0".repeat(64);
        let o = "1".repeat(64);
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
                {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{z}","size":1,"platform":{{"architecture":"s390x","os":"linux"}}}},
                {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{o}","size":2,"platform":{{"architecture":"{}","os":"linux"}}}}]}}"#,
            host_platform().1
        );
        let Document::Index(entries) = parse(doc.as_bytes(), "", &d()).unwrap() else { panic!("not an index") };
        assert_eq!(select_platform(&entries, &d()).unwrap().size, 2);
        assert!(select_platform(&entries[..1], &d()).is_err());
    }

    #[test]
    fn schema1_is_refused() {
        let err = parse(br#"{"schemaVersion":1,"name":"x"}"#, "application/json", &d()).unwrap_err();
        assert!(matches!(err, ManifestError::Unsupported { .. }));
    }

    #[test]
    fn docker_manifest_by_content_type() {
        let z = "0".repeat(64);
        let doc = format!(r#"{{"schemaVersion":2,"config":{{"digest":"sha256:{z}","size":3}},"layers":[]}}"#);
        assert!(matches!(parse(doc.as_bytes(), DOCKER_MANIFEST, &d()).unwrap(), Document::Image(_)));
    }
}
