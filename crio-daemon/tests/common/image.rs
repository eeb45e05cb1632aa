//! Test images: layers built from files (busybox-static for a real userland), compressed with
//! gzip, zstd or not at all, pushed with the distribution API's monolithic blob upload.

use std::io::Write;

use sha2::{Digest as _, Sha256};

use super::Registry;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Clone, Copy, PartialEq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

#[derive(Clone)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub compression: Compression,
}

impl Layer {
    pub fn builder() -> LayerBuilder {
        LayerBuilder { builder: tar::Builder::new(Vec::new()) }
    }

    /// busybox-static as /bin/busybox with a few applet links.
    pub fn busybox() -> Layer {
        let bin = std::fs::read("/bin/busybox").expect("busybox-static installed at /bin/busybox");
        let mut b = Layer::builder().dir("bin").file_mode("bin/busybox", &bin, 0o755);
        for applet in ["sh", "true", "ls", "cat", "sleep", "echo"] {
            b = b.symlink(&format!("bin/{applet}"), "busybox");
        }
        b.dir("etc").file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n").build()
    }

    pub fn with(mut self, c: Compression) -> Layer {
        self.compression = c;
        self
    }

    pub fn diff_id(&self) -> String {
        sha256(&self.tar)
    }

    pub fn blob(&self) -> Vec<u8> {
        match self.compression {
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&self.tar).unwrap();
                gz.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(&self.tar[..], 3).unwrap(),
            Compression::None => self.tar.clone(),
        }
    }

    pub fn media_type(&self, docker: bool) -> &'static str {
        match (docker, self.compression) {
            (true, _) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (false, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (false, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (false, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
        }
    }
}

pub struct LayerBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl LayerBuilder {
    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.file_mode(path, data, 0o644)
    }

    pub fn file_mode(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, data.len() as u64, mode);
        self.builder.append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn dir(mut self, path: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, 0, 0o755);
        self.builder.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0, 0o777);
        self.builder.append_link(&mut h, path, target).unwrap();
        self
    }

    /// An entry with a name and link target written as given, bypassing the tar crate's own
    /// path checks: the way a hostile layer is made.
    pub fn raw(mut self, kind: tar::EntryType, name: &str, link: Option<&str>, data: &[u8]) -> Self {
        let mut h = Self::header(kind, data.len() as u64, 0o644);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    /// Docker's whiteout: `dir/.wh.name` deletes `dir/name` from lower layers.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let p = if dir.is_empty() { format!(".wh.{name}") } else { format!("{dir}/.wh.{name}") };
        self.file(&p, b"")
    }

    /// Docker's opaque marker: lower layers' content of `dir` is hidden.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    pub fn build(self) -> Layer {
        Layer { tar: self.builder.into_inner().unwrap(), compression: Compression::Gzip }
    }
}

#[derive(Clone)]
pub struct ImageBuilder {
    pub layers: Vec<Layer>,
    pub entrypoint: Vec<String>,
    pub user: String,
    pub arch: String,
    pub docker: bool,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self { layers: Vec::new(), entrypoint: Vec::new(), user: String::new(), arch: "amd64".into(), docker: false }
    }
}

impl ImageBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn layer(mut self, l: Layer) -> Self {
        self.layers.push(l);
        self
    }

    pub fn entrypoint(mut self, e: &[&str]) -> Self {
        self.entrypoint = e.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn user(mut self, u: &str) -> Self {
        self.user = u.into();
        self
    }

    pub fn arch(mut self, a: &str) -> Self {
        self.arch = a.into();
        self
    }

    pub fn docker(mut self) -> Self {
        self.docker = true;
        self
    }

    pub fn config(&self) -> Vec<u8> {
        let diff_ids: Vec<String> = self.layers.iter().map(Layer::diff_id).collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": self.arch,
            "os": "linux",
            "config": {"User": self.user, "Env": ["PATH=/bin"], "Entrypoint": self.entrypoint, "Cmd": if self.entrypoint.is_empty() { vec!["/bin/sh"] } else { vec![] }},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap()
    }
}

/// What a push left in the registry.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub manifest_len: u64,
    pub config_len: u64,
}

impl Pushed {
    /// The image id CRI reports: the config digest's hex.
    pub fn id(&self) -> String {
        self.config_digest.trim_start_matches("sha256:").to_string()
    }
}

impl Registry {
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let client = self.client();
        let base = format!("{}://{}", self.scheme(), self.addr);
        let mut req = client.post(format!("{base}/v2/{repo}/blobs/uploads/"));
        if let Some(a) = self.auth_header(repo).await {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.expect("starting blob upload");
        assert_eq!(resp.status().as_u16(), 202, "upload start: {:?}", resp.text().await);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let url = if location.starts_with("http") { location } else { format!("{base}{location}") };
        let sep = if url.contains('?') { '&' } else { '?' };
        let mut req =
            client.put(format!("{url}{sep}digest={digest}")).header("Content-Type", "application/octet-stream").body(bytes.to_vec());
        if let Some(a) = self.auth_header(repo).await {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.expect("uploading blob");
        assert_eq!(resp.status().as_u16(), 201, "blob upload: {:?}", resp.text().await);
        digest
    }

    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> String {
        let mut req = self
            .client()
            .put(format!("{}://{}/v2/{repo}/manifests/{reference}", self.scheme(), self.addr))
            .header("Content-Type", media_type)
            .body(bytes.to_vec());
        if let Some(a) = self.auth_header(repo).await {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.expect("pushing manifest");
        assert_eq!(resp.status().as_u16(), 201, "manifest push: {:?}", resp.text().await);
        sha256(bytes)
    }

    /// Pushes an image's blobs and manifest; tags it when `tag` is given.
    pub async fn push(&self, repo: &str, tag: &str, image: &ImageBuilder) -> Pushed {
        let config = image.config();
        let config_digest = self.push_blob(repo, &config).await;
        let mut layers = Vec::new();
        let mut layer_digests = Vec::new();
        for l in &image.layers {
            let blob = l.blob();
            let d = self.push_blob(repo, &blob).await;
            layers.push(serde_json::json!({"mediaType": l.media_type(image.docker), "digest": d, "size": blob.len()}));
            layer_digests.push(d);
        }
        let (mt, config_mt) = if image.docker {
            (DOCKER_MANIFEST, "application/vnd.docker.container.image.v1+json")
        } else {
            (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
        };
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": {"mediaType": config_mt, "digest": config_digest, "size": config.len()},
            "layers": layers,
        }))
        .unwrap();
        let manifest_digest = self.push_manifest(repo, tag, mt, &manifest).await;
        Pushed { manifest_digest, config_digest, layer_digests, manifest_len: manifest.len() as u64, config_len: config.len() as u64 }
    }

    /// Pushes one image per architecture and an OCI index over them under `tag`.
    pub async fn push_index(&self, repo: &str, tag: &str, images: &[ImageBuilder]) -> (String, Vec<Pushed>) {
        let mut entries = Vec::new();
        let mut pushed = Vec::new();
        for img in images {
            let p = self.push(repo, &format!("{tag}-{}", img.arch), img).await;
            entries.push(serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": p.manifest_digest, "size": p.manifest_len,
                "platform": {"architecture": img.arch, "os": "linux"},
            }));
            pushed.push(p);
        }
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})).unwrap();
        (self.push_manifest(repo, tag, OCI_INDEX, &index).await, pushed)
    }
}
