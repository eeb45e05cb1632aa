//! The image service: pull from registries into the store, look images up by id, tag or
//! digest (short names resolved as registries.conf says), list, inspect and remove them.
//! Protocol-free: `cri/` converts to and from CRI messages.

pub mod auth;
mod error;
mod lookup;
pub mod manifest;
pub mod policy;
mod pull;
pub mod reference;
pub mod registries;
pub mod registry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use error::ImageError;
pub use pull::PullOutcome;

use crate::config;
use crate::storage::{ImageRecord, Store, StoreError};
use auth::AuthStore;
use policy::Policy;
use registries::Registries;
use registry::Clients;

/// What a caller sees of an image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageView {
    pub record: ImageRecord,
    pub pinned: bool,
    pub uid: Option<i64>,
    pub username: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub mountpoint_bytes: u64,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

pub struct ImageService {
    store: Arc<Store>,
    registries: Registries,
    policy: Policy,
    auth: AuthStore,
    clients: Clients,
    pinned: Vec<String>,
    stall_timeout: Option<Duration>,
    max_parallel: usize,
    /// Caps on what a pull may unpack (`max_layer_bytes` and the others).
    caps: crate::config::Image,
    inflight: Mutex<HashMap<pull::PullKey, pull::SharedPull>>,
    /// Layer bytes downloaded since start (as served: compressed), for the metrics.
    pub pulled_bytes: std::sync::atomic::AtomicU64,
}

impl ImageService {
    pub fn new(cfg: &config::Image, store: Arc<Store>) -> Result<Self, ImageError> {
        let registries = Registries::load(&cfg.registries_conf, &cfg.registries_conf_dir, &cfg.insecure_registries)?;
        let policy_path = if cfg.signature_policy.as_os_str().is_empty() {
            PathBuf::from("/etc/containers/policy.json")
        } else {
            cfg.signature_policy.clone()
        };
        let policy = Policy::load(&policy_path)?;
        if policy.is_default() {
            tracing::warn!(path = %policy_path.display(), "no signature policy file; applying the built-in default: insecureAcceptAnything");
        }
        let mut pinned = cfg.pinned_images.clone();
        pinned.push(cfg.pause_image.clone());
        Ok(Self {
            store,
            registries,
            policy,
            auth: AuthStore::load(&cfg.global_auth_file)?,
            clients: Clients::new(cfg.registries_certs_dir.clone()),
            pinned,
            stall_timeout: (!cfg.pull_progress_timeout.is_zero()).then_some(cfg.pull_progress_timeout.0),
            max_parallel: cfg.max_parallel_downloads,
            caps: cfg.clone(),
            inflight: Mutex::new(HashMap::new()),
            pulled_bytes: Default::default(),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn list(&self, filter: Option<&str>) -> Result<Vec<ImageView>, ImageError> {
        if let Some(name) = filter.filter(|f| !f.is_empty()) {
            return Ok(self.status(name)?.into_iter().collect());
        }
        let index = self.store.snapshot();
        Ok(index.images.values().map(|r| self.view(r.clone())).collect())
    }

    /// `None` when the image is not in the store (CRI: ImageStatus answers an empty image).
    pub fn status(&self, name: &str) -> Result<Option<ImageView>, ImageError> {
        let index = self.store.snapshot();
        Ok(lookup::find(&index, &self.registries, name)?.map(|found| self.view(found.record.clone())))
    }

    /// The stored config JSON of an image, for verbose status and container creation.
    pub async fn config(&self, id: &str) -> Result<Vec<u8>, ImageError> {
        let store = self.store.clone();
        let id = id.to_string();
        Ok(tokio::task::spawn_blocking(move || store.image_config(&id)).await.map_err(ImageError::Task)??)
    }

    /// Removes the image a name (id, tag or digest) resolves to, with all its tags. The CRI's
    /// rule since 1.36 (api.proto, RemoveImage): "if the image is referenced by multiple tags
    /// [...], removing the image by a single tag will remove all of its tags". A missing image
    /// is success: RemoveImage is idempotent. Refused while a container uses it.
    pub async fn remove(&self, name: &str) -> Result<(), ImageError> {
        let index = self.store.snapshot();
        let Some(found) = lookup::find(&index, &self.registries, name)? else { return Ok(()) };
        let id = found.record.id.clone();
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.remove_image(&id)).await.map_err(ImageError::Task)? {
            // CRI: RemoveImage is idempotent and succeeds for an image already removed, here by
            // another RemoveImage since the lookup.
            Ok(()) | Err(StoreError::ImageNotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn fs_usage(&self) -> Result<FsUsage, ImageError> {
        let (used_bytes, inodes_used) = self.store.layers_usage();
        Ok(FsUsage { mountpoint_bytes: 0, used_bytes, inodes_used })
    }

    fn view(&self, record: ImageRecord) -> ImageView {
        let pinned = record.repo_tags.iter().any(|t| self.pinned.iter().any(|p| pattern_matches(p, t)));
        let (uid, username) = parse_user(&record.user);
        ImageView { record, pinned, uid, username }
    }
}

/// CRI-O's pinned_images forms: exact, `prefix*` glob, `*keyword*`.
fn pattern_matches(pattern: &str, name: &str) -> bool {
    if let Some(inner) = pattern.strip_prefix('*').and_then(|p| p.strip_suffix('*')) {
        return name.contains(inner);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return name.starts_with(prefix);
    }
    // The pause image is configured as a short tag-less form at times; compare with :latest too.
    name == pattern || name.strip_suffix(":latest") == Some(pattern) || name.strip_prefix("docker.io/") == Some(pattern)
}

/// The config's `User`: `uid`, `uid:gid`, `name` or `name:group`; CRI wants a uid when numeric.
fn parse_user(user: &str) -> (Option<i64>, String) {
    let u = user.split(':').next().unwrap_or("");
    match u.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) if u.is_empty() => (None, String::new()),
        Err(_) => (None, u.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse_as_cri_expects() {
        assert_eq!(parse_user(""), (None, String::new()));
        assert_eq!(parse_user("1000:1000"), (Some(1000), String::new()));
        assert_eq!(parse_user("nobody"), (None, "nobody".into()));
        assert_eq!(parse_user("www:www"), (None, "www".into()));
    }

    #[test]
    fn pinned_patterns() {
        assert!(pattern_matches("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"));
        assert!(pattern_matches("quay.io/team/*", "quay.io/team/app:1"));
        assert!(pattern_matches("*critical*", "r.example/critical-app:1"));
        assert!(!pattern_matches("quay.io/team/*", "quay.io/other/app:1"));
    }
}
